"""The chat web page in headless Chromium (Debian's package) against the real server process.

Screenshots land in artifacts/ (git-ignored); the ones in docs/ were copied from there.
"""

import re
import time
from datetime import datetime, timedelta
from pathlib import Path
from urllib.parse import urlparse
from zoneinfo import ZoneInfo

import pytest

from tests.conftest import CHROMIUM, PASSWORD, REPO_ROOT

sync_api = pytest.importorskip("playwright.sync_api")
expect = sync_api.expect

ARTIFACTS = REPO_ROOT / "artifacts"
XSS = "<img src=x onerror=alert(1)>"
# The page server's CHAT_REPLAY_LIMIT (1000 by default): what a socket resuming with since= gets at most.
REPLAY_LIMIT = 40

pytestmark = [
    pytest.mark.server,
    pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="Debian's chromium is not installed"),
]


class Visitor:
    """One person in their own browser context: a page, what it asked for, the dialogs it saw."""

    def __init__(self, browser, server, **context_options):
        self.server = server
        self.context = browser.new_context(**context_options)
        self.context.set_default_timeout(10_000)
        self.page = self.context.new_page()
        self.requests: list[str] = []
        self.dialogs: list[str] = []
        self.errors: list[str] = []
        self.page.on("request", lambda request: self.requests.append(request.url))
        self.page.on("websocket", lambda ws: self.requests.append(ws.url))
        self.page.on("dialog", self._on_dialog)
        self.page.on("pageerror", lambda error: self.errors.append(str(error)))

    def _on_dialog(self, dialog):
        self.dialogs.append(dialog.message)
        dialog.dismiss()

    def open(self):
        self.page.goto(self.server.base_url + "/")

    def fill_credentials(self, username: str, password: str = PASSWORD):
        self.page.get_by_label("Username").fill(username)
        self.page.get_by_label("Password").fill(password)

    def register(self, username: str, password: str = PASSWORD):
        self.open()
        self.fill_credentials(username, password)
        self.page.get_by_role("button", name="Register", exact=True).click()
        expect(self.page.get_by_role("button", name="Log out")).to_be_visible()

    def log_in(self, username: str, password: str = PASSWORD):
        self.fill_credentials(username, password)
        self.page.get_by_role("button", name="Log in").click()
        expect(self.page.get_by_role("button", name="Log out")).to_be_visible()

    def enter_room(self, name: str = "general"):
        self.page.get_by_role("button", name=name, exact=True).click()
        expect(self.status).to_have_text("connected")

    def send(self, text: str):
        box = self.page.get_by_role("textbox", name="Message")
        box.fill(text)
        box.press("Enter")

    @property
    def status(self):
        return self.page.locator("#status")

    @property
    def message_box(self):
        return self.page.get_by_role("textbox", name="Message")

    @property
    def message_texts(self):
        return self.page.locator("#messages .message:not(.pending, .failed) .content")

    @property
    def online(self):
        return self.page.locator("#online li")

    def close(self):
        self.context.close()


class Outage:
    """The page's network drops its room socket, and holds each reconnect back until it is over."""

    def __init__(self, page, drop: str | None = None):
        self.drop = drop  # frames from the server that hold this text never reach the page
        self.down = False
        self.sockets: list = []
        self.held_tickets: list = []
        page.route_web_socket(re.compile(r".*/ws/.*"), self._socket)
        page.route("**/ws-ticket", self._ticket)

    def _socket(self, ws):
        server = ws.connect_to_server()
        if self.drop is not None:  # the page's side gets every other frame, in order
            server.on_message(lambda frame: None if self.drop in str(frame) else ws.send(frame))
        self.sockets.append(ws)

    def _ticket(self, route):
        if self.down:
            self.held_tickets.append(route)
        else:
            route.continue_()

    def begin(self):
        self.down = True
        for ws in self.sockets:
            ws.close()
        self.sockets.clear()

    def end(self):
        self.down = False
        for route in self.held_tickets:
            route.continue_()  # the page connects at once, with no backoff left to wait out
        self.held_tickets.clear()


def access_token(page) -> str:
    """The access token the page holds in localStorage."""
    return page.evaluate("JSON.parse(localStorage.getItem('chat.session')).access")


def new_room(server, user) -> str:
    """A room of the test's own: nobody else's messages or presence in it."""
    name = server.unique_username("room")
    response = server.post("/rooms", json_body={"name": name}, token=user.access_token)
    assert response.status == 201, (response.status, response.body)
    return name


@pytest.fixture(scope="module")
def server_extra_env() -> dict[str, str]:
    return {"CHAT_REPLAY_LIMIT": str(REPLAY_LIMIT)}  # a visitor can fall further behind in seconds


@pytest.fixture
def visitors(browser, server):
    opened: list[Visitor] = []

    def open_visitor(**context_options) -> Visitor:
        visitor = Visitor(browser, server, **context_options)
        opened.append(visitor)
        return visitor

    yield open_visitor
    for visitor in opened:
        visitor.close()


def test_two_people_chat_see_each_other_online_and_typing(visitors, server):
    ann, ben = visitors(), visitors()
    ann_name, ben_name = server.unique_username("ann"), server.unique_username("ben")
    ann.register(ann_name)
    # Ben registers, logs out, and logs in with the "Log in" button.
    ben.register(ben_name)
    ben.page.get_by_role("button", name="Log out").click()
    expect(ben.page.get_by_role("button", name="Log in")).to_be_visible()
    ben.log_in(ben_name)

    ann.enter_room("general")
    ben.enter_room("general")
    expect(ann.online).to_contain_text([ann_name, ben_name] if ann_name < ben_name else [ben_name, ann_name])
    expect(ben.online.filter(has_text=ann_name)).to_have_count(1)

    ann.page.get_by_role("textbox", name="Message").press_sequentially("hel")
    expect(ben.page.get_by_text(f"{ann_name} is typing…")).to_be_visible()
    expect(ann.page.get_by_text(f"{ann_name} is typing…")).to_have_count(0)

    ann.send("hello ben")
    expect(ben.message_texts.last).to_have_text("hello ben")
    expect(ben.page.get_by_text(f"{ann_name} is typing…")).to_have_count(0)
    ben.send("hi ann")
    expect(ann.message_texts.last).to_have_text("hi ann")
    expect(ann.page.locator("#messages .message.own .content").last).to_have_text("hello ben")
    expect(ben.page.locator("#messages .message.own .content").last).to_have_text("hi ann")
    assert ann.errors == [] and ben.errors == []


def test_a_visitor_who_loses_the_connection_gets_what_was_missed(visitors, server):
    ann, ben = visitors(), visitors()
    ann_name = server.unique_username("ann")
    ann.register(ann_name)
    ben.register(server.unique_username("ben"))

    cut_off = {"value": False}
    live_routes = []

    def route(ws):
        if cut_off["value"]:
            ws.close()  # refuse while the network is "down"
            return
        ws.connect_to_server()
        live_routes.append(ws)

    ann.page.route_web_socket(re.compile(r".*/ws/.*"), route)
    ann.enter_room("general")
    ben.enter_room("general")
    ann.send("before the outage")
    expect(ben.message_texts.last).to_have_text("before the outage")

    cut_off["value"] = True
    for ws in live_routes:
        ws.close()
    expect(ann.status).to_have_text(re.compile("reconnecting"))

    for n in (1, 2, 3):
        ben.send(f"missed {n}")
    expect(ben.message_texts.last).to_have_text("missed 3")
    ann.page.wait_for_timeout(1000)  # a few refused reconnects
    expect(ann.status).to_have_text(re.compile("reconnecting"))

    cut_off["value"] = False
    expect(ann.status).to_have_text("connected", timeout=20_000)
    expect(ann.message_texts.filter(has_text=re.compile(r"^missed \d$"))).to_have_text(
        ["missed 1", "missed 2", "missed 3"]
    )
    texts = ann.message_texts.all_inner_texts()
    assert len(texts) == len(set(texts)), texts
    assert ann.page.evaluate("performance.getEntriesByType('navigation').length") == 1  # no reload
    # Her own arrival is said once, when she opened the room, not again at the reconnect.
    expect(ann.page.locator("#messages .notice").filter(has_text=f"{ann_name} joined")).to_have_count(1)


@pytest.mark.parametrize("notice", ["told", "lost"])
def test_a_visitor_further_behind_than_the_replay_gets_every_message_once_in_order(visitors, server, notice):
    poster = server.new_user("poster")
    room = new_room(server, poster)
    ann = visitors()
    ann.register(server.unique_username("ann"))
    # "lost": the server's replay_truncated never reaches the page; only the next live message's seq
    # can show it that the replay was cut short.
    outage = Outage(ann.page, drop="replay_truncated" if notice == "lost" else None)
    ann.enter_room(room)
    assert server.post_message(poster.access_token, room, "before the outage").status == 201
    expect(ann.message_texts.last).to_have_text("before the outage")

    outage.begin()
    expect(ann.status).to_have_text(re.compile("reconnecting"))
    for n in range(1, REPLAY_LIMIT + 151):
        assert server.post_message(poster.access_token, room, f"missed {n}").status == 201
    outage.end()
    expect(ann.status).to_have_text("connected", timeout=20_000)
    if notice == "told":  # a quiet room: no live message reveals the gap
        expect(ann.message_texts.last).to_have_text(f"missed {REPLAY_LIMIT + 150}", timeout=20_000)
        expect(ann.message_texts).to_have_count(REPLAY_LIMIT + 151, timeout=20_000)
    for n in (1, 2, 3):  # live while the page may still be paging the gap in
        assert server.post_message(poster.access_token, room, f"live {n}").status == 201

    history = server.history_after(poster.access_token, room)
    assert len(history) == REPLAY_LIMIT + 154
    expect(ann.message_texts).to_have_count(len(history), timeout=20_000)
    assert ann.message_texts.all_inner_texts() == [message["content"] for message in history]
    shown_seqs = ann.page.eval_on_selector_all("#messages .message", "items => items.map((i) => i.dataset.seq)")
    assert shown_seqs == [str(message["seq"]) for message in history]
    assert ann.errors == []


def test_a_message_deleted_while_the_visitor_was_away_goes_when_the_page_reconnects(visitors, server):
    owner = server.new_user("owner")
    room = new_room(server, owner)
    ann = visitors()
    ann.register(server.unique_username("ann"))
    outage = Outage(ann.page)
    ann.enter_room(room)
    for text in ("keep me", "remove me", "keep me too"):
        assert server.post_message(owner.access_token, room, text).status == 201
    expect(ann.message_texts).to_have_text(["keep me", "remove me", "keep me too"])

    outage.begin()
    expect(ann.status).to_have_text(re.compile("reconnecting"))
    deleted = server.manage(
        "shell",
        "-c",
        "from chat import services; from chat.models import Message; "
        f"print(services.message_delete(messages=Message.objects.filter(room__name='{room}', content='remove me')))",
    )
    assert deleted.stdout.strip().splitlines()[-1] == "1", (deleted.stdout, deleted.stderr)
    outage.end()

    expect(ann.status).to_have_text("connected", timeout=20_000)
    expect(ann.message_texts).to_have_text(["keep me", "keep me too"])
    assert ann.errors == []


def test_the_browser_coming_online_during_the_backoff_opens_one_socket_not_two(visitors, server):
    ann = visitors()
    ann.register(server.unique_username("ann"))
    outage = Outage(ann.page)
    ann.enter_room("general")
    expect(ann.status).to_have_text("connected")
    opened = []
    ann.page.on("websocket", lambda ws: opened.append(ws))

    outage.begin()
    expect(ann.status).to_have_text(re.compile("reconnecting"))
    ann.page.wait_for_timeout(1200)  # the backoff's first reconnect (0.25-0.75 s) is waiting for its ticket
    ann.page.evaluate("window.dispatchEvent(new Event('online'))")  # and the browser says it is back
    ann.page.wait_for_timeout(500)
    outage.end()

    expect(ann.status).to_have_text("connected", timeout=20_000)
    ann.page.wait_for_timeout(1500)  # time for a second socket to open, were one on its way
    assert len(opened) == 1, [ws.url for ws in opened]
    assert ann.errors == []


def test_join_and_leave_notices_show_in_the_open_room(visitors, server):
    ann, ben = visitors(), visitors()
    ann_name, ben_name = server.unique_username("ann"), server.unique_username("ben")
    room = new_room(server, server.new_user("owner"))
    ann.register(ann_name)
    ben.register(ben_name)
    notices = ann.page.locator("#messages .notice")
    ann.enter_room(room)
    expect(notices).to_have_text([f"{ann_name} joined"])

    ben.enter_room(room)
    expect(notices).to_have_text([f"{ann_name} joined", f"{ben_name} joined"])
    ben.enter_room("general")  # Ben walks over to another room
    expect(notices).to_have_text([f"{ann_name} joined", f"{ben_name} joined", f"{ben_name} left"])
    expect(ann.online).to_have_text([ann_name])
    expect(ben.page.locator("#messages .notice").filter(has_text=ann_name)).to_have_count(0)


def test_the_room_list_counts_who_is_online_in_the_open_room(visitors, server):
    ann, ben = visitors(), visitors()
    room = new_room(server, server.new_user("owner"))
    ann.register(server.unique_username("ann"))
    ben.register(server.unique_username("ben"))
    count = ann.page.locator(f'#rooms .room-online[data-room="{room}"]')
    expect(count).to_have_text("0 online")
    ann.enter_room(room)
    expect(count).to_have_text("1 online")

    ben.enter_room(room)
    expect(count).to_have_text("2 online")
    expect(ben.page.locator(f'#rooms .room-online[data-room="{room}"]')).to_have_text("2 online")
    ben.page.get_by_role("button", name="Log out").click()
    expect(count).to_have_text("1 online")


def test_the_typing_notice_goes_away_by_itself_when_the_typist_stops(visitors, server):
    ann, ben = visitors(), visitors()
    ann_name = server.unique_username("ann")
    room = new_room(server, server.new_user("owner"))
    ann.register(ann_name)
    ben.register(server.unique_username("ben"))
    ann.enter_room(room)
    ben.enter_room(room)

    ann.page.get_by_role("textbox", name="Message").press_sequentially("hel")
    typing = ben.page.locator("#typing")
    expect(typing).to_have_text(f"{ann_name} is typing…")
    ben.page.wait_for_timeout(1000)
    assert typing.text_content() == f"{ann_name} is typing…"  # it lasts a few seconds
    expect(typing).to_have_text("", timeout=10_000)  # gone with no message to clear it
    expect(ben.message_texts).to_have_count(0)
    expect(ann.page.get_by_role("textbox", name="Message")).to_have_value("hel")


def test_markup_in_a_message_renders_as_text(visitors, server):
    ann, ben = visitors(), visitors()
    ann.register(server.unique_username("ann"))
    ben.register(server.unique_username("ben"))
    ann.enter_room("python")
    ben.enter_room("python")
    ann.send(XSS)
    for visitor in (ann, ben):
        expect(visitor.message_texts.last).to_have_text(XSS)
        assert visitor.page.locator("#messages img").count() == 0
    ben.page.wait_for_timeout(500)
    assert ann.dialogs == [] and ben.dialogs == []


def test_the_page_only_talks_to_its_own_server(visitors, server):
    ann = visitors()
    ann.register(server.unique_username("ann"))
    ann.enter_room("random")
    ann.send("anyone here?")
    expect(ann.message_texts.last).to_have_text("anyone here?")
    own = urlparse(server.base_url).netloc
    foreign = [url for url in ann.requests if urlparse(url).netloc != own]
    assert ann.requests and foreign == []
    # The socket authenticates with a single-use ticket: no access token in any URL the page opens.
    sockets = [url for url in ann.requests if url.startswith("ws")]
    assert sockets and all("ticket=" in url for url in sockets)
    assert not [url for url in ann.requests if "token=" in url]


def test_errors_from_the_server_show_in_words(visitors, server):
    ann = visitors()
    taken = server.unique_username("taken")
    server.register(taken)
    ann.open()
    ann.fill_credentials(taken.upper())
    ann.page.get_by_role("button", name="Register", exact=True).click()
    expect(ann.page.get_by_role("alert").first).to_have_text("Username: A user with that username already exists.")

    ann.fill_credentials(server.unique_username("weak"), "12345678")
    ann.page.get_by_role("button", name="Register", exact=True).click()
    # Django may name more than one reason: the random name's digits can make it "too similar" too.
    expect(ann.page.get_by_role("alert").first).to_have_text(re.compile(r"^Password: .*This password is too common\."))

    ann.fill_credentials(taken, "wrong-password-1")
    ann.page.get_by_role("button", name="Log in").click()
    expect(ann.page.get_by_role("alert").first).to_have_text("Incorrect username or password")
    expect(ann.page.get_by_role("button", name="Register", exact=True)).to_have_count(1)


def test_load_older_pages_back_through_history(visitors, server):
    poster = server.new_user("poster")
    for n in range(1, 56):
        assert server.post_message(poster.access_token, "frontend", f"old {n}").status == 201
    ann = visitors()
    ann.register(server.unique_username("ann"))
    ann.enter_room("frontend")
    expect(ann.message_texts).to_have_count(50)
    expect(ann.message_texts.first).to_have_text("old 6")
    ann.page.get_by_role("button", name="Load older").click()
    expect(ann.message_texts).to_have_count(55)
    expect(ann.message_texts.first).to_have_text("old 1")
    expect(ann.page.get_by_role("button", name="Load older")).to_be_hidden()


def test_keyboard_alone_and_a_phone_width_screen(visitors, server):
    ann = visitors(viewport={"width": 375, "height": 740})
    ann.open()
    page = ann.page
    expect(page.get_by_label("Username")).to_be_focused()  # Tab order: password, Log in, Register
    page.keyboard.type(server.unique_username("kbd"))
    page.keyboard.press("Tab")
    page.keyboard.type(PASSWORD)
    page.keyboard.press("Tab")
    page.keyboard.press("Tab")
    expect(page.get_by_role("button", name="Register", exact=True)).to_be_focused()
    page.keyboard.press("Enter")
    expect(page.get_by_role("button", name="Log out")).to_be_visible()
    page.get_by_role("button", name="general", exact=True).focus()
    page.keyboard.press("Enter")
    expect(ann.status).to_have_text("connected")
    expect(page.get_by_role("textbox", name="Message")).to_be_focused()
    page.keyboard.type("typed without a mouse")
    page.keyboard.press("Enter")
    expect(ann.message_texts.last).to_have_text("typed without a mouse")
    assert page.evaluate("document.documentElement.scrollWidth") <= 375


def test_screenshots_of_the_chat_view(browser, launch_server, tmp_path):
    ARTIFACTS.mkdir(exist_ok=True)
    with launch_server(tmp_path) as fresh:  # a server of its own, so the picture shows one conversation
        ann, ben = Visitor(browser, fresh), Visitor(browser, fresh, viewport={"width": 1280, "height": 720})
        try:
            ann.register("ann")
            ben.register("ben")
            ann.enter_room("general")
            ben.enter_room("general")
            ann.send("Morning! Did the deploy go out?")
            expect(ben.message_texts.last).to_have_text(re.compile("deploy"))
            ben.send("Yes, all green. Reconnects pick up exactly where they left off.")
            expect(ann.message_texts.last).to_have_text(re.compile("all green"))
            ann.page.get_by_role("textbox", name="Message").press_sequentially("nice")
            expect(ben.page.get_by_text("ann is typing…")).to_be_visible()
            ben.page.screenshot(path=str(ARTIFACTS / "chat-desktop.png"))
            ben.page.set_viewport_size({"width": 375, "height": 740})
            assert ben.page.evaluate("document.documentElement.scrollWidth") <= 375
            ben.page.screenshot(path=str(ARTIFACTS / "chat-phone.png"), full_page=True)
        finally:
            ann.close()
            ben.close()
    assert (ARTIFACTS / "chat-desktop.png").stat().st_size > 0
    assert (ARTIFACTS / "chat-phone.png").stat().st_size > 0


WATCH_STATUS = """() => {
  window.statuses = [];
  const status = document.getElementById("status");
  new MutationObserver(() => window.statuses.push(status.textContent)).observe(status, {
    childList: true, characterData: true, subtree: true,
  });
}"""


def test_the_page_renews_its_socket_before_the_token_expires_and_nobody_sees_it_leave(browser, launch_server, tmp_path):
    # 10 s tokens (9-10 s in fact: `exp` is in whole seconds), refreshed after 8 s: a second or two to
    # renew each socket.
    with launch_server(tmp_path, ACCESS_TOKEN_SECONDS="10") as short_lived:
        ann, ben = Visitor(browser, short_lived), Visitor(browser, short_lived)
        try:
            ann_name, ben_name = short_lived.unique_username("ann"), short_lived.unique_username("ben")
            room = new_room(short_lived, short_lived.new_user("owner"))
            ann.register(ann_name)
            ben.register(ben_name)
            ben.enter_room(room)
            ann.enter_room(room)
            ann.page.evaluate(WATCH_STATUS)
            opened = []
            ann.page.on("websocket", lambda ws: opened.append(ws.url))

            # Past two lifetimes of each token, Ben talking all along.
            for n in range(22):
                ben.send(f"tick {n}")
                ann.page.wait_for_timeout(1000)

            expect(ann.message_texts).to_have_text([f"tick {n}" for n in range(22)])  # each once, in order
            assert len(opened) >= 2  # the socket was renewed, more than once
            assert all(re.search(r"[?&]since=\d+(&|$)", url) for url in opened), opened  # from the last seq shown
            assert "token expired" not in short_lived.log()  # no socket lived until its token's expiry
            expect(ben.page.locator("#messages .notice")).to_have_text([f"{ben_name} joined", f"{ann_name} joined"])
            expect(ann.page.locator("#messages .notice")).to_have_text([f"{ann_name} joined"])
            assert "reconnecting…" not in ann.page.evaluate("window.statuses")
            ann.send("still here")
            expect(ben.message_texts.last).to_have_text("still here")
            assert ann.errors == [] and ben.errors == []
        finally:
            ann.close()
            ben.close()


def test_the_page_refreshes_its_token_and_heals_the_expiry_close(browser, launch_server, tmp_path):
    with launch_server(tmp_path, ACCESS_TOKEN_SECONDS="4") as short_lived:
        ann = Visitor(browser, short_lived)
        try:
            ann.register(short_lived.unique_username("ann"))
            tickets = {"refused": False}
            ann.page.route("**/ws-ticket", lambda route: route.abort() if tickets["refused"] else route.continue_())
            ann.enter_room("general")
            first_token = access_token(ann.page)
            # No ticket to renew the socket with: it lives until its token expires after 4 s and the
            # server closes it with 4001; the page has refreshed its tokens by then and reconnects.
            tickets["refused"] = True
            deadline = time.monotonic() + 15
            while "token expired" not in short_lived.log() and time.monotonic() < deadline:
                ann.page.wait_for_timeout(200)
            assert "token expired" in short_lived.log()
            tickets["refused"] = False
            # Refreshed at 80% of the token's life, or at the 4001 close when a loaded machine made the
            # refresh's answer later than the expiry: either way a new token, then a new socket.
            deadline = time.monotonic() + 10
            while access_token(ann.page) == first_token and time.monotonic() < deadline:
                ann.page.wait_for_timeout(200)
            assert access_token(ann.page) != first_token
            expect(ann.status).to_have_text("connected", timeout=20_000)
            ann.send("still here")
            expect(ann.message_texts.last).to_have_text("still here")
        finally:
            ann.close()


def test_a_deactivated_user_is_logged_out_with_a_message(browser, launch_server, tmp_path, redis_url):
    # Another process (an operator's shell) reaches the server's sockets through Redis.
    with launch_server(tmp_path, REDIS_URL=redis_url) as shared:
        ann = Visitor(browser, shared)
        try:
            username = shared.unique_username("ann")
            ann.register(username)
            ann.enter_room("general")
            result = shared.manage(
                "shell",
                "-c",
                "from accounts.models import User; from accounts.services import user_set_active; "
                f"user_set_active(user=User.objects.get(username={username!r}), active=False)",
            )
            assert result.returncode == 0, result.stderr
            expect(ann.page.get_by_text("Your account has been deactivated.")).to_be_visible()
            expect(ann.page.get_by_role("button", name="Log in")).to_be_visible()
            expect(ann.page.get_by_role("button", name="Log out")).to_be_hidden()
        finally:
            ann.close()


def test_a_message_deleted_by_an_operator_disappears_from_the_page(browser, launch_server, tmp_path, redis_url):
    with launch_server(tmp_path, REDIS_URL=redis_url) as shared:
        ann = Visitor(browser, shared)
        try:
            ann.register(shared.unique_username("ann"))
            ann.enter_room("python")
            ann.send("about to be purged")
            expect(ann.message_texts.last).to_have_text("about to be purged")
            result = shared.manage("purge_messages", "--older-than", "0", "--room", "python")
            assert result.returncode == 0, result.stderr
            expect(ann.message_texts.filter(has_text="about to be purged")).to_have_count(0)
        finally:
            ann.close()


def test_two_tabs_of_one_user_share_the_session_and_its_end(browser, launch_server, tmp_path):
    # Tokens rotate on every refresh; with 4 s access tokens both tabs refresh about every second.
    with launch_server(tmp_path, ACCESS_TOKEN_SECONDS="4") as short_lived:
        ann = Visitor(browser, short_lived)
        try:
            ann.register(short_lived.unique_username("ann"))
            ann.enter_room("general")
            second = ann.context.new_page()  # same context, same localStorage: a second tab
            second_errors: list[str] = []
            second.on("pageerror", lambda error: second_errors.append(str(error)))
            second.goto(short_lived.base_url + "/")  # refreshes on load, revoking the first tab's refresh token
            expect(second.get_by_role("button", name="Log out")).to_be_visible()
            second.get_by_role("button", name="general", exact=True).click()
            expect(second.locator("#status")).to_have_text("connected")

            ann.page.wait_for_timeout(6000)  # several refreshes in each tab
            for page in (ann.page, second):
                expect(page.get_by_role("button", name="Log out")).to_be_visible()
            ann.send("from the first tab")
            expect(second.locator("#messages .message:not(.pending, .failed) .content").last).to_have_text(
                "from the first tab", timeout=15_000
            )

            logouts: list[int] = []
            ann.page.on("response", lambda r: logouts.append(r.status) if r.url.endswith("/logout") else None)
            ann.page.get_by_role("button", name="Log out").click()
            expect(second.get_by_role("button", name="Log in")).to_be_visible()  # the other tab follows
            expect(second.locator("#auth-notice")).to_have_text("You are logged out.")
            expect(second.locator("#app")).to_be_hidden()
            ann.page.wait_for_timeout(500)
            assert logouts == [204]
            assert ann.page.evaluate("localStorage.getItem('chat.session')") is None
            assert ann.errors == [] and second_errors == []
        finally:
            ann.close()


def test_logging_out_and_in_as_someone_else_leaves_nothing_of_the_first_user(visitors, server):
    ann, ben = visitors(), visitors()
    ann_name, ben_name, cat_name = (server.unique_username(prefix) for prefix in ("ann", "ben", "cat"))
    server.register(cat_name)
    room = new_room(server, server.new_user("owner"))
    ann.register(ann_name)
    ben.register(ben_name)
    expect(ann.status).to_have_text("no room open")
    ann.enter_room(room)
    ben.enter_room(room)
    ann.send("ann was here")
    expect(ann.message_texts.last).to_have_text("ann was here")
    ben.message_box.press_sequentially("hel")
    expect(ann.page.locator("#typing")).to_have_text(f"{ben_name} is typing…")
    ann.message_box.fill("ann's unsent draft")

    ann.page.get_by_role("button", name="Log out").click()
    ann.log_in(cat_name)
    page = ann.page
    expect(page.locator("#whoami-name")).to_have_text(cat_name)
    expect(page.locator("#room-title")).to_have_text("Pick a room")
    expect(page.locator("#room-body")).to_be_hidden()
    expect(page.locator("#messages li")).to_have_count(0)
    expect(ann.online).to_have_count(0)
    expect(page.locator("#typing")).to_have_text("")
    expect(ann.status).to_have_text("no room open")
    expect(page.locator(".room-link[aria-current]")).to_have_count(0)

    ann.enter_room(room)
    expect(ann.message_box).to_have_value("")
    expect(ann.message_texts).to_have_text(["ann was here"])
    expect(page.locator("#messages .message.own")).to_have_count(0)  # Ann's message is not Cat's
    ann.send("cat now")
    expect(ben.message_texts.last).to_have_text("cat now")
    assert ann.errors == []


def test_refused_messages_stay_on_screen_to_retry_and_the_draft_stays(browser, launch_server, tmp_path):
    with launch_server(tmp_path, CHAT_MESSAGE_RATE="3/3s") as limited:
        ann = Visitor(browser, limited)
        try:
            ann.register(limited.unique_username("ann"))
            room = new_room(limited, limited.new_user("owner"))
            ann.page.reload()
            expect(ann.page.get_by_role("button", name=room, exact=True)).to_be_visible()
            ann.enter_room(room)
            # Rate windows are aligned to the clock (chatproject.ratelimit): the burst starts at the
            # beginning of one, so it never straddles two and has its fourth message refused.
            time.sleep(3 - time.time() % 3 + 0.05)
            for n in range(1, 6):
                ann.send(f"burst {n}")
            ann.message_box.fill("a draft in progress")
            failed = ann.page.locator("#messages .message.failed")
            expect(failed.locator(".content")).to_have_text(["burst 4", "burst 5"])
            expect(failed.first).to_contain_text("Not sent: Too many messages")
            expect(ann.message_texts).to_have_text(["burst 1", "burst 2", "burst 3"])
            expect(ann.message_box).to_have_value("a draft in progress")

            ann.enter_room("general")  # they wait in their room
            ann.enter_room(room)
            expect(failed.locator(".content")).to_have_text(["burst 4", "burst 5"])
            ann.page.wait_for_timeout(3000)  # the limit's window passes
            failed.first.get_by_role("button", name="Retry").click()
            expect(ann.message_texts.last).to_have_text("burst 4")
            failed.first.get_by_role("button", name="Retry").click()
            expect(ann.message_texts).to_have_text([f"burst {n}" for n in range(1, 6)])
            expect(failed).to_have_count(0)
            assert ann.errors == []
        finally:
            ann.close()


def test_a_message_pending_when_its_room_is_left_is_still_delivered(visitors, server):
    owner = server.new_user("owner")
    room = new_room(server, owner)
    ann = visitors()
    ann.register(server.unique_username("ann"))

    def hold_back(ws):  # the page's socket never gets this message to the server
        to_server = ws.connect_to_server()
        ws.on_message(lambda frame: None if "held back" in str(frame) else to_server.send(frame))

    ann.page.route_web_socket(re.compile(r".*/ws/.*"), hold_back)
    ann.enter_room(room)
    ann.send("held back")
    expect(ann.page.locator("#messages .message.pending")).to_have_count(1)
    ann.enter_room("general")
    ann.page.wait_for_timeout(500)
    assert [message["content"] for message in server.history_after(owner.access_token, room)] == ["held back"]
    ann.enter_room(room)
    expect(ann.message_texts).to_have_text(["held back"])
    expect(ann.page.locator("#messages .message.pending, #messages .message.failed")).to_have_count(0)
    assert ann.errors == []


def test_a_room_opened_while_the_server_is_unreachable_opens_once_it_is_back(visitors, server):
    poster = server.new_user("poster")
    room = new_room(server, poster)
    assert server.post_message(poster.access_token, room, "already here").status == 201
    ann = visitors()
    ann.register(server.unique_username("ann"))
    unreachable = re.compile(r".*/(messages/|ws-ticket).*")
    ann.page.route(unreachable, lambda route: route.abort("connectionrefused"))
    ann.page.get_by_role("button", name=room, exact=True).click()
    expect(ann.status).to_have_text(re.compile("reconnecting"))
    ann.page.wait_for_timeout(1500)  # a few attempts fail
    ann.page.unroute(unreachable)
    expect(ann.status).to_have_text("connected", timeout=15_000)
    expect(ann.message_texts).to_have_text(["already here"])
    assert server.post_message(poster.access_token, room, "live").status == 201
    expect(ann.message_texts.last).to_have_text("live")
    assert ann.errors == []


MESSAGES_AT_BOTTOM = """() => {
  const list = document.getElementById("messages");
  return list.scrollHeight > list.clientHeight && list.scrollHeight - list.scrollTop - list.clientHeight < 2;
}"""


def test_at_desktop_width_the_conversation_scrolls_inside_the_window(visitors, server):
    poster = server.new_user("poster")
    room = new_room(server, poster)
    for n in range(1, 61):
        assert server.post_message(poster.access_token, room, f"line {n}").status == 201
    ann = visitors(viewport={"width": 1280, "height": 720})
    ann.register(server.unique_username("ann"))
    ann.enter_room(room)
    expect(ann.message_texts).to_have_count(50)
    page = ann.page
    assert page.evaluate("document.documentElement.scrollHeight") <= 720
    expect(ann.message_box).to_be_in_viewport()
    expect(page.locator("#rooms")).to_be_in_viewport()
    assert page.evaluate(MESSAGES_AT_BOTTOM)
    expect(ann.message_texts.last).to_be_in_viewport()

    assert server.post_message(poster.access_token, room, "live 1").status == 201
    expect(ann.message_texts.last).to_have_text("live 1")
    expect(ann.message_texts.last).to_be_in_viewport()
    assert page.evaluate(MESSAGES_AT_BOTTOM)

    page.evaluate("document.getElementById('messages').scrollTop = 0")  # reading back: left there
    assert server.post_message(poster.access_token, room, "live 2").status == 201
    expect(ann.message_texts.last).to_have_text("live 2")
    assert page.evaluate("document.getElementById('messages').scrollTop") == 0
    assert page.evaluate("document.documentElement.scrollHeight") <= 720


def test_load_older_keeps_the_view_when_the_older_page_holds_own_messages(visitors, server):
    poster = server.new_user("poster")
    room = new_room(server, poster)
    ann = visitors(viewport={"width": 1280, "height": 720})
    ann.register(server.unique_username("ann"))
    for n in range(1, 6):
        assert server.post_message(access_token(ann.page), room, f"mine {n}").status == 201
    for n in range(6, 61):
        assert server.post_message(poster.access_token, room, f"old {n}").status == 201
    ann.enter_room(room)
    expect(ann.message_texts).to_have_count(50)
    expect(ann.message_texts.first).to_have_text("old 11")
    page = ann.page
    page.evaluate("document.getElementById('messages').scrollTop = 0")
    was_first = page.locator("#messages .message", has_text="old 11")
    top_before = was_first.bounding_box()["y"]

    page.get_by_role("button", name="Load older").click()
    expect(ann.message_texts).to_have_count(60)
    expect(ann.message_texts.first).to_have_text("mine 1")
    assert abs(was_first.bounding_box()["y"] - top_before) < 5
    assert not page.evaluate(MESSAGES_AT_BOTTOM)


def test_a_long_username_fits_a_phone_screen(visitors, server):
    name = server.unique_username("long")
    name += "x" * (150 - len(name))  # the longest valid username
    room = new_room(server, server.new_user("owner"))
    ann = visitors(viewport={"width": 375, "height": 740})
    ann.register(name)
    ann.enter_room(room)
    ann.send("hi")
    expect(ann.message_texts.last).to_have_text("hi")
    expect(ann.page.locator("#messages .notice")).to_have_text([f"{name} joined"])
    expect(ann.online).to_have_text([name])
    assert ann.page.evaluate("document.documentElement.scrollWidth") <= 375
    expect(ann.page.locator("#whoami-name")).to_have_attribute("title", name)
    expect(ann.online.first).to_have_attribute("title", name)
    logout = ann.page.get_by_role("button", name="Log out").bounding_box()
    assert logout["x"] >= 0 and logout["x"] + logout["width"] <= 375


def test_the_message_box_counts_characters_as_the_server_does(visitors, server):
    room = new_room(server, server.new_user("owner"))
    ann = visitors()
    ann.register(server.unique_username("ann"))
    ann.enter_room(room)
    emoji = "\U0001f600" * 2500  # 2,500 characters, 5,000 UTF-16 units
    ann.message_box.fill(emoji)
    expect(ann.message_box).to_have_value(emoji)
    ann.message_box.press("Enter")
    expect(ann.message_texts.last).to_have_text(emoji)

    ann.message_box.fill("a" * 4001)
    too_long = "The message is 4001 characters long; at most 4000 can be sent."
    expect(ann.page.locator("#send-error")).to_have_text(too_long)
    ann.message_box.press("Enter")
    expect(ann.message_box).to_have_value("a" * 4001)  # kept to be shortened, not cut
    ann.page.wait_for_timeout(300)
    expect(ann.page.locator("#messages .message")).to_have_count(1)
    ann.message_box.press("Backspace")
    expect(ann.page.locator("#send-error")).to_have_text("")
    ann.message_box.press("Enter")
    expect(ann.message_texts.last).to_have_text("a" * 4000)


def test_keyboard_focus_and_screen_reader_announcements(visitors, server):
    poster = server.new_user("poster")
    room = new_room(server, poster)
    for n in range(1, 56):
        assert server.post_message(poster.access_token, room, f"old {n}").status == 201
    ann, ben = visitors(), visitors()
    ben.register(server.unique_username("ben"))
    ann.open()
    ann.fill_credentials(server.unique_username("ann"))
    ann.page.get_by_role("button", name="Register", exact=True).focus()
    ann.page.keyboard.press("Enter")
    expect(ann.page.get_by_role("button", name="Log out")).to_be_visible()
    focused = "document.activeElement.id || document.activeElement.dataset.room || document.activeElement.tagName"
    assert ann.page.evaluate(focused) == "rooms-title"  # not lost to <body> with the form

    ann.page.get_by_role("button", name=room, exact=True).focus()
    ann.page.wait_for_timeout(16_000)  # the room list is built anew every 15 s
    assert ann.page.evaluate(focused) == room

    ann.page.keyboard.press("Enter")
    expect(ann.status).to_have_text("connected")
    assert ann.page.locator("#messages").get_attribute("aria-live") is None  # history is not read out
    expect(ann.page.locator("#announce")).to_have_text("")
    ann.page.get_by_role("button", name="Load older").focus()
    ann.page.keyboard.press("Enter")
    expect(ann.page.get_by_role("button", name="Load older")).to_be_hidden()
    assert ann.page.evaluate(focused) == "messages"

    ben.enter_room(room)
    expect(ann.page.locator("#announce")).to_have_text(f"{ben.page.locator('#whoami-name').inner_text()} joined")
    ann.page.evaluate(
        "window.typingChanges = 0; new MutationObserver(() => window.typingChanges++)"
        ".observe(document.getElementById('typing'), {childList: true, characterData: true, subtree: true})"
    )
    ben.message_box.press_sequentially("a")
    ben.page.wait_for_timeout(2_500)  # the next typing frame, after TYPING_SEND_EVERY_MS
    ben.message_box.press_sequentially("b")
    ben.page.wait_for_timeout(500)
    assert ann.page.evaluate("window.typingChanges") == 1  # shown once, not announced again
    ben.message_box.fill("hello ann")
    ben.message_box.press("Enter")
    expect(ann.page.locator("#announce")).to_have_text(re.compile(r": hello ann$"))
    ann.send("mine")
    expect(ann.message_texts.last).to_have_text("mine")
    expect(ann.page.locator("#announce")).to_have_text(re.compile(r": hello ann$"))  # one's own is not announced
    assert ann.errors == []


@pytest.mark.parametrize("width", [375, 1280])
def test_a_long_room_name_is_cut_short_and_the_page_keeps_its_width(visitors, server, width):
    name = server.unique_username("long").replace("-", "_")
    name += "x" * (50 - len(name))  # the longest valid name, with no place to break it
    server.post("/rooms", json_body={"name": name}, token=server.new_user("owner").access_token)
    ann = visitors(viewport={"width": width, "height": 740})
    ann.register(server.unique_username("ann"))

    ann.enter_room(name)

    assert ann.page.evaluate("document.documentElement.scrollWidth") <= width
    sidebar = ann.page.locator(".sidebar")
    assert sidebar.evaluate("e => e.scrollWidth <= e.clientWidth")
    expect(ann.page.get_by_role("button", name=name, exact=True)).to_have_attribute("title", name)
    edges = sidebar.bounding_box()
    others = ann.page.get_by_role("heading", name="Rooms"), ann.page.get_by_role("button", name="general", exact=True)
    for other in (*others, ann.page.locator(".room-online").first):
        box = other.bounding_box()  # nothing pushed out sideways (the list may be long: it scrolls down)
        assert edges["x"] <= box["x"] and box["x"] + box["width"] <= edges["x"] + edges["width"], (box, edges)
    count = ann.page.locator(f'.room-online[data-room="{name}"]').bounding_box()
    assert count["x"] + count["width"] <= edges["x"] + edges["width"]


def test_right_to_left_messages_and_titles_read_right_to_left(visitors, server):
    owner = server.new_user("owner")
    room = server.unique_username("rtl")
    server.post("/rooms", json_body={"name": room, "title": "שיחה חופשית"}, token=owner.access_token)
    ann = visitors()
    ann.register(server.unique_username("ann"))
    ann.enter_room(room)

    ann.send("מה שלומך?")
    ann.send("hello?")

    expect(ann.message_texts).to_have_text(["מה שלומך?", "hello?"])
    assert ann.message_texts.evaluate_all("nodes => nodes.map(n => n.matches(':dir(rtl)'))") == [True, False]
    expect(ann.page.locator("#room-title")).to_have_text(f"שיחה חופשית (#{room})")
    assert ann.page.locator("#room-title").evaluate("e => e.matches(':dir(ltr)')")  # the "(#name)" in place
    assert ann.page.locator("#room-title bdi").evaluate("e => e.matches(':dir(rtl)')")


def test_a_mute_says_until_when_in_the_readers_own_time(visitors, server):
    room = new_room(server, server.new_user("owner"))
    ann = visitors(timezone_id="Asia/Tokyo", locale="en-GB")
    name = server.unique_username("ann")
    ann.register(name)
    ann.enter_room(room)
    muted = server.manage("mute_user", name, room, "--minutes", "30")
    assert muted.returncode == 0, muted.stderr

    ann.send("can anyone hear me")

    failure = ann.page.locator("#messages .message.failed .failure-text")
    expect(failure).to_have_text(re.compile(r"^Not sent: You are muted in this room until (.+ )?\d\d:\d\d\.$"))
    tokyo = datetime.now(ZoneInfo("Asia/Tokyo")) + timedelta(minutes=30)
    candidates = {f"{tokyo + timedelta(minutes=d):%H:%M}." for d in (-1, 0, 1)}  # the minute may turn
    assert any(failure.inner_text().endswith(c) for c in candidates), (failure.inner_text(), candidates)


def test_the_open_room_and_its_draft_survive_a_reload_and_back_returns_to_the_room_before(visitors, server):
    ann = visitors()
    ann.register(server.unique_username("ann"))
    ann.enter_room("general")
    ann.message_box.fill("half a thought")

    ann.enter_room("random")
    expect(ann.message_box).to_have_value("")  # the draft stays with its room
    assert urlparse(ann.page.url).fragment == "random"
    ann.page.go_back()
    expect(ann.page.locator("#room-title")).to_contain_text("#general")
    expect(ann.status).to_have_text("connected")
    expect(ann.message_box).to_have_value("half a thought")

    ann.page.reload()
    expect(ann.page.locator("#room-title")).to_contain_text("#general")
    expect(ann.status).to_have_text("connected")
    expect(ann.message_box).to_have_value("half a thought")
    ann.send("the whole thought")
    expect(ann.message_texts.last).to_have_text("the whole thought")
    ann.page.reload()
    expect(ann.status).to_have_text("connected")
    expect(ann.message_box).to_have_value("")  # sent, so no longer a draft

    ann.page.get_by_role("button", name="Log out").click()
    assert urlparse(ann.page.url).fragment == ""
    assert ann.page.evaluate("Object.keys(sessionStorage).filter(k => k.startsWith('chat.draft.'))") == []
    assert ann.errors == []


def test_the_page_says_when_the_network_is_gone_and_sends_when_it_is_back(visitors, server):
    ann, ben = visitors(), visitors()
    room = new_room(server, server.new_user("owner"))
    ann.register(server.unique_username("ann"))
    ben.register(server.unique_username("ben"))
    ann.enter_room(room)
    ben.enter_room(room)

    ann.context.set_offline(True)
    expect(ann.status).to_have_text("no network")
    ann.send("written offline")
    expect(ann.page.locator("#messages .message.pending .content")).to_have_text(["written offline"])
    ann.context.set_offline(False)

    expect(ann.status).to_have_text("connected", timeout=20_000)
    expect(ben.message_texts).to_have_text(["written offline"], timeout=20_000)
    expect(ann.message_texts).to_have_text(["written offline"])


def test_a_room_left_counts_one_fewer_online_at_once(visitors, server):
    room = new_room(server, server.new_user("owner"))
    ann = visitors()
    ann.register(server.unique_username("ann"))
    ann.enter_room(room)
    count = ann.page.locator(f'.room-online[data-room="{room}"]')
    expect(count).to_have_text("1 online")

    ann.enter_room("general")

    expect(count).to_have_text("0 online", timeout=5_000)  # not at the next poll, 15 s on


def test_a_room_made_in_the_page_opens_at_once_and_refusals_show_in_words(visitors, server):
    ann, bob = visitors(), visitors()
    ann.register(server.unique_username("ann"))
    bob.register(server.unique_username("bob"))
    page, name = ann.page, server.unique_username("made")
    expect(page.get_by_label("Name", exact=True)).to_be_hidden()  # folded away until asked for

    page.get_by_text("New room", exact=True).click()
    page.get_by_label("Name", exact=True).fill("")
    page.get_by_role("button", name="Create").click()
    expect(page.locator("#room-error")).to_have_text("Enter a name for the room.")
    page.get_by_label("Name", exact=True).fill("two words")
    page.get_by_role("button", name="Create").click()
    expect(page.locator("#room-error")).to_have_text("Name: Use 1-50 letters, digits, hyphens or underscores.")
    expect(page.get_by_label("Name", exact=True)).to_have_attribute("aria-invalid", "true")
    page.get_by_label("Name", exact=True).fill("General")
    page.get_by_role("button", name="Create").click()
    expect(page.locator("#room-error")).to_have_text("Name: A room with that name already exists.")
    expect(page.get_by_label("Title (optional)")).to_be_visible()  # still open, as filled in

    page.get_by_label("Name", exact=True).fill(name)
    page.get_by_label("Title (optional)").fill("Made in the page")
    page.get_by_role("button", name="Create").click()

    expect(ann.status).to_have_text("connected")
    expect(page.locator("#room-title")).to_have_text(f"Made in the page (#{name})")
    expect(page.get_by_role("button", name=name, exact=True)).to_have_attribute("aria-current", "true")
    expect(page.get_by_label("Name", exact=True)).to_be_hidden()
    expect(page.locator("#room-error")).to_have_text("")
    assert urlparse(page.url).fragment == name
    ann.send("first words here")
    expect(ann.message_texts).to_have_text(["first words here"])

    bob.page.reload()  # the list comes at sign-in and every 15 s
    bob.enter_room(name)
    expect(bob.message_texts).to_have_text(["first words here"])
    response = server.get("/rooms")
    assert {"name": name, "title": "Made in the page", "online": 2, "archived": False} in response.json()["rooms"]


def set_archived(server, room: str, archived: bool) -> None:
    """A moderator's archive (or unarchive), from another process: the service the admin calls."""
    action = "room_archive" if archived else "room_unarchive"
    code = f"from chat import services; from chat.models import Room; services.{action}(room=Room.objects.get(name={room!r}))"  # noqa: E501
    done = server.manage("shell", "-c", code)
    assert done.returncode == 0, done.stderr


def test_an_archived_room_reads_as_before_and_says_why_it_takes_no_messages(visitors, server):
    room = new_room(server, server.new_user("owner"))
    ann, bob = visitors(), visitors()
    ann.register(server.unique_username("ann"))
    bob.register(server.unique_username("bob"))
    ann.enter_room(room)
    ann.send("said before the archive")
    expect(ann.message_texts).to_have_text(["said before the archive"])
    note = ann.page.locator("#archived-note")
    expect(note).to_be_hidden()
    ann.page.route("**/rooms", lambda route: route.abort())  # the list cannot tell: only the refusal can

    set_archived(server, room, True)
    ann.send("too late")

    failure = ann.page.locator("#messages .message.failed .failure-text")
    expect(failure).to_have_text("Not sent: This room is archived; its history is read-only.")
    expect(note).to_be_visible()  # at the refusal, not at the next poll of the list
    expect(ann.message_box).not_to_be_editable()
    expect(ann.page.get_by_role("button", name="Send", exact=True)).to_be_disabled()

    bob.page.reload()
    item = bob.page.locator(".room-item", has=bob.page.locator(f'button[data-room="{room}"]'))
    badge = item.locator(".room-archived")
    expect(badge).to_have_text("archived")
    expect(bob.page.get_by_role("button", name=room, exact=True)).to_have_accessible_description("archived")
    bob.enter_room(room)
    expect(bob.message_texts).to_have_text(["said before the archive"])
    expect(bob.page.locator("#archived-note")).to_be_visible()
    expect(bob.message_box).not_to_be_editable()
    bob.enter_room("general")
    expect(bob.page.locator("#archived-note")).to_be_hidden()
    expect(bob.message_box).to_be_editable()

    set_archived(server, room, False)
    bob.page.reload()
    expect(badge).to_have_count(0)
    bob.enter_room(room)
    expect(bob.page.locator("#archived-note")).to_be_hidden()
    bob.send("open again")
    expect(bob.message_texts).to_have_text(["said before the archive", "open again"])


def test_a_long_stream_keeps_the_page_to_its_newest_thousand_items_and_older_ones_page_back_in(visitors, server):
    poster = server.new_user("poster")
    room = new_room(server, poster)
    ann = visitors()
    ann.register(server.unique_username("ann"))
    ann.enter_room(room)
    total = 1100

    for n in range(1, total + 1):
        response = server.post(f"/messages/{room}", json_body={"content": f"stream {n}"}, token=poster.access_token)
        assert response.status == 201, response.body

    expect(ann.message_texts.last).to_have_text(f"stream {total}", timeout=30_000)
    shown = ann.page.locator("#messages > li")
    assert 800 <= shown.count() <= 1000  # not all 1,100 messages and the notices
    texts = ann.message_texts.all_inner_texts()
    first = int(texts[0].split()[1])
    assert texts == [f"stream {n}" for n in range(first, total + 1)]  # the newest, each once, in order
    assert ann.page.evaluate(MESSAGES_AT_BOTTOM)

    ann.page.get_by_role("button", name="Load older").click()
    expect(ann.message_texts.first).to_have_text(f"stream {first - 50}")
    texts = ann.message_texts.all_inner_texts()
    assert texts == [f"stream {n}" for n in range(first - 50, total + 1)]
    assert ann.errors == []
