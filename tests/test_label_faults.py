"""The label store when its database fails under it: another writer holding the lock, the SQLite file deleted or
replaced while the store is open, a damaged file, a store that cannot be written. Real files, a real second
process holding the lock; every fault is one clear ``LabelError`` subclass, never a driver's traceback, and an edit
is never reported as saved when it was not."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pytest
from label_fixtures import make_label_run
from pg_server import StoreBackend

from selavi_core.config import LABELS
from selavi_core.labels import LabelError, LabelStore
from selavi_core.labels.errors import (
    BUSY_MESSAGE,
    StoreBusyError,
    StoreDamagedError,
    StoreGoneError,
    StoreReadOnlyError,
)

REPO = Path(__file__).resolve().parents[1]

#: A second process that takes the store's write lock the way another writer does, says LOCKED, and holds it
#: until it is killed (argv: the SQLAlchemy URL of the store).
HOLDER = """
import sys, time
import sqlalchemy as sa
from selavi_core.labels.schema import PG_WRITE_LOCK, engine_url
u = engine_url(sys.argv[1])
if u.get_backend_name() == "sqlite":
    import sqlite3
    conn = sqlite3.connect(u.database, isolation_level=None)
    conn.execute("BEGIN IMMEDIATE")
else:
    conn = sa.create_engine(u).connect()
    conn.begin()
    conn.exec_driver_sql(f"SELECT pg_advisory_xact_lock({PG_WRITE_LOCK})")
print("LOCKED", flush=True)
time.sleep(120)
"""


@pytest.fixture()
def run_dir(tmp_path: Path) -> Path:
    return make_label_run(tmp_path)


def _hold_lock(url: str) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.Popen([sys.executable, "-c", HOLDER, url], stdout=subprocess.PIPE, text=True, env=env)
    assert proc.stdout is not None and proc.stdout.readline().strip() == "LOCKED"
    return proc


def _timed(fn):
    t0 = time.monotonic()
    out = fn()
    return out, time.monotonic() - t0


def test_a_writer_holding_the_lock_freezes_no_read_and_edits_give_up_soon(
    run_dir: Path, store_backend: StoreBackend
) -> None:
    """Another process holds the write lock (BEGIN IMMEDIATE on SQLite, the advisory lock on PostgreSQL) for
    longer than a writer waits. Reads from the same store object, while one of its threads waits to write, answer
    at once (they used to wait behind the writer for the whole busy timeout, 60 s), a fresh open does not wait,
    and the edit gives up after ``LABELS.write_lock_wait_s`` with "another annotator is saving, try again"."""
    store = store_backend.open(run_dir)
    store.rename_cluster(0, 1, "dog", annotator="ana", expected_version=None)
    holder = _hold_lock(store.url)
    try:
        outcome: list[object] = []

        def edit() -> None:
            t0 = time.monotonic()
            try:
                store.rename_cluster(0, 2, "cat", annotator="bob", expected_version=store.version())
                outcome.append("saved")
            except LabelError as err:
                outcome.append(err)
            outcome.append(time.monotonic() - t0)

        writer = threading.Thread(target=edit)
        writer.start()
        time.sleep(0.5)  # the writer is waiting for the lock now
        for read in (store.events, store.version, lambda: store.effective_labels(0), lambda: store.clusters(0)):
            _, took = _timed(read)
            assert took < 1.0, f"a read waited {took:.1f} s for a writer"
        reopened, took = _timed(lambda: store_backend.open(run_dir))
        assert took < 1.0 and [e.id for e in reopened.events()] == [e.id for e in store.events()]
        writer.join(LABELS.write_lock_wait_s + 10)
        assert not writer.is_alive()
        err, waited = outcome
        assert isinstance(err, StoreBusyError), err
        assert str(err).startswith(BUSY_MESSAGE) and "nothing was saved" in str(err)
        assert LABELS.write_lock_wait_s - 0.5 < float(waited) < LABELS.write_lock_wait_s + 3  # type: ignore[arg-type]
        assert [e.new for e in store.events()] == [{"name": "dog"}]  # nothing was saved
    finally:
        holder.kill()
        holder.wait()
    ev = store.rename_cluster(0, 2, "cat", annotator="bob", expected_version=store.version())  # free again
    assert [e.id for e in store_backend.open(run_dir).events()][-1] == ev.id


def _sqlite_files(run_dir: Path) -> list[Path]:
    return [run_dir / f"labels.sqlite{suffix}" for suffix in ("", "-wal", "-shm")]


def test_a_deleted_store_file_refuses_the_edit_instead_of_saving_nowhere(run_dir: Path) -> None:
    """Deleting labels.sqlite (and its -wal, -shm) under an open store: the edit used to return, appended to the
    unlinked file, and was gone. Now the edit (and any read) says the file is gone, and no empty file appears."""
    store = LabelStore.open(run_dir)
    store.rename_cluster(0, 1, "dog", annotator="ana", expected_version=None)
    for f in _sqlite_files(run_dir):
        f.unlink(missing_ok=True)
    with pytest.raises(StoreGoneError, match="deleted while the Studio was running; nothing was saved"):
        store.rename_cluster(0, 2, "cat", annotator="ana", expected_version=None)
    with pytest.raises(StoreGoneError):
        store.events()
    assert not (run_dir / "labels.sqlite").exists()


def test_a_replaced_store_file_refuses_the_edit_and_leaves_the_new_file_alone(run_dir: Path, tmp_path: Path) -> None:
    """Another file moved over labels.sqlite (a restored backup, another run's store): the open store's
    connections still hold the old file; an edit must not be acknowledged, and the new file gets nothing."""
    store = LabelStore.open(run_dir)
    store.rename_cluster(0, 1, "dog", annotator="ana", expected_version=None)
    other = make_label_run(tmp_path / "other")
    with LabelStore.open(other) as o:
        o.rename_cluster(0, 3, "bird", annotator="eve", expected_version=None)
    for f in _sqlite_files(run_dir)[1:]:  # a restore replaces the file and drops the old one's WAL
        f.unlink()
    os.replace(other / "labels.sqlite", run_dir / "labels.sqlite")
    with pytest.raises(StoreGoneError, match="replaced by another file"):
        store.override_clips([store.run.clip_ids[0]], "cow", annotator="ana", expected_version=None)
    with LabelStore.open(run_dir) as fresh:  # what the file now holds: the other run's log, untouched
        assert [(e.annotator, e.new) for e in fresh.events()] == [("eve", {"name": "bird"})]


def _filled_store(run_dir: Path, n: int = 400) -> Path:
    """A store of ``n`` events over many pages, closed (its WAL checkpointed into the file)."""
    with LabelStore.open(run_dir) as store:
        for i in range(n):
            store.rename_cluster(0, i % 4, f"name {i} " + "x" * 100, annotator="ana", expected_version=None)
    path = run_dir / "labels.sqlite"
    assert not (run_dir / "labels.sqlite-wal").exists() and path.stat().st_size > 20 * 4096
    return path


def _open_and_read(run_dir: Path) -> None:
    store = LabelStore.open(run_dir)
    store.events()
    store.effective_labels(0)
    store.rename_cluster(0, 0, "after", annotator="ana", expected_version=None)


@pytest.mark.parametrize("where", ["middle", "header"])
def test_a_damaged_store_gives_one_clear_message(run_dir: Path, where: str) -> None:
    """Garbage over pages in the middle of the file (a damaged page) or over its header (not a database any
    more): opening and reading it raised SQLAlchemy's DatabaseError; now one StoreDamagedError that names the
    file and says what to do."""
    path = _filled_store(run_dir)
    size = path.stat().st_size
    with path.open("r+b") as f:
        f.seek(0 if where == "header" else (size // 4096 // 2) * 4096)
        f.write(os.urandom(3 * 4096))
    with pytest.raises(StoreDamagedError) as caught:
        _open_and_read(run_dir)
    text = str(caught.value)
    assert str(path) in text and "damaged" in text and "restore the file" in text


def _probe_read_only(run_dir: str) -> str:
    try:
        store = LabelStore.open(run_dir)
        store.events()
        store.rename_cluster(0, 2, "cat", annotator="ana", expected_version=None)
    except LabelError as err:
        return f"{type(err).__name__} {err}"
    return "SAVED"


def _as_another_user(fn, arg: str) -> str:
    """``fn(arg)`` in this process, or, as root (who writes read-only files), in a forked child that became
    ``nobody`` first."""
    if os.geteuid() != 0:
        return fn(arg)
    import pwd

    try:
        nobody = pwd.getpwnam("nobody")
    except KeyError:
        pytest.skip("no user 'nobody' to run as")
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: drop root, run, report, leave without running the parent's cleanup
        try:
            os.close(read)
            os.setgroups([])
            os.setgid(nobody.pw_gid)
            os.setuid(nobody.pw_uid)
            out = fn(arg)
        except BaseException as err:
            out = f"ERROR {type(err).__name__}: {err}"
        os.write(write, out.encode())
        os._exit(0)
    os.close(write)
    chunks = []
    while chunk := os.read(read, 65536):
        chunks.append(chunk)
    os.close(read)
    os.waitpid(pid, 0)
    return b"".join(chunks).decode()


def test_a_store_that_cannot_be_written_gives_one_clear_message(tmp_path: Path) -> None:
    """A store file (and folder) the Studio's user may read but not write: one StoreReadOnlyError naming the
    file, on opening or at the first edit, instead of the driver's OperationalError (run as ``nobody`` when the
    tests run as root: root writes read-only files)."""
    root = Path(tempfile.mkdtemp(prefix="selavi-ro-"))
    try:
        run_dir = make_label_run(root)
        with LabelStore.open(run_dir) as store:
            store.rename_cluster(0, 1, "dog", annotator="ana", expected_version=None)
        for dirpath, _dirs, files in os.walk(root):
            os.chmod(dirpath, 0o555)
            for f in files:
                os.chmod(Path(dirpath, f), 0o444)
        got = _as_another_user(_probe_read_only, str(run_dir))
        assert got.startswith(StoreReadOnlyError.__name__), got
        assert str(run_dir / "labels.sqlite") in got and "write access" in got
    finally:
        for dirpath, _dirs, _files in os.walk(root):
            os.chmod(dirpath, 0o755)
        shutil.rmtree(root, ignore_errors=True)
