"""The training data path: windows decoded from the original files in DataLoader workers (paper), the uint8 cache
with its disk-size check (cpu-small)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from tiny_training import N_CLIPS, TINY

from selavi_core.catalog import catalog_hash, load_catalog
from selavi_core.config import PAPER
from selavi_core.runs.run import Run
from selavi_core.training.clip_cache import CacheSpaceError, build_cache, cache_bytes_per_clip, cache_key
from selavi_core.training.loader import Loader
from selavi_core.training.trainer import train
from selavi_core.training.windows import ClipFiles, WindowBatchMaker, batch_maker, open_source

#: The paper preset's code path (no cache, workers, exact 257-band log-mel of 1 s at 24 kHz) at toy widths.
PAPER_TINY = PAPER.with_overrides(
    video={"num_frames": 4, "crop": 24, "train_short_side": (26, 30)},
    cache={"short_side": 28},
    model={"video_widths": (8, 8, 16, 16), "audio_widths": (8, 8, 16, 16), "heads": 2, "clusters": 2},
    optim={"epochs": 1, "batch_size": 6, "workers": 2, "warmup_epochs": 0},
    schedule={"n_opts": 2, "bn_warmup_batches": 1, "groups": 1},
)


@pytest.mark.parametrize(
    "preset", [PAPER_TINY, TINY.with_overrides(cache={"enabled": False})], ids=["paper", "cpu-small"]
)
def test_windows_from_the_original_files_have_the_networks_shapes(tiny_catalog: Path, preset):
    files = ClipFiles(load_catalog(tiny_catalog))
    assert len(files.ok_rows) == N_CLIPS
    maker = WindowBatchMaker(files, preset)
    v, a = preset.video, preset.audio
    for train_aug in (True, False):
        video, audio = maker.batch(np.arange(5), train=train_aug, rng=np.random.default_rng(0))
        assert video.shape == (5, 3, v.num_frames, v.crop, v.crop) and video.dtype == torch.float32
        assert audio.shape == (5, 1, a.n_mels, a.n_frames)
        assert torch.isfinite(video).all() and torch.isfinite(audio).all()
        assert video.std() > 0.1  # real pictures, not the black frames of a failed decode
    assert not maker.failed
    # evaluation takes the centred window and crop: the same input twice
    one = maker.batch(np.arange(3), train=False, rng=np.random.default_rng(1))
    two = maker.batch(np.arange(3), train=False, rng=np.random.default_rng(2))
    assert all(torch.equal(x, y) for x, y in zip(one, two, strict=True))


def test_workers_give_the_same_batches_whatever_their_number(tiny_catalog: Path):
    maker = batch_maker(ClipFiles(load_catalog(tiny_catalog)), PAPER_TINY)
    batches = [np.arange(i, i + 4) for i in range(0, 20, 4)]
    got = {}
    for workers in (1, 2):
        loader = Loader(maker, workers=workers, device=torch.device("cpu"))
        try:
            got[workers] = list(loader.iterate(batches, train=True, rng=np.random.default_rng(7)))
            again = list(loader.iterate(batches[:2], train=True, rng=np.random.default_rng(7)))  # persistent pool
        finally:
            loader.close()
        assert len(got[workers]) == len(batches)
        assert all(torch.equal(x, y) for x, y in zip(again[0], got[workers][0], strict=True))
    for one, two in zip(got[1], got[2], strict=True):
        assert torch.equal(one[0], two[0]) and torch.equal(one[1], two[1])
    assert not torch.equal(got[1][0][0], got[1][1][0])  # batches differ from one another


def test_in_process_batches_draw_from_the_callers_generator_in_order(tiny_catalog: Path):
    """workers=0 is BatchMaker.batch called in order with the caller's generator (cpu-small's calibrated draws)."""
    cache = build_cache(load_catalog(tiny_catalog), tiny_catalog, catalog_hash(tiny_catalog), TINY, workers=1)
    maker = batch_maker(cache, TINY)
    batches = [np.arange(0, 6), np.arange(6, 12)]
    loader = Loader(maker, workers=0, device=torch.device("cpu"))
    got = list(loader.iterate(batches, train=True, rng=np.random.default_rng(3)))
    rng = np.random.default_rng(3)
    want = [maker.batch(rows, train=True, rng=rng) for rows in batches]
    for x, y in zip(got, want, strict=True):
        assert torch.equal(x[0], y[0]) and torch.equal(x[1], y[1])


def test_the_cache_refuses_to_fill_the_disk_with_a_clear_message(tiny_catalog: Path):
    catalog = load_catalog(tiny_catalog)
    preset = TINY.with_overrides(cache={"short_side": 30})  # a cache key no other test builds
    per_clip = cache_bytes_per_clip(preset, 2.0)
    with pytest.raises(CacheSpaceError) as err:
        build_cache(catalog, tiny_catalog, catalog_hash(tiny_catalog), preset, free_bytes=per_clip * 3)
    message = str(err.value)
    assert f"for {N_CLIPS} clips would take" in message and "free" in message
    assert "cache.max_seconds" in message and "cache.enabled = False" in message
    assert not (tiny_catalog / "cache" / cache_key(preset, catalog_hash(tiny_catalog))).exists()
    # the paper preset's inputs: 14.7 MB of frames a ten-second clip, 2.9 TB for VGG-Sound
    assert 14.7e6 < cache_bytes_per_clip(PAPER, 10.0) < 15.3e6


def test_the_paper_path_trains_and_assigns_without_a_cache(tiny_catalog: Path, tmp_path: Path):
    before = set((tiny_catalog / "cache").glob("*")) if (tiny_catalog / "cache").is_dir() else set()
    source = open_source(load_catalog(tiny_catalog), tiny_catalog, catalog_hash(tiny_catalog), PAPER_TINY)
    assert isinstance(source, ClipFiles)
    run_dir = train(tiny_catalog, tmp_path / "run", PAPER_TINY, device="cpu", log=lambda *a: None)
    after = set((tiny_catalog / "cache").glob("*")) if (tiny_catalog / "cache").is_dir() else set()
    assert after == before  # no whole-set cache was built
    run = Run(run_dir)
    assert run.n_clips == N_CLIPS and run.heads == 2
    epoch = json.loads((run_dir / "train_log.jsonl").read_text().splitlines()[0])
    assert epoch["type"] == "epoch" and epoch["clips_per_s"] > 0 and 0.0 <= epoch["data_wait"] <= 1.0
    raw = np.load(run_dir / "features" / "raw_video.npy")
    assert raw.shape[0] == N_CLIPS and np.isfinite(raw).all()
