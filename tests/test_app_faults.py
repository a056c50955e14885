"""The Studio when the label store fails under it (AppTest): another writer holding the lock during an edit, the
store file deleted while the Studio runs, a damaged store. One clear message on the page, never an exception.
``selavi app`` tells Streamlit to show no exception details in the browser."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from selavi_app import HOME
from selavi_core.config import LABELS
from selavi_core.labels import LabelStore
from selavi_core.studio.runs import RUNS_ENV, STORE_ENV

REPO = Path(__file__).resolve().parents[1]
TIMEOUT = 120
LABEL_PAGES = ("clusters", "map", "labels")


@pytest.fixture(scope="module")
def mapped_run(studio_run) -> Path:
    from selavi_core.studio import open_run
    from selavi_core.studio.mapping import ensure_map

    ensure_map(open_run(studio_run[1]))
    return studio_run[1]


@pytest.fixture()
def run_dir(mapped_run, tmp_path) -> Path:
    dst = tmp_path / "run"
    shutil.copytree(mapped_run, dst, ignore=shutil.ignore_patterns("labels.sqlite*"))
    return dst


@pytest.fixture()
def app(run_dir, monkeypatch):
    monkeypatch.setenv(RUNS_ENV, str(run_dir))
    monkeypatch.delenv(STORE_ENV, raising=False)
    monkeypatch.setenv("SELAVI_NO_PROGRESS", "1")

    def make(page: str, *, annotator: str | None = None, **params: str) -> AppTest:
        """``annotator``: the name typed in the sidebar earlier in this session (a URL never says who edits)."""
        at = AppTest.from_file(str(HOME), default_timeout=TIMEOUT)
        at.query_params.update({"run": "run", **params})
        if annotator is not None:
            at.session_state["_annotator"] = annotator
        at.run()
        at.switch_page(f"views/{page}.py").run()
        ok(at)
        return at

    return make


def ok(at: AppTest) -> None:
    assert not at.exception, [e.value for e in at.exception]


def shown(at: AppTest) -> str:
    return " ".join(str(m.value) for m in [*at.error, *at.warning, *at.success])


def test_studio_shows_no_exception_details_in_the_browser() -> None:
    from selavi_core.commands.app import streamlit_command

    cmd = streamlit_command(Path("studio_server.py"), "127.0.0.1", 8501)
    assert cmd[cmd.index("--client.showErrorDetails") + 1] == "none"


def test_edit_while_another_writer_holds_the_lock_says_try_again(app, run_dir):
    """Another process holds the store's write lock: the page still draws at once, and the rename gives up after
    ``LABELS.write_lock_wait_s`` with "another annotator is saving, try again" (it used to wait 60 s, then show
    the OperationalError's traceback). Nothing is saved; once the lock is free the rename goes through."""
    LabelStore.open(run_dir).close()
    at = app("clusters", head="0", cluster="1", annotator="ana")
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sqlite3, sys, time; c = sqlite3.connect(sys.argv[1], isolation_level=None); "
         "c.execute('BEGIN IMMEDIATE'); print('LOCKED', flush=True); time.sleep(120)", str(run_dir / "labels.sqlite")],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "LOCKED"
        at.run()  # reading while another writer holds the lock
        ok(at)
        [name] = [t for t in at.text_input if t.label == "Cluster name"]
        name.input("dog").run()
        [rename] = [b for b in at.button if b.label == "Rename"]
        rename.click().run(timeout=LABELS.write_lock_wait_s + 60)
        ok(at)
        assert "another annotator is saving, try again" in " ".join(e.value for e in at.error), shown(at)
        assert not at.success
        assert LabelStore.open(run_dir).events() == []
    finally:
        holder.kill()
        holder.wait()
    [rename] = [b for b in at.button if b.label == "Rename"]
    rename.click().run()
    ok(at)
    assert LabelStore.open(run_dir).cluster_names(0) == {"1": "dog"}


def test_store_file_deleted_while_the_studio_runs(app, run_dir):
    """labels.sqlite deleted under the running Studio: every page with labels says so, an edit is not
    acknowledged, and no page shows an exception."""
    at = app("clusters", head="0", cluster="1", annotator="ana")
    [name] = [t for t in at.text_input if t.label == "Cluster name"]
    name.input("dog").run()
    [rename] = [b for b in at.button if b.label == "Rename"]
    rename.click().run()
    ok(at)
    assert at.success
    for suffix in ("", "-wal", "-shm"):
        (run_dir / f"labels.sqlite{suffix}").unlink(missing_ok=True)
    [name] = [t for t in at.text_input if t.label == "Cluster name"]
    name.input("cat").run()  # the page is drawn again: the store's file is gone
    ok(at)
    assert "was deleted while the Studio was running" in shown(at)
    for page in LABEL_PAGES:
        at.switch_page(f"views/{page}.py").run()
        ok(at)
        assert "was deleted while the Studio was running" in shown(at), page
    assert not (run_dir / "labels.sqlite").exists()


def test_damaged_store_shows_one_message_and_no_exception(app, run_dir):
    """Garbage over pages in the middle of labels.sqlite: the pages used to show sqlalchemy's DatabaseError
    traceback; now they say the store is damaged and what to do, and browsing still works."""
    with LabelStore.open(run_dir) as store:
        for i in range(300):
            store.rename_cluster(0, i % 4, f"name {i} " + "x" * 100, annotator="ana", expected_version=None)
    path = run_dir / "labels.sqlite"
    size = path.stat().st_size
    with path.open("r+b") as f:
        f.seek((size // 4096 // 2) * 4096)
        f.write(os.urandom(3 * 4096))
    for page in LABEL_PAGES:
        at = app(page, head="0", cluster="1", annotator="ana")
        text = shown(at)
        assert "is damaged" in text and str(path) in text and "restore the file" in text, (page, text)
        assert at.title or at.subheader, page
