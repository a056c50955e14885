"""The paper's cluster-quality table for one run, against the catalog's ground truth (selavi-method.md §7).

SeLaVi's protocol scores every head's joint prediction argmax_k p_v * p_a and reports the head with
the highest NMI against the ground truth. That is an *oracle* choice: it needs the labels the method
claims not to need. So the result also carries head 0 and the mean over heads (label-free choices)
and says which is which. Baselines put the numbers in context: the best head's video-only and
audio-only predictions (how much each modality carries alone), and spherical k-means with faiss on
the run's pooled features (what "clustering the features after the fact" gives, the comparison the
README makes for supervised and MIL-NCE features). The same k-means on raw inputs (a few tiny grey
frames, per-band log-mel statistics; see raw_features.py) shows what no learning at all gives.

Only clips with a known label are scored; clips without one still take part in k-means, as they do
in training, because the setting is transductive (cluster the whole unlabelled collection).
"""

from __future__ import annotations

import itertools
import os
import time
from collections.abc import Iterator
from typing import Any

import numpy as np

from selavi_core.errors import RunError
from selavi_core.evaluation.metrics import UNKNOWN, clustering_scores
from selavi_core.features import KMEANS_NITER, av_concat, kmeans_labels, kmeans_runs, l2_normalise
from selavi_core.progress import progress
from selavi_core.runs.raw_features import load_raw_features
from selavi_core.runs.run import Run

METRIC_KEYS = ("nmi", "anmi", "ari", "accuracy", "purity", "purity_weighted", "entropy")

NOTE = (
    "best_head is an oracle choice: the head with the highest NMI against the ground truth, as in SeLaVi's "
    "evaluation protocol; head0 and mean_over_heads are choices that need no labels"
)


def _baseline_features(run: Run) -> Iterator[tuple[str, str, np.ndarray]]:
    """(name, modality, features) for the k-means baselines, one at a time to bound memory (1.6 GB at 200k).

    The concatenation L2-normalises each modality first so that neither dominates by its scale.
    """
    video = l2_normalise(run.features("video"))
    yield "k-means on video features", "video", video
    audio = l2_normalise(run.features("audio"))
    yield "k-means on audio features", "audio", audio
    yield "k-means on video+audio features", "concat", av_concat(video, audio, normalised=True)


def _standardise_columns(x: np.ndarray) -> np.ndarray:
    """A float32 copy of ``x`` with every dimension at zero mean and unit variance over the clips.

    Raw dimensions live on unrelated scales (a band's mean log-energy vs its spread; a pixel that is
    the same in every clip): standardising gives each the same say before the L2 normalisation. A
    constant dimension becomes 0. In place after one copy (0.8 GB at 200k clips x 1024 dimensions).
    """
    out = np.array(x, dtype=np.float32)
    out -= out.mean(axis=0, dtype=np.float64).astype(np.float32)
    std = np.sqrt(np.einsum("ij,ij->j", out, out, dtype=np.float64) / max(out.shape[0], 1)).astype(np.float32)
    out /= np.where(std > 0, std, np.float32(1))
    return out


def _raw_baseline_features(raw: dict[str, np.ndarray]) -> Iterator[tuple[str, str, np.ndarray]]:
    """(name, modality, features) of the raw-input k-means baselines: each block standardised per dimension
    and L2-normalised; their concatenation weighs the two blocks equally whatever their dimensions."""
    video = l2_normalise(_standardise_columns(raw["video"]))
    yield "k-means on raw video pixels", "raw-video", video
    audio = l2_normalise(_standardise_columns(raw["audio"]))
    yield "k-means on raw log-mel statistics", "raw-audio", audio
    yield "k-means on raw video + log-mel", "raw-concat", av_concat(video, audio, normalised=True)


def _json_scores(scores: dict[str, Any]) -> dict[str, Any]:
    return {
        key: (None if value is None else (int(value) if key == "k" else float(value))) for key, value in scores.items()
    }


def evaluate_run(
    run: Run | str | os.PathLike,
    *,
    adjusted: bool = True,
    baselines: bool = True,
    seed: int = 0,
    kmeans_niter: int = KMEANS_NITER,
    kmeans_redo: int | None = None,
) -> dict[str, Any]:
    """Every head's scores, the best head (oracle, by NMI) and the baselines, as one JSON-able dict.

    Keys: ``run, n_clips`` (labelled clips scored), ``n_unlabelled, n_classes, clusters, heads``
    (list of ``{head, k, nmi, anmi, ari, accuracy, purity, purity_weighted, entropy}``), ``best_head,
    head0, mean_over_heads, baselines`` (list of ``{name, kind, nmi, ari, accuracy, ...}``), ``note``
    and ``seconds``. ``anmi`` is ``None`` when ``adjusted`` is False. The k-means baselines include the
    raw-input ones (kinds ``kmeans-raw-video``, ``kmeans-raw-audio``, ``kmeans-raw-concat``) when the run
    folder holds raw features; otherwise ``raw_baselines_skipped`` says why. Raises ``RunError`` when the
    catalog has no labels for the run's clips.
    """
    t_start = time.perf_counter()
    run = run if isinstance(run, Run) else Run(run)
    truth = run.ground_truth
    if truth is None:
        raise RunError(
            f"the catalog of run {run.dir} ({run.meta.catalog_dir}) has no labels, so there is nothing to evaluate "
            "against; evaluation needs a labelled catalog (e.g. `selavi ingest --format csv` with a label column)"
        )
    codes, class_names = truth
    joint = np.asarray(run.assignments("joint"))
    if joint.shape[0] != codes.size:
        raise RunError(f"run {run.dir} has {joint.shape[0]} assignment rows but {codes.size} clips")
    known = codes != UNKNOWN
    y = codes[known]
    if y.size == 0:
        raise RunError(f"none of the {codes.size} clips of run {run.dir} has a label")

    heads = []
    for h in progress(range(joint.shape[1]), total=joint.shape[1], desc="scoring heads", unit="head"):
        scores = _json_scores(clustering_scores(y, joint[known, h], adjusted=adjusted))
        heads.append({"head": h, "k": scores.pop("k"), **scores})
    best = int(np.argmax([h["nmi"] for h in heads]))  # first head on ties
    t_heads = time.perf_counter() - t_start

    mean_over_heads = {
        key: (None if heads[0][key] is None else float(np.mean([h[key] for h in heads]))) for key in METRIC_KEYS
    }
    mean_over_heads["k"] = float(np.mean([h["k"] for h in heads]))

    result: dict[str, Any] = {
        "run": str(run.dir),
        "n_clips": int(y.size),
        "n_unlabelled": int(codes.size - y.size),
        "n_classes": int(np.unique(y).size),
        "classes": [class_names[c] for c in np.unique(y)],
        "clusters": int(run.clusters),
        "heads": heads,
        "best_head": best,
        "head0": heads[0],
        "mean_over_heads": mean_over_heads,
        "baselines": [],
        "note": NOTE,
    }
    seconds: dict[str, float] = {"heads": t_heads}
    if baselines:
        out = result["baselines"]
        for kind in ("video", "audio"):
            pred = np.asarray(run.assignments(kind)[:, best])
            scores = _json_scores(clustering_scores(y, pred[known], adjusted=adjusted))
            out.append({"name": f"{kind}-only, head {best}", "kind": f"{kind}-head", "k": scores.pop("k"), **scores})
        k = int(run.clusters)
        if codes.size < k:
            result["kmeans_skipped"] = f"k-means needs at least K = {k} clips, the run has {codes.size}"
        else:
            try:
                raw = load_raw_features(run.dir, codes.size)
            except RunError as err:
                raw = None
                result["raw_baselines_skipped"] = str(err)
            features = _baseline_features(run)
            if raw is not None:
                features = itertools.chain(features, _raw_baseline_features(raw))
            total = 3 if raw is None else 6
            for name, modality, feats in progress(features, total=total, desc="k-means baselines"):
                t0 = time.perf_counter()
                runs = kmeans_redo or kmeans_runs(feats.shape[0], k, feats.shape[1], kmeans_niter)
                pred = kmeans_labels(feats, k, seed=seed, niter=kmeans_niter, nredo=runs)
                scores = _json_scores(clustering_scores(y, pred[known], adjusted=adjusted))
                seconds[f"kmeans_{modality.replace('-', '_')}"] = time.perf_counter() - t0
                out.append({"name": name, "kind": f"kmeans-{modality}", "k": scores.pop("k"), **scores, "runs": runs})
        result["kmeans"] = {"k": k, "niter": kmeans_niter, "seed": seed, "spherical": True, "init": "k-means++"}
    seconds["total"] = time.perf_counter() - t_start
    result["seconds"] = seconds
    return result


def _pct(value: float | None) -> str:
    return "    -" if value is None else f"{100 * value:5.1f}"


def format_table(result: dict[str, Any]) -> str:
    """The result as a fixed-width text table: all heads (best marked '*'), their mean, and baselines."""
    lines = [
        f"SeLaVi evaluation of {result['run']}",
        f"{result['n_clips']:,} labelled clips"
        + (f" ({result['n_unlabelled']:,} without a label, not scored)" if result.get("n_unlabelled") else "")
        + f", {result['n_classes']} classes, K = {result['clusters']}, {len(result['heads'])} heads",
        "",
        f"{'head':>6} {'k':>5}   {'NMI':>5} {'aNMI':>5} {'ARI':>5} {'Acc':>5}  {'Purity':>6} {'wPurity':>7}  {'Entropy':>7}",
    ]

    def row(label: str, s: dict[str, Any]) -> str:
        k = f"{s['k']:5.0f}" if isinstance(s.get("k"), float) else f"{s.get('k', ''):>5}"
        return (
            f"{label:>6} {k}   {_pct(s['nmi'])} {_pct(s['anmi'])} {_pct(s['ari'])} {_pct(s['accuracy'])}"
            f"  {_pct(s['purity']):>6} {_pct(s['purity_weighted']):>7}  {s['entropy']:7.3f}"
        )

    for h in result["heads"]:
        mark = "*" if h["head"] == result["best_head"] else " "
        lines.append(row(f"{mark} {h['head']}", h))
    lines.append(row("mean", result["mean_over_heads"]))
    lines += [
        "",
        f"* head {result['best_head']}: best NMI against the ground truth, an oracle choice (SeLaVi's protocol);",
        "  head 0 and the mean need no labels. Scores in %, entropy in nats; Purity is the unweighted mean",
        "  over clusters (as in the official code), wPurity the size-weighted one.",
    ]
    if result.get("baselines"):
        width = max(len(b["name"]) for b in result["baselines"])
        lines += ["", f"{'baseline':<{width}} {'k':>5}   {'NMI':>5} {'ARI':>5} {'Acc':>5}"]
        for b in result["baselines"]:
            lines.append(f"{b['name']:<{width}} {b['k']:>5}   {_pct(b['nmi'])} {_pct(b['ari'])} {_pct(b['accuracy'])}")
    if result.get("kmeans_skipped"):
        lines += ["", f"k-means baselines skipped: {result['kmeans_skipped']}"]
    elif result.get("raw_baselines_skipped"):
        lines += ["", f"raw-input baselines skipped: {result['raw_baselines_skipped']}"]
    return "\n".join(lines)
