"""accounts.tokens: the user an access token names, read in plain SQL, is the ORM's User."""

from datetime import UTC, datetime, timedelta

import pytest
from django.core.management import call_command
from django.utils import timezone
from rest_framework_simplejwt.token_blacklist.models import BlacklistedToken, OutstandingToken
from rest_framework_simplejwt.tokens import AccessToken

from accounts.models import User
from accounts.tests.factories import UserFactory, field_values
from accounts.tokens import InvalidToken, access_token_user, refresh_tokens_revoke_all, token_pair_issue

pytestmark = pytest.mark.django_db


def test_a_tokens_user_is_the_instance_the_orm_builds():
    UserFactory(username="before")
    alice = UserFactory(username="alice", email="alice@example.com", first_name="Älice", is_staff=True)
    User.objects.filter(pk=alice.pk).update(last_login=datetime(2026, 5, 6, 7, 8, 9, 123456, tzinfo=UTC))
    token = AccessToken.for_user(alice)

    claims = access_token_user(str(token))

    assert field_values(claims.user) == field_values(User.objects.get(pk=alice.pk))
    assert claims.user.last_login == datetime(2026, 5, 6, 7, 8, 9, 123456, tzinfo=UTC)
    assert (claims.user._state.adding, claims.user._state.db) == (False, "default")
    assert claims.expires_at == float(token["exp"])


@pytest.mark.parametrize(
    "user_id", ["999999", 999999, "not a number", None], ids=["unknown", "unknown-int", "garbage", "missing"]
)
def test_a_token_naming_no_user_is_refused(user_id):
    token = AccessToken()
    token["user_id"] = user_id

    with pytest.raises(InvalidToken, match="User not found or inactive"):
        access_token_user(str(token))


def test_an_inactive_users_token_is_refused():
    bob = UserFactory(username="bob", is_active=False)

    with pytest.raises(InvalidToken, match="User not found or inactive"):
        access_token_user(str(AccessToken.for_user(bob)))


@pytest.mark.django_db
def test_flushexpiredtokens_deletes_the_records_of_expired_refresh_tokens_and_keeps_the_others():
    # The README's maintenance command: each login and refresh records a token, each revocation a blacklist entry.
    user = UserFactory()
    token_pair_issue(user=user)
    refresh_tokens_revoke_all(user=user)
    OutstandingToken.objects.update(expires_at=timezone.now() - timedelta(seconds=1))
    kept = token_pair_issue(user=user)

    call_command("flushexpiredtokens")

    assert [token.token for token in OutstandingToken.objects.all()] == [kept.refresh_token]
    assert BlacklistedToken.objects.count() == 0
