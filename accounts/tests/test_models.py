"""accounts.User: case-insensitive unique usernames enforced by the database, and the username rules."""

import pytest
from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction

from accounts.models import User
from accounts.tests.factories import UserFactory

pytestmark = pytest.mark.django_db


@pytest.mark.parametrize("other_case", ["Alice", "ALICE", "alicE"])
def test_database_refuses_same_username_in_another_case(user, other_case):
    with pytest.raises(IntegrityError), transaction.atomic():
        User.objects.create(username=other_case)

    assert list(User.objects.values_list("username", flat=True)) == ["alice"]


def test_database_refuses_same_username_on_update(user):
    bob = UserFactory(username="bob")
    bob.username = "ALICE"

    with pytest.raises(IntegrityError), transaction.atomic():
        bob.save(update_fields=["username"])


def test_database_refuses_exact_duplicate(user):
    with pytest.raises(IntegrityError), transaction.atomic():
        User.objects.bulk_create([User(username="alice")])


def test_different_usernames_coexist(user):
    UserFactory(username="alicia")

    assert sorted(User.objects.values_list("username", flat=True)) == ["alice", "alicia"]


def test_get_by_natural_key_ignores_case(user):
    assert User.objects.get_by_natural_key("ALICE") == user


@pytest.mark.parametrize("username", ["a", "alice", "Bob_99", "a.b+c-d_e@f", "x" * 150])
def test_username_validator_accepts(username):
    User(username=username).full_clean(exclude=["password"])


@pytest.mark.parametrize(
    ("username", "message"),
    [
        ("", "This field cannot be blank."),
        ("x" * 151, "Ensure this value has at most 150 characters (it has 151)."),
        ("with space", "Enter a valid username."),
        ("semi;colon", "Enter a valid username."),
        ("slash/", "Enter a valid username."),
        ("ålice", "Enter a valid username."),
        ("名前", "Enter a valid username."),
        ("alice\n", "Enter a valid username."),
    ],
)
def test_username_validator_refuses(username, message):
    with pytest.raises(ValidationError) as excinfo:
        User(username=username).full_clean(exclude=["password"])

    assert list(excinfo.value.message_dict) == ["username"]
    assert excinfo.value.message_dict["username"][0].startswith(message)


def test_full_clean_reports_case_insensitive_duplicate(user):
    with pytest.raises(ValidationError) as excinfo:
        User(username="ALICE").full_clean(exclude=["password"])

    assert excinfo.value.messages == ["Constraint “accounts_user_username_ci_unique” is violated."]


def test_str_is_username(user):
    assert str(user) == "alice"
