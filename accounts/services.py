"""Writes on users, shared by the API, the admin and the management commands."""

import contextlib
import functools
import threading
from collections.abc import Iterator

from django.conf import settings
from django.contrib.auth import authenticate
from django.contrib.auth.password_validation import validate_password
from django.db import IntegrityError, close_old_connections, connections, transaction

from accounts.models import User
from accounts.tokens import refresh_tokens_revoke_all
from chatproject.ratelimit import RateLimited, hit, parse_rate, peek, remember, remembers
from chatproject.ratelimit import client_ip as client_address

KNOWN_ADDRESS_SECONDS = 30 * 24 * 3600


class UsernameTaken(Exception):
    pass


def username_is_taken(username: str) -> bool:
    return User.objects.filter(username__iexact=username).exists()


@functools.cache
def _hashing_slots(concurrency: int) -> threading.BoundedSemaphore:
    return threading.BoundedSemaphore(concurrency)


@contextlib.contextmanager
def password_hashing_slot() -> Iterator[None]:
    """Wait until fewer than PASSWORD_HASH_CONCURRENCY passwords are being hashed (0: no limit).

    A hash keeps a core busy for a good part of a second: unbounded, a burst of logins takes every
    core from the event loop and the chat stalls; bounded, the logins queue behind each other.
    """
    concurrency = settings.PASSWORD_HASH_CONCURRENCY
    if not concurrency:
        yield
        return
    slots = _hashing_slots(concurrency)
    if not slots.acquire(blocking=False):
        # A queued request gives its database connection back (to the pool, on PostgreSQL) rather
        # than keep it idle while the chat waits for one; the next query opens another.
        if not any(conn.in_atomic_block for conn in connections.all(initialized_only=True)):
            close_old_connections()
        slots.acquire()
    try:
        yield
    finally:
        slots.release()


def user_register(*, username: str, password: str) -> User:
    """Create a user after Django's password validators accept the password."""
    validate_password(password, user=User(username=username))
    if username_is_taken(username):
        raise UsernameTaken(username)
    user = User(username=username)
    # Hashed before the transaction: on SQLite a transaction holds the database's write lock,
    # and every chat message would wait for the hash.
    with password_hashing_slot():
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
        user_id = user.pk  # not read at the commit: a deleted user's pk is None by then
        transaction.on_commit(lambda: publish_user_deactivated(user_id=user_id))
    return user


BAN_PERMISSION = "accounts.ban_user"


def user_may_ban(*, actor: User, user: User) -> bool:
    """Whether a moderator may ban (or unban) `user`: the ban permission; nobody bans themselves; only a
    superuser bans a superuser. An operator at the shell (ban_user) is not asked."""
    return actor.has_perm(BAN_PERMISSION) and user.pk != actor.pk and (actor.is_superuser or not user.is_superuser)


@transaction.atomic
def user_ban(*, user: User, actor: User | None = None) -> bool:
    """Deactivate a user: their tokens stop working and their sockets close with 4003. A user already
    banned is left alone (nothing revoked, sent or recorded again); returns whether anything changed."""
    from chat.audit import audit_record

    if not _lock_is_active(user):
        return False
    user_set_active(user=user, active=False)
    audit_record(actor=actor, action="ban", target=user)
    return True


@transaction.atomic
def user_unban(*, user: User, actor: User | None = None) -> bool:
    """Reactivate a banned user; they log in again to get new tokens. Returns whether they were banned."""
    from chat.audit import audit_record

    if _lock_is_active(user) in (True, None):
        return False
    user_set_active(user=user, active=True)
    audit_record(actor=actor, action="unban", target=user)
    return True


def _lock_is_active(user: User) -> bool | None:
    """The user's is_active as committed, their row locked until the transaction ends (None: the user
    is gone); the instance is brought up to date. Two moderators banning at once: the second sees the
    first's ban and records nothing (a stale instance from a list page would say "active")."""
    active = User.objects.select_for_update().filter(pk=user.pk).values_list("is_active", flat=True).first()
    if active is not None:
        user.is_active = active
    return active


def user_may_manage(*, actor: User, user: User) -> bool:
    """Whether a staff member may change or delete `user` in the admin (with the model permission as
    well): a superuser anyone; anyone else themselves and users who are not staff. Who may do what is a
    superuser's to give: otherwise `change_user` alone would set a staff member's password, log in as
    them and take their permissions."""
    return actor.is_superuser or user.pk == actor.pk or not (user.is_staff or user.is_superuser)


def user_privileges(user: User) -> dict:
    """What a user may do, as the audit log records it."""
    return {
        "is_staff": user.is_staff,
        "is_superuser": user.is_superuser,
        "groups": sorted(user.groups.values_list("name", flat=True)),
        "user_permissions": sorted(
            f"{app}.{codename}"
            for app, codename in user.user_permissions.values_list("content_type__app_label", "codename")
        ),
    }


def user_privileges_changed(*, user: User, before: dict, actor: User | None = None) -> None:
    """Record a change of `user`'s privileges (user_privileges before and now), if there was one."""
    from chat.audit import audit_record

    after = user_privileges(user)
    if after != before:
        audit_record(actor=actor, action="user_privileges", target=user, detail={"before": before, "after": after})


def user_delete(*, user: User, actor: User | None = None) -> None:
    """Delete a user and their messages, each message as a moderator's delete (the rooms' sockets told,
    each recorded in the audit log), their mutes as unmutes, then the account, recorded as user_delete.
    The user is deactivated first (no separate `ban` entry), so nothing they send meanwhile is stored
    behind the deletion's back; their sockets close with 4003."""
    from chat.audit import audit_record
    from chat.models import Message, Mute
    from chat.services import message_delete, mute_delete

    if user.is_active:
        user_set_active(user=user, active=False)
    message_delete(messages=Message.objects.filter(user=user), actor=actor)
    mute_delete(mutes=Mute.objects.filter(user=user), actor=actor)
    with transaction.atomic():
        audit_record(actor=actor, action="user_delete", target=user, detail={"username": user.username})
        user.delete()


def limit_per_address(request, scope: str) -> str:
    """Count one request of this client address against AUTH_RATE; return the address."""
    address = client_address(request.META, settings.TRUSTED_PROXIES)
    hit(scope, address, parse_rate(settings.AUTH_RATE))
    return address


def user_login(*, request, username: str, password: str, client_ip: str) -> User | None:
    """Check a username and password; None for wrong ones (unknown and inactive users alike).

    Failed logins are counted per username and per (username, address). Past the limit the
    username refuses further attempts with RateLimited until the window ends, except from
    addresses that have logged in as that user before: an attacker can slow guessing but
    cannot lock the real user out of their usual devices.
    """
    rate = parse_rate(settings.LOGIN_FAILURE_RATE)
    name = username.lower()
    known_key = f"login-known:{name}:{client_ip}"
    scopes = [("login-failures-from", f"{name}:{client_ip}")]
    if not remembers(known_key):
        scopes.append(("login-failures", name))
    waits = [wait for scope, key in scopes if (wait := peek(scope, key, rate)) is not None]
    if waits:
        raise RateLimited(max(waits))
    with password_hashing_slot():
        user = authenticate(request, username=username, password=password)
    if user is None:
        for scope, key in [("login-failures-from", f"{name}:{client_ip}"), ("login-failures", name)]:
            with contextlib.suppress(RateLimited):  # counted; the next attempt is refused
                hit(scope, key, rate)
        return None
    remember(known_key, KNOWN_ADDRESS_SECONDS)
    return user
