"""The label store: an append-only event log in a real database, and the API the Studio calls.

Why a database and an event log: a label edit must never be lost, several annotators (browser
sessions, processes) edit at once, and every label must say who decided it and when. So edits are
rows appended to ``label_events`` in one short transaction each; nothing is ever updated or deleted;
the current labels are ``semantics.fold`` of the rows. Undo, redo and named snapshots fall out of
that for free.

Storage: any SQLAlchemy URL. By default a SQLite file ``RUN_DIR/labels.sqlite`` in WAL mode with
``synchronous=FULL``, so an edit whose call returned is in the fsynced WAL and survives a SIGKILL or
a power cut. Writers take the database lock up front (``BEGIN IMMEDIATE`` on SQLite, an advisory
lock on PostgreSQL, ``schema.make_engine``; on other backends a row lock on the run's ``label_runs``
row), re-read the log, check the edit against it and append, so two processes appending at once both
succeed, in some order. The SQL is portable (no backend-only statements outside the connection
hooks), so a team can point ``--store postgresql+psycopg://...`` at a shared server (the tests run
against one); one database holds the labels of many runs, keyed by ``run_key``.

Faults (``errors``): a writer waits at most ``LABELS.write_lock_wait_s`` for another writer's lock, then
raises ``StoreBusyError`` ("another annotator is saving, try again"); reads never wait for a writer, not
even one of this store's own threads. A SQLite file deleted or replaced under the open store is noticed
before an edit commits (``StoreGoneError``: nothing saved, never a success that went nowhere); a damaged
or unwritable store raises ``StoreDamagedError`` / ``StoreReadOnlyError`` naming the file and what to do.
Every driver error leaves the store as a ``LabelError`` (``schema.store_failure``).

Stale edits: every edit passes ``expected_version``, the version the user's screen was drawn from
(``store.version()`` when the page rendered, or ``version_of(...)`` of the thing edited). If an
event touching the same cluster (its merge group or the cluster it was split from) or the same clips
was appended after that version, the edit raises ``StaleEditError`` naming who changed it to what,
instead of silently overwriting. Edits to different clusters never conflict. Pass
``expected_version=None`` only from scripts that knowingly overwrite.

Typical use (the Studio)::

    store = LabelStore.open(run_dir)                    # RUN_DIR/labels.sqlite
    seen = store.version()                              # when the page is drawn
    store.rename_cluster(0, 12, "dog barking", annotator="ana", expected_version=seen)
    store.override_clips(["c0042"], "cat", annotator="ana", expected_version=seen)
    store.reject_clips(0, ["c0077"], annotator="ana", expected_version=seen)   # "not this"
    store.merge_clusters(0, [3, 7], annotator="ana", expected_version=seen, name="siren")
    store.split_cluster(0, 12, annotator="ana", expected_version=seen, method="kmeans", k=2)
    store.rename_cluster(0, "12.a", "puppy", annotator="ana", expected_version=store.version())
    store.undo("ana"); store.redo("ana")
    store.snapshot("label set v3", annotator="ana")
    df = store.effective_labels(head=0)                 # one row per clip, see semantics.LABEL_COLUMNS
    store.vocabulary(0); store.clusters(0); store.history(50)

API (all edits take ``annotator=`` and ``expected_version=``, return the appended ``Event`` and raise
``StaleEditError`` / ``LabelError`` with a sentence for the user; cluster ids are ints or "12.a"):

- edits: ``rename_cluster(head, cluster, name)``, ``merge_clusters(head, clusters, name=None)``,
  ``split_cluster(head, cluster, method="kmeans"|"selection", k=2, clip_ids=None, proposal=None)``,
  ``label_clips(clip_ids, label)`` (a map selection), ``override_clips(clip_ids, label)`` (the grid),
  ``clear_overrides(clip_ids)``, ``reject_clips(head, clip_ids, rejected=True)`` ("not this"),
  ``reset_clips(head, clip_ids)`` (both lifted in one event);
- history: ``undo(annotator)``, ``redo(annotator)``, ``can_undo/can_redo(annotator)`` (what would be
  undone, for the button), ``snapshot(name, annotator=)``, ``snapshots()``, ``history(limit, annotator=)``;
- reads: ``version()``, ``version_of(head, cluster)`` / ``version_of(clip_ids=...)``,
  ``effective_labels(head, snapshot=None)``, ``vocabulary(head)``, ``clusters(head)``,
  ``cluster_names(head)``, ``members(head, cluster)``, ``propose_split(...)`` (writes nothing),
  ``annotators()``, ``events()``, ``log_info(snapshot)``;
- assignments: cluster edits record the run's ``assignment_id``; after a retrain or re-assign the names
  label nothing (and cluster edits are refused) until ``carry_over(apply=True, annotator=)`` carries them
  by their clips (``needs_carry()``, ``last_carry()``, ``labels.carry``). Labels follow the run folder: a
  new catalog hash finds them under the key the folder had; an unknown ``run_key`` is refused.

Where things live: the tables and engine in ``schema``, the read models in ``views``, split
proposals in ``splits``, the exceptions in ``errors``, what events mean in ``semantics``; this module
holds the ``LabelStore`` itself (opening, transactions, validation, edits, queries).

One ``LabelStore`` per run and process is enough (wrap it in ``st.cache_resource``): it is
thread-safe, keeps the log in memory, reads only new rows on each call and caches the fold.
"""

from __future__ import annotations

import os
import sqlite3
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import sqlalchemy as sa
from sqlalchemy.engine import Connection

from selavi_core.config import LABELS
from selavi_core.labels import carry, splits, views
from selavi_core.labels import semantics as sem
from selavi_core.labels.carry import CarryReport
from selavi_core.labels.errors import LabelError, NothingToUndo, StaleEditError, StoreGoneError
from selavi_core.labels.schema import (
    EVENTS,
    RUNS,
    SCHEMA_VERSION,
    Base,
    create_tables,
    inserted_event,
    make_engine,
    redact,
    row_event,
    store_failure,
    store_url,
)
from selavi_core.labels.semantics import Event, LabelState
from selavi_core.runs.run import Run

__all__ = [
    "CarryReport",
    "LabelError",
    "LabelStore",
    "NothingToUndo",
    "StaleEditError",
    "default_run_key",
    "redact",
    "store_url",
]


def default_run_key(run: Run) -> str:
    """Run identity inside a shared database: folder name and catalog hash (stable across re-assignment)."""
    return f"{run.dir.resolve().name}@{run.meta.catalog_hash}"


def _annotator(value: Any) -> str:
    """The annotator name as recorded (``semantics.annotator_name``); LabelError says why it is none."""
    name = sem.annotator_name(value)
    if name is None:
        raise LabelError(sem.annotator_problem(value) or "annotator name is required")
    return name


def _clean_text(value: Any, what: str, *, required: bool) -> str | None:
    text = "" if value is None else str(value).strip()
    if not text:
        if required:
            raise LabelError(f"{what} is required")
        return None
    if len(text) > LABELS.max_name_length:
        raise LabelError(f"{what} is longer than {LABELS.max_name_length} characters")
    if sem.has_control_chars(text):
        raise LabelError(f"{what} {text!r} holds a line break, tab or other control character; give it on one line")
    return text


class _AlreadyBound(Exception):
    """Raised inside a write when another writer bound (or carried) the names first: nothing to append."""


# ------------------------------------------------------------------------------------------ store


class LabelStore:
    """Human labels of one run: append edits, fold them into labels. Thread-safe; one per process is enough."""

    def __init__(
        self, url: str, *, run: Run | None = None, run_key: str | None = None, create_run_key: bool = False,
        lock_wait_s: float | None = None,
    ):  # fmt: skip
        self.url = url
        self.run = run
        self.lock_wait_s = LABELS.write_lock_wait_s if lock_wait_s is None else float(lock_wait_s)
        try:
            self._engine = make_engine(url, lock_wait_s=self.lock_wait_s)
        except (OSError, sa.exc.ArgumentError, sa.exc.NoSuchModuleError, ModuleNotFoundError) as err:
            # a folder that cannot be made, a URL that is none, a database without its driver (the project pins
            # psycopg for PostgreSQL; others need theirs installed)
            raise LabelError(f"cannot create the label store {redact(url)}: {err}; give another --store") from err
        self._lock = threading.RLock()
        self._events: list[Event] = []
        self._state_cache: dict[int | None, tuple[int, LabelState]] = {}
        self._label_cache: dict[tuple, pd.DataFrame] = {}
        self._row_of: dict[str, int] | None = None
        self._file = self._sqlite_file()
        self._file_id: tuple[int, int] | None = None
        self._create_schema()
        self._file_id = self._identity()
        self.run_key = self._resolve_run_key(run_key, create_run_key)
        self._bind_legacy_names()

    # opening ----------------------------------------------------------------------------------
    @classmethod
    def open(
        cls,
        target: str | os.PathLike | Run,
        *,
        store: str | os.PathLike | None = None,
        run_key: str | None = None,
        create_run_key: bool = False,
        lock_wait_s: float | None = None,
    ) -> LabelStore:
        """Open (creating if needed) the label store of a run.

        ``target`` is a run folder (or ``Run``), or a database URL/path for label-only work without
        the run (renames, overrides, history; no effective labels or k-means splits). ``store``
        overrides where the database is: a SQLAlchemy URL or a file path; default
        ``RUN_DIR/labels.sqlite``. ``run_key`` names the run's labels in a store shared by several runs; a key
        the store does not hold is refused (naming the keys it holds) unless ``create_run_key`` starts one.
        ``lock_wait_s``: how long an edit waits for another writer (default ``LABELS.write_lock_wait_s``).
        """
        run: Run | None
        if isinstance(target, Run):
            run = target
        elif "://" in str(target) or (Path(target).is_file() and not Path(target, "run.json").exists()):
            run, store = None, store or target
        else:
            run = Run(target)
        if store is None:
            if run is None:
                raise LabelError("give a run folder or a store URL")
            store = run.dir / LABELS.store_file
        return cls(store_url(store), run=run, run_key=run_key, create_run_key=create_run_key, lock_wait_s=lock_wait_s)

    def _create_schema(self) -> None:
        """Create the tables that are missing; a store that has them is opened without taking the write lock."""
        with self._db(opening=True):
            with self._engine.connect() as conn, conn.begin():
                have = set(sa.inspect(conn).get_table_names())
            if not {t.name for t in Base.metadata.sorted_tables} <= have:
                create_tables(self._engine, self._write)

    # the store's file and errors ---------------------------------------------------------------
    def _sqlite_file(self) -> Path | None:
        """The SQLite file this store is (None for a server or an in-memory database)."""
        u = self._engine.url
        if u.get_backend_name() != "sqlite" or u.database in (None, "", ":memory:"):
            return None
        return Path(str(u.database))

    def _identity(self) -> tuple[int, int] | None:
        if self._file is None:
            return None
        st = self._file.stat()
        return (st.st_dev, st.st_ino)

    def _check_file(self) -> None:
        """Refuse to go on when the SQLite file was deleted or replaced under the open store (its connections
        would read and write the old, unlinked file: an edit would report success and go nowhere)."""
        if self._file is None or self._file_id is None:
            return
        try:
            now = self._identity()
        except FileNotFoundError:
            raise StoreGoneError(str(self._file), "deleted") from None
        except OSError as err:
            raise StoreGoneError(str(self._file), f"made unreachable ({err.strerror})") from None
        if now != self._file_id:
            raise StoreGoneError(str(self._file), "replaced by another file")

    @contextmanager
    def _db(self, *, opening: bool = False) -> Iterator[None]:
        """Database work: a driver's error becomes the ``LabelError`` that says what to do (``store_failure``)."""
        try:
            yield
        except (sa.exc.DBAPIError, sqlite3.Error) as err:  # sqlite3's own: from a connection hook (make_engine)
            raise store_failure(err, redact(self.url), self.lock_wait_s, opening=opening) from err

    def _resolve_run_key(self, run_key: str | None, create: bool = False) -> str:
        with self._db():
            return self._resolve_key(run_key, create)

    def _resolve_key(self, run_key: str | None, create: bool = False) -> str:
        with self._engine.connect() as conn:
            rows = conn.execute(sa.select(RUNS.c.run_key, RUNS.c.meta)).all()
        existing = {r.run_key: r.meta or {} for r in rows}
        if run_key is not None and run_key not in existing and not create:  # a mistyped key must not start an empty set
            held = ", ".join(sorted(existing)) or "none yet"
            raise LabelError(f"{redact(self.url)} holds no labels under run key {run_key!r}; the keys it holds: {held}")
        if self.run is None:
            if run_key is None and len(existing) == 1:
                run_key = next(iter(existing))
            if (
                run_key is not None and run_key in existing
            ):  # label-only access by URL: find the run where the log says it is
                run_dir = existing[run_key].get("run_dir")
                if run_dir and Path(run_dir, "run.json").is_file():
                    self.run = Run(run_dir)
                return run_key
        if run_key is None:
            if self.run is None:
                raise LabelError(
                    f"{redact(self.url)} holds labels of {len(existing)} runs; say which with run_key "
                    f"({', '.join(sorted(existing)) or 'none yet'})"
                )
            run_key = default_run_key(self.run)
            if run_key not in existing:
                run_key = self._key_of_this_folder(existing) or run_key
        if run_key not in existing:
            meta: dict[str, Any] = {}
            if self.run is not None:
                m = self.run.meta
                meta = {
                    "run_dir": str(self.run.dir.resolve()), "catalog_dir": m.catalog_dir,
                    "catalog_hash": m.catalog_hash, "checkpoint_hash": m.checkpoint_hash,
                    "heads": m.heads, "clusters": m.clusters,
                }  # fmt: skip
            with self._write() as conn:
                found = conn.execute(sa.select(RUNS.c.run_key).where(RUNS.c.run_key == run_key)).first()
                if found is None:
                    conn.execute(
                        RUNS.insert().values(
                            run_key=run_key, created=time.time(), meta=meta, writes=0, schema_version=SCHEMA_VERSION
                        )
                    )
        return run_key

    def _key_of_this_folder(self, existing: dict[str, dict]) -> str | None:
        """The key this run's labels are under when it is not the default one (``default_run_key``).

        Labels follow the run folder, not the catalog hash: a re-assignment after a catalog change gives a new
        default key, and the labels are found again under the key whose ``run_dir`` is this folder (the one with
        the most events when several are). A folder renamed or moved is found by its catalog hash when the store
        holds one run only.
        """
        assert self.run is not None
        here = str(self.run.dir.resolve())
        same_dir = [k for k, m in existing.items() if m.get("run_dir") == here]
        if len(same_dir) > 1:
            with self._engine.connect() as conn:
                counts: dict[str, int] = dict(
                    conn.execute(
                        sa.select(EVENTS.c.run_key, sa.func.count())
                        .where(EVENTS.c.run_key.in_(same_dir))
                        .group_by(EVENTS.c.run_key)
                    ).all()
                )
            same_dir.sort(key=lambda k: (-int(counts.get(k, 0)), k))
        if same_dir:
            return same_dir[0]
        same_catalog = [k for k, m in existing.items() if m.get("catalog_hash") == self.run.meta.catalog_hash]
        if len(existing) == 1 and same_catalog:  # the run folder was renamed or moved
            return same_catalog[0]
        return None

    def close(self) -> None:
        self._engine.dispose()

    def __enter__(self) -> LabelStore:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # transactions ---------------------------------------------------------------------------
    @contextmanager
    def _write(self) -> Iterator[Connection]:
        """A write transaction that holds the database's write lock from its first statement (waiting at most
        ``lock_wait_s`` for it: ``StoreBusyError``)."""
        self._check_file()
        with self._db(), self._engine.connect() as conn:
            conn.execution_options(selavi_write=True)
            with conn.begin():
                yield conn

    def _load_new(self, conn: Connection) -> None:
        last = self._events[-1].id if self._events else 0
        rows = conn.execute(
            sa.select(EVENTS).where(EVENTS.c.run_key == self.run_key, EVENTS.c.id > last).order_by(EVENTS.c.id)
        ).all()
        if rows:
            self._events.extend(row_event(r) for r in rows)

    def _sync(self) -> None:
        """Read the rows appended since the last read (a read transaction: it never waits for a writer)."""
        self._check_file()
        with self._lock, self._db(), self._engine.connect() as conn, conn.begin():
            self._load_new(conn)

    def _state(self, upto: int | None = None) -> LabelState:
        """The fold of the cached log (at a snapshot when ``upto``); extended in place when possible."""
        last = self._events[-1].id if self._events else 0
        cached = self._state_cache.get(upto)
        if cached is not None and (cached[0] == last or upto is not None and cached[0] >= upto):
            return cached[1]
        if cached is not None and upto is None:
            i = len(self._events)
            while i > 0 and self._events[i - 1].id > cached[0]:
                i -= 1
            if sem.fold_more(cached[1], self._events[i:]):
                self._state_cache[upto] = (last, cached[1])
                return cached[1]
        state = sem.fold(self._events, upto=upto)
        self._state_cache[upto] = (last, state)
        return state

    def _append(self, build: Any, expected_version: int | None = None) -> Event:
        """Run ``build(state) -> dict of event fields`` under the write lock and append its event.

        The log is re-read inside the locked transaction, so checks in ``build`` (stale versions,
        unknown clusters) see every edit committed before this one. The call returns only after
        the commit: a returned edit is on disk, in the file the store was opened on (checked just before
        the commit: ``StoreGoneError`` when it was deleted or replaced, and nothing is committed).

        The database's write lock is waited for (at most ``lock_wait_s``: ``StoreBusyError``) before this
        store's thread lock is taken, so reads by other threads (every session's pages) go on meanwhile.
        """
        self._check_file()
        with self._db(), self._engine.connect() as conn:
            conn.execution_options(selavi_write=True)
            tx = conn.begin()  # BEGIN IMMEDIATE / the advisory lock: the wait happens here
            try:
                with self._lock:
                    ev = self._append_in(conn, build, expected_version)
                    self._check_file()
                    tx.commit()
                    self._events.append(ev)
                    return ev
            finally:
                if tx.is_active:
                    tx.rollback()

    def _append_in(self, conn: Connection, build: Any, expected_version: int | None) -> Event:
        """Check and insert the event inside the write transaction (``_append``); the ``Event`` it will be."""
        conn.execute(RUNS.update().where(RUNS.c.run_key == self.run_key).values(writes=RUNS.c.writes + 1))
        self._load_new(conn)
        fields = build(self._state())
        if fields["action"] in sem.CLUSTER_ACTIONS:
            fields["target"] = {**fields["target"], "assignment": self._bound_for_edit(self._state())}
        if fields["action"] in sem.EDIT_ACTIONS:
            # the version the edit was based on: the log can prove no update was lost
            fields["target"] = {**fields["target"], "based_on": expected_version}
        fields.setdefault("head", None)
        fields.setdefault("old_value", None)
        fields.setdefault("ref_event", None)
        values = {"run_key": self.run_key, "time": time.time(), **fields}
        pk = conn.execute(EVENTS.insert().values(**values)).inserted_primary_key
        assert pk is not None  # typed Optional; a single-row INSERT always has one
        return inserted_event(pk[0], values)  # what the database holds once committed

    # validation helpers -----------------------------------------------------------------------
    def _need_run(self, what: str) -> Run:
        if self.run is None:
            raise LabelError(f"{what} needs the run folder; open the store with LabelStore.open(RUN_DIR)")
        return self.run

    def _check_head(self, head: Any) -> int:
        try:
            h = int(head)
        except (TypeError, ValueError):
            raise LabelError(f"head must be an integer, not {head!r}") from None
        if h < 0 or (self.run is not None and h >= self.run.heads):
            n = self.run.heads if self.run is not None else "?"
            raise LabelError(f"head {h} does not exist (this run has {n} heads)")
        return h

    def _check_node(self, state: LabelState, head: int, cluster: Any) -> str:
        try:
            node = sem.node_id(cluster)
        except ValueError as err:
            raise LabelError(str(err)) from None
        if "." in node:
            if node not in state.known_nodes(head):
                raise LabelError(f"cluster {node} of head {head} does not exist (split it first)")
        elif self.run is not None and int(node) >= self.run.clusters:
            raise LabelError(f"cluster {node} does not exist: head {head} has clusters 0..{self.run.clusters - 1}")
        return node

    def _check_clips(self, clip_ids: Iterable[Any]) -> list[str]:
        ids = list(dict.fromkeys(str(c) for c in clip_ids))
        if not ids:
            raise LabelError("no clips given")
        if self.run is not None:
            row = self._rows()
            unknown = [c for c in ids if c not in row]
            if unknown:
                raise LabelError(f"{len(unknown)} clip id(s) are not in this run, e.g. {', '.join(unknown[:3])}")
        return ids

    def _rows(self) -> dict[str, int]:
        if self._row_of is None:
            self._row_of = {str(c): i for i, c in enumerate(self._need_run("clip lookups").clip_ids)}
        return self._row_of

    @staticmethod
    def _fresh(state: LabelState, what: str, current_version: int, expected: int | None, current: Any) -> None:
        if expected is None or current_version <= int(expected):
            return
        raise StaleEditError(what, int(expected), current_version, state.events[current_version], current)

    @staticmethod
    def _name_now(state: LabelState, head: int, node: str) -> str | None:
        return views.name_now(state, head, node)

    # the assignment names are bound to --------------------------------------------------------
    @property
    def assignment_id(self) -> str | None:
        """The run's current assignment (``Run.assignment_id``); None without the run folder."""
        return None if self.run is None else self.run.assignment_id

    def _bound(self, state: LabelState) -> LabelState:
        """``state`` as it applies to the run's current assignment (``semantics.for_assignment``)."""
        return sem.for_assignment(state, self.assignment_id)

    def _bound_for_edit(self, state: LabelState) -> str | None:
        """The assignment a cluster edit is made on; refused while the names are bound to another one."""
        current = self.assignment_id
        if current is None:
            return state.bound
        if state.bound is not None and state.bound != current:
            raise LabelError(
                f"the cluster names of this run were given on assignment {state.bound}, and the run now holds "
                f"assignment {current} (retrained or re-assigned): carry them over first "
                "(`selavi labels RUN_DIR carry --apply --as WHO`, or the Studio's banner), then edit"
            )
        return current

    def _bind_legacy_names(self) -> None:
        """A log written before cluster edits recorded their assignment: bind its names, once, to the
        assignment the run holds now (the only one the log can know of), with a ``bind`` event."""
        if self.run is None:
            return
        self._sync()
        with self._lock:
            state = self._state()
            if state.bound is not None or not any(e.action in sem.CLUSTER_ACTIONS for e in self._events):
                return
        current = self.run.assignment_id
        meta = self.run.meta

        def build(state: LabelState) -> dict[str, Any]:
            if state.bound is not None:
                raise _AlreadyBound
            return {
                "annotator": "selavi", "action": "bind", "target": {},
                "new_value": {"assignment": current, "checkpoint_hash": meta.checkpoint_hash,
                              "catalog_hash": meta.catalog_hash},
                "source": "upgrade",
            }  # fmt: skip

        with suppress(_AlreadyBound):
            self._append(build)

    def needs_carry(self) -> bool:
        """Whether the names were given on another assignment than the run's current one (``carry_over``)."""
        if self.run is None:
            return False
        self._sync()
        with self._lock:
            bound = self._state().bound
        return bound is not None and bound != self.assignment_id

    def last_carry(self) -> CarryReport | None:
        """The report of the latest carry-over the log holds (undone ones are skipped), or None."""
        self._sync()
        with self._lock:
            state = self._state()
            ev = next((e for e in reversed(self._events) if e.action == "carry_names" and state.is_active(e.id)), None)
        return None if ev is None else carry.from_event(ev)

    def carry_over(
        self, *, apply: bool = False, annotator: str | None = None, min_overlap: float | None = None,
        min_share: float | None = None, source: str = "api",
    ) -> CarryReport:  # fmt: skip
        """Carry the cluster names over from the assignment they were given on to the run's current one.

        Each named cluster of the old assignment goes to the new cluster holding most of its clips when
        ``overlap`` and ``share`` reach the thresholds (``LABELS.carry_min_overlap`` / ``carry_min_share``)
        and no other name claims it (``labels.carry``); the rest are listed as needing a look. Without
        ``apply`` nothing is written (the plan); with it, one ``carry_names`` event (``annotator=``; one undo
        reverts it) records every carried name with its overlap and the ones left for a look, and binds the
        names to the current assignment. Status ``current`` means there is nothing to carry.
        """
        run = self._need_run("carrying cluster names over")
        lo = LABELS.carry_min_overlap if min_overlap is None else float(min_overlap)
        ls = LABELS.carry_min_share if min_share is None else float(min_share)
        current = run.assignment_id
        who = _annotator(annotator) if apply else None

        def planned(state: LabelState) -> CarryReport:
            old = state.bound
            if old is None or old == current:
                return CarryReport(carry.CURRENT, old, current)
            past = run.past_assignment(old)
            if past is None:
                names = carry.unplanned(
                    state, f"the assignment the names were given on ({old}) is not kept in the run folder "
                    "(assignment_history/): see which new cluster is which on the Clusters page and name it again"
                )  # fmt: skip
            else:
                names = carry.plan(state, past[0], past[1], run.clip_ids, run.assignments("joint"),
                                   min_overlap=lo, min_share=ls)  # fmt: skip
            return CarryReport(carry.PLANNED, old, current, names)

        if not apply:
            self._sync()
            with self._lock:
                return planned(self._state())

        def build(state: LabelState) -> dict[str, Any]:
            report = planned(state)
            if report.status == carry.CURRENT:
                raise _AlreadyBound
            return {
                "annotator": who, "action": "carry_names", "target": {"from": report.old_assignment},
                "old_value": {"assignment": report.old_assignment},
                "new_value": {"from": report.old_assignment, "assignment": current, "min_overlap": lo,
                              "min_share": ls, **carry.event_values(report.names)},
                "source": source,
            }  # fmt: skip

        try:
            ev = self._append(build)
        except _AlreadyBound:
            return self.last_carry() or CarryReport(carry.CURRENT, current, current)
        return carry.from_event(ev)

    # edits ------------------------------------------------------------------------------------
    def rename_cluster(
        self, head: int, cluster: Any, name: str | None, *, annotator: str, expected_version: int | None,
        source: str = "api",
    ) -> Event:  # fmt: skip
        """Name a cluster (or sub-cluster, or merge group) of ``head``; ``None``/"" clears its own name."""
        h = self._check_head(head)
        who = _annotator(annotator)
        new = _clean_text(name, "cluster name", required=False)

        def build(state: LabelState) -> dict[str, Any]:
            node = self._check_node(state, h, cluster)
            old = self._name_now(state, h, node)
            self._fresh(state, f"cluster {node} (head {h})", state.cluster_version(h, node), expected_version, old)
            return {
                "annotator": who, "action": "rename_cluster", "head": h, "target": {"head": h, "cluster": node},
                "old_value": {"name": old}, "new_value": {"name": new}, "source": source,
            }  # fmt: skip

        return self._append(build, expected_version)

    def merge_clusters(
        self, head: int, clusters: Sequence[Any], *, annotator: str, expected_version: int | None,
        name: str | None = None, source: str = "api",
    ) -> Event:  # fmt: skip
        """Unite clusters under one name (``name``, else the first named one in the order given)."""
        h = self._check_head(head)
        who = _annotator(annotator)
        given = _clean_text(name, "cluster name", required=False)

        def build(state: LabelState) -> dict[str, Any]:
            nodes = list(dict.fromkeys(self._check_node(state, h, c) for c in clusters))
            if len(nodes) < 2:
                raise LabelError("merging needs at least two different clusters")
            olds = {n: self._name_now(state, h, n) for n in nodes}
            for n in nodes:
                self._fresh(state, f"cluster {n} (head {h})", state.cluster_version(h, n), expected_version, olds[n])
            chosen = given or next((v for v in olds.values() if v), None)
            return {
                "annotator": who, "action": "merge_clusters", "head": h, "target": {"head": h, "clusters": nodes},
                "old_value": {"names": olds}, "new_value": {"name": chosen}, "source": source,
            }  # fmt: skip

        return self._append(build, expected_version)

    def propose_split(
        self, head: int, cluster: Any, *, method: str = "kmeans", k: int = LABELS.split_k,
        clip_ids: Iterable[Any] | None = None, features: str = "concat", seed: int = LABELS.split_seed,
    ) -> dict[str, list[str]]:  # fmt: skip
        """Sub-clusters a split would create, ``{"12.a": [clip ids], ...}``, largest first; nothing is written.

        ``method="kmeans"``: spherical k-means with k-means++ seeding (``features.kmeans_labels``, ``k``
        parts) on the members' embedding (``features``: ``video``, ``audio`` or ``concat``, the
        audio-visual ``features.av_embedding``). ``method="selection"``: the given ``clip_ids`` that are
        members (e.g. a map lasso) versus the rest.
        """
        h = self._check_head(head)
        self._sync()
        with self._lock:  # the cached state is extended in place by later appends: read it under the lock
            state = self._state()
            node = self._check_node(state, h, cluster)
            return self._propose(state, h, node, method, k, clip_ids, features, seed)

    def _members(self, state: LabelState, head: int, node: str, *, group: bool = True) -> list[str]:
        run = self._need_run("cluster members")
        state = self._bound(state)
        return views.members(state, head, node, run.clip_ids, run.assignments("joint")[:, head], self._rows(),
                             group=group)  # fmt: skip

    def _propose(
        self, state: LabelState, head: int, node: str, method: str, k: int, clip_ids: Iterable[Any] | None,
        features: str, seed: int,
    ) -> dict[str, list[str]]:  # fmt: skip
        run = self._need_run("splitting a cluster")
        parts = splits.propose_parts(run, self._rows(), self._members(state, head, node), node=node, head=head,
                                     method=method, k=k, clip_ids=clip_ids, features=features, seed=seed)  # fmt: skip
        return dict(zip(splits.sub_ids(state, head, node, len(parts)), parts, strict=True))

    def split_cluster(
        self, head: int, cluster: Any, *, annotator: str, expected_version: int | None, method: str = "kmeans",
        k: int = LABELS.split_k, clip_ids: Iterable[Any] | None = None, proposal: dict[str, list[str]] | None = None,
        features: str = "concat", seed: int = LABELS.split_seed, source: str = "api",
    ) -> Event:  # fmt: skip
        """Split a cluster into named-later sub-clusters (``event.new["parts"]``: sub id -> clip ids).

        Pass the ``proposal`` the user confirmed (from ``propose_split``) to commit exactly it; the
        sub-cluster ids are re-lettered if someone split the same cluster meanwhile. Sub-clusters
        inherit the cluster's name until they are renamed.
        """
        h = self._check_head(head)
        who = _annotator(annotator)
        if method not in splits.SPLIT_METHODS:
            raise LabelError(f"split method must be 'kmeans' or 'selection', not {method!r}")
        sel = None if clip_ids is None else [str(c) for c in clip_ids]

        def build(state: LabelState) -> dict[str, Any]:
            node = self._check_node(state, h, cluster)
            old = self._name_now(state, h, node)
            self._fresh(state, f"cluster {node} (head {h})", state.cluster_version(h, node), expected_version, old)
            if proposal is None:
                parts = self._propose(state, h, node, method, k, sel, features, seed)
            else:
                members = set(self._members(state, h, node))
                groups = [list(dict.fromkeys(str(c) for c in ids)) for ids in proposal.values()]
                groups = [g for g in groups if g]
                stray = [c for g in groups for c in g if c not in members]
                if len(groups) < 2 or stray:
                    raise LabelError(
                        f"the split proposal does not fit cluster {node} any more "
                        f"({len(stray)} clips are no longer members); propose it again"
                    )
                parts = dict(zip(splits.sub_ids(state, h, node, len(groups)), groups, strict=True))
            return {
                "annotator": who, "action": "split_cluster", "head": h, "target": {"head": h, "cluster": node},
                "old_value": {"name": old},
                "new_value": {"method": method, "k": len(parts), "parts": parts, "seed": seed if method == "kmeans" else None},
                "source": source,
            }  # fmt: skip

        return self._append(build, expected_version)

    def _clip_edit(
        self, action: str, clip_ids: Iterable[Any], label: str | None, *, annotator: str,
        expected_version: int | None, head: int | None, source: str,
    ) -> Event:  # fmt: skip
        who = _annotator(annotator)
        new = _clean_text(label, "label", required=False)
        h = None if head is None else self._check_head(head)
        ids = self._check_clips(clip_ids)

        def build(state: LabelState) -> dict[str, Any]:
            current = state.latest_touch(("k", c) for c in ids)
            had = {c: state.overrides[c].label for c in ids if c in state.overrides}
            shown = had.get(ids[0]) if len(ids) == 1 else None
            self._fresh(state, f"{len(ids)} clip(s) ({ids[0]}...)" if len(ids) > 1 else f"clip {ids[0]}",
                        current, expected_version, shown)  # fmt: skip
            return {
                "annotator": who, "action": action, "head": h, "target": {"clips": ids},
                "old_value": {"overrides": had}, "new_value": {"label": new}, "source": source,
            }  # fmt: skip

        return self._append(build, expected_version)

    def label_clips(
        self, clip_ids: Iterable[Any], label: str | None, *, annotator: str, expected_version: int | None,
        head: int | None = None, source: str = "api",
    ) -> Event:  # fmt: skip
        """Label a selection of clips (e.g. a map lasso); wins over cluster names in every head."""
        return self._clip_edit("label_clips", clip_ids, label, annotator=annotator,
                               expected_version=expected_version, head=head, source=source)  # fmt: skip

    def override_clips(
        self, clip_ids: Iterable[Any], label: str | None, *, annotator: str, expected_version: int | None,
        head: int | None = None, source: str = "api",
    ) -> Event:  # fmt: skip
        """Give clips their own label (a correction from the grid); ``None`` removes the override."""
        return self._clip_edit("override_clip", clip_ids, label, annotator=annotator,
                               expected_version=expected_version, head=head, source=source)  # fmt: skip

    def clear_overrides(
        self, clip_ids: Iterable[Any], *, annotator: str, expected_version: int | None, source: str = "api"
    ) -> Event:
        """Let clips fall back to their cluster's name again."""
        return self.override_clips(clip_ids, None, annotator=annotator, expected_version=expected_version,
                                   source=source)  # fmt: skip

    def reject_clips(
        self, head: int, clip_ids: Iterable[Any], *, annotator: str, expected_version: int | None,
        rejected: bool = True, source: str = "api",
    ) -> Event:  # fmt: skip
        """ "Not this": the clips stop taking their cluster's name in ``head`` (``rejected=False`` undoes it)."""
        h = self._check_head(head)
        who = _annotator(annotator)
        ids = self._check_clips(clip_ids)

        def build(state: LabelState) -> dict[str, Any]:
            hs = state.heads.get(h)
            before = [c for c in ids if hs is not None and c in hs.rejected]
            current = state.latest_touch(("k", c) for c in ids)
            self._fresh(
                state, f"clip {ids[0]}" if len(ids) == 1 else f"{len(ids)} clips", current, expected_version, None
            )
            return {
                "annotator": who, "action": "reject_clip", "head": h, "target": {"head": h, "clips": ids},
                "old_value": {"rejected": before}, "new_value": {"rejected": bool(rejected)}, "source": source,
            }  # fmt: skip

        return self._append(build, expected_version)

    def reset_clips(
        self, head: int, clip_ids: Iterable[Any], *, annotator: str, expected_version: int | None, source: str = "api",
    ) -> Event:  # fmt: skip
        """Give clips back to their cluster: clear their own labels and lift "not this" in ``head``.

        One event, so one ``undo`` restores both. Every clip is checked against ``expected_version``
        (an edit someone else made to any of them raises ``StaleEditError``); ``LabelError`` when none
        of the clips has an own label or a rejection in ``head`` (nothing would change).
        """
        h = self._check_head(head)
        who = _annotator(annotator)
        ids = self._check_clips(clip_ids)

        def build(state: LabelState) -> dict[str, Any]:
            hs = state.heads.get(h)
            own = {c: state.overrides[c].label for c in ids if c in state.overrides}
            rejected = [c for c in ids if hs is not None and c in hs.rejected]
            current = state.latest_touch(("k", c) for c in ids)
            self._fresh(state, f"{len(ids)} clip(s) ({ids[0]}...)" if len(ids) > 1 else f"clip {ids[0]}",
                        current, expected_version, own.get(ids[0]) if len(ids) == 1 else None)  # fmt: skip
            if not own and not rejected:
                raise LabelError(f"nothing to reset: none of the {len(ids)} clip(s) has its own label or a 'not this'")
            return {
                "annotator": who, "action": "reset_clips", "head": h, "target": {"head": h, "clips": ids},
                "old_value": {"overrides": own, "rejected": rejected}, "new_value": None, "source": source,
            }  # fmt: skip

        return self._append(build, expected_version)

    def undo(self, annotator: str, *, source: str = "api") -> Event:
        """Undo ``annotator``'s latest edit that is not undone (never anyone else's)."""
        return self._undo_redo("undo", annotator, source)

    def redo(self, annotator: str, *, source: str = "api") -> Event:
        """Redo what ``annotator`` undid last (until their next new edit)."""
        return self._undo_redo("redo", annotator, source)

    def _undo_redo(self, action: str, annotator: str, source: str) -> Event:
        who = _annotator(annotator)

        def build(state: LabelState) -> dict[str, Any]:
            stack = (state.undo_stacks if action == "undo" else state.redo_stacks).get(who, [])
            if not stack:
                raise NothingToUndo(f"{who} has nothing to {action}")
            ref = state.events[stack[-1]]
            return {
                "annotator": who, "action": action, "head": ref.head, "target": {"event": ref.id},
                "old_value": {"action": ref.action, "summary": sem.describe(ref)}, "new_value": None,
                "source": source, "ref_event": ref.id,
            }  # fmt: skip

        return self._append(build)

    def can_undo(self, annotator: str) -> Event | None:
        """The edit ``undo(annotator)`` would undo, or None (for the button's label)."""
        self._sync()
        with self._lock:
            stack = self._state().undo_stacks.get(sem.annotator_name(annotator) or "", [])
            return self._state().events[stack[-1]] if stack else None

    def can_redo(self, annotator: str) -> Event | None:
        self._sync()
        with self._lock:
            stack = self._state().redo_stacks.get(sem.annotator_name(annotator) or "", [])
            return self._state().events[stack[-1]] if stack else None

    def snapshot(self, name: str, *, annotator: str, source: str = "api") -> Event:
        """Name the current labels ("label set v3") so exports can refer to exactly them later."""
        who = _annotator(annotator)
        label = _clean_text(name, "snapshot name", required=True)

        def build(state: LabelState) -> dict[str, Any]:
            if label in state.snapshots:
                raise LabelError(f"a snapshot named {label!r} exists already (event {state.snapshots[label]})")
            return {
                "annotator": who, "action": "snapshot", "target": {"upto": state.last_event_id},
                "new_value": {"name": label}, "source": source,
            }  # fmt: skip

        return self._append(build)

    # queries ----------------------------------------------------------------------------------
    def version(self) -> int:
        """Id of the latest event of this run (0 when none): what a page was drawn from."""
        self._sync()
        with self._lock:
            return self._events[-1].id if self._events else 0

    def version_of(self, head: int | None = None, cluster: Any = None, clip_ids: Iterable[Any] | None = None) -> int:
        """Latest event id touching a cluster (its merge group and split ancestors) or some clips."""
        self._sync()
        with self._lock:
            state = self._state()
            if cluster is not None:
                return state.cluster_version(self._check_head(head), sem.node_id(cluster))
            if clip_ids is not None:
                return state.latest_touch(("k", str(c)) for c in clip_ids)
            return state.last_event_id

    def events(self) -> list[Event]:
        """All events of this run, oldest first (a copy)."""
        self._sync()
        with self._lock:
            return list(self._events)

    def resolve_snapshot(self, snapshot: str | int | None) -> int | None:
        """The event id a snapshot name (or id) stands for; None means "now"."""
        if snapshot is None:
            return None
        self._sync()
        with self._lock:
            snaps = dict(self._state().snapshots)
        if isinstance(snapshot, int | np.integer) and int(snapshot) in snaps.values():
            return int(snapshot)
        if str(snapshot) in snaps:
            return snaps[str(snapshot)]
        raise LabelError(f"no snapshot named {snapshot!r}; snapshots: {', '.join(snaps) or 'none yet'}")

    def snapshots(self) -> pd.DataFrame:
        """name, event_id, annotator, time of every snapshot, oldest first."""
        self._sync()
        with self._lock:
            return views.snapshots(self._state())

    def state(self, snapshot: str | int | None = None) -> LabelState:
        """The folded state, now or at a snapshot. Read it, never change it; the current state is a
        live object that later edits extend, so hold no reference across edits (use ``log_info`` or
        the frame-returning methods for values that must not move)."""
        upto = self.resolve_snapshot(snapshot)
        self._sync()
        with self._lock:
            return self._state(upto)

    def history(self, limit: int | None = 100, *, annotator: str | None = None) -> pd.DataFrame:
        """Latest events first: id, time, annotator, action, head, summary, undone, ref, target, old, new, source."""
        self._sync()
        with self._lock:
            return views.history(self._events, self._state(), limit, annotator=annotator)

    def annotators(self) -> list[str]:
        self._sync()
        with self._lock:
            return sorted({e.annotator for e in self._events})

    def effective_labels(self, head: int = 0, snapshot: str | int | None = None) -> pd.DataFrame:
        """One row per clip of the run (run order): ``semantics.LABEL_COLUMNS``.

        ``label_source`` is ``override``, ``cluster`` or ``none``; ``annotator``/``time``/``event_id``
        name the decision behind the label (or the rejection). Cached per log version and
        assignment file, so calling it on every page render is cheap.
        """
        run = self._need_run("effective labels")
        h = self._check_head(head)
        upto = self.resolve_snapshot(snapshot)
        self._sync()
        joint = run.dir / "assignments" / "joint.npy"
        stamp = joint.stat().st_mtime_ns if joint.exists() else 0
        with self._lock:
            last = self._events[-1].id if self._events else 0
            key = (h, upto, last, stamp)
            df = self._label_cache.get(key)
            if df is None:
                state = self._bound(self._state(upto))
                df = sem.effective_labels(
                    state, h, run.clip_ids, run.assignments("joint")[:, h], run.scores("confidence")[:, h], self._rows()
                )
                self._label_cache = {k: v for k, v in self._label_cache.items() if k[2] == last and k[3] == stamp}
                self._label_cache[key] = df
        return df.copy()

    def vocabulary(self, head: int = 0, snapshot: str | int | None = None) -> pd.DataFrame:
        """label, count, override, cluster: the labels in use in ``head`` with their counts by source."""
        return sem.vocabulary(self.effective_labels(head, snapshot))

    def clusters(self, head: int = 0, snapshot: str | int | None = None) -> pd.DataFrame:
        """Every cluster node of ``head`` with name, name source, merge group, size and version."""
        run = self._need_run("the cluster table")
        h = self._check_head(head)
        upto = self.resolve_snapshot(snapshot)
        labels = self.effective_labels(h, snapshot)
        with self._lock:
            state = self._bound(self._state(upto))
            return sem.cluster_table(state, h, labels["cluster"].to_numpy(dtype=object), run.clusters)

    def cluster_names(self, head: int = 0, snapshot: str | int | None = None) -> dict[str, str]:
        """Named nodes of ``head`` -> their (own, merged or inherited) name."""
        upto = self.resolve_snapshot(snapshot)
        h = self._check_head(head)
        self._sync()
        with self._lock:
            state = self._bound(self._state(upto))
            return views.cluster_names(state, h, None if self.run is None else self.run.clusters)

    def members(self, head: int, cluster: Any, *, group: bool = False, snapshot: str | int | None = None) -> list[str]:
        """Clip ids now in a cluster node (``group=True``: in its whole merge group)."""
        h = self._check_head(head)
        upto = self.resolve_snapshot(snapshot)
        self._sync()
        with self._lock:
            state = self._state(upto)
            return self._members(state, h, self._check_node(state, h, cluster), group=group)

    def log_info(self, snapshot: str | int | None = None) -> dict[str, Any]:
        """last_event_id, annotators and number of events of the log (up to a snapshot): for provenance."""
        upto = self.resolve_snapshot(snapshot)
        self._sync()
        with self._lock:
            return views.log_info(self._state(upto))
