"""Curated names flow back into training: human labels of one run as constraints on the next run's labels.

``selavi train CAT --out RUN2 --labels-from RUN1`` reads the labels people gave RUN1 in the Studio (cluster
names, per-clip labels, "not this" rejections; folded exactly as the label store folds them) and trains RUN2
with every labelled clip pinned to one cluster per label name in every Sinkhorn-Knopp labelling, in every head.
The clips nobody labelled self-label as before, under the prior's marginal less what the pinned clips
already fill. Why pin rather than add a supervised loss: SeLaVi's only training signal is the pseudo-label,
so fixing the pseudo-labels of the labelled clips is the smallest change that makes the network learn the
human partition, and it leaves the loss, the schedule and the heads untouched.

Three pieces:

* ``human_labels(run_dir, head, store_url)``: clip id -> label name of a run, from its label store;
* ``LabelConstraints``: the label names (label ``i`` of the sorted names is cluster ``i``) and the labelled
  clip ids, realised for a training set's rows by ``for_rows`` as ``FixedRows`` (cluster per row, -1 = free);
* ``constrained_sinkhorn(log_p, marginal, fixed)``: pinned rows get their cluster; Sinkhorn labels the free
  rows with the marginal reduced by the pinned counts (``r * N - counts``, clipped at 0, renormalised).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from selavi_core.config import LABELS
from selavi_core.errors import SelaviError
from selavi_core.selflabel.sinkhorn import SinkhornResult, normalise_marginal, sinkhorn_knopp

#: A cluster's remaining target below this many rows counts as full: ``r * N - counts`` is computed in
#: floating point, and a cluster filled exactly by its pinned rows must not keep a 1e-15 target (a column
#: Sinkhorn would have to squeeze to almost nothing).
FULL_EPS_ROWS = 1e-6


class ConstraintError(SelaviError):
    """Human labels that cannot be used as training constraints; the message says what to do."""


# ------------------------------------------------------------------------------------------ reading labels


def _store_location(run_dir: Path, store_url: str | os.PathLike | None) -> str | os.PathLike:
    """Where RUN1's labels are; refuse a store that does not exist instead of creating an empty one."""
    if store_url is None:
        path = run_dir / LABELS.store_file
        if not path.is_file():
            raise ConstraintError(
                f"--labels-from {run_dir}: the run has no human labels ({LABELS.store_file} is missing); "
                "name clusters or label clips in the Studio first, or give --store"
            )
        return path
    text = str(store_url)
    if "://" not in text:
        if not Path(text).expanduser().is_file():
            raise ConstraintError(f"--store {text}: no such label store file")
        return text
    if text.startswith("sqlite:"):
        from sqlalchemy.engine import make_url

        db = make_url(text).database
        if db and db != ":memory:" and not Path(db).expanduser().is_file():
            raise ConstraintError(f"--store {text}: no such SQLite file")
    return text


def _open_store(run_dir: str | os.PathLike, store_url: str | os.PathLike | None) -> Any:
    from selavi_core.labels.store import LabelStore
    from selavi_core.runs.run import Run

    path = Path(run_dir)
    if not path.is_dir():
        raise ConstraintError(f"--labels-from {path}: no such run folder")
    run = Run(path)  # RunError (one line) when it is not a run folder
    return LabelStore.open(run, store=_store_location(path, store_url))


def label_head(store: Any) -> int:
    """The head a run's labels were made on, chosen as the Studio's edits say.

    Cluster names, merges, splits and rejections are made on one head (the one the Studio's sidebar showed)
    and per-clip labels may carry it too. When the active edits name one head, that is it; when they name
    several, the one where the most clips end up labelled (ties: the lowest); when none names a head (only
    per-clip labels, which hold in every head), head 0.
    """
    from selavi_core.labels.semantics import EDIT_ACTIONS

    state = store.state()
    heads = sorted(
        {
            int(e.head)
            for e in state.events.values()
            if e.action in EDIT_ACTIONS and e.head is not None and state.is_active(e.id)
        }
    )
    if not heads:
        return 0
    if len(heads) == 1:
        return heads[0]
    counts = [int(store.effective_labels(h)["label"].notna().sum()) for h in heads]
    return heads[int(np.argmax(counts))]


def human_labels(
    run_dir: str | os.PathLike, head: int | None = None, store_url: str | os.PathLike | None = None
) -> pd.Series:
    """clip_id -> label name of every clip of RUN_DIR that has a human label in ``head``.

    The label store's own fold decides (``labels.semantics.effective_labels``): a cluster name applies to the
    members of that cluster in ``head``; a per-clip label wins over any name; a rejected clip ("not this") has
    no label unless it was given one of its own. ``head=None`` takes ``label_head``'s choice. ``attrs`` carry
    the provenance (``run_dir``, ``head``, ``store``, ``last_event_id``). Raises ``ConstraintError`` (or
    ``RunError``) when the run, its store or its labels are missing or the head does not exist.
    """
    from selavi_core.labels.store import redact

    store = _open_store(run_dir, store_url)
    try:
        run = store.run
        if head is None:
            head = label_head(store)
        elif not 0 <= int(head) < run.heads:
            raise ConstraintError(f"--head {head}: run {run.dir} has heads 0..{run.heads - 1}")
        head = int(head)
        table = store.effective_labels(head)
        named = table[table["label"].notna()]
        if named.empty:
            raise ConstraintError(
                f"--labels-from {run.dir}: no clip has a human label in head {head} "
                f"({store.log_info()['events']} label events); name clusters or label clips in the Studio first"
            )
        out = pd.Series(named["label"].astype(str).to_numpy(), index=pd.Index(named["clip_id"].astype(str)))
        out.index.name, out.name = "clip_id", "label"
        out.attrs = {
            "run_dir": str(Path(run.dir).resolve()),
            "head": head,
            "store": redact(store.url),
            "last_event_id": int(store.log_info()["last_event_id"]),
        }
        return out
    finally:
        store.close()


# ------------------------------------------------------------------------------------------ constraints


@dataclass(frozen=True)
class FixedRows:
    """Pinned rows of one labelling: ``cluster[i]`` is row i's cluster, -1 where Sinkhorn decides.

    ``counts`` (K,) and ``n_rows`` are over all rows (all ranks): a shard (``shard``) keeps them, which is what
    lets each rank reduce the marginal identically under torchrun.
    """

    cluster: np.ndarray
    counts: np.ndarray
    n_rows: int

    @classmethod
    def from_array(cls, cluster: Any, k: int) -> FixedRows:
        """From a per-row array (-1 = free) that holds every row."""
        c = np.asarray(cluster, dtype=np.int64).ravel()
        if len(c) and (c.min() < -1 or c.max() >= k):
            raise ConstraintError(f"pinned clusters must lie in 0..{k - 1} (or -1 for free rows)")
        return cls(c, np.bincount(c[c >= 0], minlength=k).astype(np.int64), len(c))

    @property
    def n_fixed(self) -> int:
        return int(self.counts.sum())

    def shard(self, rows: slice) -> FixedRows:
        """The pins of a block of rows, with the global counts kept."""
        return FixedRows(self.cluster[rows], self.counts, self.n_rows)


@dataclass(frozen=True, eq=False)
class LabelConstraints:
    """Human labels as training constraints: label ``names[i]`` is cluster ``i`` in every head.

    ``labels`` maps clip id -> label name (``human_labels``); ``provenance`` says where they came from.
    Names are sorted so the mapping does not depend on the order people labelled in.
    """

    labels: pd.Series
    names: tuple[str, ...]
    provenance: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_labels(cls, labels: pd.Series, provenance: dict[str, Any] | None = None) -> LabelConstraints:
        lab = pd.Series(labels).dropna().astype(str)
        lab.index = lab.index.astype(str)
        if lab.index.has_duplicates:
            raise ConstraintError("a clip has two human labels; give one label per clip id")
        if lab.empty:
            raise ConstraintError("no human labels to train with")
        prov = dict(getattr(labels, "attrs", {}) or {})
        prov.update(provenance or {})
        return cls(lab, tuple(sorted(lab.unique())), prov)

    @classmethod
    def from_run(
        cls, run_dir: str | os.PathLike, head: int | None = None, store_url: str | os.PathLike | None = None
    ) -> LabelConstraints:
        """``human_labels`` of RUN_DIR as constraints (what ``selavi train --labels-from`` uses)."""
        return cls.from_labels(human_labels(run_dir, head, store_url))

    def cluster_of(self, name: str) -> int:
        return self.names.index(name)

    def for_rows(self, clip_ids: Sequence[Any], clusters: int) -> FixedRows:
        """Pins for a training set whose rows hold ``clip_ids``; labelled clips not among them are ignored.

        Refuses more label names than ``clusters``: two names would have to share a cluster.
        """
        if len(self.names) > clusters:
            shown = ", ".join(self.names[:5]) + (", ..." if len(self.names) > 5 else "")
            raise ConstraintError(
                f"the human labels have {len(self.names)} names ({shown}) but the model has {clusters} clusters "
                "per head; train with --clusters >= the number of names"
            )
        code = pd.Series(np.arange(len(self.names), dtype=np.int64), index=list(self.names))
        per_clip = self.labels.map(code)
        ids = pd.Index([str(c) for c in clip_ids])
        cluster = per_clip.reindex(ids).fillna(-1).to_numpy(dtype=np.int64)
        return FixedRows.from_array(cluster, clusters)

    def summary(self, fixed: FixedRows) -> dict[str, Any]:
        """Provenance and counts for logs, the checkpoint and run.json."""
        return {
            **self.provenance,
            "names": list(self.names),  # cluster i of every head is names[i]
            "labelled_clips": int(len(self.labels)),
            "fixed_rows": fixed.n_fixed,
            # labelled in RUN1 but not among this training's rows (not in the catalog, or not decodable)
            "ignored_clips": int(len(self.labels)) - fixed.n_fixed,
        }


# ------------------------------------------------------------------------------------------ Sinkhorn


@dataclass(frozen=True)
class ConstrainedResult:
    """Labels of a constrained labelling. ``target`` (K,) is the free rows' marginal (zero for clusters the
    pinned rows fill); ``result`` is the free rows' Sinkhorn solve (over the clusters with a positive target),
    None when no solve was needed."""

    labels: np.ndarray
    n_iter: int
    n_fixed: int
    target: np.ndarray
    result: SinkhornResult | None


def reduced_marginal(marginal: Any, fixed: FixedRows, k: int) -> np.ndarray:
    """The free rows' target: ``marginal * N - counts`` clipped at 0 and renormalised (all zeros if none free)."""
    r = normalise_marginal(marginal, k)
    remaining = r * fixed.n_rows - fixed.counts
    remaining[remaining < FULL_EPS_ROWS] = 0.0
    total = remaining.sum()
    return remaining / total if total > 0 else remaining


def constrained_sinkhorn(
    log_p: Any,
    marginal: Any,
    constraints: FixedRows | np.ndarray | None,
    *,
    solver: Callable[..., SinkhornResult] = sinkhorn_knopp,
    **sinkhorn_kwargs: Any,
) -> ConstrainedResult:
    """Sinkhorn-Knopp labels of ``log_p`` (N, K) with some rows pinned to a cluster.

    ``constraints`` is a ``FixedRows`` (or an (N,) array, -1 = free). Pinned rows keep their cluster; the free
    rows are labelled by ``solver`` (``sinkhorn_knopp``, or ``sinkhorn_knopp_distributed`` on a shard, called
    by every rank) under ``reduced_marginal``: the prior's mass that the pinned rows leave. Clusters the pinned
    rows already fill get no free row (Sinkhorn cannot express a zero target, so their columns are left out
    of the solve). With nothing pinned this is exactly ``solver(log_p, marginal, ...)``.
    """
    arr = np.asarray(log_p)
    if arr.ndim != 2:
        raise ConstraintError(f"log_p must be 2-D (N, K), got shape {arr.shape}")
    n, k = arr.shape
    if constraints is None:
        constraints = np.full(n, -1, np.int64)
    fixed = constraints if isinstance(constraints, FixedRows) else FixedRows.from_array(constraints, k)
    if len(fixed.cluster) != n or len(fixed.counts) != k:
        raise ConstraintError(f"constraints hold {len(fixed.cluster)} rows and {len(fixed.counts)} clusters; "
                              f"log_p is {n} x {k}")  # fmt: skip
    if fixed.n_fixed == 0:
        whole = solver(arr, marginal, **sinkhorn_kwargs)
        return ConstrainedResult(whole.labels, int(whole.n_iter), 0, whole.target, whole)
    labels = fixed.cluster.copy()
    target = reduced_marginal(marginal, fixed, k)
    if fixed.n_rows == fixed.n_fixed:  # every row pinned (on every rank: the counts are global)
        return ConstrainedResult(labels, 0, fixed.n_fixed, target, None)
    free = labels < 0
    cols = np.flatnonzero(target > 0)
    res: SinkhornResult | None = None
    if len(cols) == 1:
        labels[free] = cols[0]
    else:
        res = solver(arr[free][:, cols], target[cols], **sinkhorn_kwargs)
        labels[free] = cols[res.labels]
    return ConstrainedResult(labels, 0 if res is None else int(res.n_iter), fixed.n_fixed, target, res)
