"""The 2-D map of a run's clips: PCA, an exact faiss k-NN graph, then UMAP on that graph.

Computed once per run and cached under ``RUN_DIR/map/`` (coordinates, the k-NN graph and the rows
they belong to), so later starts of the Studio read it in milliseconds. UMAP's own neighbour search
(pynndescent) is the slow part of a plain ``umap.UMAP().fit``; an exact k-NN graph from faiss on
64 PCA dimensions is faster and is passed as ``precomputed_knn``. Above ``STUDIO.map_max_points``
clips the map holds a sample stratified by the clusters of one head (every cluster keeps its
share, small clusters at least one clip), and says so.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from selavi_core.config import STUDIO, StudioSpec
from selavi_core.io import atomic_write, atomic_write_text
from selavi_core.studio.features import embed, embed_chunks, feature_dim

if TYPE_CHECKING:
    import pandas as pd

    from selavi_core.studio.runview import StudioRun

MAP_DIR = "map"
MAP_VERSION = 1
#: progress(fraction in [0, 1], message)
Progress = Callable[[float, str], None]


@dataclass(frozen=True)
class MapResult:
    rows: np.ndarray  # int64 (M,) run rows the map holds, ascending
    coords: np.ndarray  # float32 (M, 2)
    knn: np.ndarray  # int64 (M, k) neighbours as positions into ``rows`` (self first)
    sampled: bool  # True when M < number of clips (a stratified sample)
    stratified_by: int | None  # head whose clusters the sample is stratified by
    cached: bool = False  # read from RUN_DIR/map rather than computed now


def stratified_sample(labels: np.ndarray, m: int, seed: int = 0) -> np.ndarray:
    """About ``m`` row indices with every label keeping its share (at least one clip per non-empty label)."""
    n = len(labels)
    if m >= n:
        return np.arange(n, dtype=np.int64)
    rng = np.random.default_rng(seed)
    frac = m / n
    order = np.lexsort((rng.random(n), labels))  # rows grouped by label, shuffled within a label
    sizes = np.bincount(labels)
    take = np.maximum(np.floor(sizes * frac).astype(np.int64), (sizes > 0).astype(np.int64))
    starts = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    # position of each sorted row within its label group: keep the first ``take`` of each group
    pos = np.arange(n) - np.repeat(starts, sizes)
    keep = pos < np.repeat(take, sizes)
    return np.sort(order[keep]).astype(np.int64)


def _cache_dir(sr: StudioRun) -> Path:
    return sr.run.dir / MAP_DIR


def _signature(sr: StudioRun, spec: StudioSpec, kind: str) -> dict:
    return {
        "version": MAP_VERSION, "n_clips": sr.n, "run_created": sr.run.meta.created, "kind": kind,
        "max_points": spec.map_max_points, "neighbours": spec.map_neighbours, "pca_dims": spec.map_pca_dims,
        "min_dist": spec.map_min_dist, "seed": spec.map_seed,
    }  # fmt: skip


def load_map(sr: StudioRun, spec: StudioSpec = STUDIO, kind: str = "both") -> MapResult | None:
    """The cached map if one matching this run and these parameters exists, else None."""
    d = _cache_dir(sr)
    try:
        meta = json.loads((d / "meta.json").read_text())
        if meta.get("signature") != _signature(sr, spec, kind):
            return None
        rows = np.load(d / "rows.npy")
        coords = np.load(d / "umap.npy")
        knn = np.load(d / "knn.npy")
    except (OSError, ValueError):
        return None
    if len(rows) != len(coords):
        return None
    return MapResult(rows, coords, knn, bool(meta["sampled"]), meta.get("stratified_by"), cached=True)


def _pca(sr: StudioRun, rows: np.ndarray, dims: int, train: int, seed: int, kind: str) -> np.ndarray:
    """float32 (M, dims) PCA projection of the rows' embeddings (faiss PCA fitted on a subsample)."""
    import faiss

    d_in = feature_dim(sr.run, kind)
    dims = min(dims, d_in, len(rows))
    rng = np.random.default_rng(seed)
    fit_rows = np.sort(rng.choice(rows, size=min(train, len(rows)), replace=False))
    pca = faiss.PCAMatrix(d_in, dims)
    pca.train(np.ascontiguousarray(embed(sr.run, fit_rows, kind)))
    out = np.empty((len(rows), dims), dtype=np.float32)
    for start, x in embed_chunks(sr.run, rows, kind):
        out[start : start + len(x)] = pca.apply(np.ascontiguousarray(x))
    return out


def knn_graph(
    x: np.ndarray, k: int, progress: Progress | None = None, span: tuple[float, float] = (0, 1), chunk: int = 8_192
) -> tuple[np.ndarray, np.ndarray]:
    """Exact k nearest neighbours of every row of ``x`` among the rows of ``x`` (self included, first).

    Returns (indices int64 (M, k), Euclidean distances float32 (M, k)).
    """
    import faiss

    index = faiss.IndexFlatL2(x.shape[1])
    index.add(x)
    idx = np.empty((len(x), k), dtype=np.int64)
    dist = np.empty((len(x), k), dtype=np.float32)
    for start in range(0, len(x), chunk):
        d2, i = index.search(x[start : start + chunk], k)
        idx[start : start + len(i)] = i
        dist[start : start + len(i)] = np.sqrt(np.maximum(d2, 0))
        if progress:
            f = min(1.0, (start + chunk) / len(x))
            progress(
                span[0] + (span[1] - span[0]) * f, f"k-NN graph: {min(start + chunk, len(x)):,} / {len(x):,} clips"
            )
    # faiss may return a duplicate point before the query itself; put self first so UMAP sees it
    self_col = idx[:, 0] != np.arange(len(x))
    if self_col.any():
        for r in np.flatnonzero(self_col):
            row = [j for j in idx[r] if j != r][: k - 1]
            idx[r] = [r, *row] + [r] * (k - 1 - len(row))
            dist[r] = np.concatenate([[0.0], np.sort(dist[r])[: k - 1]])
    return idx, dist


def compute_map(
    sr: StudioRun,
    *,
    spec: StudioSpec = STUDIO,
    kind: str = "both",
    progress: Progress | None = None,
    stratify_head: int | None = None,
    force: bool = False,
) -> MapResult:
    """The run's 2-D map, from the cache when valid, else computed (minutes at 100k clips) and cached."""
    if not force and (hit := load_map(sr, spec, kind)) is not None:
        if progress:
            progress(1.0, "map read from the run folder")
        return hit
    os.environ.setdefault("NUMBA_THREADING_LAYER", "workqueue")  # before numba is imported (perf-baselines §8)
    say = progress or (lambda f, m: None)

    sampled = sr.n > spec.map_max_points
    head = None
    if sampled:
        head = sr.recommend_head().head if stratify_head is None else stratify_head
        rows = stratified_sample(sr.head(head).joint, spec.map_max_points, spec.map_seed)
    else:
        rows = np.arange(sr.n, dtype=np.int64)
    m = len(rows)
    say(0.02, f"reading features of {m:,} clips")
    x = _pca(sr, rows, spec.map_pca_dims, spec.map_pca_train, spec.map_seed, kind)
    say(0.10, "PCA done")
    k = max(2, min(spec.map_neighbours, m - 1))
    if m <= 3:  # too few clips for a neighbour graph: the first two PCA axes are the map
        coords = np.zeros((m, 2), dtype=np.float32)
        coords[:, : min(2, x.shape[1])] = x[:, :2]
        knn = np.tile(np.arange(m), (m, 1))
    else:
        knn, dist = knn_graph(x, k, say, (0.10, 0.45))
        say(0.45, f"UMAP of {m:,} clips (this takes a while the first time)")
        import umap

        reducer = umap.UMAP(
            n_neighbors=k, min_dist=spec.map_min_dist, metric="euclidean", random_state=spec.map_seed,
            precomputed_knn=(knn, dist, None), low_memory=True, n_epochs=None,
        )  # fmt: skip
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            coords = reducer.fit_transform(x).astype(np.float32)
    result = MapResult(rows, coords, knn, sampled, head)
    say(0.97, "saving the map in the run folder")
    _save(sr, result, spec, kind)
    say(1.0, "map ready")
    return result


def _save(sr: StudioRun, res: MapResult, spec: StudioSpec, kind: str) -> None:
    d = _cache_dir(sr)
    try:
        d.mkdir(parents=True, exist_ok=True)
        for name, arr in (("rows", res.rows), ("umap", res.coords), ("knn", res.knn)):
            with atomic_write(d / f"{name}.npy", durable=False) as tmp:  # a cache: recomputed when lost
                np.save(tmp, arr)
        meta = {"signature": _signature(sr, spec, kind), "sampled": res.sampled, "stratified_by": res.stratified_by}
        atomic_write_text(d / "meta.json", json.dumps(meta, indent=2), durable=False)  # last: marks it complete
    except OSError:
        pass  # a read-only run folder: the map lives in this process only


HUMAN_LABEL = "human label"


def colour_options(sr: StudioRun, human: bool = False) -> list[str]:
    """What the map can be coloured by: clusters, ground truth when the catalog has it, and the human
    labels of the label store when there are any (``human``)."""
    opts = ["cluster"]
    if sr.ground_truth is not None:
        opts.append("ground truth")
    if human:
        opts.append(HUMAN_LABEL)
    return opts


def map_frame(
    sr: StudioRun, res: MapResult, head: int, colour: str = "cluster", human: np.ndarray | None = None
) -> pd.DataFrame:
    """pandas frame of the map's points: x, y, row, clip_id, cluster (of ``head``), label, colour.

    ``human`` is the effective human label of every clip of the run, in run order (None where a clip
    has none; ``LabelStore.effective_labels(head)["label"]``): it adds a ``human`` column, and with
    ``colour="human label"`` the colour column holds one CSS colour per point (grey for unlabelled)
    instead of a number for the colour scale.
    """
    import pandas as pd

    rows = res.rows
    joint = sr.head(head).joint[rows]
    df = pd.DataFrame({"x": res.coords[:, 0], "y": res.coords[:, 1], "row": rows,
                       "clip_id": sr.clip_ids[rows].astype(str), "cluster": joint})  # fmt: skip
    gt = sr.ground_truth
    if gt is not None:
        codes, names = gt
        c = codes[rows]
        df["label"] = np.where(c >= 0, np.asarray(names, dtype=object)[np.maximum(c, 0)], None)
    if human is not None:
        df["human"] = pd.Series(np.asarray(human, dtype=object)[rows], dtype=object)
    if colour == "ground truth" and gt is not None:
        df["colour"] = gt[0][rows]
    elif colour == HUMAN_LABEL and human is not None:
        from selavi_core.studio.labelling import human_colours

        df["colour"] = human_colours(df["human"])
    else:
        df["colour"] = joint
    return df


def cached_map(sr: StudioRun, spec: StudioSpec = STUDIO) -> MapResult | None:
    """The map already in this process or in the run folder, without computing anything."""
    hit = sr._memo.get(("map", spec))
    if hit is None and (hit := load_map(sr, spec)) is not None:
        sr._memo[("map", spec)] = hit
    return hit


def ensure_map(sr: StudioRun, progress: Progress | None = None, spec: StudioSpec = STUDIO) -> MapResult:
    """``cached_map`` or, failing that, ``compute_map`` (once per run even when several sessions ask at once)."""
    with sr._lock:
        res = cached_map(sr, spec) or compute_map(sr, spec=spec, progress=progress)
        sr._memo[("map", spec)] = res
        return res
