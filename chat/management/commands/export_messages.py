import csv
import json
from collections.abc import Callable
from datetime import UTC, datetime, time

from django.core.management.base import BaseCommand, CommandError
from django.utils import timezone
from django.utils.dateparse import parse_date, parse_datetime

from chat.events import message_payload
from chat.management.commands._lookup import room_or_error
from chat.management.commands._output import until_the_reader_goes
from chat.models import Message

CHUNK_SIZE = 2000
PAYLOAD_FIELDS = ("seq", "content", "created", "client_id", "room__name", "user__username")
CSV_FIELDS = ("id", "seq", "room", "user_id", "username", "content", "timestamp", "client_id")


def parse_since(raw: str) -> datetime:
    """A date (midnight UTC) or an ISO-8601 datetime (UTC when it names no zone)."""
    try:  # each raises ValueError for a well-formed text naming no real moment (2024-02-30)
        moment = parse_datetime(raw)
        day = parse_date(raw) if moment is None else None
    except ValueError:
        moment = day = None
    if moment is None:
        if day is None:
            raise CommandError(f"--since must be a date (YYYY-MM-DD) or an ISO-8601 datetime, not {raw!r}.")
        moment = datetime.combine(day, time.min)
    if timezone.is_naive(moment):
        moment = timezone.make_aware(moment, UTC)
    try:
        return moment.astimezone(UTC)  # compared in UTC: a moment past either end of the calendar there fails here
    except OverflowError:
        raise CommandError(f"--since {raw!r} is outside the years 1 to 9999 in UTC.") from None


class Progress:
    """A one-line progress bar on stderr, only when stderr is a terminal."""

    def __init__(self, stream, count: Callable[[], int]):
        # Counting is a second pass over the room's rows: only done when the bar is shown.
        self.stream, self.enabled = stream, stream.isatty()
        self.total = count() if self.enabled else 0

    def update(self, done: int) -> None:
        if self.enabled and (done % 1000 == 0 or done == self.total):
            width = 30
            filled = width * done // max(self.total, 1)
            self.stream.write(f"\r[{'#' * filled}{'.' * (width - filled)}] {done}/{self.total}")
            self.stream.flush()

    def finish(self) -> None:
        if self.enabled:
            self.stream.write("\n")


class Command(BaseCommand):
    help = (
        "Export a room's messages oldest first, one API message object per line (jsonl, the default) "
        "or as CSV, to stdout or --output FILE. Streams in bounded memory. Stops quietly with status 141 "
        "when the reader of its output goes away (| head)."
    )

    def add_arguments(self, parser):
        parser.add_argument("room")
        parser.add_argument("--since", help="Only messages created at or after this date or datetime (UTC).")
        parser.add_argument("--format", choices=("jsonl", "csv"), default="jsonl")
        parser.add_argument("--output", help="Write to this file instead of stdout.")

    def handle(self, *args, room, since, format, output, **options):
        room_obj = room_or_error(room)
        # Only the columns message_payload reads: every column of the message, its room and its user
        # made a million-message export take 1.6 times as long.
        qs = Message.objects.filter(room=room_obj).select_related("room", "user").only(*PAYLOAD_FIELDS).order_by("seq")
        if since:
            qs = qs.filter(created__gte=parse_since(since))
        try:
            stream = open(output, "w", encoding="utf-8", newline="") if output else None  # noqa: SIM115
        except OSError as exc:
            raise CommandError(f"Cannot write {output}: {exc.strerror}.") from exc
        out = stream or self.stdout._out
        progress = Progress(self.stderr._out, qs.count)
        try:
            with until_the_reader_goes(out):
                write = self._writer(out, format)
                # iterator() streams rows from a server-side cursor instead of caching the queryset.
                for done, message in enumerate(qs.iterator(chunk_size=CHUNK_SIZE), start=1):
                    write(message_payload(message))
                    progress.update(done)
            progress.finish()
        finally:
            if stream:
                stream.close()

    @staticmethod
    def _writer(out, format: str):
        if format == "jsonl":
            return lambda payload: out.write(json.dumps(payload, ensure_ascii=False) + "\n")
        writer = csv.writer(out)
        writer.writerow(CSV_FIELDS)

        def write_row(p: dict) -> None:
            user = p["user"]
            writer.writerow(
                (
                    p["id"],
                    p["seq"],
                    p["room"],
                    user["id"],
                    user["username"],
                    p["content"],
                    p["timestamp"],
                    p["client_id"] or "",
                )
            )

        return write_row
