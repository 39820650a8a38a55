"""Security headers on every page: the Content-Security-Policy and Django's own."""

import re

import pytest
from django.test import Client

from chatproject.security import CONTENT_SECURITY_POLICY

EXPECTED_POLICY = {
    "default-src": "'self'",
    "script-src": "'self'",
    "style-src": "'self'",
    "img-src": "'self' data:",
    "connect-src": "'self'",
    "object-src": "'none'",
    "base-uri": "'none'",
    "form-action": "'self'",
    "frame-ancestors": "'none'",
}


def directives(policy: str) -> dict[str, str]:
    return dict(part.strip().split(" ", 1) for part in policy.split(";"))


def test_the_policy_allows_nothing_inline_and_nothing_from_elsewhere():
    assert directives(CONTENT_SECURITY_POLICY) == EXPECTED_POLICY
    assert "unsafe" not in CONTENT_SECURITY_POLICY


@pytest.mark.django_db
@pytest.mark.parametrize(
    "path", ["/", "/admin/login/", "/api/docs/", "/api/docs/?script=", "/rooms", "/nowhere", "/static/chat/app.js"]
)
def test_pages_and_api_answers_carry_the_security_headers(path):
    response = Client().get(path)

    assert response.status_code in (200, 404)
    assert directives(response.headers["Content-Security-Policy"]) == EXPECTED_POLICY
    assert response.headers["X-Frame-Options"] == "DENY"
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert response.headers["Referrer-Policy"] == "same-origin"


@pytest.mark.django_db
@pytest.mark.parametrize("path", ["/", "/admin/login/", "/api/docs/"])
def test_html_pages_have_no_inline_script_or_style(path):
    page = Client().get(path).content.decode()

    scripts = re.findall(r"<script\b([^>]*)>(.*?)</script>", page, re.DOTALL)
    assert scripts
    assert [attributes for attributes, body in scripts if "src=" not in attributes or body.strip()] == []
    assert "<style" not in page
    assert " style=" not in page
    assert not re.search(r"\son[a-z]+=", page)  # no onclick= and the like


@pytest.mark.django_db
def test_swagger_ui_loads_its_start_up_script_from_the_app():
    page = Client().get("/api/docs/").content.decode()
    script = Client().get("/api/docs/?script=")

    assert '<script src="/api/docs/?script="></script>' in page
    assert script.status_code == 200
    assert script.headers["Content-Type"] == "application/javascript"
    assert 'url: "/api/schema/"' in script.content.decode()


def test_favicon_ico_leads_to_the_chats_icon(db):
    # The admin's pages declare no icon, so browsers ask for /favicon.ico: no 404 in their console.
    response = Client().get("/favicon.ico")

    assert (response.status_code, response["Location"]) == (302, "/static/chat/icon.svg")
    assert Client().get(response["Location"]).status_code == 200
