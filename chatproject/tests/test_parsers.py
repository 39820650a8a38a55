"""chatproject.parsers: a JSON body the decoder cannot take is a 400 like any malformed JSON, never a 500;
a form body that is not text is a 400 too, never stored with replacement characters.

In-process for the parser itself, and against a real server process on every endpoint that reads a
JSON body, where the request runs on the server's own request threads and stack.
"""

import io

import pytest
from rest_framework.exceptions import ParseError

from chatproject.parsers import JSONParser
from tests.conftest import launch_server

NESTED_TOO_DEEPLY = {"detail": "JSON parse error - nested too deeply."}
DEEP = 1000


def nested(depth: int) -> str:
    return "[" * depth + "]" * depth


def nested_objects(depth: int) -> str:
    return '{"a": ' * depth + "1" + "}" * depth


def test_json_nested_too_deeply_is_a_parse_error():
    with pytest.raises(ParseError) as raised:
        JSONParser().parse(io.BytesIO(nested(100_000).encode()))

    assert raised.value.detail == NESTED_TOO_DEEPLY["detail"]


def test_json_nested_within_reach_is_parsed():
    assert JSONParser().parse(io.BytesIO(nested_objects(50).encode()))["a"]["a"]["a"]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    with launch_server(tmp_path_factory.mktemp("parsers")) as running:
        yield running


@pytest.fixture(scope="module")
def token(server) -> str:
    return server.new_user("parser").access_token


# Every endpoint that reads a JSON body, with the deep value where a client would put it.
JSON_BODIES = [
    ("/register", nested(DEEP)),
    ("/token", nested(DEEP)),
    ("/token/refresh", f'{{"refresh_token": {nested(DEEP)}}}'),
    ("/logout", f'{{"refresh_token": {nested(DEEP)}}}'),
    ("/rooms", f'{{"name": {nested(DEEP)}}}'),
    ("/messages/general", f'{{"content": {nested(DEEP)}}}'),
    ("/messages/general", f'{{"content": "hi", "client_id": {nested_objects(DEEP)}}}'),
]


@pytest.mark.server
@pytest.mark.parametrize(("path", "body"), JSON_BODIES, ids=[f"{p}-{n}" for n, (p, _) in enumerate(JSON_BODIES)])
def test_json_nested_too_deeply_answers_400_on_every_endpoint(server, token, path, body):
    response = server.post(path, raw_body=body.encode(), headers={"Content-Type": "application/json"}, token=token)

    assert (response.status, response.json()) == (400, NESTED_TOO_DEEPLY)
    assert '"level": "ERROR"' not in server.log()


@pytest.mark.server
@pytest.mark.parametrize("path", ["/register", "/token", "/messages/general"])
def test_an_integer_past_pythons_digit_limit_answers_400(server, token, path):
    body = f'{{"username": "u", "password": "p", "content": {"7" * 4301}}}'

    response = server.post(path, raw_body=body.encode(), headers={"Content-Type": "application/json"}, token=token)

    assert response.status == 400, response.body
    assert response.json()["detail"].startswith("JSON parse error - Exceeds the limit (4300 digits)")
    assert '"level": "ERROR"' not in server.log()


@pytest.mark.parametrize(
    "body",
    [
        b"content=h%FFllo",  # not UTF-8
        b"content=%ED%A0%80",  # an encoded surrogate
        b"content=h\xffllo",  # the raw byte
        b"content=ok&client_id=%C0%AF",  # an overlong encoding, in another field
    ],
)
def test_a_form_value_that_is_not_utf8_is_refused_and_nothing_is_stored(server, token, body):
    before = server.last_seq(token, "general")
    response = server.post(
        "/messages/general", raw_body=body, token=token, headers={"Content-Type": "application/x-www-form-urlencoded"}
    )

    assert (response.status, response.json()) == (400, {"detail": "Form parse error - not utf-8 text."})
    assert server.last_seq(token, "general") == before


def test_a_form_in_utf8_is_read_in_full(server, token):
    response = server.post(
        "/messages/general",
        raw_body=b"content=caf%C3%A9+%F0%9F%98%80&client_id=f-1",
        token=token,
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )

    assert response.status == 201
    assert (response.json()["content"], response.json()["client_id"]) == ("café 😀", "f-1")
