"""Production mode (DJANGO_ENV=production and `make run-prod`), each environment in a process of its own.

Settings are read once at import, so every case runs manage.py, python or make in a subprocess that sees
only the environment the test gives it. The server tests start `make run-prod` itself behind no proxy and
play the proxy's part by sending X-Forwarded-Proto.
"""

import contextlib
import http.client
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import REPO_ROOT, ServerProcess, free_port, launch_server, server_env

KEY_MISSING = "DJANGO_SECRET_KEY must be set when DJANGO_ENV=production"
WILDCARD_REFUSED = 'DJANGO_ALLOWED_HOSTS must name the hosts served, not "*", in production.'
HSTS = "max-age=31536000; includeSubDomains; preload"
FORWARDED_HTTPS = {"X-Forwarded-Proto": "https"}
# The content hash collectstatic puts in a name: app.js → app.ebde79f1a2ca.js
CONTENT_HASH = re.compile(r"\.[0-9a-f]{12}(?=\.[^./]+$)")
STATIC_REFERENCE = re.compile(r'(?:src|href)="(/static/[^"]+)"')
STARTUP_TIMEOUT_SECONDS = 120.0  # check --deploy, migrate and collectstatic run before the server listens
STOP_TIMEOUT_SECONDS = 10.0
PORT_ATTEMPTS = 3

needs_make = pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")


def strong_key() -> str:
    return secrets.token_urlsafe(50)  # 67 characters, as `check --deploy` wants (50+, 5+ distinct)


def run(args: list[str], env: dict[str, str], timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(args, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=timeout)


def manage(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    return run([sys.executable, "manage.py", *args], env)


def setting(name: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    code = f"from django.conf import settings; print(repr(settings.{name}))"
    return run([sys.executable, "-c", code], {"DJANGO_SETTINGS_MODULE": "chatproject.settings", **env})


@pytest.fixture
def prod_env(tmp_path) -> dict[str, str]:
    """The documented production environment; the database and key file are the test's own."""
    return server_env(
        tmp_path,
        {"DJANGO_ENV": "production", "DJANGO_SECRET_KEY": strong_key(), "DJANGO_ALLOWED_HOSTS": "chat.example.com"},
    )


# --- Settings and checks ---------------------------------------------------------------------


def test_check_deploy_passes_at_warning_level(prod_env):
    result = manage("check", "--deploy", "--fail-level", "WARNING", env=prod_env)

    assert result.returncode == 0, result.stdout + result.stderr
    assert "System check identified no issues" in result.stdout


def test_check_deploy_outside_production_reports_the_missing_hardening(prod_env):
    env = {**prod_env, "DJANGO_DEBUG": "0"}
    del env["DJANGO_ENV"]

    result = manage("check", "--deploy", "--fail-level", "WARNING", env=env)

    assert result.returncode != 0
    # HSTS, SSL redirect, secure session cookie, secure CSRF cookie: all off without the switch.
    for check in ("security.W004", "security.W008", "security.W012", "security.W016"):
        assert check in result.stderr


@pytest.mark.parametrize("key", [None, ""])
def test_production_without_secret_key_refuses_to_start(prod_env, tmp_path, key):
    env = {name: value for name, value in prod_env.items() if name != "DJANGO_SECRET_KEY"}
    if key is not None:
        env["DJANGO_SECRET_KEY"] = key

    result = manage("check", env=env)

    assert result.returncode != 0
    assert f"django.core.exceptions.ImproperlyConfigured: {KEY_MISSING}." in result.stderr
    assert not (tmp_path / "secret_key").exists()


@pytest.mark.parametrize("hosts", ["*", "chat.example.com,*"])
def test_production_refuses_any_host(prod_env, hosts):
    result = manage("check", env={**prod_env, "DJANGO_ALLOWED_HOSTS": hosts})

    assert result.returncode != 0
    assert f"django.core.exceptions.ImproperlyConfigured: {WILDCARD_REFUSED}" in result.stderr


def test_any_host_is_still_allowed_outside_production(prod_env):
    env = {**prod_env, "DJANGO_ALLOWED_HOSTS": "*"}
    del env["DJANGO_ENV"]

    result = setting("ALLOWED_HOSTS", env)

    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "['*']"


def test_csrf_trusted_origins_default_to_the_allowed_hosts_over_https(prod_env):
    result = setting("CSRF_TRUSTED_ORIGINS", {**prod_env, "DJANGO_ALLOWED_HOSTS": "chat.example.com,.example.org"})

    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "['https://chat.example.com', 'https://*.example.org']"


def test_csrf_trusted_origins_are_read(prod_env):
    env = {**prod_env, "DJANGO_CSRF_TRUSTED_ORIGINS": "https://chat.example.com,https://admin.example.com"}

    result = setting("CSRF_TRUSTED_ORIGINS", env)

    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "['https://chat.example.com', 'https://admin.example.com']"


@pytest.mark.parametrize("production", [True, False], ids=["production", "development"])
def test_explicit_csrf_trusted_origins_take_hosts_like_the_default_and_keep_schemes(prod_env, production):
    env = {**prod_env, "DJANGO_CSRF_TRUSTED_ORIGINS": ".example.com,chat.example.org,http://localhost:8000"}
    if not production:
        del env["DJANGO_ENV"]

    result = setting("CSRF_TRUSTED_ORIGINS", env)
    check = manage("check", env=env)

    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "['https://*.example.com', 'https://chat.example.org', 'http://localhost:8000']"
    assert check.returncode == 0, check.stdout + check.stderr  # Django's 4_0.E001: an origin needs its scheme


def test_csrf_trusted_origins_are_empty_by_default_outside_production(prod_env):
    env = {name: value for name, value in prod_env.items() if name != "DJANGO_ENV"}

    result = setting("CSRF_TRUSTED_ORIGINS", env)

    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def test_static_root_is_read(prod_env, tmp_path):
    result = setting("STATIC_ROOT", {**prod_env, "DJANGO_STATIC_ROOT": str(tmp_path / "collected")})

    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == repr(tmp_path / "collected")


def test_static_root_defaults_to_staticfiles_next_to_the_code(prod_env):
    result = setting("STATIC_ROOT", prod_env)

    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == repr(REPO_ROOT / "staticfiles")


# --- make run-prod ----------------------------------------------------------------------------


@needs_make
@pytest.mark.parametrize("key", [None, ""])
def test_make_run_prod_without_secret_key_fails_fast(tmp_path, key):
    env = server_env(tmp_path, {} if key is None else {"DJANGO_SECRET_KEY": key})
    started = time.monotonic()

    result = run(["make", "run-prod", f"PORT={free_port()}"], env, timeout=60)

    assert result.returncode != 0
    assert f"make run-prod: {KEY_MISSING}" in result.stderr
    assert time.monotonic() - started < 30
    # Nothing ran: no migration, no generated key.
    assert not (tmp_path / "db.sqlite3").exists()
    assert not (tmp_path / "secret_key").exists()


def _stop_group(process: subprocess.Popen) -> None:
    """Stop make and the server it runs: they share the session the test gave make."""
    if process.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=STOP_TIMEOUT_SECONDS)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)  # the server, should it outlive make


def _wait_healthy(server: ServerProcess) -> bool:
    """True once /healthz answers 200 over plain HTTP; False when make exited first."""
    deadline = time.monotonic() + STARTUP_TIMEOUT_SECONDS
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            return False
        with contextlib.suppress(OSError, http.client.HTTPException):
            if server.get("/healthz", timeout=2).status == 200:
                return True
        time.sleep(0.2)
    _stop_group(server.process)
    pytest.fail(f"make run-prod not healthy within {STARTUP_TIMEOUT_SECONDS}s:\n{server.log()}")


@contextlib.contextmanager
def run_prod(workdir: Path) -> Iterator[ServerProcess]:
    """`make run-prod` on a free port, with a fresh database and STATIC_ROOT in workdir."""
    workdir.mkdir(parents=True, exist_ok=True)
    env = server_env(
        workdir,
        {
            "DJANGO_SECRET_KEY": strong_key(),
            "DJANGO_STATIC_ROOT": str(workdir / "static"),
            # The target sets the production switch itself, whatever the caller's environment says.
            "DJANGO_ENV": "development",
            "PYTHONUNBUFFERED": "1",  # log lines reach the file as each request ends
        },
    )
    for attempt in range(PORT_ATTEMPTS):
        port = free_port()
        log_path = workdir / f"run-prod-{port}.log"
        with log_path.open("wb") as log_file:
            process = subprocess.Popen(
                ["make", "--no-print-directory", "run-prod", "HOST=127.0.0.1", f"PORT={port}"],
                cwd=REPO_ROOT,
                env=env,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        server = ServerProcess(port=port, workdir=workdir, env=env, process=process, log_path=log_path)
        if _wait_healthy(server):
            break
        _stop_group(process)
        if "Address already in use" not in server.log() or attempt == PORT_ATTEMPTS - 1:
            pytest.fail(f"make run-prod exited with {process.returncode} before answering /healthz:\n{server.log()}")
    try:
        yield server
    finally:
        _stop_group(server.process)


@pytest.fixture(scope="module")
def production_server(tmp_path_factory) -> Iterator[ServerProcess]:
    if shutil.which("make") is None:
        pytest.skip("make is not installed")
    with run_prod(tmp_path_factory.mktemp("run-prod")) as running:
        yield running


@pytest.fixture(scope="module")
def development_server(tmp_path_factory) -> Iterator[ServerProcess]:
    """The plain `make run` configuration, DEBUG explicitly off, no DJANGO_ENV."""
    with launch_server(tmp_path_factory.mktemp("dev"), DJANGO_DEBUG="0") as running:
        yield running


def static_references(html: bytes) -> list[str]:
    return STATIC_REFERENCE.findall(html.decode())


@pytest.mark.server
def test_run_prod_ran_collectstatic_into_static_root(production_server):
    assert (production_server.workdir / "static" / "staticfiles.json").is_file()
    assert "System check identified no issues" in production_server.log()


@pytest.mark.server
def test_plain_http_is_redirected_to_https(production_server):
    response = production_server.get("/")

    assert response.status == 301
    assert response.headers["location"] == f"https://127.0.0.1:{production_server.port}/"


@pytest.mark.server
def test_healthz_answers_over_plain_http(production_server):
    response = production_server.get("/healthz")

    assert response.status == 200
    assert response.json() == {"status": "ok", "database": "ok", "channel_layer": "ok"}
    assert "strict-transport-security" not in response.headers


@pytest.mark.server
def test_page_over_forwarded_https_has_hsts(production_server):
    response = production_server.get("/", headers=FORWARDED_HTTPS)

    assert response.status == 200
    assert response.headers["strict-transport-security"] == HSTS


@pytest.mark.server
def test_page_loads_the_hashed_app_js_from_static_root(production_server):
    page = production_server.get("/", headers=FORWARDED_HTTPS)
    [app_js] = [path for path in static_references(page.body) if CONTENT_HASH.sub("", path) == "/static/chat/app.js"]
    assert CONTENT_HASH.search(app_js), app_js
    assert (production_server.workdir / "static" / app_js.removeprefix("/static/")).is_file()

    response = production_server.get(app_js, headers=FORWARDED_HTTPS)

    assert response.status == 200
    assert response.body == (REPO_ROOT / "static" / "chat" / "app.js").read_bytes()
    assert "immutable" in response.headers["cache-control"]  # safe: a new version gets a new name
    assert "StreamingHttpResponse" not in production_server.log()  # a file read on a thread is no fault


@pytest.mark.server
@pytest.mark.parametrize(
    ("page", "expected"),
    [
        ("/", "/static/chat/app.css"),
        ("/admin/login/", "/static/admin/css/base.css"),
        ("/api/docs/", "/static/drf_spectacular_sidecar/swagger-ui-dist/swagger-ui-bundle.js"),
    ],
)
def test_every_static_file_of_a_page_is_served(production_server, page, expected):
    response = production_server.get(page, headers=FORWARDED_HTTPS)
    assert response.status == 200
    references = static_references(response.body)
    assert expected in [CONTENT_HASH.sub("", path) for path in references], references

    for path in references:
        assert CONTENT_HASH.search(path), path
        assert production_server.get(path, headers=FORWARDED_HTTPS).status == 200, path


@pytest.mark.server
def test_csrf_cookie_is_secure(production_server):
    response = production_server.get("/admin/login/", headers=FORWARDED_HTTPS)

    assert response.status == 200
    assert response.headers["set-cookie"].startswith("csrftoken=")
    assert "; Secure" in response.headers["set-cookie"]


@pytest.mark.server
def test_without_the_switch_nothing_of_production_is_on(development_server):
    plain = development_server.get("/")
    forwarded = development_server.get("/", headers=FORWARDED_HTTPS)
    admin = development_server.get("/admin/login/", headers=FORWARDED_HTTPS)

    assert plain.status == 200  # no redirect
    assert forwarded.status == 200
    assert "strict-transport-security" not in plain.headers
    assert "strict-transport-security" not in forwarded.headers  # X-Forwarded-Proto is not trusted
    assert admin.headers["set-cookie"].startswith("csrftoken=")
    assert "secure" not in admin.headers["set-cookie"].lower()
    assert '"/static/chat/app.js"' in plain.body.decode()  # served from the source folder, unhashed
