"""Human labels for a run: a durable, versioned event log of cluster names and per-clip decisions.

- ``semantics``: the pure fold of events into effective labels (what a rename, merge, split,
  override, rejection, undo or snapshot *means*), and the annotator-name rule;
- ``schema``: the tables, engine creation (SQLite pragmas, ``BEGIN IMMEDIATE``) and table creation;
- ``store``: ``LabelStore``, the edit API over the SQLAlchemy-backed log (SQLite by default, any URL)
  that the Studio calls;
- ``views``: read models of the log (history, snapshots, names, members, provenance counts);
- ``splits``: split proposals (k-means on ``selavi_core.features`` or a selection);
- ``carry``: carrying cluster names to a new assignment (retrain, re-assign) by their clips;
- ``errors``: ``LabelError``, ``StaleEditError``, ``NothingToUndo``, and the store failing under it:
  ``StoreBusyError`` (another writer held the lock: "another annotator is saving, try again"),
  ``StoreGoneError`` (the SQLite file deleted or replaced), ``StoreDamagedError``, ``StoreReadOnlyError``;
- ``exports``: the label set in the field's formats (CSV, JSON, Kinetics, VGG-Sound, FiftyOne tree,
  Label Studio tasks), each with a provenance sidecar, written atomically.

Importing this package is light (no torch, no faiss until a k-means split is asked for).
"""

from selavi_core.labels.errors import (
    LabelError,
    NothingToUndo,
    StaleEditError,
    StoreBusyError,
    StoreDamagedError,
    StoreGoneError,
    StoreReadOnlyError,
)
from selavi_core.labels.exports import FORMATS, ExportError, ExportResult, export_bytes, export_labels
from selavi_core.labels.semantics import ACTIONS, EDIT_ACTIONS, LABEL_COLUMNS, Event, LabelState, effective_labels, fold
from selavi_core.labels.store import LabelStore

__all__ = [
    "ACTIONS",
    "EDIT_ACTIONS",
    "FORMATS",
    "LABEL_COLUMNS",
    "Event",
    "ExportError",
    "ExportResult",
    "LabelError",
    "LabelState",
    "LabelStore",
    "NothingToUndo",
    "StaleEditError",
    "StoreBusyError",
    "StoreDamagedError",
    "StoreGoneError",
    "StoreReadOnlyError",
    "effective_labels",
    "export_bytes",
    "export_labels",
    "fold",
]
