from django.contrib.auth.models import Group
from django.core.management.base import BaseCommand, CommandError

from accounts.models import User


class Command(BaseCommand):
    help = "Add an existing user to the Moderators group and make them staff (able to log in to admin)."

    def add_arguments(self, parser):
        parser.add_argument("username")

    def handle(self, *args, username, **options):
        user = User.objects.filter(username__iexact=username).first()
        if user is None:
            raise CommandError(f"Unknown user {username!r}.")
        group = Group.objects.filter(name="Moderators").first()
        if group is None:
            raise CommandError("The Moderators group is missing; run manage.py migrate.")
        user.is_staff = True
        user.save(update_fields=["is_staff"])
        user.groups.add(group)
        self.stdout.write(f"{user.username} is a moderator.")
