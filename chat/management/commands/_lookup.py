"""Lookups shared by the operator commands: unknown names become CommandError (exit status 1)."""

from django.core.management.base import CommandError

from accounts.models import User
from chat import selectors
from chat.models import Room


def room_or_error(name: str) -> Room:
    room = selectors.room_get(name=name)
    if room is None:
        raise CommandError(f"Unknown room {name!r}.")
    return room


def user_or_error(username: str) -> User:
    user = User.objects.filter(username__iexact=username).first()
    if user is None:
        raise CommandError(f"Unknown user {username!r}.")
    return user
