"""One run folder as the Studio sees it: per-head cluster statistics, members and diagnostics.

Everything is vectorised with ``np.bincount`` over the (N, H) assignment arrays, so a 200,000-clip
run with 10 heads of 309 clusters answers in milliseconds; results are memoised on the object, which
the app keeps once per process (``st.cache_resource``). Nothing here uses ground truth to *choose*
anything: ground truth only adds columns (purity, majority class) when the catalog has labels.
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from selavi_core.config import STUDIO
from selavi_core.errors import SelaviError
from selavi_core.runs.run import Run
from selavi_core.studio.compare import (
    GT_NAME,
    Contingency,
    agreement_matrices,
    cluster_flow_table,
    contingency_counts,
    head_names,
    ordered_contingency,
)
from selavi_core.studio.media import BUILDING, OnDemand
from selavi_core.studio.serve import allowed_file

if TYPE_CHECKING:
    from selavi_core.media.preview import ClipMedia, PreviewIndex

ORDERS = ("most", "least")  # most confident members first, or the least confident (borderline) first


@dataclass(frozen=True)
class HeadData:
    """One head's assignments, contiguous, plus its members sorted by (cluster, confidence desc)."""

    joint: np.ndarray  # int32 (N,)
    video: np.ndarray
    audio: np.ndarray
    confidence: np.ndarray  # float32 (N,)
    margin: np.ndarray
    order: np.ndarray  # int64 (N,) row indices grouped by cluster, most confident first within a cluster
    offsets: np.ndarray  # int64 (K + 1,) members of cluster k are order[offsets[k]:offsets[k + 1]]


@dataclass(frozen=True)
class HeadChoice:
    head: int
    reason: str
    table: pd.DataFrame  # one row per head with the criteria, best first


def open_run(run_dir: str | Path) -> StudioRun:
    return StudioRun(Run(run_dir))


class StudioRun:
    """Memoised, read-only analyses of one run (thread-safe: Streamlit sessions share it)."""

    def __init__(self, run: Run):
        self.run = run
        self._lock = threading.RLock()
        self._heads: dict[int, HeadData] = {}
        self._index: dict[int, pd.DataFrame] = {}
        self._memo: dict[tuple, Any] = {}  # analyses by key; a key's first item fixes its value's type

    # ---- basic facts -------------------------------------------------------------------------
    @property
    def name(self) -> str:
        return self.run.dir.name

    @property
    def n(self) -> int:
        return int(self.run.n_clips)

    @property
    def heads(self) -> int:
        return int(self.run.heads)

    @property
    def k(self) -> int:
        return int(self.run.clusters)

    @cached_property
    def catalog(self) -> pd.DataFrame:
        """Catalog rows in run order; a clip-id-only frame (and ``catalog_problem``) if the catalog is unreadable."""
        try:
            return self.run.catalog
        except (SelaviError, OSError, ImportError) as err:
            self.catalog_problem = str(err)
            return pd.DataFrame({"clip_id": self.run.clip_ids.astype(str), "label": pd.Series([None] * self.n)})

    catalog_problem: str | None = None

    @cached_property
    def clip_ids(self) -> np.ndarray:
        return np.asarray(self.run.clip_ids, dtype=object)

    @cached_property
    def row_of(self) -> dict[str, int]:
        return {str(c): i for i, c in enumerate(self.clip_ids)}

    @cached_property
    def ground_truth(self) -> tuple[np.ndarray, list[str]] | None:
        """(codes with -1 = unlabelled, class names) or None: only used to add columns, never to choose."""
        labels = self.catalog.get("label")
        if labels is None or labels.isna().all():
            return None
        cat = pd.Categorical(labels)
        return np.asarray(cat.codes, dtype=np.int64), [str(c) for c in cat.categories]

    @cached_property
    def previews(self) -> PreviewIndex:
        from selavi_core.media.preview import PreviewIndex  # PyAV: imported when media is first shown

        return PreviewIndex(self.run.meta.catalog_dir)

    @cached_property
    def media_roots(self) -> list[Path]:
        """The only folders media are served (or previews built) from: the catalog's media roots, its previews."""
        from selavi_core.catalog.schema import media_roots

        return [*media_roots(self.run.meta.catalog_dir), Path(os.path.realpath(self.previews.dir))]

    @cached_property
    def on_demand(self) -> OnDemand:
        return OnDemand(self.previews.dir)

    def media(self, row: int, *, build: bool = True) -> ClipMedia:
        """What the Studio can show of clip ``row``; ``build`` queues a missing preview or poster (the page's clips).

        A preview listed in the previews index first; else the source itself when a browser plays it as
        it is (a poster made on demand); else a preview made on demand (``pending`` until it is there).
        Files outside ``media_roots`` are refused, whatever a catalog or index row says.
        """
        from selavi_core.media.playable import browser_playable
        from selavi_core.media.preview import ClipMedia

        cid = str(self.clip_ids[row])
        roots = self.media_roots
        m = self.previews.lookup(cid)
        mp4 = allowed_file(m.mp4, roots) if m.mp4 is not None else None
        poster = allowed_file(m.poster, roots) if m.poster is not None else None
        if m.mp4 is not None and mp4 is None:
            m = ClipMedia(cid, None, None, f"refused: preview {m.mp4.name} is outside the catalog's media folders")
        if mp4 is not None:
            return ClipMedia(cid, mp4, poster, m.problem)
        facts = self.catalog.iloc[row] if "path" in self.catalog else None
        if facts is None or not isinstance(facts.get("path"), str):
            return m
        path = str(facts["path"])
        start = 0.0 if pd.isna(facts.get("start_s")) else float(facts["start_s"])
        end = None if pd.isna(facts.get("end_s")) else float(facts["end_s"])
        if allowed_file(path, roots[:-1]) is None:
            if not roots[:-1]:
                return ClipMedia(cid, None, poster, "no preview, and the catalog lists no media folders to play "
                                 "from (no catalog.json): run `selavi previews CATALOG_DIR`")  # fmt: skip
            why = (
                "missing" if os.path.isabs(path) and not os.path.exists(path) else "outside the catalog's media folders"
            )
            return ClipMedia(cid, None, poster, f"refused: source {Path(path).name} is {why}")
        play = browser_playable(facts.get("container"), facts.get("video_codec"), facts.get("pix_fmt"),
                                facts.get("audio_codec"), facts.get("has_audio"))  # fmt: skip
        if end is None:
            end = start if pd.isna(facts.get("duration_s")) else float(facts["duration_s"])
        if play.ok:
            pending = False
            if poster is None and build:
                b = self.on_demand.poster(path, start, end)
                poster, pending = b.poster, not b.done
            return ClipMedia(cid, None, poster, None, source=Path(path), start_s=start, end_s=end, pending=pending)
        if not build:
            return m
        b = self.on_demand.preview(path, start, end)
        if not b.done:
            return ClipMedia(cid, None, poster, f"{BUILDING} ({play.reason})", pending=True)
        if b.error is not None:
            return ClipMedia(cid, None, poster, f"preview failed: {b.error}")
        return ClipMedia(cid, b.mp4, b.poster)

    def clip_rows(self, rows: np.ndarray | list[int]) -> pd.DataFrame:
        """Catalog facts for some rows (clip_id, label, path, start_s, end_s ...), in the order given."""
        rows = np.asarray(rows, dtype=np.int64)
        cols = [c for c in ("clip_id", "label", "path", "start_s", "end_s", "split", "has_audio") if c in self.catalog]
        out = self.catalog[cols].iloc[rows].reset_index(drop=True)
        out.insert(0, "row", rows)
        return out

    # ---- per-head data -----------------------------------------------------------------------
    def head(self, h: int) -> HeadData:
        if not 0 <= h < self.heads:
            raise IndexError(f"head {h} out of range 0..{self.heads - 1}")
        with self._lock:
            if h not in self._heads:
                joint = np.ascontiguousarray(self.run.assignments("joint")[:, h], dtype=np.int32)
                conf = np.ascontiguousarray(self.run.scores("confidence")[:, h], dtype=np.float32)
                # Members grouped by cluster, most confident first; ties broken by row (stable, deterministic).
                order = np.lexsort((np.arange(self.n), -conf, joint)).astype(np.int64)
                sizes = np.bincount(joint, minlength=self.k)
                offsets = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
                self._heads[h] = HeadData(
                    joint=joint,
                    video=np.ascontiguousarray(self.run.assignments("video")[:, h], dtype=np.int32),
                    audio=np.ascontiguousarray(self.run.assignments("audio")[:, h], dtype=np.int32),
                    confidence=conf,
                    margin=np.ascontiguousarray(self.run.scores("margin")[:, h], dtype=np.float32),
                    order=order,
                    offsets=offsets,
                )
            return self._heads[h]

    def sizes(self, h: int) -> np.ndarray:
        d = self.head(h)
        return np.diff(d.offsets)

    def cluster_index(self, h: int) -> pd.DataFrame:
        """One row per cluster of head ``h`` (empty clusters included), indexed by cluster id.

        Columns: size, share (of all clips), prior (the head's target share for a cluster of this
        size rank), av_agreement (members whose video-only AND audio-only predictions equal the
        joint one), video_agreement, audio_agreement, mean_confidence, mean_margin; with ground
        truth also labelled, majority, purity (majority / labelled members) and entropy (bits, of the
        ground-truth classes inside the cluster).
        """
        with self._lock:
            if h in self._index:
                return self._index[h]
            d, k = self.head(h), self.k
            size = np.bincount(d.joint, minlength=k).astype(np.int64)
            denom = np.maximum(size, 1)
            v_ok = d.video == d.joint
            a_ok = d.audio == d.joint

            def mean_of(weights: np.ndarray) -> np.ndarray:
                s = np.bincount(d.joint, weights=weights, minlength=k)
                return np.where(size > 0, s / denom, np.nan)

            df = pd.DataFrame(
                {
                    "size": size,
                    "share": size / max(self.n, 1),
                    "prior": self.prior_by_rank(h),
                    "av_agreement": mean_of((v_ok & a_ok).astype(np.float64)),
                    "video_agreement": mean_of(v_ok.astype(np.float64)),
                    "audio_agreement": mean_of(a_ok.astype(np.float64)),
                    "mean_confidence": mean_of(d.confidence.astype(np.float64)),
                    "mean_margin": mean_of(d.margin.astype(np.float64)),
                }
            )
            gt = self.ground_truth
            if gt is not None:
                codes, names = gt
                counts = self.gt_counts(h)  # (K, C)
                labelled = counts.sum(axis=1)
                top = counts.argmax(axis=1)
                top_n = counts.max(axis=1)
                with np.errstate(divide="ignore", invalid="ignore"):
                    p = counts / np.maximum(labelled, 1)[:, None]
                    ent = -np.nansum(np.where(p > 0, p * np.log2(p), 0.0), axis=1) + 0.0
                df["labelled"] = labelled
                df["majority"] = np.where(labelled > 0, np.asarray(names, dtype=object)[top], None)
                df["purity"] = np.where(labelled > 0, top_n / np.maximum(labelled, 1), np.nan)
                df["entropy"] = np.where(labelled > 0, ent, np.nan)
            df.index.name = "cluster"
            self._index[h] = df
            return df

    def _need_ground_truth(self) -> tuple[np.ndarray, list[str]]:
        gt = self.ground_truth
        if gt is None:
            raise ValueError("this run's catalog has no ground-truth labels")
        return gt

    def gt_counts(self, h: int) -> np.ndarray:
        """(K, C) int64 counts of ground-truth classes per cluster (unlabelled clips left out)."""
        gt = self._need_ground_truth()
        key = ("gt_counts", h)
        with self._lock:
            if key not in self._memo:
                codes, names = gt
                c = len(names)
                ok = codes >= 0
                flat = self.head(h).joint[ok].astype(np.int64) * c + codes[ok]
                self._memo[key] = np.bincount(flat, minlength=self.k * c).reshape(self.k, c)
            return self._memo[key]

    def cluster_histogram(self, h: int, cluster: int) -> pd.DataFrame:
        """Ground-truth classes inside one cluster, most frequent first (label, count, share)."""
        counts = self.gt_counts(h)[cluster]
        names = self._need_ground_truth()[1]
        nz = np.flatnonzero(counts)
        nz = nz[np.argsort(-counts[nz], kind="stable")]
        total = max(int(counts.sum()), 1)
        return pd.DataFrame({"label": [names[i] for i in nz], "count": counts[nz], "share": counts[nz] / total})

    def members(
        self, h: int, cluster: int, *, order: str = "most", page: int = 0, page_size: int = STUDIO.page_size
    ) -> np.ndarray:
        """Row indices of one page of a cluster's members, most (or least) confident first."""
        if order not in ORDERS:
            raise ValueError(f"order must be one of {ORDERS}")
        d = self.head(h)
        lo, hi = int(d.offsets[cluster]), int(d.offsets[cluster + 1])
        start = lo + page * page_size
        if order == "most":
            return d.order[start : min(start + page_size, hi)]
        stop = hi - page * page_size
        return d.order[max(stop - page_size, lo) : max(stop, lo)][::-1]

    def member_table(
        self, h: int, cluster: int, *, order: str = "most", page: int = 0, page_size: int = STUDIO.page_size
    ) -> pd.DataFrame:
        rows = self.members(h, cluster, order=order, page=page, page_size=page_size)
        d = self.head(h)
        out = self.clip_rows(rows)
        out["confidence"] = d.confidence[rows]
        out["margin"] = d.margin[rows]
        out["video_cluster"] = d.video[rows]
        out["audio_cluster"] = d.audio[rows]
        return out

    def pages(self, h: int, cluster: int, page_size: int = STUDIO.page_size) -> int:
        return max(1, -(-int(self.sizes(h)[cluster]) // page_size))

    # ---- comparing heads (pure functions in ``compare``, memoised here) ---------------------
    def head_agreement(self, *, with_ground_truth: bool = True) -> dict[str, pd.DataFrame]:
        """{"nmi": DataFrame, "ari": DataFrame}: symmetric matrices over the heads (plus ground truth).

        Computed once per run (45 pairs at 10 heads, ~10 ms each at 200,000 clips) and memoised.
        Pairs with ground truth count only the labelled clips.
        """
        key = ("agreement", with_ground_truth)
        with self._lock:
            if key not in self._memo:
                labels = [self.head(h).joint for h in range(self.heads)]
                names = head_names(self.heads)
                gt = self.ground_truth if with_ground_truth else None
                if gt is not None:
                    labels.append(gt[0])
                    names.append(GT_NAME)
                self._memo[key] = agreement_matrices(labels, names)
            return self._memo[key]

    def full_contingency(self, head_a: int, head_b: int) -> np.ndarray:
        """(K, K) counts including empty clusters, row = cluster of head A, column = cluster of head B."""
        key = ("contingency", head_a, head_b)
        with self._lock:
            if key not in self._memo:
                self._memo[key] = contingency_counts(self.head(head_a).joint, self.head(head_b).joint, self.k)
            return self._memo[key]

    def contingency(self, head_a: int, head_b: int, *, drop_empty: bool = True) -> Contingency:
        """The contingency table of two heads, ordered so that matched clusters lie on the diagonal."""
        key = ("contingency_ordered", head_a, head_b, drop_empty)
        with self._lock:
            if key not in self._memo:
                full = self.full_contingency(head_a, head_b)
                self._memo[key] = ordered_contingency(full, head_a, head_b, drop_empty=drop_empty)
            return self._memo[key]

    def cluster_flow(self, head_a: int, cluster: int, head_b: int) -> pd.DataFrame:
        """Where the members of one cluster of head A went in head B, largest destination first."""
        return cluster_flow_table(self.full_contingency(head_a, head_b), cluster)

    # ---- priors and head choice --------------------------------------------------------------
    def prior_by_rank(self, h: int) -> np.ndarray:
        """The head's prior share matched by rank to its clusters (largest target to largest cluster).

        SeLaVi's non-uniform priors are rank-matched to the current cluster sizes when pseudo-labels
        are made, so the meaningful comparison is sorted sizes against the sorted prior.
        """
        prior = np.asarray(self.run.priors[h], dtype=np.float64)
        prior = prior / prior.sum() if prior.sum() > 0 else np.full(self.k, 1.0 / self.k)
        size = np.bincount(self.head(h).joint, minlength=self.k)
        out = np.empty(self.k)
        out[np.argsort(-size, kind="stable")] = np.sort(prior)[::-1]
        return out

    def size_profile(self, h: int) -> pd.DataFrame:
        """Cluster shares sorted largest first beside the prior sorted the same way (rank, share, prior)."""
        size = np.sort(self.sizes(h))[::-1]
        prior = np.sort(np.asarray(self.run.priors[h], dtype=np.float64))[::-1]
        prior = prior / prior.sum() if prior.sum() > 0 else np.full(self.k, 1.0 / self.k)
        return pd.DataFrame({"rank": np.arange(1, self.k + 1), "share": size / max(self.n, 1), "prior": prior})

    def head_summary(self) -> pd.DataFrame:
        """Ground-truth-free facts per head: agreement across modalities, consistency, fit to the prior."""
        with self._lock:
            key = ("head_summary",)
            if key in self._memo:
                return self._memo[key]
            nmi = self.head_agreement(with_ground_truth=False)["nmi"].to_numpy()
            rows = []
            for h in range(self.heads):
                d = self.head(h)
                prof = self.size_profile(h)
                rows.append(
                    {
                        "head": h,
                        "av_agreement": float(np.mean((d.video == d.joint) & (d.audio == d.joint))),
                        "consistency": float((nmi[h].sum() - nmi[h, h]) / max(self.heads - 1, 1)),
                        "mean_confidence": float(np.mean(d.confidence)),
                        "empty_clusters": int(np.sum(self.sizes(h) == 0)),
                        "prior_gap": float(0.5 * np.abs(prof["share"] - prof["prior"]).sum()),
                    }
                )
            df = pd.DataFrame(rows).set_index("head")
            self._memo[key] = df
            return df

    def recommend_head(self) -> HeadChoice:
        """The head to start browsing with, chosen without ground truth.

        Score = mean of the head's rank by audio-visual agreement (both modalities on their own
        reach the joint cluster: clusters are audio-visual concepts, not one modality's artefacts)
        and by consistency (mean NMI with the other heads: structure that independently initialised
        heads keep finding). Ties go to the smaller prior gap.
        """
        t = self.head_summary().copy()
        if self.heads == 1:
            t["score"] = 1.0
        else:
            t["score"] = (t["av_agreement"].rank(ascending=True) + t["consistency"].rank(ascending=True)) / (
                2 * self.heads
            )
        t = t.sort_values(["score", "prior_gap"], ascending=[False, True])
        best = int(t.index[0])
        r = t.loc[best]
        parts = [f"{r.av_agreement:.0%} of its clips get the same cluster from video alone, audio alone and both"]
        if self.heads > 1:
            parts.append(f"its clusters agree best with the other heads (mean NMI {r.consistency:.2f})")
        parts.append(
            f"{int(r.empty_clusters)} empty clusters; cluster sizes are {r.prior_gap:.0%} away from the training prior"
        )
        reason = f"Start with head {best}: " + "; ".join(parts) + ". (Chosen without ground truth.)"
        return HeadChoice(best, reason, t)

    # ---- data set numbers --------------------------------------------------------------------
    def dataset_summary(self) -> dict[str, object]:
        cat = self.catalog
        out: dict[str, object] = {"clips": self.n, "heads": self.heads, "clusters per head": self.k}
        gt = self.ground_truth
        if gt is not None:
            out["labelled clips"] = int((gt[0] >= 0).sum())
            out["classes"] = len(gt[1])
        if "duration_s" in cat and "start_s" in cat and "end_s" in cat:
            dur = (cat["end_s"] - cat["start_s"]).where(lambda s: s > 0, cat["duration_s"])
            out["hours of media"] = round(float(np.nansum(dur.to_numpy(dtype=float))) / 3600, 2)
        if "has_audio" in cat:
            out["clips with sound"] = int(cat["has_audio"].fillna(False).astype(bool).sum())
        if "split" in cat:
            out["splits"] = ", ".join(f"{k}: {v}" for k, v in cat["split"].fillna("-").value_counts().items())
        out["previews"] = self.previews.available()
        out["preset"] = self.run.meta.preset
        out["prior"] = self.run.meta.prior
        return out


# The comparison views as functions of a run (the pages and tests call these).
def head_agreement(sr: StudioRun, *, with_ground_truth: bool = True) -> dict[str, pd.DataFrame]:
    return sr.head_agreement(with_ground_truth=with_ground_truth)


def contingency(sr: StudioRun, head_a: int, head_b: int, *, drop_empty: bool = True) -> Contingency:
    return sr.contingency(head_a, head_b, drop_empty=drop_empty)


def cluster_flow(sr: StudioRun, head_a: int, cluster: int, head_b: int) -> pd.DataFrame:
    return sr.cluster_flow(head_a, cluster, head_b)
