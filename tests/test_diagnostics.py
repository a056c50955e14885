"""Training diagnostics: the log of a real tiny training run read back exactly, every rule flagging the failure it
names on logs shaped like failed runs and staying quiet on healthy ones (a recorded real AV-digits run among
them), ``selavi train`` printing the verdict, and the Studio's Overview drawing the curves and the warnings.

The hand-made logs are written in the exact format of ``selavi_core.training.trainer`` (one ``epoch`` line per epoch with
its last labelling record), with curves shaped like the recorded healthy run and one property broken at a time.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from streamlit.testing.v1 import AppTest

from selavi_app import HOME
from selavi_core.cli import main
from selavi_core.commands.train import training_report
from selavi_core.config import DIAGNOSTICS
from selavi_core.errors import RunError
from selavi_core.studio.runs import RUNS_ENV
from selavi_core.training.diagnostics import (
    LOG_NAME,
    RunWarning,
    agreement_threshold,
    assess_training,
    format_warnings,
    largest_share,
    load_run_training,
    read_train_log,
)

ENTRY = HOME  # the installed package's entry script, as `selavi app` runs it
DATA = Path(__file__).resolve().parent / "data"  # real training logs (see test_recorded_avdigits_runs...)

# ---- a real tiny training run ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_run(tiny_catalog: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real training run: 3 epochs with 2 labellings each (the log keeps the last of each), then refining."""
    from tiny_training import TINY

    from selavi_core.training.trainer import train

    run_dir = tmp_path_factory.mktemp("diag_run") / "run"
    preset = TINY.with_overrides(optim={"epochs": 3}, schedule={"n_opts": 7}, refine={"rounds": 3})
    train(tiny_catalog, run_dir, preset, device="cpu", log=lambda *a: None)
    return run_dir


def _lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_a_real_log_reads_back_exactly(tiny_run: Path):
    lines = _lines(tiny_run / LOG_NAME)
    epochs = [r for r in lines if r["type"] == "epoch"]
    refine = [r for r in lines if r["type"] == "refine"]
    curves = load_run_training(tiny_run)
    assert curves is not None and curves.skipped_lines == 0
    assert curves.clusters == 2  # from run.json
    priors = np.load(tiny_run / "priors.npy")
    assert curves.prior_largest_share == pytest.approx(np.mean(priors.max(axis=1) / priors.sum(axis=1)))

    assert curves.epochs["epoch"].tolist() == [1, 2, 3]
    for col in ("loss", "seconds", "labellings", "stability_nmi", "nmi_gt_head0", "nmi_gt_best"):
        np.testing.assert_allclose(curves.epochs[col], [r.get(col, math.nan) for r in epochs])
    weight = json.loads((tiny_run / "preset.json").read_text()).get("contrast", {}).get("weight", 0.0)
    assert curves.contrast_weight == weight
    contrast = np.array([r.get("contrast_loss", 0.0) for r in epochs])
    assert ("contrast_loss" in curves.epochs) == (weight > 0)
    # training logs label_loss itself; it is loss - weight * contrast_loss up to the log's 4-decimal rounding
    np.testing.assert_allclose(curves.epochs["label_loss"], [r["label_loss"] for r in epochs])
    np.testing.assert_allclose(curves.epochs["label_loss"], [r["loss"] for r in epochs] - weight * contrast, atol=2e-4)
    assert curves.n_labellings == epochs[-1]["labellings"] == 6  # two per epoch ...
    records = [r["labelling_log"][0] for r in epochs]
    assert curves.labellings["labelling"].tolist() == [r["labelling"] for r in records] == [2, 4, 6]  # ... one logged
    for col in ("largest_share", "agree_video", "agree_audio", "stability_nmi", "clusters_used_head0", "audio_weight"):
        np.testing.assert_allclose(curves.labellings[col], [r[col] for r in records])
    assert curves.refine["refine_round"].tolist() == [1, 2, 3] and curves.refine["after_epoch"].tolist() == [3, 3, 3]
    np.testing.assert_allclose(curves.refine["loss"], [r["loss"] for r in refine])
    np.testing.assert_allclose(curves.refine["largest_share"], [r["largest_share"] for r in refine])
    assert all(1 / curves.clusters <= r["largest_share"] <= 1 for r in refine)
    assert curves.has_ground_truth  # the tiny catalog is labelled
    # three labellings are the fewest a rule judges; with K=2 and real but tiny data any verdict is possible,
    # and every verdict must be a readable warning
    for w in assess_training(curves):
        assert isinstance(w, RunWarning) and w.code and w.message.endswith(".") and w.advice


def test_resumed_cut_and_old_logs(tiny_run: Path, tmp_path: Path):
    """A resume appends an epoch and refines again; a killed process leaves half a line; old logs lack fields."""
    lines = (tiny_run / LOG_NAME).read_text().splitlines()
    epochs = [json.loads(line) for line in lines if json.loads(line)["type"] == "epoch"]
    refine = [line for line in lines if json.loads(line)["type"] == "refine"]
    again = dict(epochs[-1], epoch=4, labelling_log=[dict(epochs[-1]["labelling_log"][0], labelling=8)])
    log = tmp_path / LOG_NAME
    log.write_text("\n".join([*lines, json.dumps(again), *refine[:2], json.dumps(epochs[0])[:40]]) + "\n")
    curves = read_train_log(log)
    assert curves.skipped_lines == 1
    assert curves.epochs["epoch"].tolist() == [1, 2, 3, 4]
    assert curves.refine["after_epoch"].tolist() == [3, 3, 3, 4, 4]
    assert curves.final_refine["refine_round"].tolist() == [1, 2]
    assert curves.clusters is None and curves.k == max(r["labelling_log"][0]["clusters_used_head0"] for r in epochs)

    old = tmp_path / "old.jsonl"  # before labelling records: epochs and their stability only
    old.write_text(
        "".join(json.dumps({"epoch": e, "loss": 2.0 - e / 10, "stability_nmi": 0.8}) + "\n" for e in range(9))
    )
    curves = read_train_log(old)
    assert curves.labellings.empty and not curves.has_ground_truth and curves.k is None
    assert assess_training(curves) == []  # stability judged from the epochs: fine; nothing else to judge
    with pytest.raises(RunError, match="only `selavi train` writes"):
        read_train_log(tmp_path / "missing.jsonl")
    assert load_run_training(tmp_path / "nothing") is None


# ---- hand-made logs: healthy and failed ------------------------------------------------------------------
Curve = Callable[[float], float]


def ramp(start: float, end: float) -> Curve:
    return lambda t: start + (end - start) * t


def write_log(
    path: Path,
    *,
    epochs: int = 30,
    k: int = 10,
    ground_truth: bool = True,
    contrast: Curve | None = None,
    weight: float = 1.0,
    **curves: Curve,
) -> Path:
    """A log in selavi_core.training.trainer's format, one labelling per epoch, each field a curve over progress t in [0, 1].

    Defaults follow the recorded healthy AV-digits runs: labels settling (NMI 0.1 -> 0.75), video then audio
    learning the labels, even cluster sizes, the self-labelling loss falling from log K. With ``contrast``, the
    logged loss is that plus ``weight`` times the correspondence loss, logged apart as ``contrast_loss``.
    """
    shape: dict[str, Curve] = {
        "loss": ramp(math.log(k), 0.45 * math.log(k)),
        "stability_nmi": ramp(0.1, 0.75),
        "agree_video": ramp(0.45, 0.75),
        "agree_audio": ramp(0.15, 0.8),
        "largest_share": ramp(0.12, 0.115),
        "clusters_used_head0": lambda t: k,
        "nmi_gt": ramp(0.05, 0.7),
    } | curves
    rng = np.random.default_rng(0)
    lines = []
    for e in range(1, epochs + 1):
        t = (e - 1) / max(epochs - 1, 1)
        noisy = {name: f(t) + (0.01 * rng.standard_normal() if name != "clusters_used_head0" else 0.0)
                 for name, f in shape.items()}  # fmt: skip
        rec = {"labelling": e, "iteration": 15 * (e - 1), "epoch": e - 1, "seconds": 0.05, "sk_iters_mean": 40.0,
               "clusters_used_head0": int(noisy["clusters_used_head0"]),
               "largest_share": round(noisy["largest_share"], 4), "audio_weight": 0.5,
               "agree_video": round(noisy["agree_video"], 4),
               "agree_audio": round(noisy["agree_audio"], 4)}  # fmt: skip
        if e > 1:
            rec["stability_nmi"] = round(noisy["stability_nmi"], 4)
        if ground_truth:
            rec["nmi_gt_head0"] = rec["nmi_gt_best"] = round(noisy["nmi_gt"], 4)
        epoch = {"type": "epoch", "epoch": e, "loss": round(noisy["loss"], 4), "seconds": 6.0 * e, "labellings": e}
        if contrast is not None:
            epoch |= {"loss": round(noisy["loss"] + weight * contrast(t), 4), "contrast_loss": round(contrast(t), 4)}
        epoch |= {key: rec[key] for key in ("stability_nmi", "nmi_gt_head0", "nmi_gt_best") if key in rec}
        lines.append(json.dumps(epoch | {"labelling_log": [rec]}))
    path.write_text("\n".join(lines) + "\n")
    return path


def codes(path: Path, **kw) -> list[str]:
    return [w.code for w in assess_training(read_train_log(path, **kw))]


def test_healthy_logs_raise_no_warning(tmp_path: Path):
    assert codes(write_log(tmp_path / "k10.jsonl"), clusters=10) == []
    assert codes(write_log(tmp_path / "k10-no-k.jsonl")) == []  # K read off the clusters in use
    # K=2: chance is 50%, so 80% agreement is learning; one cluster at 60% is an uneven split, not a collapse
    k2 = write_log(tmp_path / "k2.jsonl", k=2, agree_video=ramp(0.6, 0.8), agree_audio=ramp(0.55, 0.8),
                   largest_share=ramp(0.55, 0.6))  # fmt: skip
    assert codes(k2, clusters=2) == []
    # a Zipf prior wants a big first cluster: 60% is its target, not a collapse
    zipf = write_log(tmp_path / "zipf.jsonl", largest_share=ramp(0.5, 0.6))
    assert codes(zipf, clusters=10, prior_largest_share=0.55) == []
    assert codes(zipf, clusters=10) == ["cluster_swallows"]  # the same sizes under a uniform prior
    # one bad labelling at the very end is noise, not a failed run (the rules read the median of the last five)
    log = write_log(tmp_path / "blip.jsonl")
    lines = log.read_text().splitlines()
    last = json.loads(lines[-1])
    last["labelling_log"][0].update(stability_nmi=0.1, agree_audio=0.05, largest_share=0.9)
    log.write_text("\n".join([*lines[:-1], json.dumps(last)]) + "\n")
    assert codes(log, clusters=10) == []


def test_recorded_avdigits_runs_healthy_and_failed(tmp_path: Path):
    """Logs of real ``selavi train --heads 10 --clusters 10`` (cpu-small) runs on the same 1,000 AV-digits clips.

    Healthy: 54 epochs at batch 64 and at batch 21, and at batch 64 with the correspondence loss (ContrastSpec
    weight 1, the cpu-small default since). They are weak by ground truth (best head NMI 0.25, 0.17 and 0.45 at
    the last epoch, 0.36, 0.26 and 0.66 after refining; on the full 3,000 clips the recipe reaches 0.9), which
    makes them the hard case for false alarms, but they trained: labels settled (NMI ~0.6-0.7 between
    labellings), both modalities learned them, cluster sizes stayed at the prior's, the self-labelling loss fell
    from log 10 = 2.30 to 1.4-1.6. Failed: 15 epochs on the clips with their audio replaced by silence, and 15
    at 50x the learning rate (``--lr 0.05``), whose labels end at NMI 0.06 and 0.02 with the digits; their
    labels look settled and both modalities above chance, but the loss stays at log K.
    """
    for name, weight in (("healthy", 0.0), ("healthy_batch21", 0.0), ("healthy_contrast", 1.0)):
        path = DATA / f"train_log_avdigits_{name}.jsonl"
        curves = read_train_log(path, clusters=10, prior_largest_share=0.1124, contrast_weight=weight)
        assert len(curves.epochs) == 54 and len(curves.final_refine) == 24
        assert curves.epochs["label_loss"].iloc[-1] < 0.72 * math.log(10)
        assert 0.15 < curves.labellings["nmi_gt_best"].iloc[-1] < curves.final_refine["nmi_gt_best"].iloc[-1]
        assert assess_training(curves) == []
        assert assess_training(read_train_log(path)) == []  # the log alone (K from the clusters in use)
        # cut at its sixth epoch the same run had not settled yet, and says so
        cut = tmp_path / LOG_NAME
        cut.write_text("\n".join(path.read_text().splitlines()[:6]) + "\n")
        assert "labels_unstable" in codes(cut, clusters=10)
    for name in ("silent_audio", "lr_too_high"):
        curves = read_train_log(DATA / f"train_log_avdigits_{name}.jsonl", clusters=10)
        assert len(curves.epochs) == 15 and curves.labellings["nmi_gt_best"].iloc[-1] < 0.1
        assert [w.code for w in assess_training(curves)] == ["loss_not_decreasing"]


@pytest.mark.parametrize(
    "curves,expected,words",
    [
        ({"stability_nmi": ramp(0.1, 0.3)}, "labels_unstable", "never settled"),
        ({"agree_audio": ramp(0.12, 0.13)}, "modalities_disagree", "The audio never learned"),
        ({"agree_video": ramp(0.3, 0.11)}, "modalities_disagree", "The video never learned"),
        ({"agree_video": ramp(0.1, 0.12), "agree_audio": ramp(0.1, 0.12)}, "labels_not_learned", "Neither"),
        ({"largest_share": ramp(0.2, 0.8)}, "cluster_swallows", "swallowed"),
        ({"clusters_used_head0": lambda t: 10 if t < 0.5 else 3}, "clusters_unused", "used 3 of its 10"),
        ({"loss": lambda t: 2.3}, "loss_not_decreasing", "hardly fell"),
        ({"loss": ramp(3.5, 2.2)}, "loss_not_decreasing", "guesses at random scores 2.30 (log K)"),
        ({"loss": ramp(2.3, 4.0)}, "loss_not_decreasing", "The training loss rose"),
    ],
)
def test_each_failure_is_flagged_by_its_rule(tmp_path: Path, curves: dict, expected: str, words: str):
    path = write_log(tmp_path / LOG_NAME, ground_truth=False, **curves)
    warnings = assess_training(read_train_log(path, clusters=10))
    assert [w.code for w in warnings] == [expected]
    assert words in warnings[0].message and warnings[0].advice
    assert words in " ".join(format_warnings(warnings).split())  # wrapped for a terminal


def test_rules_do_not_read_ground_truth(tmp_path: Path):
    """The same training behaviour gives the same verdict whatever its NMI with the ground truth."""
    for gt in (ramp(0.0, 0.01), ramp(0.5, 0.99)):
        assert codes(write_log(tmp_path / "a.jsonl", nmi_gt=gt), clusters=10) == []
        unstable = write_log(tmp_path / "b.jsonl", nmi_gt=gt, stability_nmi=ramp(0.1, 0.2))
        assert codes(unstable, clusters=10) == ["labels_unstable"]


def test_the_loss_rule_reads_the_self_labelling_loss_alone(tmp_path: Path):
    """With the correspondence loss on, the logged loss falls with it even when the labels teach nothing."""
    nce = ramp(math.log(64), 2.5)  # InfoNCE over a batch of 64, learning to match pictures and sounds
    healthy = write_log(tmp_path / "healthy.jsonl", contrast=nce, weight=0.5)
    curves = read_train_log(healthy, clusters=10, contrast_weight=0.5)
    np.testing.assert_allclose(
        curves.epochs["label_loss"], curves.epochs["loss"] - 0.5 * curves.epochs["contrast_loss"]
    )
    assert assess_training(curves) == []
    flat = write_log(tmp_path / "flat.jsonl", contrast=nce, weight=0.5, loss=lambda t: 2.3)
    curves = read_train_log(flat, clusters=10, contrast_weight=0.5)
    total = curves.epochs["loss"]
    assert total.iloc[-5:].median() < 0.85 * total.iloc[0]  # the total fell by over 15% ...
    warnings = assess_training(curves)
    assert [w.code for w in warnings] == ["loss_not_decreasing"]  # ... the cross-entropy with the labels did not
    assert "The self-labelling loss hardly fell" in warnings[0].message
    # without the weight (the log alone) the two cannot be told apart, so the loss is not judged
    assert "label_loss" not in read_train_log(flat).epochs and codes(flat, clusters=10) == []


def test_short_runs_are_not_judged(tmp_path: Path):
    bad = {"stability_nmi": ramp(0.1, 0.1), "agree_audio": ramp(0.1, 0.1), "loss": lambda t: 2.3}
    assert codes(write_log(tmp_path / LOG_NAME, epochs=DIAGNOSTICS.min_points - 1, **bad), clusters=10) == []
    assert codes(write_log(tmp_path / LOG_NAME, epochs=DIAGNOSTICS.min_points + 1, **bad), clusters=10) == [
        "labels_unstable",
        "modalities_disagree",
        "loss_not_decreasing",
    ]


def test_agreement_threshold_is_relative_to_chance():
    assert agreement_threshold(10) == pytest.approx(0.19)  # 1/10 + 10% of the rest (twice chance is 0.2)
    assert agreement_threshold(2) == pytest.approx(0.55)  # twice chance would be 100%
    assert agreement_threshold(100) == pytest.approx(0.02)  # twice chance
    assert all(1 / k < agreement_threshold(k) < 1 for k in (2, 3, 10, 309))


def test_largest_share_is_the_mean_over_heads_of_the_biggest_cluster():
    labels = np.array([[0, 1], [0, 1], [0, 0], [1, 2]])  # head 0: 3 of 4 in cluster 0; head 1: 2 of 4 in cluster 1
    assert largest_share(labels) == pytest.approx((3 / 4 + 2 / 4) / 2)
    assert largest_share(np.tile(np.arange(10), 30)[:, None]) == pytest.approx(0.1)  # even sizes: 1/K
    assert largest_share(np.zeros((7, 3), np.int64)) == 1.0  # one cluster swallowed everything
    with pytest.raises(ValueError, match="N, H"):
        largest_share(np.zeros(5, np.int64))


# ---- the CLI and the Studio ---------------------------------------------------------------------------
def test_selavi_train_prints_the_verdict(tiny_catalog: Path, tmp_path: Path, capsys):
    out = tmp_path / "cli_run"
    args = ["train", str(tiny_catalog), "--out", str(out), "--epochs", "1", "--heads", "1", "--clusters", "2",
            "--batch-size", "8", "--labellings", "2", "--refine-rounds", "0", "--device", "cpu"]  # fmt: skip
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "run written to" in printed and "Training diagnostics: no warnings" in printed  # 1 epoch: not judged
    # the same report on a failed run's log
    write_log(out / LOG_NAME, k=2, agree_video=ramp(0.5, 0.51), agree_audio=ramp(0.5, 0.51), ground_truth=False)
    report = " ".join(training_report(out).split())
    assert "1 warning(s)" in report and "Neither modality learned the labels" in report
    assert "chance is 50%" in report
    assert "no training log" in training_report(tmp_path)


@pytest.fixture(scope="module")
def studio_runs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """Two small Studio runs (K=4): one with a failed training log, one made without training (no log)."""
    from studio_fixtures import make_studio_run

    _, failed = make_studio_run(tmp_path_factory.mktemp("failed"), n=12, n_sources=2, previews=False)
    write_log(failed / LOG_NAME, k=4, stability_nmi=ramp(0.1, 0.2))
    _, assigned = make_studio_run(tmp_path_factory.mktemp("assigned"), n=12, n_sources=2, previews=False)
    return failed, assigned


def _overview(monkeypatch, run_dir: Path) -> AppTest:
    monkeypatch.setenv(RUNS_ENV, str(run_dir))
    monkeypatch.setenv("SELAVI_NO_PROGRESS", "1")
    at = AppTest.from_file(str(ENTRY), default_timeout=120).run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def test_overview_shows_the_curves_and_the_warning(studio_runs, monkeypatch):
    failed, assigned = studio_runs
    at = _overview(monkeypatch, failed)
    assert "Training" in [s.value for s in at.subheader]
    training = [w.value for w in at.warning if "labels never settled" in w.value]
    assert len(training) == 1 and "lower learning rate" in training[0]
    # loss, stability and agreement, largest share, NMI with the ground truth, then the page's cluster sizes
    assert len(at.get("plotly_chart")) == 5
    assert any("30 epochs and 30 labellings" in c.value for c in at.caption)

    at = _overview(monkeypatch, assigned)
    assert "Training" in [s.value for s in at.subheader]
    assert any("No training log" in c.value for c in at.caption)
    assert not [w for w in at.warning if "settled" in w.value]
    assert len(at.get("plotly_chart")) == 1  # only the page's cluster-size chart
