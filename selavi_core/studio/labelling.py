"""What the Studio's labelling controls need beyond ``LabelStore``: names for display, filters, samples, exports.

The store (``selavi_core.labels``) is the single source of truth; everything here is a pure function
of its frames (``effective_labels``, ``clusters``, ``history``) or a thin wrapper that performs one
logical edit. Keeping it out of the pages makes it testable without Streamlit, and keeps the pages
thin: they draw what these functions return and pass the user's clicks straight through.

Stale views: every edit from the Studio passes ``expected_version``, the store version read *before*
the page drew what the user saw (a callback's arguments are bound when the page is drawn, so the
version travels with the button). ``conflict_message`` turns the store's ``StaleEditError`` into a
sentence that says who changed what to what; nothing is overwritten.
"""

from __future__ import annotations

import colorsys
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from selavi_core.labels import LabelStore, StaleEditError
from selavi_core.labels.carry import CarryReport
from selavi_core.labels.exports import FORMATS, export_bytes
from selavi_core.labels.semantics import (
    SOURCE_CLUSTER,
    SOURCE_NONE,
    SOURCE_OVERRIDE,
    Event,
    annotator_name,
    describe,
)
from selavi_core.studio.runs import store_from_env

if TYPE_CHECKING:
    from selavi_core.studio.runview import StudioRun

#: ``source`` of every event the Studio writes (the CLI and scripts write others).
STUDIO_SOURCE = "studio"
#: The pseudo-label that stands for "no human label" in filters.
NO_LABEL = "(no label)"
#: Formats a download button can offer (FiftyOne's is a folder tree: `selavi export` writes it).
DOWNLOAD_FORMATS = tuple(f for f in FORMATS if f != "fiftyone")
MIME = {"csv": "text/csv", "kinetics": "text/csv", "vggsound": "text/csv", "json": "application/json",
        "labelstudio": "application/json"}  # fmt: skip
SUFFIX = {"csv": ".csv", "kinetics": ".kinetics.csv", "vggsound": ".vggsound.csv", "json": ".json",
          "labelstudio": ".labelstudio.json"}  # fmt: skip
UNLABELLED_COLOUR = "#c8c8c8"


# ------------------------------------------------------------------------------ the store


def open_label_store(sr: StudioRun, store: str | None = None) -> LabelStore:
    """The run's label store: ``store`` (a URL or SQLite path), else ``selavi app --store`` (``runs.STORE_ENV``),
    else ``RUN_DIR/labels.sqlite``."""
    return LabelStore.open(sr.run, store=store or store_from_env())


# ------------------------------------------------------------------------------ carry-over


@dataclass(frozen=True)
class CarryNotice:
    """What the Studio says about cluster names given on another assignment (a retrain or re-assign).

    ``pending``: the names show on no cluster until someone carries them over (``report`` is the plan, the
    button applies it); ``done``: the latest carry-over the log holds, with what still needs a look.
    ``carried`` and ``needs_look`` are display frames (``carry_table``).
    """

    kind: str
    text: str
    report: CarryReport
    carried: pd.DataFrame
    needs_look: pd.DataFrame


def carry_table(names: pd.DataFrame) -> pd.DataFrame:
    """A carry report's rows for display: head, name, old and new cluster, overlap and share in %, clips, why."""
    out = pd.DataFrame(
        {
            "head": names["head"].astype(int),
            "name": names["name"].astype(str),
            "was cluster": names["old_cluster"],
            "now cluster": names["new_cluster"],
            "overlap %": (pd.to_numeric(names["overlap"], errors="coerce") * 100).round(0),
            "share %": (pd.to_numeric(names["share"], errors="coerce") * 100).round(0),
            "clips": pd.to_numeric(names["size"], errors="coerce"),
            "why": names["reason"].fillna(""),
        }
    )
    return out.reset_index(drop=True)


def carry_notice(store: LabelStore) -> CarryNotice | None:
    """The notice for a store whose names were given on another assignment (a plan: nothing is written), or
    for the carry-over that bound them to this one; None when there is nothing to say."""
    if store.run is None:
        return None
    if store.needs_carry():
        report = store.carry_over()
        n, looks = len(report.carried), len(report.needs_look)
        text = (
            "This run was retrained or re-assigned since its clusters were named: the names show on no cluster "
            f"until they are carried over by their clips. {n} name{'s' * (n != 1)} would follow "
            f"{'their' if n != 1 else 'its'} clips to a new cluster"
            + (
                f"; {looks} need{'s' * (looks == 1)} a look (scattered, or two names for one cluster)."
                if looks
                else "."
            )
        )
        return CarryNotice("pending", text, report, carry_table(report.carried), carry_table(report.needs_look))
    last = store.last_carry()
    if last is None or last.new_assignment != store.assignment_id:
        return None
    text = f"Cluster names were carried over to this assignment: {last.summary()}."
    return CarryNotice("done", text, last, carry_table(last.carried), carry_table(last.needs_look))


# ------------------------------------------------------------------------------ annotator


def clean_annotator(text: object) -> str | None:
    """The annotator name as the store will record it, or None when empty or too long to be a name
    (the store's rule, ``semantics.annotator_name``: the page never accepts a name the store refuses)."""
    return annotator_name(text)


# ------------------------------------------------------------------------------ cluster names


@dataclass(frozen=True)
class NameInfo:
    """A cluster node's name as the page shows it, and who set it."""

    node: str
    name: str | None
    how: str  # own / merged / inherited / '' (see semantics.HeadState.name_record)
    annotator: str | None
    time: float | None
    version: int  # latest event touching the node: what an edit of it is checked against


def name_info(clusters: pd.DataFrame, node: object) -> NameInfo:
    """The name of ``node`` in a ``LabelStore.clusters`` table (an unknown node is simply unnamed)."""
    node = str(node)
    hit = clusters[clusters["cluster"] == node]
    if hit.empty:
        return NameInfo(node, None, "", None, None, 0)
    r = hit.iloc[0]
    t = float(r["time"]) if pd.notna(r["time"]) else None
    name = r["name"] if isinstance(r["name"], str) else None
    return NameInfo(node, name, str(r["name_source"] or ""), r["annotator"] if name else None, t, int(r["version"]))


def ago(t: float | None, now: float | None = None) -> str:
    """'just now', '5 min ago', '3 h ago', '2 days ago' (the history and name captions)."""
    if t is None or not np.isfinite(t):
        return ""
    s = max(0.0, (time.time() if now is None else now) - float(t))
    if s < 60:
        return "just now"
    if s < 3600:
        return f"{int(s // 60)} min ago"
    if s < 86_400:
        return f"{int(s // 3600)} h ago"
    return f"{int(s // 86_400)} days ago"


def describe_name(info: NameInfo, now: float | None = None) -> str:
    """One line under the name field: who named it, when, and whether the name is its own."""
    if info.name is None:
        return "Not named yet."
    how = {"merged": " (the name of its merge group)", "inherited": " (inherited from the cluster it was split from)"}
    return f"Named **{info.name}** by {info.annotator}, {ago(info.time, now)}{how.get(info.how, '')}."


def index_with_names(index: pd.DataFrame, clusters: pd.DataFrame) -> pd.DataFrame:
    """The Studio's cluster index (indexed by base cluster id) with the human ``name`` first and ``named_by``."""
    base = clusters[clusters["parent"].isna()].copy()
    base["base"] = base["cluster"].astype(int)
    base = base.set_index("base")
    out = index.copy()
    out.insert(0, "name", base["name"].reindex(out.index).astype(object).where(lambda s: s.notna(), None))
    out["named_by"] = base["annotator"].reindex(out.index).astype(object).where(lambda s: s.notna(), None)
    subs = clusters[clusters["parent"].notna()]
    if not subs.empty:  # a split cluster: list its parts' names too, so the index says what it holds
        parts = subs.groupby("base_cluster").apply(
            lambda g: ", ".join(f"{c}: {n}" if isinstance(n, str) else str(c) for c, n in zip(g["cluster"], g["name"],
                                                                                            strict=True)),
            include_groups=False,
        )  # fmt: skip
        out["parts"] = parts.reindex(out.index).astype(object).where(lambda s: s.notna(), None)
    return out


def clusters_with_labels(labels: pd.DataFrame, wanted: Iterable[str]) -> np.ndarray:
    """Base clusters holding at least one member whose effective label is in ``wanted`` (``NO_LABEL``: none)."""
    wanted = list(wanted)
    human = labels["label"]
    hit = human.isin([w for w in wanted if w != NO_LABEL]).to_numpy()
    if NO_LABEL in wanted:
        hit = hit | human.isna().to_numpy()
    return np.unique(labels.loc[hit, "base_cluster"].to_numpy(dtype=np.int64))


def label_options(labels: pd.DataFrame) -> list[str]:
    """Labels in use, most frequent first, then ``NO_LABEL`` when some clips have none (filter choices)."""
    counts = labels["label"].dropna().value_counts()
    opts = sorted(counts.index, key=lambda lab: (-int(counts[lab]), str(lab)))
    if labels["label"].isna().any():
        opts.append(NO_LABEL)
    return [str(o) for o in opts]


def cluster_label_counts(labels: pd.DataFrame, base_cluster: int) -> pd.DataFrame:
    """Human labels among one base cluster's members: label, source, clips (most first)."""
    m = labels[labels["base_cluster"] == int(base_cluster)]
    lab = m["label"].astype(object).where(m["label"].notna(), NO_LABEL)
    src = m["label_source"].where(~m["rejected"], "rejected ('not this')")
    out = pd.DataFrame({"label": lab, "source": src}).value_counts().rename("clips").reset_index()
    return out.sort_values(["clips", "label"], ascending=[False, True], kind="stable").reset_index(drop=True)


def clip_tag(row: pd.Series | object) -> str:
    """A short mark of a clip's human label for grid captions: ``✎ cat`` (own), ``∈ dog`` (cluster), ``✗``.

    (Plain symbols that every font has: headless and minimal systems often lack emoji fonts.)"""
    label = getattr(row, "label", None)
    if bool(getattr(row, "rejected", False)) and not isinstance(label, str):
        return "✗ not this"
    if not isinstance(label, str):
        return ""
    return f"✎ {label}" if getattr(row, "label_source", None) == SOURCE_OVERRIDE else f"∈ {label}"


def sub_clusters(clusters: pd.DataFrame, base_cluster: int) -> pd.DataFrame:
    """Sub-clusters made by splitting ``base_cluster`` (and its parts): cluster, parent, name, size, version."""
    subs = clusters[(clusters["base_cluster"] == int(base_cluster)) & clusters["parent"].notna()]
    return subs[["cluster", "parent", "name", "name_source", "size", "version"]].reset_index(drop=True)


def splittable_nodes(clusters: pd.DataFrame, base_cluster: int) -> list[str]:
    """Nodes of one base cluster that hold at least two clips now (what a split can apply to)."""
    nodes = clusters[(clusters["base_cluster"] == int(base_cluster)) & (clusters["size"] >= 2)]
    return [str(c) for c in nodes["cluster"]]


def proposal_table(proposal: dict[str, list[str]]) -> pd.DataFrame:
    """A split proposal as rows: sub-cluster id, size and share of the split cluster's clips."""
    sizes = {s: len(ids) for s, ids in proposal.items()}
    total = max(sum(sizes.values()), 1)
    return pd.DataFrame({"sub-cluster": list(sizes), "clips": list(sizes.values()),
                         "share": [v / total for v in sizes.values()]})  # fmt: skip


# ------------------------------------------------------------------------------ edits


def conflict_message(err: StaleEditError, attempted: str | None = None) -> str:
    """Why an edit was refused, naming who changed the thing to what (the store keeps their edit)."""
    ev = err.event
    now = f" It is now **{err.current}**." if err.current is not None else ""
    yours = f"Your {attempted!r} was not saved" if attempted else "Not saved"
    return (
        f"{yours}: {err.what} was changed by **{ev.annotator}** after this page was drawn "
        f"({ev.annotator}'s edit: {_summary(ev)}).{now} Their edit is kept; the page now shows it, edit again "
        "if you still want to change it."
    )


def _summary(ev: Event) -> str:
    return describe(ev)


def reset_clips(
    store: LabelStore, head: int, clip_ids: Sequence[str], *, annotator: str, expected_version: int | None
) -> list[str]:
    """Give clips back to their cluster: clear their own labels and lift "not this" in ``head``.

    One store edit (``LabelStore.reset_clips``: one event, so one undo restores everything), written
    only when some clip has something to reset; every clip is checked against ``expected_version``.
    Returns the summaries of the events written ([] when there was nothing to do).
    """
    labels = store.effective_labels(head).set_index("clip_id").loc[list(clip_ids)]
    if not ((labels["label_source"] == SOURCE_OVERRIDE) | labels["rejected"]).any():
        return []
    ev = store.reset_clips(head, list(clip_ids), annotator=annotator, expected_version=expected_version,
                           source=STUDIO_SOURCE)  # fmt: skip
    return [_summary(ev)]


# ------------------------------------------------------------------------------ map colours


def label_palette(labels: Sequence[str]) -> dict[str, str]:
    """A distinct colour per label (golden-ratio hue steps: stable for a label's rank, any number of labels)."""
    out = {}
    for i, lab in enumerate(labels):
        h = (0.07 + i * 0.618_033_988_75) % 1.0
        r, g, b = colorsys.hsv_to_rgb(h, 0.75 if i % 2 == 0 else 0.55, 0.85 if i % 3 else 0.7)
        out[str(lab)] = f"#{int(r * 255):02x}{int(g * 255):02x}{int(b * 255):02x}"
    return out


def human_colours(human: Sequence[object]) -> np.ndarray:
    """One CSS colour per point from its human label (grey for none); labels ranked by frequency."""
    s = pd.Series(list(human), dtype=object)
    counts = s.dropna().value_counts()
    order = sorted(counts.index, key=lambda lab: (-int(counts[lab]), str(lab)))
    pal = label_palette([str(o) for o in order])
    return np.asarray([pal.get(str(v), UNLABELLED_COLOUR) if isinstance(v, str) else UNLABELLED_COLOUR for v in s],
                      dtype=object)  # fmt: skip


# ------------------------------------------------------------------------------ Labels page


def label_sample(labels: pd.DataFrame, label: str, n: int, seed: int = 0) -> pd.DataFrame:
    """Up to ``n`` clips carrying ``label`` (``NO_LABEL``: none) to spot-check, a seeded random sample.

    Own labels (overrides) and cluster labels are sampled in proportion, and the rows keep their
    run order (``row``), so the same store version always shows the same clips.
    """
    mask = labels["label"].isna() if label == NO_LABEL else labels["label"] == label
    hit = labels[mask.to_numpy()].copy()
    hit.insert(0, "row", np.flatnonzero(mask.to_numpy()))
    if len(hit) > n:
        hit = hit.sample(n=n, random_state=seed).sort_values("row")
    return hit.reset_index(drop=True)


def history_frame(history: pd.DataFrame, now: float | None = None) -> pd.DataFrame:
    """The store's history for display: when (UTC and how long ago), who, what, undone."""
    t = pd.to_datetime(history["time"], unit="s", utc=True).dt.strftime("%Y-%m-%d %H:%M:%S")
    return pd.DataFrame(
        {
            "event": history["id"].astype(int),
            "when (UTC)": t,
            "ago": [ago(x, now) for x in history["time"]],
            "annotator": history["annotator"],
            "what": history["summary"],
            "undone": history["undone"].astype(bool),
        }
    )


def snapshot_frame(snapshots: pd.DataFrame) -> pd.DataFrame:
    t = pd.to_datetime(snapshots["time"], unit="s", utc=True).dt.strftime("%Y-%m-%d %H:%M:%S")
    return pd.DataFrame({"snapshot": snapshots["name"], "up to event": snapshots["event_id"].astype(int),
                         "by": snapshots["annotator"], "when (UTC)": t})  # fmt: skip


def source_counts(labels: pd.DataFrame) -> dict[str, int]:
    """Clips per label source (own label, cluster name, none) for the Labels page's summary."""
    return {s: int((labels["label_source"] == s).sum()) for s in (SOURCE_OVERRIDE, SOURCE_CLUSTER, SOURCE_NONE)}


def export_file_name(run_name: str, fmt: str, head: int, snapshot: str | None = None) -> str:
    """``RUN-head0[-SNAPSHOT]-labels.csv``: what the download is saved as (safe characters only)."""
    snap = "" if not snapshot else "-" + "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in snapshot)
    return f"{run_name}-head{int(head)}{snap}-labels{SUFFIX[fmt]}"


def export_download(
    store: LabelStore, fmt: str, *, head: int, snapshot: str | None = None, only_named: bool = False,
    min_confidence: float | None = None,
) -> tuple[bytes, dict]:  # fmt: skip
    """The bytes of a download button (exactly what ``selavi export`` writes) and their provenance."""
    return export_bytes(store, fmt, head=head, snapshot=snapshot, only_named=only_named,
                        min_confidence=min_confidence)  # fmt: skip
