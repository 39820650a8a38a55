"""The Content-Security-Policy in headless Chromium (Debian's package) against the real server process.

Chromium reports every violation on the console ("Refused to ...", "... violates the following
Content Security Policy directive ..."), so a page that works and logs no refusal runs entirely
under the policy: its scripts, styles, images, form posts and WebSocket.
"""

from pathlib import Path

import pytest

from tests.conftest import CHROMIUM, PASSWORD

# Registering hashes a password twice with the real PBKDF2: slower than expect()'s 5 s on a busy machine.
SLOW = 15_000

sync_api = pytest.importorskip("playwright.sync_api")
expect = sync_api.expect

pytestmark = [
    pytest.mark.server,
    pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="Debian's chromium is not installed"),
]


class ObservedPage:
    """A page in a context of its own, with everything it said on the console and every uncaught error."""

    def __init__(self, browser):
        self.context = browser.new_context()
        self.context.set_default_timeout(10_000)
        self.page = self.context.new_page()
        self.console: list[str] = []
        self.errors: list[str] = []
        self.page.on("console", lambda message: self.console.append(f"{message.type}: {message.text}"))
        self.page.on("pageerror", lambda error: self.errors.append(str(error)))

    @property
    def refusals(self) -> list[str]:
        return [line for line in self.console if "Refused to" in line or "Content Security Policy" in line]


@pytest.fixture
def observed(browser):
    observed = ObservedPage(browser)
    yield observed
    observed.context.close()


def test_the_chat_works_under_the_policy(observed, server):
    page = observed.page
    page.goto(server.base_url + "/")
    page.get_by_label("Username").fill(server.unique_username("csp"))
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Register", exact=True).click()
    expect(page.get_by_role("button", name="Log out")).to_be_visible(timeout=SLOW)
    page.get_by_role("button", name="general", exact=True).click()
    expect(page.locator("#status")).to_have_text("connected", timeout=SLOW)  # the WebSocket, under connect-src 'self'

    box = page.get_by_role("textbox", name="Message")
    box.fill("under the policy")
    box.press("Enter")

    expect(page.locator("#messages .message:not(.pending) .content")).to_have_text(["under the policy"])
    assert observed.refusals == []
    assert observed.errors == []


def test_swagger_ui_renders_under_the_policy(observed, server):
    page = observed.page
    page.goto(server.base_url + "/api/docs/")

    expect(page.locator(".opblock-summary-path", has_text="/register").first).to_be_visible()
    expect(page.get_by_role("heading", name="Chat API")).to_be_visible()
    assert observed.refusals == []
    assert observed.errors == []


def test_the_admin_works_under_the_policy(observed, server):
    admin = server.unique_username("admin")
    created = server.manage(
        "shell",
        "-c",
        f"from accounts.models import User; User.objects.create_superuser({admin!r}, password={PASSWORD!r})",
    )
    assert created.returncode == 0, created.stderr
    page = observed.page
    page.goto(server.base_url + "/admin/login/")
    page.get_by_label("Username").fill(admin)
    page.get_by_label("Password").fill("wrong-password")
    page.get_by_role("button", name="Log in").click()
    expect(page.locator(".errornote")).to_be_visible()  # the form posted (form-action 'self') and came back
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Log in").click()
    expect(page.get_by_role("link", name="Log out").or_(page.get_by_role("button", name="Log out"))).to_be_visible(
        timeout=SLOW
    )

    # The list (actions, filters, the sidebar's script) and a form (its widgets' scripts) of the user admin.
    page.goto(server.base_url + "/admin/accounts/user/")
    expect(page.get_by_role("link", name=admin)).to_be_visible()
    page.get_by_role("link", name=admin).click()
    expect(page.get_by_label("Username:")).to_have_value(admin)

    assert observed.refusals == []
    assert observed.errors == []


def test_an_injected_inline_script_is_refused_and_reported(observed, server):
    """The policy is really enforced, and a refusal would be seen by the tests above."""
    page = observed.page
    page.goto(server.base_url + "/")
    page.evaluate(
        """() => {
            const script = document.createElement("script");
            script.textContent = "window.injectedRan = true";
            document.head.appendChild(script);
        }"""
    )

    for _ in range(20):  # the console event arrives asynchronously
        if observed.refusals:
            break
        page.wait_for_timeout(100)
    assert page.evaluate("() => window.injectedRan === true") is False
    assert any("inline script" in line and "script-src 'self'" in line for line in observed.refusals), observed.console
