"""Writes on users, shared by the API, the admin and the management commands."""

from django.contrib.auth.password_validation import validate_password
from django.db import IntegrityError, transaction

from accounts.models import User
from accounts.tokens import refresh_tokens_revoke_all


class UsernameTaken(Exception):
    pass


def username_is_taken(username: str) -> bool:
    return User.objects.filter(username__iexact=username).exists()


@transaction.atomic
def user_register(*, username: str, password: str) -> User:
    """Create a user after Django's password validators accept the password."""
    validate_password(password, user=User(username=username))
    if username_is_taken(username):
        raise UsernameTaken(username)
    user = User(username=username)
    user.set_password(password)
    try:
        with transaction.atomic():
            user.save()
    except IntegrityError as exc:  # a concurrent registration won the case-insensitive constraint
        raise UsernameTaken(username) from exc
    return user


@transaction.atomic
def user_set_active(*, user: User, active: bool) -> User:
    """Activate or deactivate a user; deactivation revokes tokens and closes their sockets."""
    from chat.events import publish_user_deactivated

    user.is_active = active
    user.save(update_fields=["is_active"])
    if not active:
        refresh_tokens_revoke_all(user=user)
        transaction.on_commit(lambda: publish_user_deactivated(user_id=user.pk))
    return user
