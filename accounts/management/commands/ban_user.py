from django.core.management.base import BaseCommand, CommandError

from accounts.models import User
from accounts.services import user_ban, user_unban


class Command(BaseCommand):
    help = "Ban a user (tokens revoked, sockets closed with 4003), or with --unban let them log in again."

    def add_arguments(self, parser):
        parser.add_argument("username")
        parser.add_argument("--unban", action="store_true", help="Reactivate the user instead.")

    def handle(self, *args, username, unban, **options):
        user = User.objects.filter(username__iexact=username).first()
        if user is None:
            raise CommandError(f"Unknown user {username!r}.")
        # A user already so is left alone, as by the admin's actions: the audit log records only changes.
        name = user.username
        if unban:
            text = f"Unbanned {name}." if user_unban(user=user) else f"{name} is not banned; nothing changed."
        else:
            text = f"Banned {name}." if user_ban(user=user) else f"{name} is already banned; nothing changed."
        self.stdout.write(text)
