"""SeLaVi learns: a short cpu-small run on 300 zero-download AV-digits clips clusters the digits far better than
k-means on the raw inputs.

Every other training test checks mechanics (shapes, resume, determinism) on clips that carry no shared label.
This one checks the claim the project rests on, on real media: sklearn digits shown and espeak-ng speech saying
the same digit (``selavi demo-data --fallback``, 30 clips per digit), ingested, trained, evaluated. It checks
learning, not time.

The run is cpu-small with overrides that make a few hundred clips learn in a few minutes of one core:
2 heads, exactly 160 epochs (one labelling per epoch, as the preset does), batch 16 at Adam lr 2e-3, the
geometric, colour and spectrogram jitter off (the preset's jitter stops 3,000 clips being memorised over 162,000
samples; over 48,000 samples it only slows learning: with it, 80 epochs at batch 64 reached best head 0.20, seed 1),
and a narrower video trunk (widths 16-128 instead of 24-192: 2.8x less time in the video encoder, the audio's
unchanged). The refine rounds after training are the preset's.

Why these numbers: over 300 clips learning climbs slowly and the path is chaotic (the CPU's floating-point path
decides where a run stands after a thousand steps). Batch 32 for 80 epochs gave seed 1 best head 0.600 on the
Zen 4 machine it was calibrated on and 0.333 on CI's (raw log-mel k-means 0.255: margin 0.078, the test failed);
160 epochs at batch 32 still left seed 1 at 0.354 on a Sapphire Rapids machine. Twice the steps (batch 16) is
what made every seed clear the margin. At video widths 24-192 CI once ran out of the 900 s timeout while training
(the machines' speed varies 2-3x): the narrower trunk is the current setting. NMI of the best head,
single-threaded; the best raw-input k-means baseline is raw log-mel statistics at 0.255 (raw pixels 0.108, both
0.172):

    video    batch  epochs  seed  machine           refine s  best head  head 0   margin over raw
    24-192   32     80      1     Zen 4             1.0       0.600      0.529    +0.345
    24-192   32     80      1     CI                1.0       0.333      0.318    +0.078  (failed)
    24-192   32     80      2-5   Zen 4             1.0       0.48-0.67  0.48-0.67  +0.23-0.42
    24-192   32     160     1     Sapphire Rapids   1.0       0.354      0.354    +0.099
    24-192   32     160     3     Sapphire Rapids   1.0       0.659      0.659    +0.404
    24-192   16     160     1     Sapphire Rapids   1.0       0.637      0.634    +0.382
    24-192   16     160     2     Sapphire Rapids   1.0       0.740      0.733    +0.485  (before the exact alignment)
    24-192   16     160     3     Sapphire Rapids   1.0       0.464      0.464    +0.209
    16-128   16     160     1     Zen 4             1.0       0.465      0.464    +0.210
    16-128   16     160     1     Zen 4             0.5       0.485      0.485    +0.230
    16-128   16     160     2     Zen 4             0.5       0.756      0.749    +0.501
    16-128   16     160     3     Zen 4             1.0       0.568      0.568    +0.313
    16-128   16     160     3     Zen 4             0.5       0.562      0.562    +0.307
    16-128   16     160     4     Zen 4             1.0       0.828      0.828    +0.573
    16-128   16     160     4     Zen 4             0.5       0.797      0.788    +0.542

The test asserts a margin of 0.10 on seed 1, under half the smallest calibrated margin of this setting. Building
the 300 clips takes ~45 s; training at 16-128 took 15-16 min with two runs sharing the 2-core Zen 4 machine
(5.8 s an epoch; at 24-192 alone 9.5 s), hence this module's 1,200 s timeout (CI's 40 minutes hold it).
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from selavi_core.config import get_preset

# training alone can take 10-16 min on a slow 2-core machine (see above); the default 900 s is for other tests
pytestmark = [pytest.mark.slow, pytest.mark.timeout(1200)]

CLIPS_PER_DIGIT = 30
SEED = 1
#: The best head's NMI must exceed every raw-input k-means baseline by this much (calibration: 0.21-0.49).
MARGIN = 0.10
EPOCHS = 160
BATCH = 16
RAW_KINDS = ("kmeans-raw-video", "kmeans-raw-audio", "kmeans-raw-concat")

OVERRIDES: dict[str, dict[str, Any]] = {
    "model": {"heads": 2, "clusters": 10, "video_widths": (16, 32, 64, 128)},
    # exactly EPOCHS epochs (no train_samples stretch), relabelled once an epoch like the preset
    "optim": {"epochs": EPOCHS, "train_samples": None, "batch_size": BATCH, "lr": 2e-3, "seed": SEED},
    "schedule": {"n_opts": EPOCHS + 1},
    "video": {"max_rotate_deg": 0.0, "max_shear": 0.0, "colour_augment": False},
    "audio": {"spec_augment": False, "max_time_stretch": 0.0, "max_freq_warp": 0.0},
}


@pytest.fixture(scope="module")
def learned(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any], list[str]]:
    """(run_dir, evaluate_run result, training log lines) of the calibrated run on a fresh fallback build."""
    if shutil.which("espeak-ng") is None:
        pytest.skip("espeak-ng is not installed: the zero-download AV-digits set needs it for the speech")
    import torch

    from selavi_core.cli import main as cli
    from selavi_core.datasets.avdigits import build_avdigits
    from selavi_core.evaluation.evaluate import evaluate_run
    from selavi_core.training.trainer import train

    root = tmp_path_factory.mktemp("learning")
    clips, catalog, run = root / "avdigits", root / "catalog", root / "run"
    build_avdigits(clips, sources="fallback", limit_per_class=CLIPS_PER_DIGIT, seed=0, log=lambda msg: None)
    assert cli(["ingest", str(clips), "--format", "csv", "--out", str(catalog)]) == 0

    preset = get_preset("cpu-small").with_overrides(**OVERRIDES)
    lines: list[str] = []
    # One thread, as calibrated: the numbers above are reproducible, and on a busy 2-core machine OpenMP's
    # spinning threads can make small models many times slower (tests/conftest.py, one_torch_thread).
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        train(catalog, run, preset, device="cpu", log=lambda *a: lines.append(" ".join(map(str, a))))
    finally:
        torch.set_num_threads(threads)
    return run, evaluate_run(run), lines


def _curve(lines: list[str]) -> str:
    """The epoch lines of the training log, for a failure message that shows how far learning got."""
    return "\n".join(line[:160] for line in lines if line.startswith("epoch"))[-4000:]


def test_best_head_clearly_beats_kmeans_on_raw_inputs(learned):
    run, result, lines = learned
    assert result["n_clips"] == 10 * CLIPS_PER_DIGIT and result["n_classes"] == 10
    raw = {b["kind"]: b["nmi"] for b in result["baselines"] if b["kind"] in RAW_KINDS}
    assert set(raw) == set(RAW_KINDS), result.get("raw_baselines_skipped")
    best = result["heads"][result["best_head"]]["nmi"]
    worst_head = min(h["nmi"] for h in result["heads"])
    summary = f"heads {[round(h['nmi'], 3) for h in result['heads']]}, raw k-means {raw}\n{_curve(lines)}"
    assert best > max(raw.values()) + MARGIN, summary
    # not just the oracle's pick: every head (head 0 needs no labels to choose) beats raw k-means
    assert worst_head > max(raw.values()), summary


def test_heads_are_not_collapsed(learned):
    """Each head spreads the clips over (nearly) all K clusters, none far above its 1/K share.

    The preset's refine holds the sizes with a pull, not exactly (``RefineSpec.marginal_strength`` 0.5), so on
    this balanced set clusters range 16-50 of the 300 clips and one can empty: seed 1 leaves one of the 10 empty
    in both heads (at 0.75 too; exact sizes, 1.0, give 26-34 and the best head 0.465 against 0.485). The bounds:
    at least K - 2 clusters used and none above 2.5/K (calibration, 4 seeds: at most 50 clips, 16.7%), well
    inside the project's own collapse rules (selavi_core/training/diagnostics.py: half the clusters used, none
    above 55%)."""
    from selavi_core.runs.run import Run

    run, result, _ = learned
    joint = np.asarray(Run(run).assignments("joint"))
    k = result["clusters"]
    for h in range(joint.shape[1]):
        counts = np.bincount(joint[:, h], minlength=k)
        shares = counts / joint.shape[0]
        assert (counts > 0).sum() >= k - 2 and shares.max() <= 2.5 / k, (h, counts.tolist())
