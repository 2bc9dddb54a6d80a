"""The web page, driven in Debian's headless Chromium (Playwright, no browser download) against real
daemons: identity through a trusted proxy and through a typed token, the lifecycle from the page with
live updates, the terminal, bad states, and the phone layout. Screenshots go to test-artifacts/."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from conftest import REPO, Daemon, all_items
from playwright.sync_api import Browser, ConsoleMessage, Page, expect, sync_playwright
from test_ports import PAGE as PAGE_TEXT
from test_ports import serving_workspace

CHROMIUM = "/usr/bin/chromium"
PREVIEW_DOMAIN = "preview.test"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run", "--disable-quic",
                 f"--host-resolver-rules=MAP *.{PREVIEW_DOMAIN} 127.0.0.1"]  # wildcard DNS for previews
ARTIFACTS = REPO / "test-artifacts"
STATIC = REPO / "vmhost" / "daemon" / "static"
LIVE = 30_000  # ms a page gets to show what a daemon did


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    assert Path(CHROMIUM).exists(), "Debian's chromium is missing: scripts/test installs it (apt-get install chromium)"
    expect.set_options(timeout=LIVE)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


class Session:
    """A browser page on a daemon, recording the console errors and uncaught exceptions it produces."""

    def __init__(self, browser: Browser, daemon: Daemon, **context: Any) -> None:
        self.context = browser.new_context(**context)
        self.page: Page = self.context.new_page()
        self.page.set_default_timeout(LIVE)
        self.problems: list[str] = []
        self.page.on("console", self._console)
        self.page.on("pageerror", lambda error: self.problems.append(f"uncaught: {error}"))
        self.daemon = daemon

    def _console(self, message: ConsoleMessage) -> None:
        if message.type == "error":
            self.problems.append(f"{message.text} ({message.location.get('url')})")

    def open(self, path: str = "/") -> Page:
        self.page.goto(self.daemon.url + path)
        return self.page

    def row(self, name: str) -> Any:
        return self.page.locator(f'tr[data-workspace="{name}"]')

    def status(self, name: str) -> Any:
        return self.row(name).locator("[data-status]")

    def action(self, name: str, label: str) -> Any:
        return self.row(name).get_by_role("button", name=f"{label} {name}", exact=True)

    def act(self, name: str, label: str) -> None:
        self.action(name, label).click()

    def shell(self, line: str, expected_output: str | None = None) -> None:
        """Type a line into the workspace's shell in the terminal tab (opening one if none is open)."""
        page = self.page
        page.get_by_role("tab", name="Terminal").click()
        if page.get_by_role("button", name="Open shell").is_enabled():
            page.get_by_role("button", name="Open shell").click()
            expect(page.locator("#terminal-status")).to_have_text(re.compile("^connected to"))
        page.locator("#terminal .xterm-helper-textarea").press_sequentially(line + "\n")
        if expected_output:
            expect(page.locator("#terminal .xterm-rows")).to_contain_text(expected_output)

    def create(self, name: str, template: str = "base", ttl: str = "1 h", labels: str = "") -> None:
        page = self.page
        page.get_by_label("Name", exact=True).fill(name)
        page.get_by_label("Template", exact=True).select_option(template)
        page.get_by_label("Lifetime", exact=True).select_option(label=ttl)
        page.get_by_label("Labels", exact=True).fill(labels)
        page.get_by_role("button", name="Create").click()

    def screenshot(self, label: str) -> None:
        ARTIFACTS.mkdir(exist_ok=True)
        self.page.screenshot(path=str(ARTIFACTS / f"web-{label}.png"), full_page=True)

    def unexpected_problems(self, expected: str | None = None) -> list[str]:
        """Console errors other than those matching `expected` (the browser's own line for a refused or
        failed request the test provoked)."""
        return [p for p in self.problems if not (expected and re.search(expected, p))]

    def close(self) -> None:
        self.context.close()


@pytest.fixture
def sessions(browser: Browser) -> Iterator[Any]:
    opened: list[Session] = []

    def open_session(daemon: Daemon, **context: Any) -> Session:
        session = Session(browser, daemon, **context)
        opened.append(session)
        return session

    yield open_session
    for session in opened:
        session.close()


def test_the_page_is_static_with_a_strict_policy(daemon: Daemon) -> None:
    with httpx.Client(base_url=daemon.url) as client:  # no token: the page holds no data
        for path in ("/", "/ui"):
            page = client.get(path)
            assert page.status_code == 200
            assert "text/html" in page.headers["content-type"]
            policy = page.headers["content-security-policy"]
            assert "default-src 'self'" in policy and "connect-src 'self'" in policy
            assert "script-src 'self';" in policy
        for asset in re.findall(r'(?:src|href)="(/static/[^"]+)"', client.get("/").text):
            assert client.get(asset).status_code == 200, asset
        assert client.get("/static/../routes/ui.py").status_code == 404
        assert client.get("/static/nothing.js").json()["code"] == "not_found"
        assert client.get("/api/v1/workspaces").status_code == 401
    page_sources = " ".join(p.read_text() for p in STATIC.glob("*.*"))
    assert not re.search(r"https?://", page_sources), "the page must load nothing from another host"
    for shipped in ("xterm.js", "xterm.css", "addon-fit.js", "LICENSE.xterm", "LICENSE.addon-fit"):
        assert (STATIC / "vendor" / shipped).is_file(), shipped


def test_lifecycle_behind_the_proxy(make_daemon: Any, sessions: Any, name: str) -> None:
    daemon = make_daemon({"VMHOST_TRUSTED_PROXIES": "127.0.0.1", "VMHOST_QUOTA_MAX_WORKSPACES": "1"})
    session = sessions(daemon, extra_http_headers={"X-VM-User": "alice"}, viewport={"width": 1280, "height": 900})
    page = session.open()
    expect(page.locator("#identity")).to_have_text("alice, signed in through the proxy")
    expect(page.get_by_text("No workspaces yet")).to_be_visible()
    expect(page.locator("#create-template option[value=web]")).to_have_count(1)  # from GET /templates
    page.evaluate("window.notReloaded = true")

    session.create(name, labels="team=web")
    expect(session.status(name)).to_have_text("running")
    expect(page.locator("#create-status")).to_have_text(f"{name} is ready")
    row = session.row(name)
    expect(row).to_contain_text("team=web")
    expect(row.locator(".expiry")).to_have_text(re.compile(r"^(59|60) min|^1 h 0 min"))
    first = row.locator(".expiry").inner_text()
    expect(row.locator(".expiry")).not_to_have_text(first)  # a live countdown
    with daemon.client() as api:
        assert [w["owner"] for w in api.get("/api/v1/workspaces").json()["items"]] == ["alice"]
    session.screenshot("running")

    session.create(f"{name}-2")  # the quota is one workspace
    expect(page.locator("#create-status")).to_contain_text(f"Could not create {name}-2")
    expect(page.locator("#create-status")).to_contain_text("quota")
    session.screenshot("quota-exceeded")

    session.act(name, "Stop")
    expect(session.status(name)).to_have_text("stopped")
    expect(row.locator(".row-status")).to_have_text("stop done")
    session.act(name, "Start")
    expect(session.status(name)).to_have_text("running")
    session.act(name, "Extend by 24 hours")
    expect(row.locator(".expiry")).to_have_text(re.compile(r"^1 d 0 h"))
    session.act(name, "Rebuild")
    expect(row.locator(".row-status")).to_have_text("rebuild done")
    expect(session.status(name)).to_have_text("running")

    with daemon.client() as api:
        api.patch(f"/api/v1/workspaces/{name}", json={"autostart": "mon-fri 08:30 Europe/Berlin"}).raise_for_status()
    session.action(name, "Details of").click()
    expect(page.locator("#overview")).to_contain_text(f"vmhost ws shell {name}")
    expect(page.locator("#overview")).to_contain_text("mon-fri 08:30 Europe/Berlin (next ")
    page.get_by_label("Extend the lifetime by").select_option(label="7 days")
    page.get_by_role("button", name="Extend", exact=True).click()
    expect(page.locator("#extend-status")).to_contain_text("Extended: expires")
    expect(row.locator(".expiry")).to_have_text(re.compile(r"^8 d 0 h"))
    page.get_by_role("tab", name="Operations").click()
    for kind in ("create", "stop", "start", "rebuild"):
        expect(page.locator("#operations summary").filter(has_text=f"{kind} — succeeded")).to_have_count(1)

    session.screenshot("operations")
    session.shell("echo the answer is $((6*7))", "the answer is 42")
    session.screenshot("terminal")
    session.shell("echo served > /workspace/index.html; httpd -p 8080 -h /workspace && echo httpd-up", "httpd-up")
    page.get_by_role("tab", name="Overview").click()
    link = page.locator('#previews a[data-preview-port="8080"]')
    with page.context.expect_page() as opened:
        link.click()
    expect(opened.value.locator("body")).to_have_text("served")  # the port's preview, in a new tab
    assert re.search(r"/api/v1/workspaces/ws_\w+/ports/8080/proxy/$", opened.value.url), opened.value.url
    opened.value.close()
    session.shell("echo kept > /workspace/f; exit 3")
    expect(page.locator("#terminal-status")).to_have_text("the shell exited with code 3")

    page.get_by_role("tab", name="Snapshots").click()
    expect(page.get_by_text("No snapshots yet")).to_be_visible()
    page.get_by_label("Snapshot name").fill("before")
    page.get_by_role("button", name="Take snapshot").click()
    expect(page.locator("#snapshot-status")).to_have_text("snapshot done")
    expect(page.locator('li[data-snapshot="before"]')).to_contain_text("ready")
    session.screenshot("snapshots")
    session.shell("echo changed > /workspace/f; exit")
    page.get_by_role("tab", name="Snapshots").click()
    page.get_by_role("button", name="Restore snapshot before").click()
    expect(page.locator("#snapshot-status")).to_have_text("restore done")
    expect(session.status(name)).to_have_text("running")
    session.shell("cat /workspace/f", "kept")

    page.get_by_role("tab", name="Logs").click()
    expect(page.locator("#logs")).not_to_be_empty()
    expect(page.locator("#logs-error")).to_be_empty()

    session.act(name, "Delete")
    session.act(name, "Delete")  # the second click confirms
    expect(session.row(name)).to_have_count(0)
    expect(page.get_by_text("No workspaces yet")).to_be_visible()
    expect(page.locator("#detail")).to_be_hidden()
    assert page.evaluate("window.notReloaded") is True
    assert session.unexpected_problems(expected=r"status of 403") == []  # the quota


def test_token_prompt_and_phone_layout(daemon: Daemon, sessions: Any, name: str) -> None:
    token = daemon.token(f"web-{name}")
    session = sessions(daemon, viewport={"width": 390, "height": 844}, is_mobile=True)
    page = session.open("/ui")
    expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
    page.get_by_label("API token").fill("not-a-token")
    page.get_by_role("button", name="Sign in").click()
    expect(page.locator("#login-error")).to_contain_text("Your token was refused")
    session.screenshot("token-prompt")
    page.get_by_label("API token").fill(token)
    page.keyboard.press("Enter")  # the keyboard is enough
    expect(page.locator("#identity")).to_have_text(f"web-{name}, signed in with a token")

    session.create(name, template="web", ttl="7 days", labels="size=phone")
    expect(session.status(name)).to_have_text("running")
    expect(session.row(name)).to_contain_text(re.compile(r"8080/tcp → 127\.0\.0\.1:\d+"))  # its published port
    expect(session.row(name).locator(".expiry")).to_have_text(re.compile(r"^(6|7) d"))
    page.reload()  # the token lives for the browser session
    expect(session.status(name)).to_have_text("running")
    width = page.evaluate("document.documentElement.scrollWidth")
    assert width <= 390, f"the page is {width}px wide on a 390px phone"
    expect(page.locator("#live")).to_have_text("live")  # the event socket took the token too
    session.screenshot("phone")

    with daemon.client() as api:
        token_id = next(t["id"] for t in all_items(api, "/api/v1/tokens") if t["user"] == f"web-{name}")
        assert api.delete(f"/api/v1/tokens/{token_id}").status_code < 300
        # revoking closes the page's event socket with 4401: it signs out at once, without another call
        expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
        expect(page.locator("#login-error")).to_contain_text("Your token was refused: this API token was revoked")
        expect(page.get_by_label("API token")).to_be_focused()
        workspace = api.get(f"/api/v1/workspaces/{name}", params={}).json()
        assert workspace["owner"] == f"web-{name}"
        api.delete(f"/api/v1/workspaces/{workspace['id']}")
    assert session.unexpected_problems(expected=r"status of 401") == []


def test_failures_and_an_unreachable_daemon(make_daemon: Any, sessions: Any, name: str) -> None:
    daemon = make_daemon({"VMHOST_TRUSTED_PROXIES": "127.0.0.1"})
    session = sessions(daemon, extra_http_headers={"X-VM-User": "carol"})
    page = session.open()
    session.create(name)
    expect(session.status(name)).to_have_text("running")
    expect(page.locator("#live")).to_have_text("live")

    with daemon.tcp(headers={"X-VM-User": "carol"}) as carol:  # another client of carol's, elsewhere
        failing = carol.post("/api/v1/workspaces", json={"name": f"{name}-bad", "provision": ["echo oops; exit 7"]})
        assert failing.status_code == 202, failing.text
    bad = session.row(f"{name}-bad")
    expect(session.status(f"{name}-bad")).to_have_text("error")  # live, from the event stream
    expect(bad.locator(".row-status")).to_contain_text("create failed: provision command 1")
    expect(bad.locator(".row-status")).to_contain_text("exited with 7")
    session.action(f"{name}-bad", "Details of").click()
    page.get_by_role("tab", name="Operations").click()
    failed = page.locator("#operations details").filter(has_text="create — failed")
    expect(failed.locator(".error")).to_contain_text("exited with 7")
    expect(failed.locator("pre")).to_contain_text("oops")
    session.screenshot("failed-operation")

    daemon.stop()
    expect(page.get_by_role("alert").filter(has_text="Cannot reach the vmhost daemon")).to_be_visible()
    expect(session.status(name)).to_have_text("running")  # the last known list stays
    session.screenshot("daemon-unreachable")

    daemon.start()
    expect(page.locator("#banner")).to_be_hidden()
    expect(page.locator("#live")).to_have_text("live")
    session.act(name, "Stop")  # and it is live again
    expect(session.status(name)).to_have_text("stopped")
    assert session.unexpected_problems(expected=r"ERR_CONNECTION_REFUSED|WebSocket connection") == []


def test_a_port_preview_on_its_own_host_name(make_daemon: Any, sessions: Any, name: str) -> None:
    """The page's link with `preview_domain`: a one-time link sets the preview host's own cookie, and the
    app's page loads its assets by absolute paths, its scripts run."""
    daemon = make_daemon({"VMHOST_PREVIEW_DOMAIN": PREVIEW_DOMAIN})
    token = daemon.token(f"web-{name}")
    app = ("mkdir -p /workspace/app; echo '<script src=/app.js></script><p>the app</p>' > /workspace/app/index.html; "
           "echo 'document.title = \"scripts run\"' > /workspace/app.js")
    with daemon.tcp(token=token) as api:
        serving_workspace(api, name)
        written = api.post(f"/api/v1/workspaces/{name}/commands", json={"argv": ["sh", "-c", app], "stream": True})
        assert written.status_code == 200 and '"exit_code": 0' in written.text, written.text
    session = sessions(daemon)
    page = session.open()
    page.get_by_label("API token").fill(token)
    page.keyboard.press("Enter")
    session.action(name, "Details of").click()
    link = page.locator('#previews a[data-preview-port="8080"]')
    own = f"http://8080--{name}--web-{name}.{PREVIEW_DOMAIN}:{daemon.port}/"
    expect(link).to_have_attribute("href", own)
    with page.context.expect_page() as opened:
        link.click()
    preview = opened.value
    expect(preview.locator("body")).to_have_text(PAGE_TEXT)
    assert preview.url == own  # the link's ticket is gone from the address bar
    preview.goto(own + "app/")
    expect(preview).to_have_title("scripts run")
    expect(preview.locator("p")).to_have_text("the app")
