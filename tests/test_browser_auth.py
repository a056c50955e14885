"""Sign-in in a real browser: `selavi app --auth USERS_TOML` and `--auth-header X-Forwarded-User`, driven by
Debian's Chromium.

- ``--auth``: a new browser session sees the sign-in form and nothing else (no page, no sidebar), even on
  a deep link; a wrong password is refused; the right one opens the deep-linked page, and an edit is
  recorded under the signed-in user although the URL says ``?annotator=mallory``; another browser
  session must sign in again; signing out shows the form again.
- ``--auth-header``: a request carrying the header (Playwright's ``extra_http_headers``, as a sign-in
  proxy would add it) is that user, whatever ``?annotator=`` says; without the header the Studio refuses.

The label store is checked as the truth for who edited. A screenshot of the sign-in form goes to
artifacts/screenshots/.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from browser_helpers import CHROMIUM, SHOTS, TIMEOUT_MS, AppServer, launch_chromium, settle

from selavi_core.auth import add_user
from selavi_core.labels import LabelStore

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not Path(CHROMIUM).exists(), reason=f"{CHROMIUM} is not installed (apt-get install chromium)"),
]
VIEWPORT = {"width": 1400, "height": 2000}
HEADER = "X-Forwarded-User"


def _server(studio_run, tmp_path_factory, name: str, args: list[str]) -> AppServer:
    run_dir = tmp_path_factory.mktemp(name) / "run"
    shutil.copytree(studio_run[1], run_dir, ignore=shutil.ignore_patterns("labels.sqlite*"))
    server = AppServer(run_dir, run_dir.parent / "app.log", args=args(run_dir.parent) if callable(args) else args)
    try:
        server.start()
    except RuntimeError as err:
        pytest.fail(str(err))
    return server


@pytest.fixture(scope="module")
def users_app(studio_run, tmp_path_factory):
    def args(folder: Path) -> list[str]:
        users = folder / "users.toml"
        add_user(users, "ana", "ana-password")
        add_user(users, "bob", "bob-password")
        return ["--auth", str(users)]

    server = _server(studio_run, tmp_path_factory, "browser-auth", args)
    yield server
    server.stop()


@pytest.fixture(scope="module")
def header_app(studio_run, tmp_path_factory):
    server = _server(studio_run, tmp_path_factory, "browser-header", ["--auth-header", HEADER])
    yield server
    server.stop()


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    SHOTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as p:
        b = launch_chromium(p)
        yield b
        b.close()


def open_page(browser, url: str, headers: dict[str, str] | None = None):
    """A new browser session (its own cookies and Streamlit session) on ``url``."""
    ctx = browser.new_context(viewport=VIEWPORT, extra_http_headers=headers)
    page = ctx.new_page()
    page.set_default_timeout(TIMEOUT_MS)
    page.goto(url)
    return page


def rename(page, cluster: int, name: str) -> None:
    page.get_by_role("heading", name=f"Cluster {cluster}", exact=True).wait_for()
    settle(page)
    field = page.get_by_label("Cluster name", exact=True)
    field.fill(name)
    field.press("Enter")
    settle(page)
    page.get_by_role("button", name="Rename").click()
    page.get_by_text(f"Cluster {cluster} is now named '{name}'").wait_for()


def nothing_but_the_form(page) -> None:
    page.get_by_role("button", name="Sign in").wait_for()
    settle(page)
    assert page.get_by_role("link", name="Clusters").count() == 0  # no page navigation
    assert page.get_by_label("Run").count() == 0 and page.get_by_label("Annotator").count() == 0
    assert page.get_by_role("heading", name="Cluster 1", exact=True).count() == 0


def sign_in(page, name: str, password: str) -> None:
    page.get_by_label("User name", exact=True).fill(name)
    page.get_by_label("Password", exact=True).fill(password)
    page.get_by_role("button", name="Sign in").click()


def test_sign_in_before_any_page_and_edits_are_the_signed_in_users(users_app, browser):
    deep = f"{users_app.base}/clusters?run=run&head=0&cluster=1&annotator=mallory"
    page = open_page(browser, deep)
    nothing_but_the_form(page)
    page.screenshot(path=str(SHOTS / "sign-in.png"), full_page=True)

    sign_in(page, "ana", "bob-password")  # someone else's password
    page.get_by_text("Not signed in: wrong user name or password.").wait_for()
    nothing_but_the_form(page)
    assert LabelStore.open(users_app.run_dir).version() == 0

    sign_in(page, "ana", "ana-password")
    page.get_by_text("Signed in as ana").wait_for()  # the deep link's page, not mallory
    rename(page, 1, "dog barking")
    assert "annotator" not in page.url.split("?", 1)[1]  # the URL no longer carries a name
    page.get_by_text("Named dog barking by ana").wait_for()
    events = LabelStore.open(users_app.run_dir).events()
    assert [(e.action, e.annotator) for e in events] == [("rename_cluster", "ana")]

    # another browser session (a shared deep link) signs in on its own: ana's session is not shared
    other = open_page(browser, deep)
    nothing_but_the_form(other)
    sign_in(other, "bob", "bob-password")
    other.get_by_text("Signed in as bob").wait_for()
    other.get_by_role("button", name="Sign out").click()
    nothing_but_the_form(other)
    other.context.close()

    # ana's session survives reruns and page changes
    page.get_by_role("link", name="Labels").click()
    page.get_by_role("heading", name="Vocabulary of head 0").wait_for()
    assert page.get_by_text("Signed in as ana").is_visible()
    page.context.close()


def test_the_proxy_header_is_the_user_and_without_it_nothing_is_shown(header_app, browser):
    deep = f"{header_app.base}/clusters?run=run&head=0&cluster=2&annotator=mallory"
    page = open_page(browser, deep, headers={HEADER: "bea"})
    page.get_by_text("Signed in as bea").wait_for()
    assert page.get_by_label("Annotator").count() == 0 and page.get_by_role("button", name="Sign in").count() == 0
    rename(page, 2, "bird song")
    events = LabelStore.open(header_app.run_dir).events()
    assert [(e.action, e.annotator) for e in events] == [("rename_cluster", "bea")]
    page.context.close()

    bare = open_page(browser, deep)
    bare.get_by_text(f"Not signed in: this Studio takes the user from the {HEADER} header").wait_for()
    settle(bare)
    assert bare.get_by_role("link", name="Clusters").count() == 0 and bare.get_by_label("Run").count() == 0
    assert bare.get_by_role("button").filter(has_text="Rename").count() == 0
    bare.context.close()
    assert len(LabelStore.open(header_app.run_dir).events()) == 1
