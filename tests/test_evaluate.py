"""``selavi evaluate`` on a real run folder (write_run) next to a real catalog (clips.parquet) with planted clusters."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy.optimize import linear_sum_assignment
from sklearn.metrics import adjusted_mutual_info_score, adjusted_rand_score, normalized_mutual_info_score
from sklearn.metrics.cluster import contingency_matrix

from selavi_core.catalog import CATALOG_COLUMNS, catalog_hash
from selavi_core.cli import main
from selavi_core.errors import RunError
from selavi_core.evaluation.evaluate import evaluate_run, format_table
from selavi_core.features import kmeans_labels, kmeans_runs
from selavi_core.runs.raw_features import RAW_FILES
from selavi_core.runs.run import Run, RunMeta, write_run

CLASSES = ["bird", "car", "dog", "drum", "rain", "siren"]
HEAD_KEYS = {"head", "k", "nmi", "anmi", "ari", "accuracy", "purity", "purity_weighted", "entropy"}


@dataclass
class SyntheticRun:
    dir: Path
    labels: list[str | None]  # per clip, in run order (None: no label)
    joint: np.ndarray


def _write_catalog(folder: Path, clip_ids: list[str], labels: list[str | None]) -> Path:
    """A clips.parquet with every catalog column, as `selavi ingest` writes it."""
    folder.mkdir(parents=True, exist_ok=True)
    n = len(clip_ids)
    df = pd.DataFrame(
        {
            "clip_id": clip_ids,
            "path": [f"videos/{c}.mp4" for c in clip_ids],
            "start_s": np.zeros(n),
            "end_s": np.full(n, 2.0),
            "label": pd.array(labels, dtype="string"),
            "split": ["train"] * n,
            "duration_s": np.full(n, 2.0),
            "fps": np.full(n, 25.0),
            "width": np.full(n, 160),
            "height": np.full(n, 120),
            "has_audio": np.ones(n, dtype=bool),
            "video_codec": ["h264"] * n,
            "audio_rate": np.full(n, 24_000),
            "status": ["ok"] * n,
            "error": pd.array([None] * n, dtype="string"),
            "source_id": clip_ids,
        }
    )
    assert tuple(df.columns) == CATALOG_COLUMNS
    df.to_parquet(folder / "clips.parquet", index=False)
    return folder


def _make_run(root: Path, *, labelled: bool = True, seed: int = 0) -> SyntheticRun:
    """600 clips of 6 classes (10% unlabelled); 3 heads: noisy (0), good (1), random (2); K = 6.

    Video features are tight class blobs (k-means should nail them); audio features are loose ones.
    """
    rng = np.random.default_rng(seed)
    n, c, k, heads = 600, len(CLASSES), 6, 3
    y = rng.integers(0, c, n)
    labels: list[str | None] = [CLASSES[i] if labelled and rng.random() > 0.1 else None for i in y]
    clip_ids = [f"clip{i:04d}" for i in range(n)]
    cat = _write_catalog(root / "catalog", clip_ids, labels)

    def noisy(keep: float) -> np.ndarray:
        relabel = rng.permutation(k)  # cluster ids are arbitrary per head
        return np.where(rng.random(n) < keep, relabel[y % k], rng.integers(0, k, n))

    joint = np.stack([noisy(0.55), noisy(0.92), rng.integers(0, k, n)], axis=1)
    video = np.stack([noisy(0.5), noisy(0.8), rng.integers(0, k, n)], axis=1)
    audio = np.stack([noisy(0.4), noisy(0.7), rng.integers(0, k, n)], axis=1)
    centres_v = rng.normal(size=(c, 32)) * 4
    centres_a = rng.normal(size=(c, 16))
    features_video = centres_v[y] + rng.normal(size=(n, 32)) * 0.5
    features_audio = centres_a[y] + rng.normal(size=(n, 16)) * 1.5
    meta = RunMeta(
        catalog_dir=str(cat),
        catalog_hash=catalog_hash(cat),
        heads=heads,
        clusters=k,
        preset="cpu-small",
        source="synthetic",
    )
    run_dir = root / "run"
    write_run(
        run_dir,
        meta,
        clip_ids,
        joint=joint,
        video=video,
        audio=audio,
        confidence=rng.random((n, heads)),
        margin=rng.random((n, heads)),
        features_video=features_video,
        features_audio=features_audio,
        priors=np.full((heads, k), 1 / k),
    )
    return SyntheticRun(run_dir, labels, joint)


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory: pytest.TempPathFactory) -> SyntheticRun:
    return _make_run(tmp_path_factory.mktemp("evaluate"))


@pytest.fixture(scope="module")
def result(synthetic: SyntheticRun) -> dict:
    return evaluate_run(synthetic.dir)


def test_result_keys_and_types(result: dict, synthetic: SyntheticRun) -> None:
    assert json.loads(json.dumps(result)) == result  # JSON-able as is
    assert result["n_clips"] == sum(label is not None for label in synthetic.labels)
    assert result["n_unlabelled"] == sum(label is None for label in synthetic.labels)
    assert result["n_classes"] == len(CLASSES)
    assert isinstance(result["best_head"], int)
    assert len(result["heads"]) == 3
    for i, head in enumerate(result["heads"]):
        assert set(head) >= HEAD_KEYS
        assert head["head"] == i and isinstance(head["k"], int)
        for key in HEAD_KEYS - {"head", "k"}:
            assert isinstance(head[key], float), key
    assert "oracle" in result["note"]
    assert result["head0"] == result["heads"][0]
    assert result["mean_over_heads"]["nmi"] == pytest.approx(np.mean([h["nmi"] for h in result["heads"]]))
    names = [b["name"] for b in result["baselines"]]
    assert len(names) == 5 and len(set(names)) == 5
    for b in result["baselines"]:
        assert {"name", "nmi", "ari", "accuracy"} <= set(b)
        assert all(isinstance(b[key], float) for key in ("nmi", "ari", "accuracy"))


def test_head_metrics_equal_independent_sklearn(result: dict, synthetic: SyntheticRun) -> None:
    known = np.array([label is not None for label in synthetic.labels])
    y = np.array([label for label in synthetic.labels if label is not None])
    for head in result["heads"]:
        pred = synthetic.joint[known, head["head"]]
        assert head["nmi"] == pytest.approx(normalized_mutual_info_score(y, pred), abs=1e-12)
        assert head["anmi"] == pytest.approx(adjusted_mutual_info_score(y, pred), abs=1e-10)
        assert head["ari"] == pytest.approx(adjusted_rand_score(y, pred), abs=1e-12)
        table = contingency_matrix(y, pred)  # classes x clusters
        rows, cols = linear_sum_assignment(-table)
        assert head["accuracy"] == pytest.approx(table[rows, cols].sum() / y.size)
        sizes = table.sum(axis=0)
        assert head["purity"] == pytest.approx(np.mean(table.max(axis=0) / sizes))
        assert head["purity_weighted"] == pytest.approx(table.max(axis=0).sum() / y.size)
        share = table / sizes
        ent = -np.sum(np.where(share > 0, share * np.log(np.where(share > 0, share, 1)), 0), axis=0)
        assert head["entropy"] == pytest.approx(ent.mean())
        assert head["k"] == table.shape[1]


def test_best_head_is_argmax_nmi(result: dict) -> None:
    nmis = [h["nmi"] for h in result["heads"]]
    assert result["best_head"] == int(np.argmax(nmis))
    assert result["best_head"] == 1  # the planted good head
    assert result["heads"][2]["nmi"] < 0.1  # the random head


def test_baselines(result: dict, synthetic: SyntheticRun) -> None:
    by_kind = {b["kind"]: b for b in result["baselines"]}
    run = Run(synthetic.dir)
    known = np.array([label is not None for label in synthetic.labels])
    y = np.array([label for label in synthetic.labels if label is not None])
    for kind in ("video", "audio"):
        pred = np.asarray(run.assignments(kind))[known, result["best_head"]]
        assert by_kind[f"{kind}-head"]["nmi"] == pytest.approx(normalized_mutual_info_score(y, pred), abs=1e-12)
    # the video features are tight, well separated blobs: spherical k-means must find the classes
    assert by_kind["kmeans-video"]["nmi"] > 0.95
    assert by_kind["kmeans-video"]["accuracy"] > 0.95
    assert by_kind["kmeans-concat"]["nmi"] > 0.8
    assert by_kind["kmeans-audio"]["nmi"] < by_kind["kmeans-video"]["nmi"]


def test_format_table_marks_best_head(result: dict) -> None:
    text = format_table(result)
    best_line = [line for line in text.splitlines() if line.strip().startswith(f"* {result['best_head']} ")]
    assert len(best_line) == 1
    assert f"{100 * result['heads'][result['best_head']]['nmi']:.1f}" in best_line[0]
    assert "oracle choice" in text
    assert "k-means on video features" in text


def test_cli_json(synthetic: SyntheticRun, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["evaluate", str(synthetic.dir), "--json", "--no-baselines", "--no-anmi"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["baselines"] == []
    assert all(h["anmi"] is None for h in out["heads"])
    assert out["best_head"] == 1


def test_cli_table(synthetic: SyntheticRun, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["evaluate", str(synthetic.dir), "--no-baselines"]) == 0
    out = capsys.readouterr().out
    assert "oracle choice" in out and "NMI" in out


def test_unlabelled_catalog_is_a_clear_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    unlabelled = _make_run(tmp_path, labelled=False, seed=1)
    with pytest.raises(RunError, match="no labels"):
        evaluate_run(unlabelled.dir)
    assert main(["evaluate", str(unlabelled.dir), "--json"]) == 2
    assert "no labels" in capsys.readouterr().err


def test_missing_run_folder_is_a_clear_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["evaluate", str(tmp_path / "nope")]) == 2
    assert "not a run folder" in capsys.readouterr().err


def test_kmeans_runs_fit_the_budget() -> None:
    assert kmeans_runs(4_000, 28, 512) == 3  # AVE-sized: several seeded runs are cheap
    assert kmeans_runs(200_000, 309, 512) == 1  # VGG-Sound-sized: one run (~2.5e11 multiply-adds)


def test_kmeans_finds_many_separated_blobs() -> None:
    """40 blobs: random-point seeding almost surely merges some (40!/40^40 ~ 1e-16 to hit each once)."""
    rng = np.random.default_rng(9)
    y = rng.integers(0, 40, 4_000)
    x = rng.normal(size=(40, 64))[y] * 3 + rng.normal(size=(4_000, 64)) * 0.3
    labels = kmeans_labels(x, 40, seed=0, nredo=1)
    assert normalized_mutual_info_score(y, labels) > 0.99


def test_old_run_without_raw_features_says_how_to_get_them(result: dict, synthetic: SyntheticRun) -> None:
    """A run folder from before raw features evaluates as before, and says in one line why raw baselines are missing."""
    assert not (synthetic.dir / "features" / "raw_video.npy").exists()
    assert "selavi assign" in result["raw_baselines_skipped"]
    assert not any(b["kind"].startswith("kmeans-raw") for b in result["baselines"])
    lines = [line for line in format_table(result).splitlines() if "raw" in line]
    assert len(lines) == 1 and lines[0].startswith("raw-input baselines skipped") and "selavi assign" in lines[0]


def _put_raw(run_dir: Path, blocks: dict[str, np.ndarray]) -> None:
    """Raw blocks written straight into a run folder (as an older or hand-edited folder may hold them)."""
    for modality, x in blocks.items():
        np.save(Path(run_dir) / "features" / RAW_FILES[modality], np.asarray(x, np.float32))


def test_raw_baselines_cluster_the_raw_blocks(tmp_path: Path) -> None:
    """Raw blocks with planted classes (video) and none (audio): the raw baselines score them like any k-means."""
    planted = _make_run(tmp_path / "ok", seed=2)
    n = len(planted.labels)
    y = pd.Categorical(pd.read_parquet(Path(planted.dir).parent / "catalog" / "clips.parquet")["label"]).codes
    rng = np.random.default_rng(3)
    # video: class blobs, two dimensions of loud noise that would decide k-means without the per-dimension
    # standardisation (NMI ~0.01), and an offset
    video = (rng.normal(size=(len(CLASSES), 48)) * 3)[np.maximum(y, 0)] + rng.normal(size=(n, 48))
    video = np.concatenate([video, rng.normal(size=(n, 2)) * 1000], axis=1) + 100
    _put_raw(planted.dir, {"video": video, "audio": rng.normal(size=(n, 10))})
    out = evaluate_run(planted.dir, kmeans_redo=1)
    assert "raw_baselines_skipped" not in out
    by_kind = {b["kind"]: b for b in out["baselines"]}
    assert by_kind["kmeans-raw-video"]["nmi"] > 0.95
    assert by_kind["kmeans-raw-audio"]["nmi"] < 0.1  # noise
    assert 0.0 <= by_kind["kmeans-raw-concat"]["nmi"] <= 1.0
    assert [b["kind"] for b in out["baselines"]][-3:] == ["kmeans-raw-video", "kmeans-raw-audio", "kmeans-raw-concat"]

    # raw blocks that do not match the run's clips (a run rewritten by other means) are not used
    stale = _make_run(tmp_path / "stale", seed=4)
    _put_raw(stale.dir, {"video": video[:-1], "audio": rng.normal(size=(n - 1, 10))})
    out = evaluate_run(stale.dir, kmeans_redo=1)
    assert f"{n} clips" in out["raw_baselines_skipped"] and "selavi assign" in out["raw_baselines_skipped"]
    assert len(out["baselines"]) == 5
