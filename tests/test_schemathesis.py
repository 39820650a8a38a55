"""schemathesis against the live /api/schema/ of the real server: a short, bounded, deterministic run.

Every operation gets generated requests, valid ones and ones the schema forbids, with a valid Bearer
token; the operations that need one get them again without it. Every answer must be no server error,
documented (status code, content type, body schema, headers), and a refusal without a token must be
401 with `WWW-Authenticate: Bearer`. Failures are collected over the whole run and reported together,
each with a curl command that replays it.
"""

import copy
from collections.abc import Callable, Iterable

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, Verbosity, given
from hypothesis import settings as hypothesis_settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.errors import FailureGroup
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    ignored_auth,
    negative_data_rejection,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from tests.conftest import ChatUser, launch_server

pytestmark = pytest.mark.server

EXAMPLES_PER_OPERATION = 20
REQUEST_TIMEOUT_SECONDS = 10
EXISTING_ROOM = "general"  # made by the data migration
RESPONSE_CONFORMANCE = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
    response_headers_conformance,
]
# Both rate limits are off (the contract's env names), so the run meets no 429 it did not ask for.
NO_RATE_LIMITS = {"AUTH_RATE": "0", "CHAT_MESSAGE_RATE": "0"}
# ...and low in a run of their own, where the operations they guard must document their 429.
LOW_RATE_LIMITS = {"AUTH_RATE": "3/min", "CHAT_MESSAGE_RATE": "3/min"}


@pytest.fixture(scope="module")
def api(tmp_path_factory):
    with launch_server(tmp_path_factory.mktemp("schemathesis"), **NO_RATE_LIMITS) as server:
        yield server


@pytest.fixture(scope="module")
def user(api) -> ChatUser:
    return api.new_user("fuzz")


@pytest.fixture(scope="module")
def schema(api):
    return schemathesis.openapi.from_url(f"{api.base_url}/api/schema/", timeout=REQUEST_TIMEOUT_SECONDS)


def operations(schema) -> list:
    return [result.ok() for result in schema.get_all_operations()]


def needs_auth(operation) -> bool:
    """True when every security alternative of the operation names a scheme (none is `{}`)."""
    security = operation.definition.raw.get("security", operation.schema.raw_schema.get("security", []))
    return bool(security) and all(requirement for requirement in security)


def path_variants(operation) -> list[dict[str, str]]:
    """Generated path parameters, and for a {room} one an existing room, so requests get past the 404."""
    names = {parameter.name for parameter in operation.path_parameters}
    return [{}, {"room": EXISTING_ROOM}] if "room" in names else [{}]


def run_operation(
    operation,
    *,
    base_url: str,
    headers: dict[str, str],
    modes: Iterable[GenerationMode],
    checks: list[Callable],
    variants: list[dict[str, str]] | None = None,
    statuses: list[int] | None = None,
) -> list[str]:
    """Send generated requests for one operation; return one description per failed response."""
    failures: list[str] = []
    for mode in modes:
        for path_parameters in variants or path_variants(operation):
            strategy = operation.as_strategy(generation_mode=mode, path_parameters=path_parameters or None)
            try:
                label = f"{operation.label}, {mode.value} data"
                failures += send_examples(
                    strategy, label=label, base_url=base_url, headers=headers, checks=checks, statuses=statuses
                )
            except Unsatisfiable:  # nothing to negate: the operation takes no input
                assert mode is GenerationMode.NEGATIVE, operation.label
    return failures


def send_examples(
    strategy,
    *,
    label: str,
    base_url: str,
    headers: dict[str, str],
    checks: list[Callable],
    statuses: list[int] | None = None,
) -> list[str]:
    failures: list[str] = []

    @hypothesis_settings(
        max_examples=EXAMPLES_PER_OPERATION,
        derandomize=True,  # the same requests on every run
        database=None,
        deadline=None,
        phases=[Phase.explicit, Phase.generate],  # failures are collected, so nothing to shrink
        suppress_health_check=list(HealthCheck),
        verbosity=Verbosity.quiet,
    )
    @given(case=strategy)
    def send(case):
        response = case.call(base_url=base_url, headers=headers, timeout=REQUEST_TIMEOUT_SECONDS)
        if statuses is not None:
            statuses.append(response.status_code)
        try:
            case.validate_response(response, checks=checks, headers=headers)
        except FailureGroup as exc:  # every failed check of this response
            failures.append(f"{label}: {exc}")  # its message ends with a curl command that replays it

    send()
    return failures


def test_every_operation_answers_as_documented_with_a_token(api, schema, user):
    failures = []
    for operation in operations(schema):
        failures += run_operation(
            operation,
            base_url=api.base_url,
            headers={"Authorization": f"Bearer {user.access_token}"},
            modes=[GenerationMode.POSITIVE, GenerationMode.NEGATIVE],
            checks=[*RESPONSE_CONFORMANCE, ignored_auth, negative_data_rejection],
        )
    assert failures == [], "\n\n".join(failures)


def refuses_without_auth(ctx, response, case) -> None:
    """Without a token an operation that needs one answers 401 with the Bearer challenge."""
    assert response.status_code == 401, f"{response.status_code} without a token"
    assert response.headers.get("www-authenticate") == ["Bearer"], response.headers


def test_operations_that_need_a_token_refuse_without_one(api, schema):
    protected = [operation for operation in operations(schema) if needs_auth(operation)]
    assert {operation.label for operation in protected} >= {
        "GET /messages/{room}",
        "POST /messages/{room}",
        "POST /logout",
        "GET /users/me",
    }
    failures = []
    for operation in protected:
        failures += run_operation(
            operation,
            base_url=api.base_url,
            headers={},
            modes=[GenerationMode.POSITIVE],
            checks=[*RESPONSE_CONFORMANCE, refuses_without_auth],
        )
    assert failures == [], "\n\n".join(failures)


@pytest.fixture(scope="module")
def limited_api(tmp_path_factory):
    with launch_server(tmp_path_factory.mktemp("limited"), **LOW_RATE_LIMITS) as server:
        yield server


@pytest.fixture(scope="module")
def limited_user(limited_api) -> ChatUser:
    return limited_api.new_user("limited")  # one /register and one /token, under AUTH_RATE


@pytest.mark.parametrize(
    ("label", "path_parameters"),
    [("POST /register", {}), ("POST /token", {}), ("POST /messages/{room}", {"room": EXISTING_ROOM})],
)
def test_rate_limited_answers_are_documented_too(limited_api, limited_user, schema, label, path_parameters):
    method, path = label.split(" ")
    statuses: list[int] = []
    failures = run_operation(
        schema[path][method],
        base_url=limited_api.base_url,
        headers={"Authorization": f"Bearer {limited_user.access_token}"},
        modes=[GenerationMode.POSITIVE],
        checks=RESPONSE_CONFORMANCE,
        variants=[path_parameters],
        statuses=statuses,
    )

    assert 429 in statuses, statuses  # the limit was met, so its answer was checked
    assert failures == [], "\n\n".join(failures)


def test_the_run_catches_an_undocumented_answer_and_an_unenforced_token(api, schema, user):
    """The harness itself: with a schema that lies, the same run fails."""
    raw = copy.deepcopy(schema.raw_schema)
    del raw["paths"]["/register"]["post"]["responses"]["400"]
    raw["paths"]["/rooms"]["get"]["security"] = [{"bearerAuth": []}]
    lying = schemathesis.openapi.from_dict(raw)

    register = run_operation(
        lying["/register"]["POST"],
        base_url=api.base_url,
        headers={},
        modes=[GenerationMode.NEGATIVE],
        checks=RESPONSE_CONFORMANCE,
    )
    rooms = run_operation(
        lying["/rooms"]["GET"],
        base_url=api.base_url,
        headers={},
        modes=[GenerationMode.POSITIVE],
        checks=[*RESPONSE_CONFORMANCE, refuses_without_auth],
    )

    assert register and all("400" in failure for failure in register), register
    assert rooms and all("200 without a token" in failure for failure in rooms), rooms
