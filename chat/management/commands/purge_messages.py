from datetime import timedelta

from django.core.management.base import BaseCommand, CommandError
from django.utils import timezone

from chat.management.commands._lookup import room_or_error
from chat.management.commands._output import until_the_reader_goes
from chat.models import Message
from chat.services import PurgeRecord, message_delete

BATCH_SIZE = 1000


class Command(BaseCommand):
    help = (
        "Delete messages older than DAYS days (in one room with --room), printing what it removes. "
        "Open sockets get message_deleted like a moderator delete. --dry-run only prints. When the reader of "
        "its output goes away (| head) it stops quietly with status 141, having deleted what it printed."
    )

    def add_arguments(self, parser):
        parser.add_argument("--older-than", type=int, required=True, metavar="DAYS", help="Age in days (≥ 0).")
        parser.add_argument("--room", help="Only this room.")
        parser.add_argument("--dry-run", action="store_true", help="Print what would be removed; delete nothing.")

    def handle(self, *args, older_than, room, dry_run, **options):
        if older_than < 0:
            raise CommandError("--older-than must be 0 or more days.")
        try:
            cutoff = timezone.now() - timedelta(days=older_than)
        except OverflowError:  # before the year 1
            raise CommandError(f"--older-than {older_than} reaches back before the year 1.") from None
        qs = Message.objects.filter(created__lt=cutoff).select_related("room", "user").order_by("pk")
        only = room_or_error(room) if room else None
        if only is not None:
            qs = qs.filter(room=only)
        with until_the_reader_goes(self.stdout):
            total = self._purge(qs, dry_run, PurgeRecord(cutoff=cutoff, room=only))
            self.stdout.write(f"{'Would delete' if dry_run else 'Deleted'} {total} message(s).")

    def _purge(self, qs, dry_run: bool, record: PurgeRecord) -> int:
        verb = "would delete" if dry_run else "deleted"
        total, last_pk = 0, 0
        while True:
            # Batches keyed on pk keep memory and each transaction bounded.
            batch = list(qs.filter(pk__gt=last_pk)[:BATCH_SIZE])
            if not batch:
                return total
            last_pk = batch[-1].pk
            # Deleted before printed: every "deleted" line is true even if the reader goes meanwhile.
            if not dry_run:
                message_delete(messages=batch, record=record)
            for m in batch:
                self.stdout.write(f"{verb} {m.room.name}#{m.seq} by {m.user.username} at {m.created.isoformat()}")
            total += len(batch)
