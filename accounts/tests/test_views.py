"""POST /register, /token, /token/refresh, /logout and GET /users/me, as issue 2 specifies them."""

import base64
import json
from datetime import timedelta
from unittest.mock import ANY
from urllib.parse import urlencode

import jwt
import pytest
from django.conf import settings
from django.utils import timezone
from rest_framework.test import APIClient
from rest_framework_simplejwt.tokens import AccessToken, RefreshToken

from accounts.models import User
from accounts.tests.factories import DEFAULT_PASSWORD, UserFactory
from accounts.tokens import token_pair_issue

pytestmark = pytest.mark.django_db

BAD_CREDENTIALS = {"detail": "Incorrect username or password"}
NOT_PROVIDED = {"detail": "Authentication credentials were not provided."}
REFRESH_REFUSED = {"detail": "Refresh token is invalid, expired or revoked"}


def assert_unauthorized(response, body: dict) -> None:
    assert response.status_code == 401
    assert response["WWW-Authenticate"] == "Bearer"
    assert response.json() == body


def assert_token_pair(response, user: User) -> dict:
    """A 200 token response whose tokens are valid, of the right type and name `user`."""
    assert response.status_code == 200
    body = response.json()
    assert body == {"access_token": ANY, "refresh_token": ANY, "token_type": "bearer", "expires_in": 1800}
    access = AccessToken(body["access_token"])
    refresh = RefreshToken(body["refresh_token"])
    assert (access["token_type"], access["user_id"]) == ("access", str(user.pk))
    assert (refresh["token_type"], refresh["user_id"]) == ("refresh", str(user.pk))
    assert access["exp"] - access["iat"] == body["expires_in"]
    return body


def bearer(token: str) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {token}")
    return client


def post_form(client: APIClient, path: str, data: dict):
    """POST application/x-www-form-urlencoded, as an OAuth2 client sends the password grant."""
    return client.post(path, urlencode(data), content_type="application/x-www-form-urlencoded")


def b64url(data: dict) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()


# --- POST /register -------------------------------------------------------------------------


def test_register_creates_user_and_answers_id_and_username_only(api_client):
    response = api_client.post("/register", {"username": "bob", "password": DEFAULT_PASSWORD}, format="json")

    assert response.status_code == 201
    bob = User.objects.get(username="bob")
    assert response.json() == {"id": bob.pk, "username": "bob"}
    assert bob.check_password(DEFAULT_PASSWORD)
    assert bob.is_active


def test_register_then_token_works(api_client):
    api_client.post("/register", {"username": "bob", "password": DEFAULT_PASSWORD}, format="json")

    response = post_form(api_client, "/token", {"username": "bob", "password": DEFAULT_PASSWORD})

    assert_token_pair(response, User.objects.get(username="bob"))


def test_register_accepts_every_allowed_username_character_and_150_chars(api_client):
    for username in ["a.b+c-d_e@f9", "Z" * 150, "x"]:
        response = api_client.post("/register", {"username": username, "password": DEFAULT_PASSWORD}, format="json")
        assert response.status_code == 201, response.json()
        assert response.json() == {"id": User.objects.get(username=username).pk, "username": username}


@pytest.mark.parametrize("duplicate", ["alice", "Alice", "ALICE", "aLiCe"])
def test_register_refuses_a_username_taken_in_any_case(api_client, user, duplicate):
    response = api_client.post("/register", {"username": duplicate, "password": DEFAULT_PASSWORD}, format="json")

    assert response.status_code == 400
    assert response.json() == {"username": ["A user with that username already exists."]}
    assert User.objects.filter(username__iexact="alice").count() == 1


def test_register_duplicate_that_slips_past_the_serializer_is_still_a_400(api_client, user, monkeypatch):
    # A concurrent registration can win between the serializer's check and the insert:
    # the database constraint then decides, and the client still gets a 400, never a 500.
    monkeypatch.setattr("accounts.serializers.username_is_taken", lambda username: False)
    monkeypatch.setattr("accounts.services.username_is_taken", lambda username: False)

    response = api_client.post("/register", {"username": "ALICE", "password": DEFAULT_PASSWORD}, format="json")

    assert response.status_code == 400
    assert response.json() == {"username": ["A user with that username already exists."]}


INVALID_USERNAME = (
    "Enter a valid username. This value may contain only unaccented lowercase a-z and uppercase A-Z letters, "
    "numbers, and @/./+/-/_ characters."
)


@pytest.mark.parametrize(
    ("username", "errors"),
    [
        ("bad name", [INVALID_USERNAME]),
        ("bob!", [INVALID_USERNAME]),
        ("bob/../x", [INVALID_USERNAME]),
        ("ålice", [INVALID_USERNAME]),
        (" bob", [INVALID_USERNAME]),
        ("b" * 151, ["Ensure this field has no more than 150 characters."]),
        ("", ["This field may not be blank."]),
        (None, ["This field may not be null."]),
        (42, ["Must be a string."]),
        (["bob"], ["Must be a string."]),
    ],
)
def test_register_refuses_bad_usernames(api_client, username, errors):
    response = api_client.post("/register", {"username": username, "password": DEFAULT_PASSWORD}, format="json")

    assert response.status_code == 400
    assert response.json() == {"username": errors}
    assert not User.objects.exists()


@pytest.mark.parametrize(
    ("username", "password", "errors"),
    [
        ("bobbington", "bobbington1", ["The password is too similar to the username."]),
        ("bob", "x7#kQ", ["This password is too short. It must contain at least 8 characters."]),
        ("bob", "password", ["This password is too common."]),
        ("bob", "83920174659", ["This password is entirely numeric."]),
        (
            "bob",
            "1234567",
            [
                "This password is too short. It must contain at least 8 characters.",
                "This password is too common.",
                "This password is entirely numeric.",
            ],
        ),
        ("bob", "", ["This field may not be blank."]),
        ("bob", 12345678901, ["Must be a string."]),
    ],
)
def test_register_refuses_passwords_django_validators_reject(api_client, username, password, errors):
    response = api_client.post("/register", {"username": username, "password": password}, format="json")

    assert response.status_code == 400
    assert response.json() == {"password": errors}
    assert not User.objects.exists()


@pytest.mark.parametrize(
    ("body", "errors"),
    [
        ({}, {"username": ["This field is required."], "password": ["This field is required."]}),
        ({"username": "bob"}, {"password": ["This field is required."]}),
        ({"password": DEFAULT_PASSWORD}, {"username": ["This field is required."]}),
    ],
)
def test_register_names_missing_fields(api_client, body, errors):
    response = api_client.post("/register", body, format="json")

    assert response.status_code == 400
    assert response.json() == errors


def test_register_refuses_malformed_json(api_client):
    response = api_client.post("/register", '{"username": "bob",', content_type="application/json")

    assert response.status_code == 400
    assert response["Content-Type"] == "application/json"
    assert response.json() == {
        "detail": "JSON parse error - Expecting property name enclosed in double quotes: line 1 column 20 (char 19)"
    }


@pytest.mark.parametrize(
    ("raw", "kind"),
    [
        ("[]", "Invalid data. Expected a dictionary, but got list."),
        ('["bob", "pw"]', "Invalid data. Expected a dictionary, but got list."),
        ("42", "Invalid data. Expected a dictionary, but got int."),
        ('"bob"', "Invalid data. Expected a dictionary, but got str."),
        ("null", "No data provided"),
    ],
)
def test_register_refuses_json_that_is_not_an_object(api_client, raw, kind):
    response = api_client.post("/register", raw, content_type="application/json")

    assert response.status_code == 400
    assert response.json() == {"non_field_errors": [kind]}


# --- POST /token ----------------------------------------------------------------------------


def test_token_form_encoded_password_grant(api_client, user):
    response = post_form(
        api_client, "/token", {"grant_type": "password", "username": "alice", "password": DEFAULT_PASSWORD}
    )

    assert_token_pair(response, user)


def test_token_form_encoded_without_grant_type(api_client, user):
    response = post_form(api_client, "/token", {"username": "alice", "password": DEFAULT_PASSWORD})

    assert_token_pair(response, user)


def test_token_json_body(api_client, user):
    response = api_client.post("/token", {"username": "alice", "password": DEFAULT_PASSWORD}, format="json")

    assert_token_pair(response, user)


def test_token_access_token_opens_users_me(api_client, user):
    body = post_form(api_client, "/token", {"username": "alice", "password": DEFAULT_PASSWORD}).json()

    response = bearer(body["access_token"]).get("/users/me")

    assert response.status_code == 200
    assert response.json()["username"] == "alice"


@pytest.mark.parametrize("grant_type", ["client_credentials", "refresh_token", "authorization_code", "PASSWORD"])
def test_token_refuses_other_grant_types(api_client, user, grant_type):
    response = post_form(
        api_client, "/token", {"grant_type": grant_type, "username": "alice", "password": DEFAULT_PASSWORD}
    )

    assert response.status_code == 400
    assert response.json() == {"grant_type": ['Unsupported grant type; only "password" is accepted.']}


def test_token_refuses_other_grant_type_in_json(api_client, user):
    body = {"grant_type": "client_credentials", "username": "alice", "password": DEFAULT_PASSWORD}

    response = api_client.post("/token", body, format="json")

    assert response.status_code == 400
    assert response.json() == {"grant_type": ['Unsupported grant type; only "password" is accepted.']}


def test_token_form_grant_type_without_value_counts_as_omitted(api_client, user):
    # RFC 6749 section 3.1: parameters sent without a value are treated as omitted.
    response = post_form(api_client, "/token", {"grant_type": "", "username": "alice", "password": DEFAULT_PASSWORD})

    assert_token_pair(response, user)


@pytest.mark.parametrize("username", ["ALICE", "Alice", "aLIce"])
def test_token_username_is_case_insensitive(api_client, user, username):
    response = post_form(api_client, "/token", {"username": username, "password": DEFAULT_PASSWORD})

    assert_token_pair(response, user)


@pytest.mark.parametrize("username", ["al\u0131ce", "\u0430lice", "alice\u200b", "\uff41lice"])
def test_token_a_name_that_only_folds_or_looks_like_a_users_name_is_unknown(api_client, user, username):
    # On PostgreSQL, UPPER('ı') is 'I': without the ASCII rule "alıce" logged in as alice.
    response = post_form(api_client, "/token", {"username": username, "password": DEFAULT_PASSWORD})

    assert_unauthorized(response, BAD_CREDENTIALS)


def test_token_wrong_password_is_401(api_client, user):
    response = post_form(api_client, "/token", {"username": "alice", "password": "wrong-horse-battery"})

    assert_unauthorized(response, BAD_CREDENTIALS)


def test_token_unknown_user_is_401(api_client, user):
    response = post_form(api_client, "/token", {"username": "mallory", "password": DEFAULT_PASSWORD})

    assert_unauthorized(response, BAD_CREDENTIALS)


def test_token_inactive_user_is_401(api_client):
    UserFactory(username="carol", is_active=False)

    response = post_form(api_client, "/token", {"username": "carol", "password": DEFAULT_PASSWORD})

    assert_unauthorized(response, BAD_CREDENTIALS)


def test_token_json_wrong_password_is_401(api_client, user):
    response = api_client.post("/token", {"username": "alice", "password": "nope-nope-nope"}, format="json")

    assert_unauthorized(response, BAD_CREDENTIALS)


@pytest.mark.parametrize(
    ("body", "errors"),
    [
        ({}, {"username": ["This field is required."], "password": ["This field is required."]}),
        ({"username": "alice"}, {"password": ["This field is required."]}),
        ({"username": 1, "password": 2}, {"username": ["Must be a string."], "password": ["Must be a string."]}),
    ],
)
def test_token_names_missing_or_bad_fields(api_client, user, body, errors):
    response = api_client.post("/token", body, format="json")

    assert response.status_code == 400
    assert response.json() == errors


def test_token_refuses_malformed_and_non_object_json(api_client, user):
    malformed = api_client.post("/token", "{", content_type="application/json")
    listed = api_client.post("/token", '["alice"]', content_type="application/json")

    assert malformed.status_code == 400
    assert malformed.json() == {
        "detail": "JSON parse error - Expecting property name enclosed in double quotes: line 1 column 2 (char 1)"
    }
    assert listed.status_code == 400
    assert listed.json() == {"non_field_errors": ["Invalid data. Expected a dictionary, but got list."]}


# --- POST /token/refresh --------------------------------------------------------------------


def test_refresh_issues_a_new_pair_and_revokes_the_old_refresh_token(api_client, user):
    old = token_pair_issue(user=user)

    response = api_client.post("/token/refresh", {"refresh_token": old.refresh_token}, format="json")

    new = assert_token_pair(response, user)
    assert new["refresh_token"] != old.refresh_token
    assert bearer(new["access_token"]).get("/users/me").status_code == 200
    again = api_client.post("/token/refresh", {"refresh_token": old.refresh_token}, format="json")
    assert_unauthorized(again, REFRESH_REFUSED)


def test_refresh_new_refresh_token_can_be_used_in_turn(api_client, user):
    first = token_pair_issue(user=user)
    second = api_client.post("/token/refresh", {"refresh_token": first.refresh_token}, format="json").json()

    third = api_client.post("/token/refresh", {"refresh_token": second["refresh_token"]}, format="json")

    assert_token_pair(third, user)


def test_refresh_accepts_form_encoded(api_client, user):
    pair = token_pair_issue(user=user)

    response = post_form(api_client, "/token/refresh", {"refresh_token": pair.refresh_token})

    assert_token_pair(response, user)


def _expired_refresh(user) -> str:
    token = RefreshToken.for_user(user)
    token.set_exp(from_time=timezone.now() - timedelta(days=settings.REFRESH_TOKEN_DAYS, seconds=1))
    return str(token)


def _tampered(raw: str, **claims) -> str:
    header, payload, signature = raw.split(".")
    data = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    return ".".join([header, b64url({**data, **claims}), signature])


@pytest.mark.parametrize(
    "make_token",
    [
        pytest.param(lambda user: "not-a-token", id="garbage"),
        pytest.param(lambda user: "a.b.c", id="malformed"),
        pytest.param(_expired_refresh, id="expired"),
        pytest.param(lambda user: str(AccessToken.for_user(user)), id="access-token"),
        pytest.param(
            lambda user: _tampered(str(RefreshToken.for_user(user)), user_id=str(UserFactory().pk)), id="tampered"
        ),
        pytest.param(
            lambda user: jwt.encode(RefreshToken.for_user(user).payload, "another-key", algorithm="HS256"),
            id="foreign-key",
        ),
    ],
)
def test_refresh_refuses_invalid_tokens(api_client, user, make_token):
    response = api_client.post("/token/refresh", {"refresh_token": make_token(user)}, format="json")

    assert_unauthorized(response, REFRESH_REFUSED)


def test_refresh_refuses_token_of_inactive_user(api_client, user):
    pair = token_pair_issue(user=user)
    user.is_active = False
    user.save()

    response = api_client.post("/token/refresh", {"refresh_token": pair.refresh_token}, format="json")

    assert_unauthorized(response, REFRESH_REFUSED)


def test_refresh_requires_refresh_token_field(api_client):
    response = api_client.post("/token/refresh", {}, format="json")

    assert response.status_code == 400
    assert response.json() == {"refresh_token": ["This field is required."]}


# --- POST /logout ---------------------------------------------------------------------------


def test_logout_revokes_the_refresh_token(api_client, user):
    pair = token_pair_issue(user=user)

    response = bearer(pair.access_token).post("/logout", {"refresh_token": pair.refresh_token}, format="json")

    assert response.status_code == 204
    assert response.content == b""
    refused = api_client.post("/token/refresh", {"refresh_token": pair.refresh_token}, format="json")
    assert_unauthorized(refused, REFRESH_REFUSED)


def test_logout_leaves_other_refresh_tokens_valid(api_client, user):
    phone = token_pair_issue(user=user)
    laptop = token_pair_issue(user=user)

    bearer(phone.access_token).post("/logout", {"refresh_token": phone.refresh_token}, format="json")

    assert_token_pair(post_form(api_client, "/token/refresh", {"refresh_token": laptop.refresh_token}), user)


def test_logout_without_bearer_is_401(api_client, user):
    pair = token_pair_issue(user=user)

    response = api_client.post("/logout", {"refresh_token": pair.refresh_token}, format="json")

    assert_unauthorized(response, NOT_PROVIDED)
    assert_token_pair(post_form(api_client, "/token/refresh", {"refresh_token": pair.refresh_token}), user)


def test_logout_refuses_someone_elses_refresh_token(auth_client, api_client):
    bob = UserFactory(username="bob")
    bobs = token_pair_issue(user=bob)

    response = auth_client.post("/logout", {"refresh_token": bobs.refresh_token}, format="json")

    assert response.status_code == 400
    assert response.json() == {"refresh_token": ["Token is invalid, expired, revoked or not yours."]}
    assert_token_pair(post_form(api_client, "/token/refresh", {"refresh_token": bobs.refresh_token}), bob)


@pytest.mark.parametrize(
    ("body", "errors"),
    [
        ({}, {"refresh_token": ["This field is required."]}),
        ({"refresh_token": "garbage"}, {"refresh_token": ["Token is invalid, expired, revoked or not yours."]}),
    ],
)
def test_logout_refuses_missing_or_invalid_refresh_token(auth_client, body, errors):
    response = auth_client.post("/logout", body, format="json")

    assert response.status_code == 400
    assert response.json() == errors


# --- GET /users/me --------------------------------------------------------------------------


def test_me_returns_id_username_and_date_joined(auth_client, user):
    response = auth_client.get("/users/me")

    assert response.status_code == 200
    assert response.json() == {"id": user.pk, "username": "alice", "date_joined": user.date_joined.isoformat()}
    joined = timezone.datetime.fromisoformat(response.json()["date_joined"])
    assert joined.utcoffset() == timedelta(0)


def test_me_without_token_is_401(api_client):
    assert_unauthorized(api_client.get("/users/me"), NOT_PROVIDED)


@pytest.mark.parametrize("scheme", ["bearer", "BEARER", "bEaReR"])
def test_me_reads_the_scheme_in_any_case_as_token_type_gives_it(api_client, user, scheme):
    token = api_client.post("/token", {"username": "alice", "password": DEFAULT_PASSWORD}, format="json").json()
    assert token["token_type"] == "bearer"
    api_client.credentials(HTTP_AUTHORIZATION=f"{scheme} {token['access_token']}")

    response = api_client.get("/users/me")

    assert (response.status_code, response.json()["username"]) == (200, "alice")


def test_me_with_other_auth_scheme_is_401(api_client, user):
    api_client.credentials(HTTP_AUTHORIZATION=f"Basic {base64.b64encode(b'alice:' + DEFAULT_PASSWORD.encode())}")

    assert_unauthorized(api_client.get("/users/me"), NOT_PROVIDED)


def _token_not_valid(message: str) -> dict:
    return {
        "detail": "Given token not valid for any token type",
        "code": "token_not_valid",
        "messages": [{"token_class": "AccessToken", "token_type": "access", "message": message}],
    }


def _with_other_signature(raw: str) -> str:
    header, payload, signature = raw.split(".")
    forged = jwt.encode({"forged": True}, "another-key", algorithm="HS256").split(".")[2]
    assert forged != signature
    return ".".join([header, payload, forged])


def _expired_access(user) -> str:
    token = AccessToken.for_user(user)
    token.set_exp(from_time=timezone.now() - timedelta(seconds=settings.ACCESS_TOKEN_SECONDS + 1))
    return str(token)


def _alg_none(user) -> str:
    payload = AccessToken.for_user(user).payload
    return jwt.encode(payload, None, algorithm="none")


@pytest.mark.parametrize(
    ("make_token", "body"),
    [
        pytest.param(lambda user: "not-a-jwt", _token_not_valid("Token is invalid"), id="malformed"),
        pytest.param(lambda user: "a.b.c", _token_not_valid("Token is invalid"), id="malformed-segments"),
        pytest.param(
            lambda user: _tampered(str(AccessToken.for_user(user)), user_id=str(UserFactory().pk)),
            _token_not_valid("Token is invalid"),
            id="tampered-payload",
        ),
        pytest.param(
            lambda user: _with_other_signature(str(AccessToken.for_user(user))),
            _token_not_valid("Token is invalid"),
            id="tampered-signature",
        ),
        pytest.param(
            lambda user: jwt.encode(AccessToken.for_user(user).payload, "another-key", algorithm="HS256"),
            _token_not_valid("Token is invalid"),
            id="foreign-key",
        ),
        pytest.param(_alg_none, _token_not_valid("Token is invalid"), id="alg-none"),
        pytest.param(_expired_access, _token_not_valid("Token is expired"), id="expired"),
        pytest.param(
            lambda user: str(RefreshToken.for_user(user)),
            _token_not_valid("Token has wrong type"),
            id="refresh-as-access",
        ),
    ],
)
def test_me_refuses_bad_tokens(user, make_token, body):
    response = bearer(make_token(user)).get("/users/me")

    assert_unauthorized(response, body)


def test_me_refuses_header_without_token(api_client):
    api_client.credentials(HTTP_AUTHORIZATION="Bearer")

    response = api_client.get("/users/me")

    assert_unauthorized(
        response,
        {"detail": "Authorization header must contain two space-delimited values", "code": "bad_authorization_header"},
    )


def test_me_refuses_token_of_inactive_user(user):
    access = token_pair_issue(user=user).access_token
    User.objects.filter(pk=user.pk).update(is_active=False)

    response = bearer(access).get("/users/me")

    assert_unauthorized(response, {"detail": "User is inactive", "code": "user_inactive"})


def test_me_refuses_token_of_deleted_user(user):
    access = token_pair_issue(user=user).access_token
    user.delete()

    response = bearer(access).get("/users/me")

    assert_unauthorized(response, {"detail": "User not found", "code": "user_not_found"})


@pytest.mark.django_db
def test_a_pair_issued_across_a_second_boundary_has_iat_and_exp_expires_in_apart(user, monkeypatch):
    # The refresh token reads the clock just before a second ends, the access token just after.
    from rest_framework_simplejwt import tokens as simplejwt_tokens

    start = timezone.now().replace(microsecond=999_999)
    readings = iter([start, start + timedelta(microseconds=1)])
    monkeypatch.setattr(simplejwt_tokens, "aware_utcnow", lambda: next(readings, start + timedelta(microseconds=2)))

    pair = token_pair_issue(user=user)

    access = AccessToken(pair.access_token)
    assert next(readings, None) is None  # SimpleJWT read the clock twice, across the boundary
    assert (access["iat"], access["exp"] - access["iat"]) == (int(start.timestamp()), pair.expires_in)
