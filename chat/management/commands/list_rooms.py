from django.core.management.base import BaseCommand
from django.db.models import Count, Max

from chat.models import Room
from chat.presence import presence

HEADERS = ("NAME", "TITLE", "ONLINE", "MESSAGES", "LAST ACTIVITY")


def format_table(rows: list[tuple[str, ...]]) -> str:
    """Left-aligned columns separated by two spaces."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip() for row in rows)


class Command(BaseCommand):
    help = "List rooms: name, title, users online now, messages and last activity, as an aligned table."

    def handle(self, *args, **options):
        rooms = list(
            Room.objects.order_by("name").annotate(
                messages_count=Count("messages"), last_activity=Max("messages__created")
            )
        )
        online = presence.online_counts([r.pk for r in rooms])
        rows = [HEADERS] + [
            (
                r.name + (" (archived)" if r.is_archived else ""),
                r.title,
                str(online.get(r.pk, 0)),
                str(r.messages_count),
                r.last_activity.isoformat(timespec="seconds") if r.last_activity else "-",
            )
            for r in rooms
        ]
        self.stdout.write(format_table(rows))
