"""The pages in a real browser: Debian's headless Chromium driven by Playwright.

extauth runs as users run it (``extauth serve --demo``, or ``extauth serve``
beside panva's oidc-provider); the browser signs in, links through the device
flow (approving the code in a second tab, at the provider's own pages) and
through the web flow, unlinks, and is attacked with a planted session. Elements
are found by role and accessible name, as a person finds them. The run writes a
screenshot of each page to ``docs/screenshots/`` (the README shows them).

Playwright's own browser download is not used: Chromium is Debian's
(``apt-get install chromium``, which ``.ci/run`` does).
"""

from __future__ import annotations

import os
import re
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.sync_api import Browser, BrowserContext, Page, expect, sync_playwright

from tests.fake_provider import Answer, FakeProvider
from tests.live import LiveServer, cli
from tests.test_e2e_oidc import WebFlow
from tests.test_live import DemoServer

pytestmark = [pytest.mark.browser, pytest.mark.live]

CHROMIUM = Path(os.environ.get("EXTAUTH_CHROMIUM", "/usr/bin/chromium"))
# Everything Chromium would fetch from elsewhere is switched off: the tests
# talk to 127.0.0.1 only.
CHROMIUM_ARGS = ["--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update",
                 "--disable-sync"]
SCREENSHOTS = Path(__file__).resolve().parents[1] / "docs" / "screenshots"
DEMO_NAME = "Demo provider (not a real OAuth server)"
WRONG_TOKEN = "0123456789-" + "x" * 22
# The device flow polls every 2 s at the demo provider; oidc-provider asks 5 s.
LINKED_WITHIN_MS = 30_000


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    if not CHROMIUM.exists():
        pytest.fail(f"{CHROMIUM} is missing: install Debian's chromium "
                    "(apt-get install -y chromium), as .ci/run does", pytrace=False)
    args = list(CHROMIUM_ARGS)
    if os.geteuid() == 0:
        args.append("--no-sandbox")  # Chromium's sandbox refuses to run as root
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(CHROMIUM), args=args, headless=True)
        yield b
        b.close()


class Tab:
    """A page of a browser context, and the script errors and blocked or failed
    loads its console reported (with the URL of the page they happened on)."""

    def __init__(self, context: BrowserContext) -> None:
        self.context = context
        self.page = context.new_page()
        self.problems: list[tuple[str, str]] = []
        # Only the problems of pages under this origin count (None: every page);
        # a third-party provider's own pages are not ours to judge.
        self.origin: str | None = None
        self.page.on("console", self._console)
        self.page.on("pageerror", lambda exc: self.problems.append(
            (self.page.url, f"page error: {exc}")))

    def _console(self, message: Any) -> None:
        if message.type != "error":
            return
        url = message.location.get("url", "")
        # Chromium logs every answer >= 400 as a failed load: the API's (the
        # device flow polls through 400 authorization_pending, by design) and
        # the sign-in form's 401 are answers, not problems of the page.
        answered = message.text.startswith("Failed to load resource: the server responded")
        if answered and ("/api/v2/" in url or "status of 401" in message.text):
            return
        self.problems.append((url, message.text))

    def ours(self) -> list[str]:
        return [text for url, text in self.problems
                if self.origin is None or url.startswith(self.origin)]

    def session_cookies(self) -> list[dict[str, Any]]:
        return [c for c in self.context.cookies() if c["name"] == "coder_session_token"]


@pytest.fixture
def context(browser: Browser) -> Iterator[BrowserContext]:
    ctx = browser.new_context(viewport={"width": 900, "height": 720})
    ctx.set_default_timeout(15_000)
    # Nothing leaves this machine, whatever a page asks for.
    ctx.route(re.compile(r"^(?!https?://127\.0\.0\.1[:/])"), lambda route: route.abort())
    yield ctx
    ctx.close()


@pytest.fixture
def tab(context: BrowserContext) -> Iterator[Tab]:
    t = Tab(context)
    yield t
    assert t.ours() == [], t.ours()  # no script error, nothing the CSP blocked


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DemoServer]:
    server = DemoServer(tmp_path_factory.mktemp("browser-demo")).start()
    yield server
    server.stop()


def shot(page: Page, name: str) -> None:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / f"{name}.png"), full_page=True)


def links_of(db: Path, user: str) -> list[str]:
    """The providers ``user`` has a stored link with."""
    with sqlite3.connect(db) as conn:
        rows = conn.execute(
            "SELECT l.provider_id FROM external_auth_links l JOIN users u ON u.id = l.user_id "
            "WHERE u.name = ? ORDER BY 1", (user,)).fetchall()
    conn.close()
    return [r[0] for r in rows]


def new_user(db: Path, name: str) -> str:
    return cli("users", "create", name, db=db).stdout.strip()


def sign_in(page: Page, token: str) -> None:
    """On the sign-in page: type the token, press Sign in."""
    expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
    page.get_by_label("Session token").fill(token)
    page.get_by_role("button", name="Sign in").click()


def provider_card(page: Page, name: str) -> Any:
    return page.get_by_role("listitem").filter(has=page.get_by_role("heading", name=name))


def open_provider_page(page: Page, base: str, token: str, provider_id: str) -> None:
    page.goto(f"{base}/external-auth/{provider_id}")
    if "/login" in page.url:
        sign_in(page, token)
    expect(page).to_have_url(re.compile(rf"/external-auth/{provider_id}(\?.*)?$"))


def unlink_all(demo: DemoServer) -> None:
    with httpx.Client(base_url=demo.url, headers={"Coder-Session-Token": demo.token}) as c:
        for link in c.get("/api/v2/external-auth").json()["links"]:
            c.delete(f"/api/v2/external-auth/{link['provider_id']}")


# -- sign in --------------------------------------------------------------------------------


def test_sign_in_wrong_token_then_right(demo: DemoServer, tab: Tab) -> None:
    page = tab.page
    page.goto(f"{demo.url}/external-auth")
    # No session: the sign-in page, which will come back here.
    expect(page).to_have_url(f"{demo.url}/login?redirect=/external-auth")
    expect(page.get_by_label("Session token")).to_be_focused()
    shot(page, "sign-in")

    with page.expect_response(f"{demo.url}/login") as answer:
        sign_in(page, WRONG_TOKEN)
    assert answer.value.status == 401
    expect(page.get_by_role("alert")).to_contain_text("API key is invalid.")
    assert tab.session_cookies() == []

    sign_in(page, demo.token)
    expect(page).to_have_url(f"{demo.url}/external-auth")
    expect(page.get_by_role("heading", name="External authentication", level=1)).to_be_visible()
    [cookie] = tab.session_cookies()
    assert cookie["httpOnly"] is True and cookie["sameSite"] == "Lax"
    assert cookie["secure"] is False  # the access URL is plain http
    # Nothing on the page (or reachable by its scripts) holds the token.
    assert demo.token not in page.content()
    assert page.evaluate("document.cookie") == ""

    page.get_by_role("button", name="Sign out").click()
    expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
    assert tab.session_cookies() == []


# -- the demo provider ---------------------------------------------------------------------


def test_link_the_demo_provider_through_the_device_flow(demo: DemoServer, tab: Tab) -> None:
    unlink_all(demo)
    page, context = tab.page, tab.context
    context.grant_permissions(["clipboard-read", "clipboard-write"], origin=demo.url)
    page.goto(f"{demo.url}/external-auth")
    sign_in(page, demo.token)
    card = provider_card(page, DEMO_NAME)
    expect(card).to_contain_text("Not linked")
    card.get_by_role("link", name="Link").click()

    expect(page.get_by_role("heading", name=f"Link {DEMO_NAME}")).to_be_visible()
    page.get_by_role("button", name="Link", exact=True).click()
    code = page.get_by_label("User code")
    expect(code).to_have_text(re.compile(r"^[A-Z]{4}-[A-Z]{4}$"))
    user_code = code.inner_text()
    expect(page.get_by_text(re.compile(r"The code expires in \d+:\d\d\."))).to_be_visible()
    page.get_by_role("button", name="Copy").click()
    expect(page.get_by_text("Copied.")).to_be_visible()
    assert page.evaluate("navigator.clipboard.readText()") == user_code
    shot(page, "device-flow-waiting")

    # The verification link opens the provider in a new tab, where the user approves.
    verification = f"{demo.url}/demo/device"
    with context.expect_page() as opened:
        page.get_by_role("link", name=verification).click()
    provider = opened.value
    provider.get_by_label("User code").fill(user_code)
    provider.get_by_role("button", name="Approve").click()
    expect(provider.get_by_role("heading", name="Approved")).to_be_visible()
    provider.close()

    # The page polls the exchange and turns into the linked view by itself.
    expect(page.get_by_role("heading", name=f"Authenticated with {DEMO_NAME}")).to_be_visible(
        timeout=LINKED_WITHIN_MS)
    expect(page.get_by_text(re.compile(f"^Signed in at {re.escape(DEMO_NAME)} as demo-user"))
           ).to_be_visible()
    assert links_of(demo.db, "demo") == ["demo"]
    assert user_code not in page.content()
    shot(page, "linked")

    page.get_by_role("link", name="External authentication").click()
    expect(provider_card(page, DEMO_NAME)).to_contain_text("Linked as demo-user")
    shot(page, "list")


def test_link_the_demo_provider_through_the_web_flow_then_unlink(demo: DemoServer,
                                                                 tab: Tab) -> None:
    unlink_all(demo)
    page = tab.page
    open_provider_page(page, demo.url, demo.token, "demo")
    page.get_by_role("link", name="Link in this browser instead").click()
    # The demo provider's consent page, in extauth's look.
    expect(page.get_by_role("heading", name="Authorize extauth")).to_be_visible()
    page.get_by_role("button", name="Approve").click()
    expect(page).to_have_url(f"{demo.url}/external-auth/demo?redirected=true")
    expect(page.get_by_role("heading", name=f"Authenticated with {DEMO_NAME}")).to_be_visible()
    assert links_of(demo.db, "demo") == ["demo"]

    page.get_by_role("link", name="External authentication").click()
    card = provider_card(page, DEMO_NAME)
    card.get_by_role("button", name="Unlink").click()
    # Asked once...
    card.get_by_role("button", name="Yes, unlink").click()
    # ...then told whether the provider revoked the token.
    expect(card.get_by_role("status")).to_have_text(
        f"Unlinked {DEMO_NAME}. The token was revoked at the provider.")
    expect(card).to_contain_text("Not linked")
    expect(card.get_by_role("link", name="Link")).to_be_visible()
    assert links_of(demo.db, "demo") == []


def test_unlink_can_be_cancelled(demo: DemoServer, tab: Tab) -> None:
    unlink_all(demo)
    page = tab.page
    open_provider_page(page, demo.url, demo.token, "demo")
    page.get_by_role("link", name="Link in this browser instead").click()
    page.get_by_role("button", name="Approve").click()
    expect(page.get_by_role("heading", name=f"Authenticated with {DEMO_NAME}")).to_be_visible()
    page.get_by_role("button", name="Unlink").click()
    page.get_by_role("button", name="Cancel").click()
    expect(page.get_by_role("button", name="Unlink")).to_be_focused()
    assert links_of(demo.db, "demo") == ["demo"]


def test_the_callback_without_a_session_signs_in_then_continues(demo: DemoServer,
                                                                tab: Tab) -> None:
    unlink_all(demo)
    page = tab.page
    page.goto(f"{demo.url}/external-auth/demo/callback")
    expect(page).to_have_url(f"{demo.url}/login?redirect=/external-auth/demo/callback")
    sign_in(page, demo.token)
    # Back at the callback, which goes on to the provider.
    expect(page.get_by_role("heading", name="Authorize extauth")).to_be_visible()
    page.get_by_role("button", name="Approve").click()
    expect(page.get_by_role("heading", name=f"Authenticated with {DEMO_NAME}")).to_be_visible()
    assert links_of(demo.db, "demo") == ["demo"]


def test_a_planted_session_sets_no_cookie_and_links_nothing(demo: DemoServer,
                                                            tab: Tab) -> None:
    """The attack that worked before: the attacker's token in a link to the
    callback. The victim approves at the provider (which often happens silently)
    and comes back without any session of the attacker's."""
    attacker = new_user(demo.db, "mallory")
    page = tab.page
    page.goto(f"{demo.url}/external-auth/demo/callback?coder_session_token={attacker}")
    expect(page.get_by_role("heading", name="Authorize extauth")).to_be_visible()
    assert tab.session_cookies() == []
    page.get_by_role("button", name="Approve").click()
    # Back at the callback with no session: the sign-in page, not a link.
    expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
    assert "coder_session_token" not in page.url
    assert tab.session_cookies() == []
    assert links_of(demo.db, "mallory") == []


def test_the_keyboard_alone_signs_in_and_links(demo: DemoServer, tab: Tab) -> None:
    unlink_all(demo)
    page = tab.page
    page.goto(f"{demo.url}/login")

    def tab_to(name: str, limit: int = 25) -> None:
        """Press Tab until the element named ``name`` has the focus, checking at
        every stop that the focus can be seen."""
        for _ in range(limit):
            page.keyboard.press("Tab")
            focused = page.evaluate("""() => {
                const e = document.activeElement;
                const s = getComputedStyle(e);
                return {text: (e.innerText || e.value || '').trim(),
                        outline: s.outlineStyle, width: parseFloat(s.outlineWidth)};
            }""")
            assert focused["outline"] != "none" and focused["width"] >= 2, focused
            if focused["text"] == name:
                return
        raise AssertionError(f"{name!r} was not reached with Tab")

    expect(page.get_by_label("Session token")).to_be_focused()
    page.keyboard.type(demo.token)
    tab_to("Sign in")
    page.keyboard.press("Enter")
    expect(page.get_by_role("heading", name="External authentication")).to_be_visible()
    tab_to("Link")
    page.keyboard.press("Enter")
    expect(page.get_by_role("heading", name=f"Link {DEMO_NAME}")).to_be_visible()
    tab_to("Link in this browser instead")
    page.keyboard.press("Enter")
    expect(page.get_by_role("heading", name="Authorize extauth")).to_be_visible()
    tab_to("Approve")
    page.keyboard.press("Enter")
    expect(page.get_by_role("heading", name=f"Authenticated with {DEMO_NAME}")).to_be_visible()
    assert links_of(demo.db, "demo") == ["demo"]


def test_the_pages_are_readable_at_320_pixels(demo: DemoServer, browser: Browser) -> None:
    context = browser.new_context(viewport={"width": 320, "height": 640})
    try:
        page = context.new_page()
        page.goto(f"{demo.url}/login")
        pages = ["/login", "/external-auth", "/external-auth/demo", "/demo/device"]
        for path in pages:
            page.goto(f"{demo.url}{path}")
            if "/login" in page.url and path != "/login":
                sign_in(page, demo.token)
                page.goto(f"{demo.url}{path}")
            wide = page.evaluate("document.documentElement.scrollWidth")
            assert wide <= 320, f"{path} is {wide}px wide at 320px"
            size = page.evaluate("parseFloat(getComputedStyle(document.body).fontSize)")
            assert size >= 16, f"{path}: {size}px text"
    finally:
        context.close()


# -- panva's oidc-provider -----------------------------------------------------------------


class OidcSite(WebFlow):
    """extauth with two providers at one oidc-provider: ``oidc`` (web flow, its
    callback the client's redirect URI) and ``oidc-device`` (device flow)."""

    def __init__(self, tmp: Path) -> None:
        super().__init__(tmp, display_name="OIDC web")

    def providers(self) -> list[dict[str, Any]]:
        device = self.oidc.provider_config(id="oidc-device", display_name="OIDC device")
        return [*super().providers(), device]


@pytest.fixture(scope="module")
def oidc_site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OidcSite]:
    with OidcSite(tmp_path_factory.mktemp("browser-oidc")) as site:
        yield site


def through_oidc_pages(page: Page, login: str, user_code: str | None = None) -> None:
    """Play the user on oidc-provider's own pages (their fields have no labels:
    placeholders name them), until they hand back to extauth or say done."""
    for _ in range(8):
        page.wait_for_load_state()
        if "127.0.0.1" in page.url and "/external-auth/" in page.url:
            return
        if page.get_by_role("heading", name="Sign-in Success").count():
            return
        if page.get_by_placeholder("Enter code").count():
            page.get_by_placeholder("Enter code").fill(user_code or "")
            page.get_by_role("button", name="Continue").click()
        elif page.get_by_placeholder("Enter any login").count():
            page.get_by_placeholder("Enter any login").fill(login)
            page.get_by_placeholder("and password").fill("any password")
            page.get_by_role("button", name="Sign-in").click()
        else:
            page.get_by_role("button", name="Continue").click()
        page.wait_for_load_state()
    raise AssertionError(f"oidc-provider's pages did not finish: {page.url}")


def test_oidc_provider_device_flow(oidc_site: OidcSite, tab: Tab) -> None:
    server = oidc_site.server
    token = server.token("olivia")
    tab.origin = server.url
    page, context = tab.page, tab.context
    open_provider_page(page, server.url, token, "oidc-device")
    page.get_by_role("button", name="Link", exact=True).click()
    code = page.get_by_label("User code")
    expect(code).not_to_be_empty()
    user_code = code.inner_text()
    with context.expect_page() as opened:
        page.get_by_role("link", name=f"{oidc_site.oidc.issuer}/device").click()
    provider = opened.value
    through_oidc_pages(provider, "olivia", user_code)
    expect(provider.get_by_role("heading", name="Sign-in Success")).to_be_visible()
    provider.close()
    expect(page.get_by_role("heading", name="Authenticated with OIDC device")).to_be_visible(
        timeout=LINKED_WITHIN_MS)
    expect(page.get_by_text(re.compile("^Signed in at OIDC device as olivia"))).to_be_visible()
    assert links_of(server.db, "olivia") == ["oidc-device"]


def test_oidc_provider_web_flow(oidc_site: OidcSite, tab: Tab) -> None:
    server = oidc_site.server
    token = server.token("oscar")
    tab.origin = server.url
    page = tab.page
    open_provider_page(page, server.url, token, "oidc")
    page.get_by_role("link", name="Link", exact=True).click()
    through_oidc_pages(page, "oscar")
    expect(page).to_have_url(f"{server.url}/external-auth/oidc?redirected=true")
    expect(page.get_by_role("heading", name="Authenticated with OIDC web")).to_be_visible()
    expect(page.get_by_text(re.compile("^Signed in at OIDC web as oscar"))).to_be_visible()
    assert links_of(server.db, "oscar") == ["oidc"]


# -- the device flow's answers, from our fake provider ----------------------------------


@pytest.fixture(scope="module")
def fake_site(tmp_path_factory: pytest.TempPathFactory,
              _fake_server: FakeProvider) -> Iterator[LiveServer]:
    server = LiveServer(tmp_path_factory.mktemp("browser-fake"),
                        [_fake_server.config(display_name="Fake Git")]).start()
    yield server
    server.stop()


def _device(fake: FakeProvider, code: str, user_code: str, interval: int,
            expires_in: int = 900) -> Answer:
    return Answer(json={"device_code": code, "user_code": user_code,
                        "verification_uri": f"{fake.url}/device",
                        "expires_in": expires_in, "interval": interval})


def _oauth_error(code: str) -> Answer:
    return Answer(status=400, json={"error": code})


def test_the_device_flow_slows_down_and_shows_denial_and_expiry(
    fake_site: LiveServer, fake: FakeProvider, tab: Tab
) -> None:
    """Polling at the provider's interval, 5 s slower after ``slow_down`` (RFC 8628
    3.5); ``access_denied`` and ``expired_token`` end it with Try again."""
    page = tab.page
    polls: list[float] = []
    page.on("request", lambda r: polls.append(time.monotonic()) if (
        r.method == "POST" and r.url.endswith("/api/v2/external-auth/fake/device")) else None)
    fake.script("device", _device(fake, "dc-one", "ONE-CODE", interval=1),
                _device(fake, "dc-two", "TWO-CODE", interval=1))
    fake.script("token", _oauth_error("authorization_pending"), _oauth_error("slow_down"),
                _oauth_error("access_denied"), _oauth_error("expired_token"))
    open_provider_page(page, fake_site.url, fake_site.token("dora"), "fake")

    page.get_by_role("button", name="Link", exact=True).click()
    expect(page.get_by_label("User code")).to_have_text("ONE-CODE")
    expect(page.get_by_role("alert")).to_have_text("Access to Fake Git was denied.",
                                                   timeout=LINKED_WITHIN_MS)
    assert len(polls) == 3, polls
    assert polls[1] - polls[0] < 4, "polled at the provider's interval (1 s)"
    assert polls[2] - polls[1] >= 5.5, "slow_down added 5 seconds"
    expect(page.get_by_label("User code")).to_be_hidden()
    retry = page.get_by_role("button", name="Try again")
    expect(retry).to_be_focused()

    retry.click()
    expect(page.get_by_label("User code")).to_have_text("TWO-CODE")
    expect(page.get_by_role("alert")).to_have_text(
        "The one-time code has expired. Try again to get a new one.", timeout=LINKED_WITHIN_MS)
    assert [s.form["device_code"] for s in fake.seen("token")] == [
        "dc-one", "dc-one", "dc-one", "dc-two"]
    assert links_of(fake_site.db, "dora") == []


def test_the_device_flow_says_when_the_provider_is_down(
    fake_site: LiveServer, fake: FakeProvider, tab: Tab
) -> None:
    page = tab.page
    fake.script("device", Answer(status=503, text="down"))
    open_provider_page(page, fake_site.url, fake_site.token("dora"), "fake")
    page.get_by_role("button", name="Link", exact=True).click()
    expect(page.get_by_role("alert")).to_contain_text("Provider 'fake'")
    expect(page.get_by_role("button", name="Try again")).to_be_visible()


def test_the_device_flow_keeps_polling_through_a_provider_blip(
    fake_site: LiveServer, fake: FakeProvider, tab: Tab
) -> None:
    """A 502 while polling says so and goes on: the code may still be approved."""
    page = tab.page
    access, refresh = fake.issue(login="dora")
    fake.script("device", _device(fake, "dc-blip", "BLIP-CODE", interval=1))
    fake.script("token", Answer(status=503, text="down"),
                Answer(json={"access_token": access, "refresh_token": refresh,
                             "token_type": "bearer", "expires_in": 3600}))
    open_provider_page(page, fake_site.url, fake_site.token("dora"), "fake")
    page.get_by_role("button", name="Link", exact=True).click()
    expect(page.get_by_label("User code")).to_have_text("BLIP-CODE")
    expect(page.get_by_text("Still trying")).to_be_visible(timeout=LINKED_WITHIN_MS)
    expect(page.get_by_role("heading", name="Authenticated with Fake Git")).to_be_visible(
        timeout=LINKED_WITHIN_MS)
    assert [s.form["device_code"] for s in fake.seen("token")] == ["dc-blip", "dc-blip"]
    assert links_of(fake_site.db, "dora") == ["fake"]
