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
