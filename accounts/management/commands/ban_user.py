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
        # As the admin's actions: a user already so is left alone, and the audit log records only changes.
        if unban and user.is_active:
            self.stdout.write(f"{user.username} is not banned; nothing changed.")
        elif unban:
            user_unban(user=user)
            self.stdout.write(f"Unbanned {user.username}.")
        elif not user.is_active:
            self.stdout.write(f"{user.username} is already banned; nothing changed.")
        else:
            user_ban(user=user)
            self.stdout.write(f"Banned {user.username}.")
