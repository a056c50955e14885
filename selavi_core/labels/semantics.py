"""What the labels *are*: a pure fold of the append-only event log into effective labels.

Nothing here touches a database or a file. ``fold(events)`` turns a list of events (in id order)
into a ``LabelState``; ``effective_labels(state, head, clip_ids, assignment)`` turns that state and
one head's current cluster assignments into one label per clip. Keeping this pure is what makes the
semantics testable on their own and lets undo, redo and snapshots be nothing more than "fold a
different set of events".

Semantics (../shared/docs/app-field-notes.md §2-3, §5.2):

- **Clusters are nodes.** A head's base clusters are ``"0" .. "K-1"``. Splitting cluster ``"12"``
  creates sub-clusters ``"12.a"``, ``"12.b"`` ... (splitting ``"12.a"`` gives ``"12.a.a"``): the split
  event lists each sub-cluster's clip ids, and a clip moves into its sub-cluster only while it is
  still a member of the split cluster, so a later re-assignment wins over an old split.
- **A cluster name applies to the members of that node.** Merging nodes unites them (union-find):
  the group carries one name, and renaming any member later renames the group. A sub-cluster with no
  name of its own inherits its parent's name, so a split changes no label until a part is named.
- **Per-clip decisions win.** An override (``label_clips`` from a map selection, ``override_clip``
  from the grid) is a fact about the clip in every head; a rejection ("not this") removes the
  clip from its cluster's name in one head. Both survive renames, merges, splits and re-assignment
  because they are keyed by clip id, never by cluster. Effective label = override, else (unless
  rejected) the name of the clip's node, else none; each with its source (``override``,
  ``cluster`` or ``none``) and the annotator, time and event that produced it. A reset
  (``reset_clips``) lifts both from some clips in one event, so one undo restores both.
- **Undo and redo are events too.** Each annotator has an undo stack of their own edits and a redo
  stack of what they undid (cleared by their next edit); an undone edit is skipped by the fold, so
  undoing my rename never erases a later rename by someone else.
- **Cluster names are bound to an assignment.** Every cluster edit (rename, merge, split) records the
  assignment (``runs.run.assignment_hash``: checkpoint, catalog, clips and their clusters) it was made on in
  ``target["assignment"]``; the state's ``bound`` is the assignment the cluster graph belongs to (the first
  one an edit or a ``bind`` names; a log written before this was recorded gets one ``bind`` event, written
  by the store, for the assignment current when it was first opened). The graph never applies to another
  assignment (``for_assignment``): after a retrain or a re-assign its names attach to nothing until a
  ``carry_names`` event (undoable) carries them, cluster by cluster, to the new clusters that hold most of
  their clips, and binds the graph to the new assignment. Per-clip decisions need no carrying.
- **Snapshots** are named event ids: the labels "at" a snapshot fold only events up to it.
- **Versions** (for stale-edit detection) are the id of the latest event touching a key: a cluster
  node ``("c", head, node)`` or a clip ``("k", clip_id)``. Undo/redo events touch their target's keys.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import pandas as pd

from selavi_core.config import LABELS

#: Edit actions (undoable), then the bookkeeping actions.
EDIT_ACTIONS = (
    "rename_cluster", "merge_clusters", "split_cluster", "label_clips", "override_clip", "reject_clip", "reset_clips",
    "carry_names",
)  # fmt: skip
META_ACTIONS = ("undo", "redo", "snapshot", "bind")
#: Edits of the cluster graph: each records the assignment it was made on (``target["assignment"]``).
CLUSTER_ACTIONS = ("rename_cluster", "merge_clusters", "split_cluster")
ACTIONS = EDIT_ACTIONS + META_ACTIONS

#: ``label_source`` values of an effective label.
SOURCE_OVERRIDE = "override"
SOURCE_CLUSTER = "cluster"
SOURCE_NONE = "none"

_NODE = re.compile(r"^[0-9]+(\.[a-z]+)*$")

Key = tuple  # ("c", head, node) or ("k", clip_id)
ClipIds = Sequence[str] | np.ndarray  # a run's clip ids in row order: a list, or Run.clip_ids's object array


# ------------------------------------------------------------------------------------- annotators


def has_control_chars(text: str) -> bool:
    """Whether ``text`` holds a line break (``\\n``, ``\\r``, U+2028...), a tab or another control character.

    No name in the log may (cluster and clip labels, snapshot and annotator names): they would break
    the line-based exports (Kinetics, VGG-Sound) and every one-line list that shows them.
    """
    return any(unicodedata.category(c) in _CONTROL_CATEGORIES for c in text)


_CONTROL_CATEGORIES = frozenset({"Cc", "Zl", "Zp"})  # control characters, line and paragraph separators


def annotator_name(text: object) -> str | None:
    """The annotator name as the log records it, or None when it is no name.

    The one rule for every writer (the store's edits, the Studio's name field, the CLI): runs of
    whitespace become one space and the ends are trimmed, so "Ana  María " and "Ana María" are one
    annotator with one undo stack; an empty name, one longer than ``LABELS.max_name_length``
    (the column's width), or one with a control character left (``has_control_chars``) is no name.
    """
    name = "" if text is None else " ".join(str(text).split())
    if not name or len(name) > LABELS.max_name_length or has_control_chars(name):
        return None
    return name


def annotator_problem(text: object) -> str | None:
    """Why ``text`` is no annotator name (a sentence for the user), or None when ``annotator_name`` takes it."""
    if annotator_name(text) is not None:
        return None
    if text is None or not str(text).split():
        return "annotator name is required"
    if has_control_chars(" ".join(str(text).split())):
        return "annotator name holds a control character; type it on one line, in plain text"
    return f"annotator name is longer than {LABELS.max_name_length} characters"


@dataclass(frozen=True)
class Event:
    """One row of the event log. ``target``/``old``/``new`` are JSON-able dicts (see ``store.py``)."""

    id: int
    time: float
    annotator: str
    action: str
    head: int | None = None
    target: Mapping[str, Any] = field(default_factory=dict)
    old: Mapping[str, Any] | None = None
    new: Mapping[str, Any] | None = None
    source: str = "api"
    ref: int | None = None  # the edit an undo/redo refers to


@dataclass(frozen=True)
class Stamp:
    """Who decided something, when, and in which event (carried into every effective label)."""

    event_id: int
    annotator: str
    time: float


@dataclass(frozen=True)
class NameRecord:
    name: str
    stamp: Stamp


@dataclass(frozen=True)
class ClipRecord:
    label: str | None  # for overrides; None for rejections
    stamp: Stamp


@dataclass(frozen=True)
class SplitRecord:
    event_id: int
    parent: str
    parent_nodes: frozenset[str]  # the parent's merge group when the split was applied
    parts: Mapping[str, tuple[str, ...]]  # sub-cluster node -> clip ids


def node_id(cluster: Any) -> str:
    """Canonical node id: ``12``, ``"12"`` and ``np.int32(12)`` are all ``"12"``; ``"12.a"`` stays."""
    if isinstance(cluster, bool):
        raise ValueError(f"not a cluster id: {cluster!r}")
    if isinstance(cluster, int | np.integer):
        if int(cluster) < 0:
            raise ValueError(f"cluster ids are not negative: {cluster!r}")
        return str(int(cluster))
    text = str(cluster).strip()
    if not _NODE.match(text):
        raise ValueError(f"not a cluster id: {cluster!r} (expected e.g. 12 or '12.a')")
    return text


def base_of(node: str) -> int:
    """The head's original cluster a node descends from: ``"12.a.b"`` -> 12."""
    return int(node.split(".", 1)[0])


def sub_suffix(i: int) -> str:
    """0 -> 'a', 25 -> 'z', 26 -> 'aa', 27 -> 'ab' ... (letters only, so ids stay unambiguous)."""
    out = ""
    i += 1
    while i > 0:
        i, r = divmod(i - 1, 26)
        out = chr(ord("a") + r) + out
    return out


class HeadState:
    """The cluster graph of one head: merge groups, names, split history and rejections."""

    def __init__(self) -> None:
        self.parent: dict[str, str] = {}  # union-find over nodes
        self.names: dict[str, NameRecord] = {}  # group root -> name
        self.sub_parent: dict[str, str] = {}  # sub-cluster -> node it was split from
        self.splits: list[SplitRecord] = []
        self.rejected: dict[str, ClipRecord] = {}  # clip id -> who rejected it

    # union-find ------------------------------------------------------------------------------
    def find(self, node: str) -> str:
        root = node
        while self.parent.get(root, root) != root:
            root = self.parent[root]
        while self.parent.get(node, node) != root:  # path compression
            self.parent[node], node = root, self.parent[node]
        return root

    def group(self, node: str) -> set[str]:
        root = self.find(node)
        members = {n for n in self.parent if self.find(n) == root}
        members.add(node)
        return members

    def union(self, nodes: Sequence[str]) -> str:
        root = self.find(nodes[0])
        for n in nodes[1:]:
            r = self.find(n)
            if r != root:
                self.parent[r] = root
                self.parent.setdefault(root, root)
        return root

    # names -----------------------------------------------------------------------------------
    def name_record(self, node: str) -> tuple[NameRecord | None, str]:
        """(record, how) where how is 'own', 'merged' (the group's), 'inherited' (a parent's) or ''."""
        seen: set[str] = set()
        current, how = node, None
        while current not in seen:
            seen.add(current)
            root = self.find(current)
            rec = self.names.get(root)
            if rec is not None:
                if how is None:
                    how = "own" if (root == current and len(self.group(current)) == 1) else "merged"
                return rec, how
            if current not in self.sub_parent:
                break
            current, how = self.sub_parent[current], "inherited"
        return None, ""

    def ancestors(self, node: str) -> list[str]:
        out, seen = [], {node}
        while node in self.sub_parent and self.sub_parent[node] not in seen:
            node = self.sub_parent[node]
            seen.add(node)
            out.append(node)
        return out


@dataclass
class LabelState:
    """Everything the fold knows after a prefix of the log."""

    last_event_id: int = 0
    heads: dict[int, HeadState] = field(default_factory=dict)
    overrides: dict[str, ClipRecord] = field(default_factory=dict)  # clip id -> label (global)
    undone: set[int] = field(default_factory=set)
    undo_stacks: dict[str, list[int]] = field(default_factory=dict)
    redo_stacks: dict[str, list[int]] = field(default_factory=dict)
    snapshots: dict[str, int] = field(default_factory=dict)  # name -> snapshot event id
    touched: dict[Key, int] = field(default_factory=dict)  # key -> latest event id touching it
    subs_ever: dict[tuple[int, str], set[str]] = field(default_factory=dict)  # (head, parent) -> sub ids used
    events: dict[int, Event] = field(default_factory=dict)  # folded events by id
    bound: str | None = None  # the assignment the cluster graph (names, merges, splits) was made on; None: unknown

    def head(self, h: int) -> HeadState:
        if h not in self.heads:
            self.heads[h] = HeadState()
        return self.heads[h]

    def known_nodes(self, h: int) -> set[str]:
        """Sub-cluster nodes that exist now (base nodes ``0..K-1`` always exist)."""
        hs = self.heads.get(h)
        return set(hs.sub_parent) if hs else set()

    def cluster_version(self, h: int, node: str) -> int:
        """Latest event id that changed what a user sees for this node (its group and its ancestors)."""
        hs = self.heads.get(h) or HeadState()
        nodes: set[str] = set()
        for n in [node, *hs.ancestors(node)]:
            nodes |= hs.group(n)
        return max((self.touched.get(("c", h, n), 0) for n in nodes), default=0)

    def latest_touch(self, keys: Iterable[Key]) -> int:
        return max((self.touched.get(k, 0) for k in keys), default=0)

    def is_active(self, event_id: int) -> bool:
        return event_id in self.events and event_id not in self.undone


def event_keys(event: Event) -> set[Key]:
    """The version keys an edit touches (undo/redo events touch their target's keys)."""
    t, h = event.target or {}, event.head
    a = event.action
    if a == "rename_cluster":
        return {("c", h, t["cluster"])}
    if a == "merge_clusters":
        return {("c", h, c) for c in t["clusters"]}
    if a == "split_cluster":
        return {("c", h, t["cluster"])} | {("c", h, s) for s in (event.new or {}).get("parts", {})}
    if a in ("label_clips", "override_clip", "reject_clip", "reset_clips"):
        return {("k", c) for c in t["clips"]}
    if a == "carry_names":
        return {("c", int(r["head"]), str(r["new"])) for r in (event.new or {}).get("names", [])}
    return set()


def _applies(st: LabelState, e: Event) -> bool:
    """Whether pass 2 applies ``e``: active edits, and ``bind`` (which only says what the graph is bound to)."""
    return (e.action in EDIT_ACTIONS and e.id not in st.undone) or e.action == "bind"


def for_assignment(state: LabelState, assignment_id: str | None) -> LabelState:
    """The state as it applies to ``assignment_id``: ``state`` itself when its cluster graph is bound to that
    assignment (or to none known), else a view without the graph (no names, merges or splits; per-clip labels
    and rejections stay): names given on another assignment attach to nothing until they are carried over."""
    if assignment_id is None or state.bound is None or state.bound == assignment_id:
        return state
    heads = {}
    for h, hs in state.heads.items():
        bare = HeadState()
        bare.rejected = hs.rejected
        heads[h] = bare
    return replace(state, heads=heads)


def fold(events: Iterable[Event], upto: int | None = None) -> LabelState:
    """Fold events (any order; sorted by id here) with ``id <= upto`` into a ``LabelState``.

    Pass 1 decides which edits are undone (and keeps the per-annotator undo/redo stacks, snapshot
    names and version keys); pass 2 applies the edits that are not undone, in id order.
    """
    evs = sorted((e for e in events if upto is None or e.id <= upto), key=lambda e: e.id)
    st = LabelState()
    st.events = {e.id: e for e in evs}
    for e in evs:
        _note(st, e)
    for e in evs:
        if _applies(st, e):
            _apply(st, e)
    return st


def fold_more(state: LabelState, events: Sequence[Event]) -> bool:
    """Extend ``state`` in place by newer ``events`` when that equals re-folding everything.

    True when done; False (``state`` untouched) when an event is an undo or redo, which can change
    what earlier edits mean, so the caller must ``fold`` the whole log again. This keeps an append
    O(1) in the length of the log for the common case.
    """
    if any(e.action in ("undo", "redo") or e.id <= state.last_event_id for e in events):
        return False
    for e in sorted(events, key=lambda e: e.id):
        state.events[e.id] = e
        _note(state, e)
        if _applies(state, e):
            _apply(state, e)
    return True


def _head(e: Event) -> int:
    """The head a head-scoped edit (rename, merge, split, reject, reset) applies to; the store always records it."""
    if e.head is None:
        raise ValueError(f"event {e.id} ({e.action}) names no head")
    return e.head


def _note(st: LabelState, e: Event) -> None:
    """Pass 1 for one event: stacks, undone set, snapshot names, version keys."""
    st.last_event_id = e.id
    if e.action in EDIT_ACTIONS:
        st.undo_stacks.setdefault(e.annotator, []).append(e.id)
        st.redo_stacks[e.annotator] = []
        for k in event_keys(e):
            st.touched[k] = e.id
        if e.action == "split_cluster":
            st.subs_ever.setdefault((_head(e), e.target["cluster"]), set()).update((e.new or {}).get("parts", {}))
    elif e.action in ("undo", "redo"):
        ref = st.events.get(e.ref) if e.ref is not None else None
        if ref is None or ref.action not in EDIT_ACTIONS:
            return
        undo = e.action == "undo"
        if undo == (ref.id in st.undone):
            return  # undoing an undone edit (or redoing an active one) changes nothing
        stacks_from, stacks_to = (st.undo_stacks, st.redo_stacks) if undo else (st.redo_stacks, st.undo_stacks)
        if ref.id in stacks_from.get(e.annotator, []):
            stacks_from[e.annotator].remove(ref.id)
        stacks_to.setdefault(e.annotator, []).append(ref.id)
        (st.undone.add if undo else st.undone.discard)(ref.id)
        for k in event_keys(ref):
            st.touched[k] = e.id
    elif e.action == "snapshot":
        st.snapshots.setdefault(str((e.new or {}).get("name")), e.id)


def _apply(st: LabelState, e: Event) -> None:
    stamp = Stamp(e.id, e.annotator, e.time)
    new, t = e.new or {}, e.target or {}
    if e.action in CLUSTER_ACTIONS and st.bound is None and t.get("assignment"):
        st.bound = str(t["assignment"])
    if e.action == "bind":
        if st.bound is None:
            st.bound = str(new.get("assignment"))
    elif e.action == "carry_names":  # the graph of the old assignment is left behind; the carried names start one anew
        st.bound = str(new.get("assignment"))
        for hs in st.heads.values():
            hs.parent.clear()
            hs.names.clear()
            hs.sub_parent.clear()
            hs.splits.clear()
        for r in new.get("names", []):
            st.head(int(r["head"])).names[str(r["new"])] = NameRecord(str(r["name"]), stamp)
    elif e.action == "rename_cluster":
        hs = st.head(_head(e))
        root = hs.find(t["cluster"])
        name = new.get("name")
        if name:
            hs.names[root] = NameRecord(name, stamp)
        else:
            hs.names.pop(root, None)
    elif e.action == "merge_clusters":
        hs = st.head(_head(e))
        nodes = list(t["clusters"])
        name = new.get("name")
        if not name:  # keep the first existing name, in the order the user listed the clusters
            rec = next((r for r in (hs.name_record(n)[0] for n in nodes) if r is not None), None)
            name = rec.name if rec else None
        for n in nodes:
            hs.names.pop(hs.find(n), None)
        root = hs.union(nodes)
        if name:
            hs.names[root] = NameRecord(name, stamp)
    elif e.action == "split_cluster":
        hs = st.head(_head(e))
        parent = t["cluster"]
        parts = {s: tuple(ids) for s, ids in new.get("parts", {}).items()}
        for s in parts:
            hs.sub_parent[s] = parent
        hs.splits.append(SplitRecord(e.id, parent, frozenset(hs.group(parent)), parts))
    elif e.action in ("label_clips", "override_clip"):
        label = new.get("label")
        if label:  # one record shared by every clip of the event (a lasso can hold 10^5 clips)
            st.overrides.update(dict.fromkeys(t["clips"], ClipRecord(label, stamp)))
        else:
            for c in t["clips"]:
                st.overrides.pop(c, None)
    elif e.action == "reset_clips":  # back to the cluster: no own label (any head), no "not this" in this head
        hs = st.head(_head(e))
        for c in t["clips"]:
            st.overrides.pop(c, None)
            hs.rejected.pop(c, None)
    elif e.action == "reject_clip":
        hs = st.head(_head(e))
        if new.get("rejected", True):
            hs.rejected.update(dict.fromkeys(t["clips"], ClipRecord(None, stamp)))
        else:
            for c in t["clips"]:
                hs.rejected.pop(c, None)


# ------------------------------------------------------------------------------------- per clip

LABEL_COLUMNS = (
    "clip_id", "head", "cluster", "base_cluster", "cluster_name", "label", "label_source", "rejected",
    "annotator", "time", "event_id", "confidence",
)  # fmt: skip


def _objects(values: Sequence[Any]) -> np.ndarray:
    """A 1-D object array of exactly these values (np.array would guess shapes and dtypes)."""
    out = np.empty(len(values), dtype=object)
    out[:] = values
    return out


def row_index(clip_ids: ClipIds) -> dict[str, int]:
    return {str(c): i for i, c in enumerate(clip_ids)}


def clip_codes(
    state: LabelState, head: int, clip_ids: ClipIds, assignment: np.ndarray, rows: Mapping[str, int] | None = None
) -> tuple[np.ndarray, list[str]]:
    """Each clip's node in ``head`` as an integer code into the returned list of node ids.

    Codes ``0..K-1`` are the base clusters (``K`` covers every assigned cluster); sub-clusters get
    codes from ``K`` on. A clip starts at its assigned cluster and moves into a sub-cluster for every
    active split that lists it while it is still in the split cluster's merge group.
    """
    codes = np.asarray(assignment).astype(np.int64, copy=True)
    hs = state.heads.get(head)
    k = int(codes.max()) + 1 if len(codes) else 0
    if hs is not None:
        k = max([k, *(base_of(n) + 1 for n in hs.sub_parent)])
    names = [str(i) for i in range(k)]
    if hs is None or not hs.splits:
        return codes, names
    code_of: dict[str, int] = {n: i for i, n in enumerate(names)}
    for sub in hs.sub_parent:
        code_of[sub] = len(names)
        names.append(sub)
    rows = row_index(clip_ids) if rows is None else rows
    for sp in hs.splits:
        parents = [code_of[n] for n in sp.parent_nodes if n in code_of]
        for sub, ids in sp.parts.items():
            r = np.fromiter((rows[c] for c in ids if c in rows), dtype=np.int64)
            if len(r):
                codes[r[np.isin(codes[r], parents)]] = code_of[sub]
    return codes, names


def clip_nodes(state: LabelState, head: int, clip_ids: ClipIds, assignment: np.ndarray) -> np.ndarray:
    """Each clip's node id in ``head`` (object array of str, e.g. ``"12"`` or ``"12.a"``)."""
    codes, names = clip_codes(state, head, clip_ids, assignment)
    return np.asarray(names, dtype=object)[codes]


def effective_labels(
    state: LabelState,
    head: int,
    clip_ids: ClipIds,
    assignment: np.ndarray,
    confidence: np.ndarray | None = None,
    rows: Mapping[str, int] | None = None,
) -> pd.DataFrame:
    """One row per clip (in the given order) with its effective label and where it came from.

    ``assignment`` is the head's current cluster per clip (``Run.assignments("joint")[:, head]``),
    ``confidence`` the matching score column, ``rows`` an optional cached clip id -> row map.
    Columns: ``LABEL_COLUMNS``; missing values are None (labels, names) or NaN (times).
    """
    clip_ids = [str(c) for c in clip_ids]
    n = len(clip_ids)
    rows = row_index(clip_ids) if rows is None else rows
    codes, names = clip_codes(state, head, clip_ids, assignment, rows)
    hs = state.heads.get(head) or HeadState()
    recs = [hs.name_record(nm)[0] for nm in names]
    c_name = _objects([r.name if r else None for r in recs])
    c_ann = _objects([r.stamp.annotator if r else None for r in recs])
    c_time = np.array([r.stamp.time if r else np.nan for r in recs], dtype=np.float64)
    c_eid = np.array([r.stamp.event_id if r else 0 for r in recs], dtype=np.int64)
    cluster_name = c_name[codes]
    label = cluster_name.copy()
    source = np.where(pd.notna(label), SOURCE_CLUSTER, SOURCE_NONE).astype(object)
    annotator, when, eid = c_ann[codes], c_time[codes], c_eid[codes]
    rejected = np.zeros(n, dtype=bool)
    for table, is_override in ((hs.rejected, False), (state.overrides, True)):  # overrides last: they win
        groups: dict[int, tuple[ClipRecord, list[int]]] = {}  # records are shared per event: group by record
        for c, rec in table.items():
            i = rows.get(c)
            if i is not None:
                groups.setdefault(id(rec), (rec, []))[1].append(i)
        for rec, hit in groups.values():
            idx = np.asarray(hit, dtype=np.int64)
            if is_override:
                label[idx], source[idx] = rec.label, SOURCE_OVERRIDE
            else:
                rejected[idx] = True
                label[idx], source[idx] = None, SOURCE_NONE
            annotator[idx], when[idx], eid[idx] = rec.stamp.annotator, rec.stamp.time, rec.stamp.event_id
    unstamped = (source == SOURCE_NONE) & ~rejected
    annotator[unstamped], when[unstamped], eid[unstamped] = None, np.nan, 0
    conf = np.full(n, np.nan) if confidence is None else np.asarray(confidence, dtype=np.float64)
    return pd.DataFrame(
        {
            "clip_id": pd.Series(clip_ids, dtype=object),
            "head": np.full(n, head, dtype=np.int64),
            "cluster": pd.Series(np.asarray(names, dtype=object)[codes], dtype=object),
            "base_cluster": np.asarray(assignment).astype(np.int64),
            "cluster_name": pd.Series(cluster_name, dtype=object),
            "label": pd.Series(label, dtype=object),
            "label_source": pd.Series(source, dtype=object),
            "rejected": rejected,
            "annotator": pd.Series(annotator, dtype=object),
            "time": when,
            "event_id": eid,
            "confidence": conf,
        },
        columns=list(LABEL_COLUMNS),
    )


def cluster_table(state: LabelState, head: int, nodes: np.ndarray, n_clusters: int | None = None) -> pd.DataFrame:
    """One row per cluster node of ``head``: its name, where the name comes from, size and version.

    ``nodes`` is each clip's node id (``clip_nodes`` or the ``cluster`` column of ``effective_labels``);
    base nodes ``0..n_clusters-1`` are listed even when empty, sub-clusters when they exist. Columns:
    cluster, base_cluster, parent, name, name_source (own / merged / inherited / ''), group (the merge
    group's root), size, version, annotator, time.
    """
    hs = state.heads.get(head) or HeadState()
    uniq, counts = np.unique(np.asarray(nodes).astype(str), return_counts=True)  # empty nodes: empty arrays
    size = dict(zip((str(u) for u in uniq), (int(c) for c in counts), strict=True))
    ids: set[str] = set(size) | set(hs.sub_parent)
    if n_clusters is not None:
        ids |= {str(k) for k in range(n_clusters)}
    out = []
    for node in sorted(ids, key=lambda s: (base_of(s), s)):
        rec, how = hs.name_record(node)
        out.append(
            {
                "cluster": node,
                "base_cluster": base_of(node),
                "parent": hs.sub_parent.get(node),
                "name": rec.name if rec else None,
                "name_source": how,
                "group": hs.find(node),
                "size": size.get(node, 0),
                "version": state.cluster_version(head, node),
                "annotator": rec.stamp.annotator if rec else None,
                "time": rec.stamp.time if rec else np.nan,
            }
        )
    cols = ["cluster", "base_cluster", "parent", "name", "name_source", "group", "size", "version", "annotator", "time"]
    return pd.DataFrame(out, columns=cols).astype(
        {c: object for c in ("cluster", "parent", "name", "group", "annotator")}
    )


def vocabulary(labels: pd.DataFrame) -> pd.DataFrame:
    """Label vocabulary of an ``effective_labels`` frame: label, count, and count per source, by count."""
    named = labels[labels["label"].notna()]
    if named.empty:
        return pd.DataFrame(columns=["label", "count", SOURCE_OVERRIDE, SOURCE_CLUSTER])
    by = named.groupby(["label", "label_source"]).size().unstack(fill_value=0)
    for col in (SOURCE_OVERRIDE, SOURCE_CLUSTER):
        if col not in by:
            by[col] = 0
    by["count"] = by[SOURCE_OVERRIDE] + by[SOURCE_CLUSTER]
    out = by.reset_index()[["label", "count", SOURCE_OVERRIDE, SOURCE_CLUSTER]]
    out = out.sort_values(["count", "label"], ascending=[False, True], kind="stable").reset_index(drop=True)
    out.columns.name = None
    return out


def describe(event: Event) -> str:
    """A one-line, human sentence for the history list ("ana renamed cluster 12 (head 0) to 'dog'")."""
    t, new, old = event.target or {}, event.new or {}, event.old or {}
    who, h = event.annotator, event.head
    a = event.action
    if a == "rename_cluster":
        before = f" from {old.get('name')!r}" if old.get("name") else ""
        after = repr(new.get("name")) if new.get("name") else "nothing (name cleared)"
        return f"{who} renamed cluster {t['cluster']} (head {h}){before} to {after}"
    if a == "merge_clusters":
        named = f" as {new.get('name')!r}" if new.get("name") else ""
        return f"{who} merged clusters {', '.join(t['clusters'])} (head {h}){named}"
    if a == "split_cluster":
        parts = new.get("parts", {})
        sizes = ", ".join(f"{s} ({len(ids)})" for s, ids in parts.items())
        return f"{who} split cluster {t['cluster']} (head {h}) by {new.get('method', '?')} into {sizes}"
    if a in ("label_clips", "override_clip"):
        n = len(t.get("clips", []))
        what = f"labelled {n} clip{'s' * (n != 1)}" if a == "label_clips" else f"overrode {n} clip{'s' * (n != 1)}"
        return (
            f"{who} {what} as {new.get('label')!r}" if new.get("label") else f"{who} cleared the label of {n} clip(s)"
        )
    if a == "reject_clip":
        n = len(t.get("clips", []))
        verb = "rejected" if new.get("rejected", True) else "un-rejected"
        return f"{who} {verb} {n} clip{'s' * (n != 1)} from their cluster (head {h})"
    if a == "reset_clips":
        n = len(t.get("clips", []))
        return f"{who} gave {n} clip{'s' * (n != 1)} back to their cluster (head {h}): own labels and 'not this' lifted"
    if a == "carry_names":
        n, looks = len(new.get("names", [])), len(new.get("looks", []))
        return (
            f"{who} carried {n} cluster name{'s' * (n != 1)} over to assignment {new.get('assignment')} by their clips"
            + (f"; {looks} need a look" if looks else "")
        )
    if a == "bind":
        return f"{who} bound the cluster names to assignment {new.get('assignment')} (the one they were given on)"
    if a in ("undo", "redo"):
        return f"{who} {a}: {old.get('summary') or f'event {event.ref}'}"
    if a == "snapshot":
        return f"{who} saved snapshot {new.get('name')!r}"
    return f"{who} {a}"
