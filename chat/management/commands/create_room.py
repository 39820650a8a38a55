from django.core.management.base import BaseCommand, CommandError

from chat.services import RoomRejected, room_create


class Command(BaseCommand):
    help = "Create a room. NAME is 1-50 letters, digits, hyphens or underscores; an existing NAME is an error."

    def add_arguments(self, parser):
        parser.add_argument("name")
        parser.add_argument("--title", default="", help="A human-readable title.")

    def handle(self, *args, name, title, **options):
        try:
            room = room_create(user=None, name=name, title=title)
        except RoomRejected as exc:
            raise CommandError(f"{exc.field}: {exc.detail}") from exc
        self.stdout.write(f"Created room {room.name}.")
