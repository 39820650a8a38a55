from datetime import timedelta

from django.core.management.base import BaseCommand, CommandError
from django.utils import timezone

from chat.management.commands._lookup import room_or_error, user_or_error
from chat.services import mute_create


class Command(BaseCommand):
    help = "Mute USERNAME in ROOM for N minutes: their sends get error `muted` (REST: 403)."

    def add_arguments(self, parser):
        parser.add_argument("username")
        parser.add_argument("room")
        parser.add_argument("--minutes", type=int, required=True, help="How long, in minutes (≥ 1).")

    def handle(self, *args, username, room, minutes, **options):
        if minutes < 1:
            raise CommandError("--minutes must be at least 1.")
        try:
            until = timezone.now() + timedelta(minutes=minutes)
        except OverflowError:  # past the year 9999
            raise CommandError(f"--minutes {minutes} is too long: the mute would end after the year 9999.") from None
        user, room_obj = user_or_error(username), room_or_error(room)
        mute = mute_create(user=user, room=room_obj, until=until)
        self.stdout.write(f"Muted {user.username} in {room_obj.name} until {mute.until.isoformat()}.")
