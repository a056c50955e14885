"""Carrying cluster names over to a new assignment by their clips (after a retrain or a re-assign).

Cluster names are given on one assignment (``semantics``: the state's ``bound``); a cluster index means
nothing in another one. So a name moves only through the clips it named: the clips of each named cluster
(merge group, or sub-cluster with a name of its own) under the old assignment, less the ones rejected
from it ("not this"), are looked up in the new one, and the new cluster holding most of them is the
candidate. ``overlap`` = |old ∩ new| / |old| (how much of the name's clips moved together) and ``share``
= |old ∩ new| / |new| (how much of the new cluster those clips are). A name is carried only when both
reach ``LABELS.carry_min_overlap`` / ``carry_min_share`` and no other name claims the same new cluster;
the others are listed as needing a look, with their best candidate and the reason. Per-clip labels and
rejections are keyed by clip id and need no carrying.

Everything here is pure (a state and arrays in, a frame out); ``LabelStore.carry_over`` reads the old
assignment from the run folder (``Run.past_assignment``) and appends the ``carry_names`` event.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from selavi_core.labels import semantics as sem
from selavi_core.labels.semantics import ClipIds, LabelState, NameRecord

#: One row per named cluster of the old assignment.
CARRY_COLUMNS = ("head", "name", "old_cluster", "size", "new_cluster", "overlap", "share", "carried", "reason")

#: ``CarryReport.status``: nothing to carry (names are bound to this assignment, or there are none), a plan
#: not yet applied, or the carry the log holds.
CURRENT, PLANNED, APPLIED = "current", "planned", "applied"


@dataclass(frozen=True)
class CarryReport:
    """What a carry-over did or would do: ``names`` (``CARRY_COLUMNS``), one row per old named cluster."""

    status: str
    old_assignment: str | None
    new_assignment: str | None
    names: pd.DataFrame = field(default_factory=lambda: empty_frame())
    event_id: int | None = None
    annotator: str | None = None
    time: float | None = None

    @property
    def carried(self) -> pd.DataFrame:
        return self.names[self.names["carried"].astype(bool)].reset_index(drop=True)

    @property
    def needs_look(self) -> pd.DataFrame:
        return self.names[~self.names["carried"].astype(bool)].reset_index(drop=True)

    def summary(self) -> str:
        """One line for the CLI and the Studio's banner."""
        if self.status == CURRENT:
            return "the cluster names are bound to this run's assignment: nothing to carry over"
        n, looks = len(self.carried), len(self.needs_look)
        verb = "carried" if self.status == APPLIED else "would carry"
        where = f"from assignment {self.old_assignment} to {self.new_assignment}"
        done = f" (event {self.event_id} by {self.annotator})" if self.event_id is not None else ""
        return f"{verb} {n} cluster name{'s' * (n != 1)} {where} by their clips{done}; {looks} need a look"


def empty_frame() -> pd.DataFrame:
    return pd.DataFrame(columns=list(CARRY_COLUMNS))


def _node_label(nodes: list[str]) -> str:
    return "+".join(sorted(nodes, key=lambda s: (sem.base_of(s), s)))


def plan(
    state: LabelState,
    old_clip_ids: ClipIds,
    old_joint: np.ndarray,
    new_clip_ids: ClipIds,
    new_joint: np.ndarray,
    *,
    min_overlap: float,
    min_share: float,
) -> pd.DataFrame:
    """The carry-over of every named cluster of ``state`` (bound to the old assignment) to the new one.

    ``old_joint``/``new_joint`` are (N, H) joint assignments row-aligned with their clip ids. Returns
    ``CARRY_COLUMNS``; ``new_cluster`` is the best candidate (None when no clip of the name is in the new run).
    """
    old_ids = np.asarray([str(c) for c in old_clip_ids], dtype=object)
    new_rows = sem.row_index(new_clip_ids)
    new_joint = np.asarray(new_joint)
    rows: list[dict[str, Any]] = []
    for h in sorted(state.heads):
        hs = state.heads[h]
        if not hs.names:
            continue
        if h >= old_joint.shape[1]:
            continue  # the graph names a head the old assignment never had: nothing to read its clips from
        codes, nodes = sem.clip_codes(state, h, old_ids, old_joint[:, h])
        units: dict[int, tuple[NameRecord, list[int]]] = {}
        for code, node in enumerate(nodes):
            rec, _how = hs.name_record(node)
            if rec is not None:
                units.setdefault(id(rec), (rec, []))[1].append(code)
        rejected = np.isin(old_ids, list(hs.rejected)) if hs.rejected else np.zeros(len(old_ids), dtype=bool)
        head_rows = []
        for rec, unit_codes in units.values():
            named_nodes = [nodes[c] for c in unit_codes if hs.name_record(nodes[c])[1] != "inherited"]
            members = old_ids[np.isin(codes, unit_codes) & ~rejected]
            row: dict[str, Any] = {
                "head": h, "name": rec.name, "old_cluster": _node_label(named_nodes or [nodes[c] for c in unit_codes]),
                "size": len(members), "new_cluster": None, "overlap": 0.0, "share": 0.0, "carried": False, "reason": "",
            }  # fmt: skip
            present = np.fromiter((new_rows[c] for c in members if c in new_rows), dtype=np.int64)
            if h >= new_joint.shape[1]:
                row["reason"] = f"the new assignment has no head {h}"
            elif len(members) == 0:
                row["reason"] = "no clip holds this name (every member was rejected or split away)"
            elif len(present) == 0:
                row["reason"] = "none of its clips is in the new assignment"
            else:
                new_h = new_joint[:, h]
                counts = np.bincount(new_h[present])
                best = int(np.argmax(counts))
                inter = int(counts[best])
                row.update(
                    new_cluster=str(best), overlap=inter / len(members), share=inter / int((new_h == best).sum())
                )
                if row["overlap"] < min_overlap:
                    row["reason"] = (
                        f"its clips scattered: only {row['overlap']:.0%} of them are in one new cluster "
                        f"({best}); at least {min_overlap:.0%} carry a name"
                    )
                elif row["share"] < min_share:
                    row["reason"] = (
                        f"its clips are only {row['share']:.0%} of new cluster {best}; at least {min_share:.0%} "
                        "carry a name"
                    )
            head_rows.append(row)
        _refuse_collisions(head_rows)
        rows.extend(head_rows)
    out = pd.DataFrame(rows, columns=list(CARRY_COLUMNS))
    return out.astype({"carried": bool, "overlap": float, "share": float}) if len(out) else empty_frame()


def _refuse_collisions(rows: list[dict[str, Any]]) -> None:
    """Mark the rows that can be carried; different names claiming one new cluster are all left for a look."""
    by_target: dict[str, list[dict[str, Any]]] = {}
    for r in rows:
        if not r["reason"]:
            by_target.setdefault(r["new_cluster"], []).append(r)
    for target, claims in by_target.items():
        names = sorted({r["name"] for r in claims})
        for r in claims:
            if len(names) > 1:
                others = ", ".join(repr(n) for n in names if n != r["name"])
                r["reason"] = f"new cluster {target} would also take {others}: two names for one cluster"
            else:
                r["carried"] = True


def unplanned(state: LabelState, reason: str) -> pd.DataFrame:
    """Every named cluster of ``state``, none carried, all for the same ``reason`` (the old assignment is gone)."""
    rows = []
    for h in sorted(state.heads):
        hs = state.heads[h]
        for root, rec in hs.names.items():
            rows.append(
                {"head": h, "name": rec.name, "old_cluster": _node_label(sorted(hs.group(root))), "size": None,
                 "new_cluster": None, "overlap": np.nan, "share": np.nan, "carried": False, "reason": reason}
            )  # fmt: skip
    return pd.DataFrame(rows, columns=list(CARRY_COLUMNS)) if rows else empty_frame()


def event_values(names: pd.DataFrame) -> dict[str, list[dict[str, Any]]]:
    """The ``carry_names`` event's ``new`` lists: ``names`` (carried, one per head and new cluster) and ``looks``."""

    def record(r: Mapping[str, Any]) -> dict[str, Any]:
        out = {k: r[k] for k in CARRY_COLUMNS if k != "carried"}
        out["head"] = int(out["head"])
        out["new"], out["old"] = out.pop("new_cluster"), out.pop("old_cluster")
        for k in ("overlap", "share"):
            out[k] = None if out[k] is None or pd.isna(out[k]) else float(out[k])
        out["size"] = None if out["size"] is None or pd.isna(out["size"]) else int(out["size"])
        return out

    carried, looks, seen = [], [], set()
    for r in names.to_dict("records"):
        if r["carried"]:
            if (r["head"], r["new_cluster"]) not in seen:  # one name, several old clusters: one record
                seen.add((r["head"], r["new_cluster"]))
                carried.append(record(r))
        else:
            looks.append(record(r))
    return {"names": carried, "looks": looks}


def from_event(event: sem.Event) -> CarryReport:
    """The report of a ``carry_names`` event the log holds."""
    new = event.new or {}
    rows = [{**r, "carried": True} for r in new.get("names", [])] + [
        {**r, "carried": False} for r in new.get("looks", [])
    ]
    frame = pd.DataFrame(
        [
            {"head": r["head"], "name": r["name"], "old_cluster": r.get("old"), "size": r.get("size"),
             "new_cluster": r.get("new"), "overlap": r.get("overlap"), "share": r.get("share"),
             "carried": r["carried"], "reason": r.get("reason", "")}
            for r in rows
        ],
        columns=list(CARRY_COLUMNS),
    )  # fmt: skip
    return CarryReport(
        status=APPLIED,
        old_assignment=new.get("from"),
        new_assignment=new.get("assignment"),
        names=frame if len(frame) else empty_frame(),
        event_id=event.id,
        annotator=event.annotator,
        time=event.time,
    )
