"""Durability and concurrency of the label store across processes.

An edit whose call returned must be on disk: a writer process is killed with SIGKILL at random
moments, restarted, killed again; afterwards every edit it acknowledged is in the log, unchanged, and
the database is consistent. Two processes appending at once both succeed and lose nothing. Both run
against SQLite (RUN_DIR/labels.sqlite) and a PostgreSQL server the tests start (tests/pg_server.py).
"""

from __future__ import annotations

import json
import random
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import sqlalchemy as sa
from label_fixtures import make_label_run
from pg_server import StoreBackend

from selavi_core.labels import LabelStore

WORKER = Path(__file__).with_name("label_durability_worker.py")
ROUNDS = 5
START_TIMEOUT_S = 60.0


class Worker:
    """A worker subprocess whose stdout lines are collected by a thread as they arrive."""

    def __init__(self, run_dir: Path, who: str, seed: int, *extra: str, backend: StoreBackend | None = None):
        # stderr goes to a file, not a pipe: it can never fill up and block the worker; closed with the worker
        self.stderr = tempfile.TemporaryFile(mode="w+")  # noqa: SIM115
        self.proc = subprocess.Popen(
            [sys.executable, str(WORKER), str(run_dir), who, str(seed), *extra, *(backend.store_args() if backend else [])],
            stdout=subprocess.PIPE, stderr=self.stderr, text=True, bufsize=1,
        )  # fmt: skip
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            if line.endswith("\n"):  # a line cut by the kill was not acknowledged
                self.lines.append(line.rstrip("\n"))

    def wait_for_acks(self, n: int, timeout: float = START_TIMEOUT_S) -> None:
        deadline = time.monotonic() + timeout
        while len(self.acks()) < n:
            if self.proc.poll() is not None:
                raise AssertionError(f"worker exited early: {self.errors()}")
            if time.monotonic() > deadline:
                raise AssertionError(f"worker acknowledged {len(self.acks())} edits in {timeout} s")
            time.sleep(0.01)

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()
        self._close()

    def finish(self, timeout: float = 120) -> str:
        self.proc.wait(timeout=timeout)
        err = self.errors()
        self._close()
        return err

    def _close(self) -> None:
        self._reader.join(timeout=10)
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        self.stderr.close()

    def errors(self) -> str:
        self.stderr.seek(0)
        return self.stderr.read()

    def acks(self) -> list[dict]:
        return [json.loads(line[4:]) for line in list(self.lines) if line.startswith("ACK ")]


def check_consistent(run_dir: Path, backend: StoreBackend) -> None:
    """SQLite: the file passes integrity_check and ids run 1, 2, 3, ... PostgreSQL: ids are unique and increasing
    (a killed writer's transaction may have drawn a sequence number: gaps are allowed there, as in any shared
    store) and every event belongs to a run that exists."""
    if backend.url is None:
        con = sqlite3.connect(run_dir / "labels.sqlite")
        try:
            assert con.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
            ids = [r[0] for r in con.execute("SELECT id FROM label_events ORDER BY id")]
            assert ids == list(range(1, len(ids) + 1)), "event ids have gaps or repeats"
        finally:
            con.close()
        return
    engine = sa.create_engine(backend.url)
    try:
        with engine.connect() as conn:
            ids = [r[0] for r in conn.execute(sa.text("SELECT id FROM label_events"))]
            assert len(ids) == len(set(ids)), "event ids repeat"
            orphans = conn.execute(
                sa.text(
                    "SELECT count(*) FROM label_events e LEFT JOIN label_runs r USING (run_key) WHERE r.run_key IS NULL"
                )
            ).scalar()
            assert orphans == 0
    finally:
        engine.dispose()


def assert_acked_present(store: LabelStore, acked: list[dict]) -> dict[int, object]:
    events = {e.id: e for e in store.events()}
    for a in acked:
        e = events.get(a["id"])
        assert e is not None, f"acknowledged event {a['id']} is missing"
        assert e.action == a["action"]
        if e.action == "rename_cluster":
            assert e.target["cluster"] == str(a["target"]) and e.new == {"name": a["value"]}
        else:
            assert e.target["clips"] == [a["target"]] and e.new == {"label": a["value"]}
    return events


def test_acknowledged_edits_survive_sigkill(tmp_path: Path, store_backend: StoreBackend) -> None:
    run_dir = make_label_run(tmp_path)
    rng = random.Random(20201)
    acked: list[dict] = []
    for r in range(ROUNDS):
        w = Worker(run_dir, f"w{r}", r, backend=store_backend)
        w.wait_for_acks(1 + rng.randrange(5))
        time.sleep(rng.uniform(0.0, 0.25))  # then die at a random moment, mid-edit or between edits
        w.kill()
        acked += w.acks()
        check_consistent(run_dir, store_backend)  # a restart finds a consistent database
    store = store_backend.open(run_dir)
    events = assert_acked_present(store, acked)
    # at most one edit per kill can have committed without its acknowledgement being read
    assert len(acked) <= len(events) <= len(acked) + ROUNDS
    # and the labels are the fold of what survived: each cluster carries its latest rename
    latest: dict[str, str] = {}
    for e in sorted(events.values(), key=lambda e: e.id):
        if e.action == "rename_cluster":
            latest[e.target["cluster"]] = e.new["name"]
    assert store.cluster_names(0) == latest
    labels = store.effective_labels(0).set_index("clip_id")
    for a in acked:
        if a["action"] == "override_clip" and a == max(
            (b for b in acked if b["target"] == a["target"] and b["action"] == "override_clip"), key=lambda b: b["id"]
        ):
            later = [e for e in events.values() if e.id > a["id"] and e.target.get("clips") == [a["target"]]]
            expected = later[-1].new["label"] if later else a["value"]
            assert labels.loc[a["target"], "label"] == expected


def test_two_processes_append_at_once(tmp_path: Path, store_backend: StoreBackend) -> None:
    run_dir = make_label_run(tmp_path)
    store_backend.open(run_dir).close()  # create the database before the race (both would otherwise)
    edits = 80
    barrier = tmp_path / "barrier"
    barrier.mkdir()
    a = Worker(
        run_dir, "ana", 0, "--edits", str(edits), "--clusters", "0,1", "--barrier", str(barrier), backend=store_backend
    )
    b = Worker(
        run_dir, "bob", 1, "--edits", str(edits), "--clusters", "2,3", "--barrier", str(barrier), backend=store_backend
    )
    deadline = time.monotonic() + START_TIMEOUT_S
    while not all((barrier / f"ready-{w}").exists() for w in ("ana", "bob")):  # both open, then both go
        assert time.monotonic() < deadline and a.proc.poll() is None and b.proc.poll() is None, a.errors() + b.errors()
        time.sleep(0.005)
    (barrier / "go").touch()
    for w in (a, b):
        err = w.finish()
        assert w.proc.returncode == 0, err  # no StaleEditError: different clusters and clips never conflict
        assert w.lines[-1].startswith("DONE ")
    acked = a.acks() + b.acks()
    assert len(acked) == 2 * edits
    store = store_backend.open(run_dir)
    events = assert_acked_present(store, acked)
    assert len(events) == 2 * edits and {e.annotator for e in events.values()} == {"ana", "bob"}
    check_consistent(run_dir, store_backend)
    # both were appending at the same time (otherwise this test would prove nothing about concurrency):
    # each started its first edit before the other had finished its last one
    go = [float(next(x for x in w.lines if x.startswith("GO "))[3:]) for w in (a, b)]
    done = [float(w.lines[-1][5:]) for w in (a, b)]
    assert max(go) < min(done), f"the writers ran one after the other: go {go}, done {done}"
