"""selavi_core/config.py is the single source of truth: every knob is read somewhere, bad values are refused
before anything runs, with the field named, and the prior enters training through ScheduleSpec alone."""

from __future__ import annotations

import ast
import dataclasses
import inspect
import os
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from tiny_training import TINY

import selavi_core.config as config
from selavi_core.config import CPU_SMALL, PAPER, ConfigError, Preset
from selavi_core.errors import SelaviError
from selavi_core.training.trainer import Context, Trainer, train

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "selavi_core" / "config.py"


def _names(tree: ast.AST) -> set[str]:
    """Attributes read (``x.name``) and strings that are exactly a name (``getattr(spec, "name")``)."""
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute):
            out.add(node.attr)
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value.isidentifier():
            out.add(node.value)
    return out


#: Per source file of the package and the Studio app (config.py aside): the names it reads. Comments and
#: docstrings do not count.
READS = {
    str(p.relative_to(ROOT)): _names(ast.parse(p.read_text()))
    for d in ("selavi_core", "app")
    for p in (ROOT / d).rglob("*.py")
    if p != CONFIG
}


def _config_reads() -> set[str]:
    """Attributes config.py itself reads outside ``validate`` (properties such as ``AudioSpec.win_length``)."""
    reads = set()
    for node in ast.walk(ast.parse(CONFIG.read_text())):
        if isinstance(node, ast.FunctionDef) and node.name != "validate":
            reads |= {sub.attr for sub in ast.walk(node) if isinstance(sub, ast.Attribute)}
    return reads


def readers(name: str) -> list[str]:
    """Source files (config.py aside) that read ``name``."""
    return sorted(path for path, names in READS.items() if name in names)


SPECS = [
    v
    for v in vars(config).values()
    if isinstance(v, type) and dataclasses.is_dataclass(v) and v.__module__ == config.__name__
]


def test_every_config_field_is_read_somewhere():
    assert readers("no_such_knob_anywhere") == []  # the search finds nothing that is not there
    assert "selavi_core/training/refine.py" in readers("audio_weight")  # and finds what is
    inside = _config_reads()
    dead = [
        f"{spec.__name__}.{f.name}"
        for spec in SPECS
        for f in dataclasses.fields(spec)
        if not readers(f.name) and f.name not in inside
    ]
    assert dead == [], f"config fields nobody reads (make them live or delete them): {dead}"


def test_the_shipped_presets_are_valid():
    for preset in (PAPER, CPU_SMALL, TINY):
        assert preset.validate() is preset


@pytest.mark.parametrize(
    ("section", "change", "message"),
    [
        ("schedule", {"audio_weight": 1.5}, "schedule.audio_weight must lie in [0, 1], got 1.5"),
        ("schedule", {"audio_weight_final": -0.1}, "schedule.audio_weight_final must lie in [0, 1], got -0.1"),
        ("schedule", {"memory_momentum": 1.0}, "schedule.memory_momentum must lie in [0, 1), got 1.0"),
        ("schedule", {"posteriors_from": "memory"}, "schedule.posteriors_from must be one of pass, training, got 'memory'"),
        ("schedule", {"gauss_sd": -0.1}, "schedule.gauss_sd must be >= 0, got -0.1"),
        ("schedule", {"prior": " "}, "schedule.prior must name a prior, got ' '"),
        ("schedule", {"align_max_rows": 0}, "schedule.align_max_rows must be >= 1, got 0"),
        ("optim", {"optimizer": "lbfgs"}, "optim.optimizer must be one of sgd, adam, got 'lbfgs'"),
        ("optim", {"audio_lr_scale": 0.0}, "optim.audio_lr_scale must be positive, got 0.0"),
        ("optim", {"lr": float("nan")}, "optim.lr must be positive, got nan"),
        ("optim", {"batch_size": 0}, "optim.batch_size must be >= 1, got 0"),
        ("optim", {"seed": -1}, "optim.seed must be a non-negative integer, got -1"),
        ("refine", {"target": "zipf"}, "refine.target must be one of prior, uniform, got 'zipf'"),
        ("refine", {"rounds": -1}, "refine.rounds must be >= 0, got -1"),
        ("contrast", {"weight": -1.0}, "contrast.weight must be >= 0, got -1.0"),
        ("contrast", {"weight": 1.0, "temperature": 0.0}, "contrast.temperature must be positive, got 0.0"),
        ("sinkhorn", {"check_every": 0}, "sinkhorn.check_every must be >= 1, got 0"),
        ("sinkhorn", {"lam": -20.0}, "sinkhorn.lam must be positive, got -20.0"),
        ("model", {"fusion": "sum"}, "model.fusion must be one of augment, concat, got 'sum'"),
        ("model", {"heads": 0}, "model.heads must be >= 1, got 0"),
        ("model", {"video_widths": (8, 8, 16)}, "model.video_widths must be four positive integers, got (8, 8, 16)"),
        ("video", {"train_short_side": (52, 42)}, "video.train_short_side must be a range (low, high) with 1 <= low <= high, got (52, 42)"),
        ("audio", {"high_hz": 9000.0}, "audio.high_hz must lie in [0, 8000], got 9000.0"),
        ("cache", {"fps": 0.0}, "cache.fps must be positive, got 0.0"),
    ],
)  # fmt: skip
def test_validate_refuses_bad_values_naming_the_field(section: str, change: dict, message: str):
    bad = CPU_SMALL.with_overrides(**{section: change})
    with pytest.raises(ConfigError) as err:
        bad.validate()
    assert str(err.value) == message
    assert isinstance(err.value, SelaviError)  # the CLI prints it as one line


def test_the_preset_level_knob_is_validated_too():
    with pytest.raises(ConfigError, match="eval_batch_size must be >= 1, got 0"):
        replace(PAPER, eval_batch_size=0).validate()


def test_presets_round_trip_and_retired_fields_are_dropped_when_read_back():
    assert Preset.from_dict(CPU_SMALL.to_dict()) == CPU_SMALL
    assert Preset.from_dict(PAPER.to_dict()) == PAPER
    old = CPU_SMALL.to_dict()
    old["schedule"]["align_patience"] = 3  # saved by versions that still searched for the alignment
    assert Preset.from_dict(old) == CPU_SMALL


def test_workers_setting_one_per_core_by_default_and_validated():
    assert PAPER.optim.workers is None and PAPER.optim.data_workers() == max(1, os.cpu_count() or 1)
    assert PAPER.optim.data_workers(processes=64) == 1  # never zero: a rank with workers keeps at least one
    assert CPU_SMALL.optim.workers == 0 and CPU_SMALL.optim.data_workers() == 0  # in-process: calibrated draws
    assert not PAPER.cache.enabled and CPU_SMALL.cache.enabled
    for bad in (-1, 1.5, True):
        with pytest.raises(ConfigError, match="optim.workers must be a non-negative integer or None"):
            PAPER.with_overrides(optim={"workers": bad}).validate()


def test_the_prior_enters_training_through_the_schedule_alone(tiny_catalog: Path, tmp_path: Path):
    assert "prior" not in inspect.signature(train).parameters
    assert "prior" not in inspect.signature(Trainer).parameters
    ctx = Context(torch.device("cpu"))
    flat = TINY.with_overrides(schedule={"prior": "gauss", "gauss_sd": 0.0})
    trainer = Trainer(tiny_catalog, tmp_path, flat, ctx=ctx, log=lambda *a: None)
    assert str(trainer.prior) == "gauss" and trainer.prior.sd == 0.0  # ScheduleSpec.gauss_sd is live
    trainer.labeller.ensure_prior_bases(trainer.state, trainer.shared_rng)
    assert np.array_equal(trainer.state.prior_bases, np.ones((3, 2)))  # sd 0: every head's draw is flat
    spread = TINY.with_overrides(schedule={"prior": "gauss", "gauss_sd": 0.5})
    trainer = Trainer(tiny_catalog, tmp_path, spread, ctx=ctx, log=lambda *a: None)
    trainer.labeller.ensure_prior_bases(trainer.state, trainer.shared_rng)
    assert trainer.prior.sd == 0.5 and np.ptp(trainer.state.prior_bases) > 0.1
    explicit = TINY.with_overrides(schedule={"prior": "gauss:0.25", "gauss_sd": 0.0})  # an sd in the prior wins
    assert Trainer(tiny_catalog, tmp_path, explicit, ctx=ctx, log=lambda *a: None).prior.sd == 0.25
