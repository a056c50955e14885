"""The cross-modal matching loss beside self-labelling, and the epochs a small data set gets."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from tiny_training import TINY

from selavi_core.config import ContrastSpec, OptimSpec, planned_epochs
from selavi_core.errors import SelaviError
from selavi_core.model.checkpoint import load_checkpoint
from selavi_core.model.networks import build_model
from selavi_core.training.contrast import CrossModalProjector, TrainingNet, correspondence_loss
from selavi_core.training.trainer import Context, Trainer, train


def _unit(x: torch.Tensor) -> torch.Tensor:
    return torch.nn.functional.normalize(x, dim=1)


def test_matching_pairs_score_low_and_shuffled_pairs_at_chance():
    g = torch.Generator().manual_seed(0)
    z = _unit(torch.randn(64, 32, generator=g))
    matched = float(correspondence_loss(z, z, temperature=0.1))
    shuffled = float(correspondence_loss(z, z[torch.randperm(64, generator=g)], temperature=0.1))
    constant = float(correspondence_loss(_unit(torch.ones(64, 32)), _unit(torch.ones(64, 32)), temperature=0.1))
    assert matched < 0.1
    assert shuffled > math.log(64)  # wrong partners are worse than no information
    assert constant == pytest.approx(math.log(64), rel=1e-5)  # no information: chance


def test_the_loss_is_symmetric_in_the_two_modalities():
    g = torch.Generator().manual_seed(1)
    a, b = _unit(torch.randn(16, 8, generator=g)), _unit(torch.randn(16, 8, generator=g))
    assert float(correspondence_loss(a, b, 0.2)) == pytest.approx(float(correspondence_loss(b, a, 0.2)), rel=1e-6)


def test_a_few_steps_learn_which_sound_belongs_to_which_picture():
    """Two views that share only a class factor: the projections learn to match them, well below chance."""
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    n, classes = 256, 8
    y = rng.integers(0, classes, n)
    shared = rng.normal(size=(classes, 16))
    fv = torch.tensor(np.hstack([shared[y], rng.normal(size=(n, 16))]), dtype=torch.float32)
    fa = torch.tensor(np.hstack([rng.normal(size=(n, 16)), shared[y] @ rng.normal(size=(16, 16))]), dtype=torch.float32)
    proj = CrossModalProjector(32, 32, ContrastSpec(weight=1.0, dim=16, temperature=0.1))
    opt = torch.optim.Adam(proj.parameters(), lr=3e-3)
    chance = math.log(64)
    for _ in range(300):
        idx = torch.from_numpy(rng.choice(n, 64, replace=False))
        loss = correspondence_loss(*proj(fv[idx], fa[idx]), proj.temperature)
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        zv, za = proj(fv[:64], fa[:64])
        final = float(correspondence_loss(zv, za, proj.temperature))
        # the best possible: a clip cannot be told from the others of its class (about 64 / 8 of them)
        assert final < chance - 1.0
        same_class = torch.from_numpy(y[:64][:, None] == y[:64][None, :])
        sim = zv @ za.t()
        assert float(sim[same_class].mean()) > float(sim[~same_class].mean()) + 0.25  # 0.36 vs -0.04 measured


def test_bad_contrast_settings_are_refused_with_the_field_named():
    ContrastSpec().validate()  # off is fine
    with pytest.raises(SelaviError, match="contrast.weight"):
        ContrastSpec(weight=-1.0).validate()
    with pytest.raises(SelaviError, match="contrast.temperature"):
        ContrastSpec(weight=1.0, temperature=0.0).validate()


def test_training_net_returns_projections_only_with_a_projector():
    model = build_model(TINY, clusters=2)
    video, audio = torch.randn(3, 3, 4, 24, 24), torch.randn(3, 1, 40, 199)
    out_a, out_b, z = TrainingNet(model, None).eval()(video, audio)
    assert z is None and len(out_a) == len(out_b) == 3
    proj = CrossModalProjector(TINY.model.video_dim, TINY.model.audio_dim, ContrastSpec(weight=1.0, dim=8))
    _, _, (zv, za) = TrainingNet(model, proj).eval()(video, audio)
    assert zv.shape == za.shape == (3, 8)
    assert torch.allclose(zv.norm(dim=1), torch.ones(3), atol=1e-5)


def test_a_run_with_the_matching_loss_logs_it_and_resumes_its_projector(tiny_catalog: Path, tmp_path: Path):
    preset = TINY.with_overrides(contrast={"weight": 0.5, "dim": 8})
    run = tmp_path / "run"
    train(tiny_catalog, run, preset, device="cpu", log=lambda *a: None)
    epochs = [json.loads(x) for x in (run / "train_log.jsonl").read_text().splitlines()]
    losses = [r["contrast_loss"] for r in epochs if r.get("type") == "epoch"]
    assert len(losses) == TINY.optim.epochs and all(0 < x < 10 for x in losses)
    saved = load_checkpoint(run / "checkpoint.pt")["extra"]["projector"]
    assert set(saved) == {k for k in CrossModalProjector(16, 16, preset.contrast).state_dict()}

    trainer = Trainer(tiny_catalog, run, preset, ctx=Context(torch.device("cpu")), log=lambda *a: None)
    assert trainer.resume()
    for key, value in trainer.projector.state_dict().items():
        assert torch.equal(value, saved[key])
    # the projector trains with the encoders: it is in the optimiser
    in_opt = {id(p) for g in trainer.optimizer.param_groups for p in g["params"]}
    assert all(id(p) in in_opt for p in trainer.projector.parameters())


def test_without_the_matching_loss_there_is_no_projector_and_no_log_entry(tiny_catalog: Path, tmp_path: Path):
    preset = TINY.with_overrides(contrast={"weight": 0.0}, refine={"rounds": 0})
    trainer = Trainer(tiny_catalog, tmp_path, preset, ctx=Context(torch.device("cpu")), log=lambda *a: None)
    assert trainer.projector is None
    train(tiny_catalog, tmp_path / "run", preset, device="cpu", log=lambda *a: None)
    lines = [json.loads(x) for x in (tmp_path / "run" / "train_log.jsonl").read_text().splitlines()]
    assert lines and not any("contrast_loss" in r for r in lines)


@pytest.mark.parametrize(
    ("epochs", "samples", "clips", "expected"),
    [
        (54, None, 879, 54),  # no budget: the preset's epochs
        (54, 162_000, 3_000, 54),  # the set the recipe was tuned on
        (54, 162_000, 879, 184),  # a small set gets the same number of steps
        (54, 162_000, 20_000, 54),  # a large one never fewer than the preset's epochs
    ],
)
def test_small_sets_train_for_more_epochs(epochs: int, samples: int | None, clips: int, expected: int):
    assert planned_epochs(OptimSpec(epochs=epochs, train_samples=samples), clips) == expected


def test_the_trainer_plans_its_epochs_from_its_clips(tiny_catalog: Path, tmp_path: Path):
    preset = TINY.with_overrides(optim={"epochs": 2, "train_samples": 24 * 5})
    trainer = Trainer(tiny_catalog, tmp_path, preset, ctx=Context(torch.device("cpu")), log=lambda *a: None)
    assert trainer.epochs == 5


def test_an_explicit_epochs_count_is_trained_exactly_on_any_set():
    from selavi_core.config import CPU_SMALL

    exact = CPU_SMALL.with_epochs(3)
    assert planned_epochs(exact.optim, 879) == 3 and exact.optim.train_samples is None
    assert CPU_SMALL.with_epochs(None) is CPU_SMALL
    assert planned_epochs(CPU_SMALL.optim, 879) == 184  # the preset itself still stretches small sets
