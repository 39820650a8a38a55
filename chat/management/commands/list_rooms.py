from django.core.management.base import BaseCommand
from django.db.models import Count, Max

from chat.models import Room
from chat.presence import presence

HEADERS = ("NAME", "TITLE", "ONLINE", "MESSAGES", "LAST ACTIVITY")


def format_table(rows: list[tuple[str, ...]]) -> str:
    """Left-aligned columns separated by two spaces."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip() for row in rows)


UNKNOWN = "-"


class Command(BaseCommand):
    help = (
        "List rooms: name, title, users online now, messages and last activity, as an aligned table. "
        "ONLINE is read from Redis presence (REDIS_URL); with the default in-process presence this command, "
        "a process of its own, cannot see the server's sockets and shows it as - (unknown)."
    )

    def handle(self, *args, **options):
        rooms = list(
            Room.objects.order_by("name").annotate(
                messages_count=Count("messages"), last_activity=Max("messages__created")
            )
        )
        # In-process presence lives in the server's process: this one's is always empty, and 0 would be wrong.
        known = presence.shared
        online = presence.online_counts([r.pk for r in rooms]) if known else {}
        rows = [HEADERS] + [
            (
                r.name + (" (archived)" if r.is_archived else ""),
                r.title,
                str(online.get(r.pk, 0)) if known else UNKNOWN,
                str(r.messages_count),
                r.last_activity.isoformat(timespec="seconds") if r.last_activity else "-",
            )
            for r in rooms
        ]
        self.stdout.write(format_table(rows))
