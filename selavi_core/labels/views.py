"""Read models of the label log: what the pages and exports show, computed from a folded state.

Pure functions of a ``LabelState`` (``semantics.fold``), the events and, where clips are involved,
the run's clip ids and assignments; the store calls them under its lock and returns their frames.
(``semantics`` holds the per-clip labels, the cluster table and the vocabulary; these are the views
of the log itself.)
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from selavi_core.labels import semantics as sem
from selavi_core.labels.semantics import Event, LabelState

HISTORY_COLUMNS = (
    "id", "time", "annotator", "action", "head", "summary", "undone", "ref", "target", "old", "new", "source",
)  # fmt: skip
SNAPSHOT_COLUMNS = ("name", "event_id", "annotator", "time")


def history(
    events: Sequence[Event], state: LabelState, limit: int | None = 100, *, annotator: str | None = None
) -> pd.DataFrame:
    """Latest events first (``HISTORY_COLUMNS``); ``undone`` from ``state``, the fold of ``events``."""
    evs = [e for e in reversed(events) if annotator is None or e.annotator == annotator]
    if limit is not None:
        evs = evs[: int(limit)]
    rows = [
        {
            "id": e.id,
            "time": e.time,
            "annotator": e.annotator,
            "action": e.action,
            "head": e.head,
            "summary": sem.describe(e),
            "undone": e.id in state.undone,
            "ref": e.ref,
            "target": json.dumps(e.target),
            "old": json.dumps(e.old),
            "new": json.dumps(e.new),
            "source": e.source,
        }  # fmt: skip
        for e in evs
    ]
    return pd.DataFrame(rows, columns=list(HISTORY_COLUMNS))


def snapshots(state: LabelState) -> pd.DataFrame:
    """name, event_id, annotator, time of every snapshot, oldest first."""
    rows = [
        {"name": n, "event_id": i, "annotator": state.events[i].annotator, "time": state.events[i].time}
        for n, i in sorted(state.snapshots.items(), key=lambda kv: kv[1])
    ]
    return pd.DataFrame(rows, columns=list(SNAPSHOT_COLUMNS))


def cluster_names(state: LabelState, head: int, n_clusters: int | None = None) -> dict[str, str]:
    """Named nodes of ``head`` -> their (own, merged or inherited) name, in cluster order."""
    hs = state.heads.get(head) or sem.HeadState()
    nodes: set[str] = set(hs.sub_parent) | set(hs.parent)
    nodes |= {str(e.target["cluster"]) for e in state.events.values() if e.head == head and "cluster" in e.target}
    if n_clusters is not None:
        nodes |= {str(k) for k in range(n_clusters)}
    out = {}
    for n in sorted(nodes, key=lambda s: (sem.base_of(s), s)):
        rec = hs.name_record(n)[0]
        if rec is not None:
            out[n] = rec.name
    return out


def name_now(state: LabelState, head: int, node: str) -> str | None:
    """The name in force for a node (own, merged or inherited), None when unnamed."""
    hs = state.heads.get(head)
    rec = hs.name_record(node)[0] if hs else None
    return rec.name if rec else None


def members(
    state: LabelState, head: int, node: str, clip_ids: sem.ClipIds, assignment: np.ndarray,
    rows: Mapping[str, int] | None = None, *, group: bool = True,
) -> list[str]:  # fmt: skip
    """Clip ids now in a node of ``head`` (``group=True``: in its whole merge group), in run order."""
    codes, names = sem.clip_codes(state, head, clip_ids, assignment, rows)
    hs = state.heads.get(head) or sem.HeadState()
    wanted = set(hs.group(node)) if group else {node}
    mask = np.isin(codes, [i for i, n in enumerate(names) if n in wanted])
    return [str(c) for c in np.asarray(clip_ids)[mask]]


def log_info(state: LabelState) -> dict[str, Any]:
    """last_event_id, annotators and number of events of a (prefix of the) log: for provenance."""
    return {
        "last_event_id": state.last_event_id,
        "annotators": sorted({e.annotator for e in state.events.values()}),
        "events": len(state.events),
    }
