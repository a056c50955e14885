"""Where the label log lives: the two tables, and engines whose transactions are real.

``label_runs`` holds one row per run whose labels a database holds (writers lock it: a portable row
lock); ``label_events`` is the append-only log, one row per edit, never updated or deleted. Any
SQLAlchemy URL works; on SQLite ``make_engine`` sets WAL, ``synchronous`` (``LABELS``), a busy
timeout (``LABELS.write_lock_wait_s``: a writer waits a few seconds, then ``StoreBusyError``), foreign
keys, and emits ``BEGIN IMMEDIATE`` for write transactions so a writer's check and append see the same log.
On PostgreSQL (``postgresql://`` means psycopg 3, the pinned driver) a write transaction starts with
``pg_advisory_xact_lock``, the same one-writer-at-a-time rule: under READ COMMITTED every later statement
sees all that earlier writers committed, so the check and the append see the same log, and nothing can fail with a serialization error that would need a retry.
``create_tables`` is the migration step: it creates what is missing and is safe to run from several
processes at once. ``store_failure`` turns a driver's error into the ``LabelError`` that says what happened to
the store (busy, damaged, read-only) and what to do.
"""

from __future__ import annotations

import json
import os
import sqlite3
import time
from pathlib import Path
from typing import Any, cast

import sqlalchemy as sa
from sqlalchemy import event as sa_event
from sqlalchemy.engine import Connection, Engine, make_url
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.pool import StaticPool

from selavi_core.config import LABELS
from selavi_core.labels.errors import LabelError, StoreBusyError, StoreDamagedError, StoreReadOnlyError
from selavi_core.labels.semantics import Event

SCHEMA_VERSION = 1


class Base(DeclarativeBase):
    pass


class LabelRunRow(Base):
    """One row per run whose labels this database holds; writers lock it (portable row lock)."""

    __tablename__ = "label_runs"
    run_key: Mapped[str] = mapped_column(sa.String(400), primary_key=True)
    created: Mapped[float] = mapped_column(sa.Double, nullable=False)
    meta: Mapped[dict] = mapped_column(sa.JSON, nullable=False)  # run dir, hashes (informational)
    writes: Mapped[int] = mapped_column(sa.Integer, nullable=False, default=0)
    schema_version: Mapped[int] = mapped_column(sa.Integer, nullable=False, default=SCHEMA_VERSION)


class LabelEventRow(Base):
    """The append-only log. ``target``/``old_value``/``new_value`` are JSON (see ``semantics``)."""

    __tablename__ = "label_events"
    __table_args__ = (sa.Index("ix_label_events_run_id", "run_key", "id"), {"sqlite_autoincrement": True})
    id: Mapped[int] = mapped_column(sa.Integer, primary_key=True, autoincrement=True)
    run_key: Mapped[str] = mapped_column(sa.String(400), sa.ForeignKey("label_runs.run_key"), nullable=False)
    time: Mapped[float] = mapped_column(sa.Double, nullable=False)
    annotator: Mapped[str] = mapped_column(sa.String(LABELS.max_name_length), nullable=False)
    action: Mapped[str] = mapped_column(sa.String(32), nullable=False)
    head: Mapped[int | None] = mapped_column(sa.Integer, nullable=True)
    target: Mapped[dict] = mapped_column(sa.JSON, nullable=False)
    old_value: Mapped[dict | None] = mapped_column(sa.JSON, nullable=True)
    new_value: Mapped[dict | None] = mapped_column(sa.JSON, nullable=True)
    source: Mapped[str] = mapped_column(sa.String(64), nullable=False)
    ref_event: Mapped[int | None] = mapped_column(sa.Integer, nullable=True)


# A declarative class's __table__ is typed as the general FromClause; for these classes it is the Table they declare.
EVENTS = cast(sa.Table, LabelEventRow.__table__)
RUNS = cast(sa.Table, LabelRunRow.__table__)


def row_event(r: Any) -> Event:
    """The ``Event`` of a fetched ``label_events`` row (or of anything with the same attributes)."""
    return Event(
        id=int(r.id), time=float(r.time), annotator=r.annotator, action=r.action,
        head=None if r.head is None else int(r.head), target=r.target or {}, old=r.old_value, new=r.new_value,
        source=r.source, ref=None if r.ref_event is None else int(r.ref_event),
    )  # fmt: skip


def store_url(where: str | os.PathLike) -> str:
    """A SQLAlchemy URL from a URL or a file path (a path means a SQLite file there)."""
    text = str(where)
    if "://" in text:
        return text
    return f"sqlite:///{Path(text).expanduser().resolve()}"


def redact(url: str) -> str:
    """The URL without its password, for provenance and messages."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:
        return url


#: The advisory lock every PostgreSQL write transaction takes first (one per database: writes are short).
PG_WRITE_LOCK = 0x5E1A_7AB5


def engine_url(url: str) -> sa.URL:
    """The parsed URL, with PostgreSQL's default driver made psycopg 3 (the one the project pins)."""
    u = make_url(url)
    if u.drivername in ("postgresql", "postgres"):
        u = u.set(drivername="postgresql+psycopg")
    return u


def make_engine(url: str, *, lock_wait_s: float | None = None) -> Engine:
    """An engine whose transactions are real: on SQLite, WAL + synchronous=FULL and BEGIN (IMMEDIATE);
    on PostgreSQL, write transactions that begin with an advisory lock.

    pysqlite by default defers BEGIN until the first write and never locks for reads, which breaks
    read-check-append; the standard fix is to switch its own transaction handling off and emit
    BEGIN ourselves. Write transactions (``execution_options(selavi_write=True)``) take the write
    lock at BEGIN, so the check and the append see the same log. A writer waits at most ``lock_wait_s``
    (default ``LABELS.write_lock_wait_s``) for another writer's lock; readers never wait for one (WAL on
    SQLite, no lock on PostgreSQL).
    """
    wait_s = LABELS.write_lock_wait_s if lock_wait_s is None else float(lock_wait_s)
    u = engine_url(url)
    if u.get_backend_name() == "postgresql":
        return _postgresql_engine(u, wait_s)
    if u.get_backend_name() != "sqlite":
        return sa.create_engine(u, pool_pre_ping=True)
    database = u.database or ":memory:"  # no database (None or "") is an in-memory one
    memory = database == ":memory:"
    if memory:
        engine = sa.create_engine(u, poolclass=StaticPool, connect_args={"check_same_thread": False})
    else:
        Path(database).expanduser().parent.mkdir(parents=True, exist_ok=True)
        engine = sa.create_engine(u, connect_args={"timeout": wait_s, "check_same_thread": False})

    @sa_event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        dbapi_conn.isolation_level = None  # we issue BEGIN ourselves (see above)
        cur = dbapi_conn.cursor()
        cur.execute(f"PRAGMA busy_timeout={int(wait_s * 1000)}")
        if not memory:
            _enable_wal(cur, wait_s)
            cur.execute(f"PRAGMA synchronous={LABELS.sqlite_synchronous}")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.close()

    @sa_event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        conn.exec_driver_sql("BEGIN IMMEDIATE" if conn.get_execution_options().get("selavi_write") else "BEGIN")

    return engine


def _postgresql_engine(u: sa.URL, wait_s: float) -> Engine:
    """PostgreSQL: READ COMMITTED (the default), and a write transaction's first statement is
    ``pg_advisory_xact_lock``: writers queue (waiting at most ``wait_s``, then lock_timeout) and each
    sees every commit before its own. The lock is released by the commit or rollback, or by the server
    when a killed writer's connection drops."""
    engine = sa.create_engine(u, pool_pre_ping=True)
    timeout_ms = max(1, int(wait_s * 1000))

    @sa_event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        if conn.get_execution_options().get("selavi_write"):
            conn.exec_driver_sql(f"SET LOCAL lock_timeout = {timeout_ms}")
            conn.exec_driver_sql(f"SELECT pg_advisory_xact_lock({PG_WRITE_LOCK})")

    return engine


def _enable_wal(cur: Any, wait_s: float) -> None:
    """Switch a new database to WAL (persistent: later connections find it on).

    Two connections switching a brand-new file at once can get "database is locked" at once: SQLite does not
    run the busy handler for that lock, so the busy timeout does not help. The switch is retried here, within
    the same busy timeout, instead of failing the open (seen with two sessions opening a fresh store).
    """
    deadline = time.monotonic() + wait_s
    while True:
        try:
            if str(cur.execute("PRAGMA journal_mode").fetchone()[0]).lower() != "wal":
                cur.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as err:
            if "locked" not in str(err) or time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def create_tables(engine: Engine, write: Any) -> None:
    """Create the tables that are missing, inside ``write()`` (a write transaction) when possible.

    Another process may create them at the same moment: on backends without transactional DDL
    that raises IntegrityError, and creating again (now a no-op) is the answer.
    """
    try:
        with write() as conn:
            Base.metadata.create_all(conn)
    except sa.exc.IntegrityError:
        Base.metadata.create_all(engine)


def store_failure(
    err: BaseException, where: str, lock_wait_s: float | None = None, *, opening: bool = False
) -> LabelError:
    """The ``LabelError`` for a driver's error (a ``DBAPIError``, or the driver's own from a connection hook).

    Busy (SQLite's "database is locked", PostgreSQL's lock_timeout) is ``StoreBusyError``; a damaged file
    ("database disk image is malformed", "file is not a database") ``StoreDamagedError``; a store that cannot be
    written (read-only file or folder, full disk, read-only server) ``StoreReadOnlyError``; anything else a
    ``LabelError`` naming the store and the driver's one-line reason (``opening``: that it cannot be opened, and to
    give another ``--store``). Never a traceback for the user.
    """
    orig = getattr(err, "orig", None) or err
    lines = str(orig).strip().splitlines()
    text = lines[0] if lines else type(orig).__name__
    low = text.lower()
    name = str(getattr(orig, "sqlite_errorname", "") or "")
    state = str(getattr(orig, "sqlstate", "") or "")
    if name.startswith(("SQLITE_BUSY", "SQLITE_LOCKED")) or "database is locked" in low or state == "55P03":
        return StoreBusyError(where, LABELS.write_lock_wait_s if lock_wait_s is None else lock_wait_s)
    if name.startswith(("SQLITE_CORRUPT", "SQLITE_NOTADB")) or "malformed" in low or "not a database" in low \
            or state in ("XX001", "XX002"):  # fmt: skip
        return StoreDamagedError(where, text)
    if name.startswith(("SQLITE_READONLY", "SQLITE_FULL", "SQLITE_CANTOPEN", "SQLITE_PERM")) or "readonly" in low \
            or state in ("25006", "42501", "53100"):  # fmt: skip
        return StoreReadOnlyError(where, text)
    if opening:
        return LabelError(
            f"cannot open the label store {where}: {text}; give a writable path or database URL with --store"
        )
    return LabelError(f"the label store {where} failed: {text}")


class _Values:
    """Attribute access over a dict (turns the inserted values into an ``Event`` like a fetched row)."""

    def __init__(self, **kw: Any):
        self.__dict__.update(kw)


def inserted_event(event_id: int, values: dict[str, Any]) -> Event:
    """The ``Event`` the database now holds for an insert of ``values`` (after a JSON round trip, as
    a fresh read would return it, so the store's cache equals the database)."""
    return row_event(_Values(id=event_id, **json.loads(json.dumps(values))))
