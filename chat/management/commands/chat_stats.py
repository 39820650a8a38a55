from datetime import UTC, timedelta

from django.core.management.base import BaseCommand, CommandError
from django.db.models import Count
from django.db.models.functions import TruncDate
from django.utils import timezone

from accounts.models import User
from chat.management.commands.list_rooms import format_table
from chat.models import Message, Room

DAYS = 14


class Command(BaseCommand):
    help = f"Totals of users, rooms and messages, and messages per day (UTC) for the last {DAYS} days."

    def add_arguments(self, parser):
        parser.add_argument("--plot", metavar="FILE.png", help="Also draw messages per day to this PNG (matplotlib).")

    def handle(self, *args, plot=None, **options):
        today = timezone.now().astimezone(UTC).date()
        first = today - timedelta(days=DAYS - 1)
        counts = dict(
            Message.objects.filter(created__date__gte=first)
            .annotate(day=TruncDate("created", tzinfo=UTC))
            .values_list("day")
            .annotate(n=Count("id"))
            .values_list("day", "n")
        )
        self.stdout.write(f"users     {User.objects.count()}")
        self.stdout.write(f"rooms     {Room.objects.count()}")
        self.stdout.write(f"messages  {Message.objects.count()}")
        self.stdout.write("")
        days = [first + timedelta(days=i) for i in range(DAYS)]
        rows = [("DAY", "MESSAGES")] + [(d.isoformat(), str(counts.get(d, 0))) for d in days]
        self.stdout.write(format_table(rows))
        if plot:
            self._plot(plot, days, [counts.get(d, 0) for d in days])
            self.stdout.write(f"Wrote {plot}.")

    @staticmethod
    def _plot(path: str, days, values) -> None:
        try:
            import matplotlib

            matplotlib.use("Agg")  # no display on a server
            from matplotlib import pyplot
        except ImportError as exc:
            raise CommandError("--plot needs matplotlib: pip install 'matplotlib>=3.8,<4'.") from exc
        figure, axes = pyplot.subplots(figsize=(8, 3.5))
        try:
            axes.bar([d.strftime("%m-%d") for d in days], values)
            axes.set_title(f"Messages per day (UTC), last {DAYS} days")
            axes.tick_params(axis="x", labelrotation=45)
            figure.tight_layout()
            try:
                figure.savefig(path, format="png")
            except OSError as exc:
                raise CommandError(f"Cannot write {path}: {exc.strerror}.") from exc
        finally:
            pyplot.close(figure)
