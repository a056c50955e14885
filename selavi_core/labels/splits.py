"""Split proposals: how a cluster's members would be divided into sub-clusters (nothing is written here).

``propose_parts`` divides a node's members by k-means on their embedding (``selavi_core.features``:
the audio-visual embedding and spherical k-means with k-means++ seeding, as the evaluation and the
Studio use) or by a selection (a map lasso) against the rest. ``sub_ids`` names the parts
(``12.a``, ``12.b``...), never reusing a name that a split of the same node used before (even one
that was undone), so an event always means the sub-cluster it names.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from selavi_core.config import LABELS
from selavi_core.features import av_embedding, kmeans_labels, l2_normalise
from selavi_core.labels import semantics as sem
from selavi_core.labels.errors import LabelError
from selavi_core.labels.semantics import LabelState
from selavi_core.runs.run import Run

SPLIT_METHODS = ("kmeans", "selection")
SPLIT_FEATURES = ("concat", "video", "audio")


def member_features(run: Run, which: str, idx: np.ndarray) -> np.ndarray:
    """The embedding of some clips (``concat``: ``features.av_embedding``; only those rows are read)."""
    if which == "concat":
        return av_embedding(run.features("video")[idx], run.features("audio")[idx])
    return l2_normalise(run.features(which)[idx])


def propose_parts(
    run: Run, rows: Mapping[str, int], members: Sequence[str], *, node: str, head: int, method: str, k: int,
    clip_ids: Iterable[Any] | None, features: str, seed: int,
) -> list[list[str]]:  # fmt: skip
    """The members of cluster ``node`` divided into parts (k-means: largest first), at least two.

    ``rows`` maps clip id -> run row. Raises ``LabelError`` with a sentence for the user when the
    split cannot be made as asked.
    """
    if len(members) < 2:
        raise LabelError(f"cluster {node} (head {head}) has {len(members)} member(s): nothing to split")
    if method == "selection":
        if clip_ids is None:
            raise LabelError("a selection split needs the selected clip ids")
        chosen = {str(c) for c in clip_ids}
        inside = [c for c in members if c in chosen]
        if not inside or len(inside) == len(members):
            raise LabelError(
                f"the selection holds {len(inside)} of the {len(members)} members of cluster {node}: "
                "select some members, not none or all"
            )
        return [inside, [c for c in members if c not in chosen]]
    if method != "kmeans":
        raise LabelError(f"split method must be 'kmeans' or 'selection', not {method!r}")
    k = int(k)
    if k < 2 or k > len(members):
        raise LabelError(f"k must be between 2 and the cluster size ({len(members)}), not {k}")
    idx = np.fromiter((rows[c] for c in members), dtype=np.int64)
    # one thread: a cluster has at most tens of thousands of members (milliseconds), and OpenMP
    # threads spinning on a shared, busy CPU made it seconds in measurements
    codes = kmeans_labels(member_features(run, features, idx), k, seed=seed, niter=LABELS.split_iters,
                          nredo=LABELS.split_n_init, threads=1)  # fmt: skip
    parts = [[members[int(i)] for i in np.flatnonzero(codes == j)] for j in range(k)]
    parts = [p for p in parts if p]
    if len(parts) < 2:
        raise LabelError(f"k-means found a single group in cluster {node}: the members' features coincide")
    parts.sort(key=lambda p: (-len(p), p[0]))  # k-means labels are arbitrary: largest part first
    return parts


def sub_ids(state: LabelState, head: int, node: str, n: int) -> list[str]:
    """``n`` sub-cluster ids for a split of ``node`` that no earlier split of it used (undone or not)."""
    used = state.subs_ever.get((head, node), set())
    out: list[str] = []
    i = 0
    while len(out) < n:
        sub = f"{node}.{sem.sub_suffix(i)}"
        if sub not in used:
            out.append(sub)
        i += 1
    return out
