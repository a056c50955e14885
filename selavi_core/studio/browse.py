"""The rules of browsing a run that the pages apply: sorting and filtering the cluster index, dumping-ground
clusters, which clip a page starts from or keeps in its player, and the words under posters and players.

Pure functions of the Studio's frames (``StudioRun.cluster_index``, ``LabelStore.effective_labels``,
``map_frame``), so they are tested without Streamlit; the pages call them and draw what they return.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from selavi_core.labels.semantics import SOURCE_OVERRIDE
from selavi_core.studio.labelling import NO_LABEL, clusters_with_labels

if TYPE_CHECKING:
    from selavi_core.studio.runview import StudioRun

# ---- the cluster index ----------------------------------------------------------------------------------

#: Sort choices of the cluster index: shown name -> column of the index (None: by cluster id).
CLUSTER_SORTS: dict[str, str | None] = {
    "size": "size", "purity": "purity", "entropy": "entropy", "A/V agreement": "av_agreement",
    "mean confidence": "mean_confidence", "cluster id": None, "human name": "name",
}  # fmt: skip
#: Sorts that start ascending (low entropy is the good end; ids and names read in order).
ASCENDING_FIRST = ("entropy", "cluster id", "human name")
#: Columns that need ground truth.
GROUND_TRUTH_COLUMNS = ("purity", "entropy")
#: A cluster holding more than this multiple of the prior's largest target share is a dumping ground.
DUMPING_GROUND_MULTIPLE = 2.0
#: A split proposes at most this many parts (and always at least two).
MAX_SPLIT_PARTS = 12


def cluster_sorts(has_ground_truth: bool) -> dict[str, str | None]:
    """The sort choices for a run: purity and entropy only when the catalog has ground truth."""
    if has_ground_truth:
        return dict(CLUSTER_SORTS)
    return {k: v for k, v in CLUSTER_SORTS.items() if v not in GROUND_TRUTH_COLUMNS}


def descending_by_default(sort_by: str) -> bool:
    """Whether the "largest first" toggle starts on for a sort choice."""
    return sort_by not in ASCENDING_FIRST


def sort_clusters(index: pd.DataFrame, column: str | None, descending: bool) -> pd.DataFrame:
    """The cluster index sorted by ``column`` (None: cluster id), stable, missing values last."""
    if column is None:
        return index.iloc[::-1] if descending else index
    return index.sort_values(column, ascending=not descending, na_position="last", kind="stable")


def has_human_labels(labels: pd.DataFrame | None) -> bool:
    """Whether any clip has a human label (a store's ``effective_labels``; None: no store)."""
    return labels is not None and bool(labels["label"].notna().any())


def filter_clusters_by_labels(index: pd.DataFrame, labels: pd.DataFrame, wanted: Iterable[str]) -> pd.DataFrame:
    """The rows of the cluster index whose clusters hold a member labelled one of ``wanted`` (none: all)."""
    wanted = list(wanted)
    if not wanted:
        return index
    return index[index.index.isin(clusters_with_labels(labels, wanted))]


def index_columns(index: pd.DataFrame) -> list[str]:
    """The columns of the cluster index the Clusters page shows, in order (those the index has)."""
    show = [c for c in ("name",) if c in index] + ["size", "av_agreement", "mean_confidence"]
    return show + [c for c in ("majority", "purity", "entropy", "parts") if c in index]


def cluster_choice_label(index: pd.DataFrame, cluster: int) -> str:
    """``12 · dog barking  (340 clips)``: a cluster in a picker, with its human name when it has one."""
    size = int(index["size"].iloc[cluster])
    name = index.at[cluster, "name"] if "name" in index else None
    return f"{cluster} · {name}  ({size:,} clips)" if isinstance(name, str) else f"{cluster}  ({size:,} clips)"


def dumping_grounds(index: pd.DataFrame) -> list[int]:
    """Clusters holding more than ``DUMPING_GROUND_MULTIPLE`` times the prior's largest target share."""
    big = index[index["share"] > DUMPING_GROUND_MULTIPLE * index["prior"].max()]
    return [int(c) for c in big.index]


def size_facts(index: pd.DataFrame) -> dict[str, int]:
    """Empty clusters, the largest cluster's size and the median size, from the cluster index."""
    size = index["size"].to_numpy()
    return {"empty": int((size == 0).sum()), "largest": int(size.max()), "median": int(np.median(size))}


def split_parts_max(clusters: pd.DataFrame, node: str) -> int:
    """The most parts a split of ``node`` may propose: its size, capped at ``MAX_SPLIT_PARTS``, at least 2."""
    size = int(clusters.loc[clusters["cluster"] == node, "size"].iloc[0])
    return max(2, min(size, MAX_SPLIT_PARTS))


# ---- members and clips ----------------------------------------------------------------------------------

#: The member orders a page offers: shown name -> ``StudioRun.members`` order.
MEMBER_ORDERS = {"most confident first": "most", "least confident first (borderline)": "least"}


def member_order(choice: str | None) -> str:
    """``StudioRun.members``' order for a shown choice (nothing chosen: most confident first)."""
    return MEMBER_ORDERS.get(choice or "", "most")


def clip_in_cluster(sr: StudioRun, head: int, cluster: int, row: int | None) -> int | None:
    """``row`` if that clip belongs to ``cluster`` of ``head``, else None (a player shows only the cluster's clips)."""
    if row is None or int(sr.head(head).joint[row]) != int(cluster):
        return None
    return row


def start_clip(sr: StudioRun, head: int) -> int:
    """Where "similar clips" starts when no clip is chosen: the most confident clip of the largest cluster."""
    return int(sr.members(head, int(sr.sizes(head).argmax()), page_size=1)[0])


def _known(value: object) -> bool:
    return value is not None and str(value) not in ("<NA>", "nan")


def clip_file(path: object) -> str:
    """A clip's file name (no folders) to show next to its opaque id; "" when the catalog has no path."""
    return os.path.basename(path) if isinstance(path, str) else ""


def clip_files(sr: StudioRun, rows: Iterable[int]) -> list[str]:
    """The file names of clips ``rows`` (``clip_file``), in order."""
    rows = list(rows)
    if "path" not in sr.catalog:
        return [""] * len(rows)
    return [clip_file(p) for p in sr.catalog["path"].iloc[rows]]


def clip_caption(sr: StudioRun, row: int, head: int | None = None) -> str:
    """The line under a player: the clip and its file, its ground truth, and its cluster with the video/audio
    predictions."""
    facts = sr.clip_rows([row]).iloc[0]
    bits = [f"`{facts['clip_id']}`"]
    if file := clip_file(facts.get("path")):
        bits.append(f"file `{file}`")
    if "label" in facts and _known(facts["label"]):
        bits.append(f"ground truth **{facts['label']}**")
    if head is not None:
        d = sr.head(head)
        bits.append(
            f"cluster {int(d.joint[row])} of head {head} (confidence {float(d.confidence[row]):.2f}; "
            f"video alone → {int(d.video[row])}, audio alone → {int(d.audio[row])})"
        )
    return " · ".join(bits)


def member_captions(members: pd.DataFrame) -> list[str]:
    """``clip · confidence · ground truth`` under each member's poster (``StudioRun.member_table``)."""
    has_label = "label" in members
    return [
        f"{r.clip_id} · {r.confidence:.2f}" + (f" · {r.label}" if has_label and isinstance(r.label, str) else "")
        for r in members.itertuples()
    ]


def similar_captions(neighbours: pd.DataFrame) -> list[str]:
    """``clip · similarity · ground truth`` under each neighbour's poster (``similar_clips``)."""
    return [
        f"{r.clip_id} · {r.similarity:.2f}" + (f" · {r.label}" if isinstance(getattr(r, "label", None), str) else "")
        for r in neighbours.itertuples()
    ]


#: What the feature kinds of "similar clips" are called on screen.
FEATURE_KIND_NAMES = {"both": "audio + video", "video": "video only", "audio": "audio only"}


# ---- human labels -----------------------------------------------------------------------------------------


def label_mask(human: pd.Series, keep: Iterable[str]) -> np.ndarray:
    """Which points carry one of the labels in ``keep`` (``NO_LABEL``: no human label)."""
    keep = list(keep)
    mask = human.isin(keep).to_numpy()
    if NO_LABEL in keep:
        mask = mask | human.isna().to_numpy()
    return mask


def label_count(labels: pd.DataFrame, label: str) -> int:
    """Clips whose effective label is ``label`` (``NO_LABEL``: clips without one)."""
    return int((labels["label"].isna() if label == NO_LABEL else labels["label"] == label).sum())


def sample_captions(sample: pd.DataFrame) -> list[str]:
    """``clip · own`` or ``clip · cluster 3`` under a spot-check sample's posters (``label_sample``)."""
    return [f"{r.clip_id} · {'own' if r.label_source == SOURCE_OVERRIDE else 'cluster ' + str(r.cluster)}"
            for r in sample.itertuples()]  # fmt: skip
