"""Raw-input baselines on a real catalog: two visually and audibly different kinds of scene, encoded for real.

"sky" clips are bright above a horizon and hum low; "wall" clips are bright on the left and whistle
high. Colours, brightness, the split's position, a moving square, noise and loudness change per
clip, so raw inputs separate the kinds only through what the kinds share (layout, spectrum).
"""

from __future__ import annotations

import json
import shutil
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.metrics import normalized_mutual_info_score

from selavi_core.catalog import catalog_hash, load_catalog
from selavi_core.cli import main
from selavi_core.config import CPU_SMALL, RAW_BASELINE
from selavi_core.evaluation.evaluate import evaluate_run, format_table
from selavi_core.features import kmeans_labels
from selavi_core.model.logmel import frame_count, log_mel
from selavi_core.model.networks import build_model
from selavi_core.runs.assign import write_assignments
from selavi_core.runs.raw_features import (
    RAW_FILES,
    frame_indices,
    load_raw_features,
    raw_audio_features,
    raw_video_features,
)
from selavi_core.runs.run import Run
from selavi_core.training.clip_cache import ClipCache, build_cache

N_PER_CLASS = 12
SIZE = (48, 36)  # width, height
FPS = 8
SECONDS = 2.0
RATE = 16_000
RAW_KINDS = ("kmeans-raw-video", "kmeans-raw-audio", "kmeans-raw-concat")

#: cpu-small at toy size: a small cache and a tiny network, so assignment takes a second.
PRESET = CPU_SMALL.with_overrides(
    video={"num_frames": 2, "crop": 24, "train_short_side": (26, 30)},
    cache={"fps": 4.0, "short_side": 28},
    model={"video_widths": (8, 8, 16, 16), "audio_widths": (8, 8, 16, 16), "heads": 2, "clusters": 2},
)


def _scene(kind: str, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """(frames (T, H, W, 3) uint8, mono wave (S,) float32 in [-1, 1]) of one clip of ``kind``."""
    w, h = SIZE
    n = int(SECONDS * FPS)
    light, dark = rng.uniform(150, 250, 3), rng.uniform(10, 90, 3)
    frames = np.empty((n, h, w, 3), np.float64)
    split = rng.uniform(0.4, 0.6)
    ys, xs = np.mgrid[0:h, 0:w]
    bright = (ys < split * h) if kind == "sky" else (xs < split * w)
    for i in range(n):
        frames[i] = np.where(bright[..., None], light, dark)
        x0, y0 = int((w - 6) * (0.5 + 0.4 * np.sin(0.5 * i + rng.uniform(0, 6)))), int(rng.integers(0, h - 6))
        frames[i, y0 : y0 + 6, x0 : x0 + 6] = rng.uniform(0, 255, 3)
    frames += rng.normal(0, 8, frames.shape)
    t = np.arange(int(SECONDS * RATE)) / RATE
    tone = 350.0 if kind == "sky" else 3_000.0
    wave = rng.uniform(0.1, 0.5) * np.sin(2 * np.pi * tone * rng.uniform(0.95, 1.05) * t)
    wave += rng.normal(0, 0.01, t.size)
    return np.clip(frames, 0, 255).astype(np.uint8), wave.astype(np.float32)


def _encode(path: Path, frames: np.ndarray, wave: np.ndarray) -> None:
    """An H.264 + AAC MP4 of ``frames`` at FPS and ``wave`` at RATE (muxed in time order once encoded)."""
    with av.open(str(path), "w") as out:
        video = out.add_stream("libx264", rate=FPS, options={"preset": "veryfast", "crf": "18"})
        video.width, video.height, video.pix_fmt = SIZE[0], SIZE[1], "yuv420p"
        audio = out.add_stream("aac", rate=RATE)
        audio.layout = "mono"
        packets = []
        for i, img in enumerate(frames):
            frame = av.VideoFrame.from_ndarray(img, format="rgb24")
            frame.pts, frame.time_base = i, Fraction(1, FPS)
            packets += video.encode(frame)
        pcm = np.round(wave * 32767).astype(np.int16)
        for start in range(0, pcm.size, 1024):
            chunk = av.AudioFrame.from_ndarray(pcm[None, start : start + 1024], format="s16", layout="mono")
            chunk.sample_rate, chunk.pts, chunk.time_base = RATE, start, Fraction(1, RATE)
            packets += audio.encode(chunk)
        packets += video.encode(None) + audio.encode(None)
        packets.sort(key=lambda p: float((p.dts if p.dts is not None else p.pts) * p.time_base))
        for packet in packets:
            out.mux(packet)


@pytest.fixture(scope="module")
def scenes(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, ClipCache, np.ndarray]:
    """(catalog_dir, clip cache, label per ok cache row) of 24 real clips, ingested through the CLI."""
    src = tmp_path_factory.mktemp("scenes_src")
    rng = np.random.default_rng(5)
    rows = []
    for i in range(2 * N_PER_CLASS):
        kind = ("sky", "wall")[i % 2]
        _encode(src / f"s{i:02d}.mp4", *_scene(kind, rng))
        rows.append({"path": f"s{i:02d}.mp4", "label": kind})
    pd.DataFrame(rows).to_csv(src / "labels.csv", index=False)
    catalog_dir = tmp_path_factory.mktemp("scenes_catalog")
    assert main(["ingest", str(src), "--format", "csv", "--out", str(catalog_dir)]) == 0
    cache = build_cache(load_catalog(catalog_dir), catalog_dir, catalog_hash(catalog_dir), PRESET, workers=1)
    assert len(cache.ok_rows) == 2 * N_PER_CLASS and cache.log_mels is not None
    labels = load_catalog(catalog_dir).set_index("clip_id").loc[cache.index["clip_id"], "label"].to_numpy()
    return catalog_dir, cache, labels[cache.ok_rows].astype(str)


@pytest.fixture(scope="module")
def assigned(scenes, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A run folder written by ``write_assignments`` with a randomly initialised tiny network."""
    catalog_dir, cache, _ = scenes
    torch.manual_seed(0)
    model = build_model(PRESET, PRESET.model.clusters).eval()
    out = tmp_path_factory.mktemp("scenes_run")
    return write_assignments(
        model,
        cache,
        PRESET,
        catalog_dir=catalog_dir,
        catalog_hash=catalog_hash(catalog_dir),
        out_dir=out,
        device=torch.device("cpu"),
        checkpoint=None,
        priors=None,
        prior="uniform",
        source="assign",
    )


def _standardised(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, np.float64)
    return (x - x.mean(0)) / np.where(x.std(0) > 0, x.std(0), 1)


def test_frame_indices_spread_over_each_clip() -> None:
    np.testing.assert_array_equal(
        frame_indices(np.array([8, 2, 1, 0]), 4), [[1, 3, 5, 7], [0, 0, 1, 1], [0] * 4, [0] * 4]
    )


def test_raw_video_features_are_tiny_standardised_frames(scenes, tmp_path: Path) -> None:
    _, cache, _ = scenes
    rows = cache.ok_rows
    x = raw_video_features(cache, rows)
    assert x.dtype == np.float32 and x.shape == (rows.size, RAW_BASELINE.frames * RAW_BASELINE.side**2)
    np.testing.assert_allclose(x.mean(axis=1), 0, atol=1e-5)
    np.testing.assert_allclose(x.std(axis=1), 1, atol=1e-4)
    # a clip's features are its own: independent of which other rows are asked for, and in their order
    np.testing.assert_array_equal(raw_video_features(cache, rows[::-1][:5]), x[::-1][:5])
    # per-clip standardisation: a brighter, lower-contrast copy of a clip's pixels has the same features
    frames = np.asarray(cache.frames[rows[0]], np.float64)
    np.save(tmp_path / "frames.npy", np.stack([frames, frames * 0.5 + 60]).round().astype(np.uint8))
    np.save(tmp_path / "n_frames.npy", np.repeat(cache.n_frames[rows[:1]], 2))
    both = raw_video_features(ClipCache(tmp_path), np.array([0, 1]))
    np.testing.assert_allclose(both[0], x[0], atol=1e-5)
    np.testing.assert_allclose(both[1], x[0], atol=0.05)


def test_raw_audio_features_are_band_statistics_of_the_log_mel(scenes, tmp_path: Path) -> None:
    _, cache, labels = scenes
    rows, spec = cache.ok_rows, PRESET.audio
    x = raw_audio_features(cache, rows, PRESET)
    assert x.dtype == np.float32 and x.shape == (rows.size, 2 * spec.n_mels)
    for j in (0, 1, rows.size - 1):  # the log-mel of the clip's own audio, its mean and std per band over time
        n = int(cache.n_samples[rows[j]])
        mels = log_mel(torch.from_numpy(np.asarray(cache.audio[rows[j], :n], np.float32)), spec)[0, 0].numpy()
        assert mels.shape[1] == frame_count(n, spec)
        np.testing.assert_allclose(x[j, : spec.n_mels], mels.mean(axis=1), atol=0.02)
        np.testing.assert_allclose(x[j, spec.n_mels :], mels.std(axis=1), atol=0.05)
    # the same from a cache without whole-clip log-mels (computed per chunk instead)
    bare = tmp_path / "bare"
    shutil.copytree(cache.dir, bare, ignore=shutil.ignore_patterns("logmel.npy"))
    assert ClipCache(bare).log_mels is None
    np.testing.assert_allclose(raw_audio_features(ClipCache(bare), rows, PRESET), x, atol=0.02)
    # the hum and the whistle put their energy in different bands
    low = x[labels == "sky", : spec.n_mels].mean(0)
    high = x[labels == "wall", : spec.n_mels].mean(0)
    assert np.argmax(low) < np.argmax(high)


def test_raw_video_separates_the_scenes_and_shuffled_labels_do_not(scenes) -> None:
    _, cache, labels = scenes
    pred = kmeans_labels(_standardised(raw_video_features(cache, cache.ok_rows)), 2, seed=0)
    assert normalized_mutual_info_score(labels, pred) > 0.9
    shuffled = np.random.default_rng(1).permutation(labels)
    assert normalized_mutual_info_score(shuffled, pred) < 0.3


def test_assignment_writes_raw_features_and_evaluate_scores_them(
    scenes, assigned: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _, cache, labels = scenes
    run = Run(assigned)
    raw = load_raw_features(assigned, run.n_clips)
    for name in RAW_FILES.values():
        assert np.load(assigned / "features" / name).dtype == np.float32
    np.testing.assert_array_equal(raw["video"], raw_video_features(cache, cache.ok_rows))
    np.testing.assert_array_equal(raw["audio"], raw_audio_features(cache, cache.ok_rows, PRESET))
    assert list(run.catalog["label"]) == list(labels)  # run order = cache row order

    result = evaluate_run(assigned, kmeans_redo=1)
    assert json.loads(json.dumps(result)) == result
    assert "raw_baselines_skipped" not in result
    by_kind = {b["kind"]: b for b in result["baselines"]}
    assert len(result["baselines"]) == 8 and set(RAW_KINDS) <= set(by_kind)
    kmeans_keys = set(by_kind["kmeans-video"])
    for kind in RAW_KINDS:
        assert set(by_kind[kind]) == kmeans_keys and by_kind[kind]["k"] == 2
        assert 0.0 <= by_kind[kind]["nmi"] <= 1.0 and 0.0 <= by_kind[kind]["accuracy"] <= 1.0
    # the scenes differ in layout and in sound: every raw baseline finds them
    for kind in RAW_KINDS:
        assert by_kind[kind]["nmi"] > 0.9, kind
    assert {"kmeans_raw_video", "kmeans_raw_audio", "kmeans_raw_concat"} <= set(result["seconds"])

    table = format_table(result)
    for name in ("k-means on raw video pixels", "k-means on raw log-mel statistics", "k-means on raw video + log-mel"):
        assert name in table
    assert "raw-input baselines skipped" not in table

    assert main(["evaluate", str(assigned), "--json"]) == 0
    cli = json.loads(capsys.readouterr().out)
    assert [b["name"] for b in cli["baselines"]] == [b["name"] for b in result["baselines"]]
