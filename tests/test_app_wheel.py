"""The Studio from a built wheel: `pip install .` (not editable) gives a `selavi app` that serves the Home page.

The wheel is built from a copy of the project's sources (offline, no build isolation: setuptools of this
environment), installed with ``pip install --no-deps --target DIR`` (the dependencies are those of this
environment), and run as ``DIR/bin/selavi app RUN_DIR`` from a folder outside the checkout with
``PYTHONPATH=DIR``, so the checkout's ``selavi_core`` and ``selavi_app`` cannot be what runs. Debian's
Chromium then loads the Home page and a deep link, as in test_browser.py.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from browser_helpers import CHROMIUM, TIMEOUT_MS, AppServer, launch_chromium, settle

pytestmark = [
    pytest.mark.slow,
    pytest.mark.browser,
    pytest.mark.skipif(not Path(CHROMIUM).exists(), reason=f"{CHROMIUM} is not installed (apt-get install chromium)"),
]

ROOT = Path(__file__).resolve().parents[1]
SOURCES = ("pyproject.toml", "README.md", "selavi_core", "app")


def _pip(*args: str, cwd: Path) -> None:
    cmd = [sys.executable, "-m", "pip", "--disable-pip-version-check", "--no-input", *args]
    done = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    """The folder the wheel was installed into (``--target``): packages at its top, the `selavi` script in bin/."""
    tmp = tmp_path_factory.mktemp("wheel")
    src = tmp / "src"
    for name in SOURCES:  # a copy: building in place would leave build/ and *.egg-info in the checkout
        if (ROOT / name).is_dir():
            shutil.copytree(ROOT / name, src / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        else:
            src.mkdir(exist_ok=True)
            shutil.copy2(ROOT / name, src / name)
    dist = tmp / "dist"
    _pip("wheel", "--no-index", "--no-deps", "--no-build-isolation", "--wheel-dir", str(dist), str(src), cwd=tmp)
    wheels = list(dist.glob("selavi_studio-*.whl"))
    assert len(wheels) == 1, wheels
    target = tmp / "site"
    _pip("install", "--no-index", "--no-deps", "--target", str(target), str(wheels[0]), cwd=tmp)
    return target


@pytest.fixture(scope="module")
def outside(tmp_path_factory, installed) -> tuple[dict[str, str], Path]:
    """(environment, working folder) of a user of the installed wheel, away from the checkout."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["PYTHONPATH"] = str(installed)
    return env, tmp_path_factory.mktemp("elsewhere")


def test_the_wheel_ships_the_studio_and_runs_from_it(installed, outside):
    env, cwd = outside
    assert (installed / "selavi_app" / "Home.py").is_file()
    assert sorted(p.name for p in (installed / "selavi_app" / "views").glob("*.py")) == [
        "__init__.py", "clusters.py", "compare.py", "labels.py", "map.py", "overview.py", "similar.py",
    ]  # fmt: skip
    probe = (
        "import selavi_app, selavi_core; from selavi_core.commands.app import app_entry; "
        "print(selavi_core.__file__); print(selavi_app.__file__); print(app_entry())"
    )
    done = subprocess.run([sys.executable, "-c", probe], env=env, cwd=cwd, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    core, app, entry = (Path(line) for line in done.stdout.split())
    for path in (core, app, entry):  # what runs is the installed copy, never the checkout
        assert path.is_relative_to(installed) and not path.is_relative_to(ROOT), path
    assert entry == installed / "selavi_app" / "studio_server.py"  # serves Home.py and the media route


def _children(pid: int) -> list[int]:
    out = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            out.append(int(stat.parent.name))
    return out


def test_installed_selavi_app_serves_the_home_page(installed, outside, studio_run, tmp_path):
    env, cwd = outside
    run_dir = tmp_path / "demo"
    # the app writes map/, montages/ and labels.sqlite into the run: work on a copy
    shutil.copytree(studio_run[1], run_dir, ignore=shutil.ignore_patterns("labels.sqlite*"))
    selavi = installed / "bin" / "selavi"  # the console script the wheel declares
    assert selavi.is_file()
    server = AppServer(run_dir, tmp_path / "app.log", selavi=[str(selavi)], env=env, cwd=cwd)
    try:
        base = server.start()
    except RuntimeError as err:
        pytest.fail(str(err))
    try:
        # the Streamlit child runs the installed studio_server.py (which serves the installed Home.py)
        cmdlines = [Path(f"/proc/{c}/cmdline").read_bytes().split(b"\0") for c in _children(server.proc.pid)]
        assert any(str(installed / "selavi_app" / "studio_server.py").encode() in c for c in cmdlines), cmdlines

        from playwright.sync_api import sync_playwright

        with sync_playwright() as p:
            browser = launch_chromium(p)
            try:
                page = browser.new_page(viewport={"width": 1400, "height": 1600})
                page.set_default_timeout(TIMEOUT_MS)
                page.goto(base)
                page.get_by_role("heading", name="SeLaVi Studio").wait_for()
                page.get_by_role("heading", name="Run demo").wait_for()  # `demo` is drawn as code
                page.get_by_role("heading", name="Which head to start with").wait_for()
                settle(page)
                assert page.locator("[data-testid='stException']").count() == 0
                nav = page.locator("[data-testid='stSidebarNav']")
                for title in ("Overview", "Clusters", "Compare heads", "Map", "Similar clips", "Labels"):
                    assert nav.get_by_text(title, exact=True).count() == 1, title
                page.goto(f"{base}/clusters?run=demo&head=1&cluster=2")  # a page script from the wheel too
                page.get_by_role("heading", name="Clusters of head 1").wait_for()
                settle(page)
                assert page.locator("[data-testid='stException']").count() == 0
            finally:
                browser.close()
    finally:
        server.stop()
