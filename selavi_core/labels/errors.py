"""The label store's exceptions, in a module of their own so that every labels module can raise them."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from selavi_core.errors import SelaviError
from selavi_core.labels import semantics as sem
from selavi_core.labels.semantics import Event


class LabelError(SelaviError):
    """A label edit or query that cannot be done as asked (unknown cluster, empty annotator...)."""


class StaleEditError(LabelError):
    """The edit was based on a view that someone else has changed since.

    ``event`` is the latest event touching what was edited (who, when, what they set), ``current``
    the value now in force (e.g. the cluster's current name), ``expected_version`` and
    ``current_version`` the two event ids compared.
    """

    def __init__(self, what: str, expected_version: int, current_version: int, event: Event, current: Any = None):
        when = datetime.fromtimestamp(event.time, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
        now = f"; it is now {current!r}" if current is not None else ""
        super().__init__(
            f"{what} was changed after the version you saw (event {expected_version}): {sem.describe(event)} "
            f"at {when} (event {event.id}){now}. Reload to see the change, then edit again."
        )
        self.what = what
        self.expected_version = expected_version
        self.current_version = current_version
        self.event = event
        self.current = current


class NothingToUndo(LabelError):
    """``undo``/``redo`` was asked of an annotator with an empty stack."""


# ------------------------------------------------------------------ the store's file or server failing under it

#: What ``StoreBusyError`` says first (the Studio shows it as it is).
BUSY_MESSAGE = "another annotator is saving, try again"


class StoreBusyError(LabelError):
    """Another writer held the store's write lock longer than ``LABELS.write_lock_wait_s``: nothing was saved."""

    def __init__(self, where: str, waited_s: float):
        super().__init__(
            f"{BUSY_MESSAGE} (the label store {where} stayed locked by another writer for {waited_s:g} s; "
            "nothing was saved)"
        )
        self.where = where


class StoreGoneError(LabelError):
    """The SQLite file was deleted or replaced by another file while the store was open: nothing was saved."""

    def __init__(self, path: str, what: str = "deleted or replaced"):
        super().__init__(
            f"the label store file {path} was {what} while the Studio was running; nothing was saved: "
            "restore the file if it was lost, then restart the Studio (`selavi app`), which opens what is there now"
        )
        self.path = path


class StoreDamagedError(LabelError):
    """The store's file is not a readable database (a damaged page, or not a database at all)."""

    def __init__(self, where: str, detail: str):
        super().__init__(
            f"the label store {where} is damaged ({detail}), so its labels cannot be read or saved: stop the Studio, "
            "restore the file from a backup (or recover it: `sqlite3 labels.sqlite .recover | sqlite3 fixed.sqlite`), "
            "then start it again"
        )
        self.where = where


class StoreReadOnlyError(LabelError):
    """The store cannot be written: a read-only file or folder, a full disk, or a read-only database."""

    def __init__(self, where: str, detail: str):
        super().__init__(
            f"the label store {where} cannot be written ({detail}): give the Studio write access to the file and "
            "its folder (SQLite writes its -wal and -shm files next to it) or free disk space, or use --store "
            "for another store"
        )
        self.where = where
