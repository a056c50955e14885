"""Training end to end on a tiny real catalog: the CLI, the run folder, resume, torchrun with two processes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from tiny_training import N_CLIPS, TINY

from selavi_core.cli import main
from selavi_core.config import ModelSpec
from selavi_core.errors import SelaviError
from selavi_core.model.checkpoint import load_checkpoint
from selavi_core.runs.run import Run
from selavi_core.training.trainer import Context, Trainer, schedule_points, train


def test_schedule_points_follow_the_power_law():
    pts = schedule_points(1000, 100, 1.5)
    assert pts[0] == 0 and pts[-1] < 1000
    gaps = np.diff(pts)
    assert gaps[-1] > gaps[len(gaps) // 2] >= 1  # denser early, sparser late
    assert len(pts) <= 99


def test_train_writes_a_complete_run_and_resumes(tiny_catalog: Path, tmp_path: Path):
    run_dir = tmp_path / "run"
    train(tiny_catalog, run_dir, TINY, device="cpu", log=lambda *a: None)
    run = Run(run_dir)
    assert run.heads == 3 and run.clusters == 2 and run.n_clips == N_CLIPS
    joint = np.asarray(run.assignments("joint"))
    assert joint.shape == (N_CLIPS, 3) and joint.min() >= 0 and joint.max() < 2
    conf = np.asarray(run.scores("confidence"))
    assert ((conf >= 0.5 - 1e-6) & (conf <= 1 + 1e-6)).all()  # K=2: the chosen cluster has at least half
    assert np.asarray(run.features("video")).shape == (N_CLIPS, 16)
    assert np.allclose(run.priors.sum(axis=1), 1.0)
    assert run.meta.checkpoint_hash and run.meta.source == "train"

    log = [json.loads(line) for line in (run_dir / "train_log.jsonl").read_text().splitlines()]
    rounds = TINY.refine.rounds
    assert [r["type"] for r in log] == ["epoch"] * 2 + ["refine"] * rounds
    assert [r["refine_round"] for r in log[2:]] == list(range(1, rounds + 1))
    log = log[:2]
    assert [r["epoch"] for r in log] == [1, 2]
    assert all(np.isfinite(r["loss"]) for r in log)
    for r in log:  # how well each modality predicted the labels it helped make (a dominating modality is a trap)
        last = r["labelling_log"][0]
        assert 0.0 <= last["agree_video"] <= 1.0 and 0.0 <= last["agree_audio"] <= 1.0

    ckpt = load_checkpoint(run_dir / "checkpoint.pt")
    assert ckpt["epoch"] == 2
    labels = ckpt["extra"]["labels"].numpy()
    assert labels.shape == (N_CLIPS, 3)
    # Sinkhorn with a near-uniform prior keeps both clusters in use (no collapse). Labels are the argmax of
    # the soft transport plan, so on 24 clips the hard split can drift from 12/12 (5/19 has been seen).
    assert all(np.bincount(labels[:, h], minlength=2).min() >= 4 for h in range(3))

    # resume with more epochs continues at epoch 3, not from scratch
    more = TINY.with_overrides(optim={"epochs": 3})
    train(tiny_catalog, run_dir, more, device="cpu", resume=True, log=lambda *a: None)
    log = [json.loads(line) for line in (run_dir / "train_log.jsonl").read_text().splitlines()]
    assert [r.get("epoch") for r in log if r["type"] == "epoch"] == [1, 2, 3]
    assert [r["type"] for r in log[-rounds - 1 :]] == ["epoch"] + ["refine"] * rounds  # refined again at the new end
    assert load_checkpoint(run_dir / "checkpoint.pt")["extra"]["refined"] is True
    assert load_checkpoint(run_dir / "checkpoint.pt")["epoch"] == 3
    # resuming a finished, refined run trains and refines nothing more
    train(tiny_catalog, run_dir, more, device="cpu", resume=True, log=lambda *a: None)
    assert len((run_dir / "train_log.jsonl").read_text().splitlines()) == len(log)


def test_assign_and_concat_fusion_through_the_cli(tiny_catalog: Path, tmp_path: Path):
    run_dir = tmp_path / "concat"
    concat = TINY.with_overrides(model={"fusion": "concat"}, optim={"epochs": 1})
    train(tiny_catalog, run_dir, concat, device="cpu", log=lambda *a: None)
    out = tmp_path / "assigned"
    assert main(["assign", str(tiny_catalog), "--checkpoint", str(run_dir / "checkpoint.pt"), "--out", str(out)]) == 0
    a, b = Run(run_dir), Run(out)
    assert a.meta.fusion == b.meta.fusion == "concat"
    np.testing.assert_array_equal(np.asarray(a.assignments("joint")), np.asarray(b.assignments("joint")))
    assert list(a.clip_ids) == list(b.clip_ids)


@pytest.mark.slow
def test_torchrun_two_processes_train_on_cpu(tiny_catalog: Path, tmp_path: Path):
    """DistributedDataParallel over gloo: two CPU processes train and write one run."""
    script = tmp_path / "launch.py"
    tests_dir = str(Path(__file__).parent)
    script.write_text(
        "import sys\n"
        f"sys.path.insert(0, {tests_dir!r})\n"
        "from test_train import TINY\n"
        "from selavi_core.training.trainer import train\n"
        "train(sys.argv[1], sys.argv[2], TINY, device='cpu', log=lambda *a: None)\n"
    )
    run_dir = tmp_path / "ddp"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "SELAVI_NO_PROGRESS": "1"}
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node",
        "2",
        str(script),
        str(tiny_catalog),
        str(run_dir),
    ]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    run = Run(run_dir)
    assert run.n_clips == N_CLIPS and run.heads == 3
    state = torch.load(run_dir / "checkpoint.pt", weights_only=True)
    assert state["epoch"] == 2 and state["extra"]["refined"] is True
    kinds = [json.loads(line)["type"] for line in (run_dir / "train_log.jsonl").read_text().splitlines()]
    assert kinds == ["epoch"] * 2 + ["refine"] * TINY.refine.rounds  # rank 0 refined, once


def test_cached_log_mel_windows_equal_log_mel_of_the_window(tiny_catalog: Path):
    """The whole-clip log-mel cache gives the same 1 s spectrogram as computing it on the 1 s of audio."""
    from selavi_core.catalog import catalog_hash, load_catalog
    from selavi_core.model.logmel import log_mel
    from selavi_core.training.batches import BatchMaker
    from selavi_core.training.clip_cache import build_cache

    preset = TINY.with_overrides(audio={"seconds": 1.0})  # 1 s windows out of the 2 s clips
    cache = build_cache(load_catalog(tiny_catalog), tiny_catalog, catalog_hash(tiny_catalog), preset)
    assert cache.log_mels is not None
    maker = BatchMaker(cache, preset)
    rows = np.arange(6)
    hop = preset.audio.hop_length
    starts = np.array([0, 1, 3, 7, 11, 20]) * hop / preset.audio.sample_rate
    got = maker.audio(rows, starts, train=False, rng=np.random.default_rng(0))
    n = preset.audio.n_samples
    waves = np.stack(
        [
            np.asarray(cache.audio[r, int(round(s * preset.audio.sample_rate)) :][:n], np.float32)
            for r, s in zip(rows, starts, strict=True)
        ]
    )
    want = log_mel(torch.from_numpy(waves), preset.audio, dtype=torch.float32)
    assert got.shape == want.shape == (6, 1, preset.audio.n_mels, preset.audio.n_frames)
    # identical but for pre-emphasis at the window's first sample (it sees the previous sample in the cache)
    np.testing.assert_allclose(got[..., 1:].numpy(), want[..., 1:].numpy(), atol=2e-3)
    assert np.median(np.abs(got[..., 0].numpy() - want[..., 0].numpy())) < 0.5


def test_assign_reads_an_official_layout_checkpoint(tiny_catalog: Path, tmp_path: Path):
    """A state dict in the official SeLaVi layout (DDP `module.` keys, `dist`, `selflabels`) assigns with the
    paper preset's inputs; the run records the official Gaussian draws as its priors."""
    from selavi_core.model.networks import SeLaViModel

    spec = ModelSpec(video_widths=(8, 8, 16, 16), audio_widths=(8, 8, 16, 16), heads=2)
    model = SeLaViModel(spec, 3)
    dist = [torch.tensor([[1.0], [2.0], [3.0]], dtype=torch.float64) for _ in range(2)]
    state = {
        "model": {f"module.{k}": v for k, v in model.state_dict().items()},
        "epoch": 5,
        "dist": dist,
        "selflabels": torch.zeros(N_CLIPS, 2, dtype=torch.int64),
        "optimizer": {},
    }
    ckpt = tmp_path / "selavi_official.pth"
    torch.save(state, ckpt)
    out = tmp_path / "official_run"
    assert main(["assign", str(tiny_catalog), "--checkpoint", str(ckpt), "--out", str(out)]) == 0
    run = Run(out)
    assert run.meta.preset == "paper" and run.heads == 2 and run.clusters == 3 and run.n_clips == N_CLIPS
    np.testing.assert_allclose(run.priors, np.tile([1 / 6, 2 / 6, 3 / 6], (2, 1)))
    assert np.asarray(run.features("audio")).shape == (N_CLIPS, 16)


def test_audio_lr_scale_slows_only_the_audio_side(tiny_catalog: Path, tmp_path: Path):
    """Adam's first step moves every parameter by about lr; the audio encoder and heads by lr x scale."""
    scale, lr = 0.05, TINY.optim.lr
    trainer = Trainer(
        tiny_catalog,
        tmp_path,
        TINY.with_overrides(optim={"audio_lr_scale": scale}),
        ctx=Context(torch.device("cpu")),
        log=lambda *a: None,
    )
    groups = trainer.optimizer.param_groups
    assert sorted(g["lr"] for g in groups) == pytest.approx([lr * scale, lr])
    assert sum(len(g["params"]) for g in groups) == len(list(trainer.net.parameters()))  # model + projector
    before = {n: p.detach().clone() for n, p in trainer.model.named_parameters()}
    rows = np.arange(TINY.optim.batch_size)
    video, audio = trainer.maker.batch(trainer.rows[rows], train=True, rng=np.random.default_rng(0))
    y = torch.from_numpy(np.random.default_rng(1).integers(0, 2, (len(rows), trainer.model.heads)))
    trainer.net.train()
    loss, _ = trainer._loss(*trainer.precision.inputs(video, audio), y, rows)
    trainer.optimizer.zero_grad()
    loss.backward()
    trainer.optimizer.step()
    step = {n: float((p.detach() - before[n]).abs().max()) for n, p in trainer.model.named_parameters()}
    is_audio = [n.startswith(("audio_network.", "mlp_a")) for n in step]
    audio_step = max(v for v, a in zip(step.values(), is_audio, strict=True) if a)
    video_step = max(v for v, a in zip(step.values(), is_audio, strict=True) if not a)
    assert audio_step <= lr * scale * 1.05
    assert video_step >= lr * 0.5


def test_training_augmentations_share_one_cache(tiny_catalog: Path):
    """Augmentation settings do not change the decoded arrays, so they must not force a rebuild."""
    from selavi_core.catalog import catalog_hash
    from selavi_core.training.clip_cache import cache_key

    h = catalog_hash(tiny_catalog)
    augmented = TINY.with_overrides(audio={"time_roll": True, "max_time_stretch": 0.3, "spec_augment": False})
    assert cache_key(augmented, h) == cache_key(TINY, h)
    assert cache_key(TINY.with_overrides(audio={"n_mels": 32}), h) != cache_key(TINY, h)


def test_two_processes_build_the_same_cache_at_once(tiny_catalog: Path, tmp_path: Path):
    """Two training runs started together on a new catalog both get a complete cache, not a torn one."""
    import shutil

    catalog = tmp_path / "catalog"
    shutil.copytree(tiny_catalog, catalog, ignore=shutil.ignore_patterns("cache"))
    script = (
        "import sys; from selavi_core.catalog import catalog_hash, load_catalog; "
        "from selavi_core.training.clip_cache import build_cache; from selavi_core.config import CPU_SMALL; "
        "p = CPU_SMALL.with_overrides(cache={'fps': 4.0, 'short_side': 28}); c = sys.argv[1]; "
        "cache = build_cache(load_catalog(c), c, catalog_hash(c), p, workers=1); "
        "print(len(cache.ok_rows), float(abs(cache.log_mels[0]).sum()))"
    )
    env = {**os.environ, "SELAVI_NO_PROGRESS": "1"}
    procs = [
        subprocess.Popen([sys.executable, "-c", script, str(catalog)], stdout=subprocess.PIPE, text=True, env=env)
        for _ in range(2)
    ]
    outs = [p.communicate(timeout=300)[0].split() for p in procs]
    assert [p.returncode for p in procs] == [0, 0]
    assert outs[0] == outs[1] and int(outs[0][0]) == N_CLIPS
    leftovers = [d.name for d in (catalog / "cache").iterdir()]
    assert len(leftovers) == 1 and "partial" not in leftovers[0]


@pytest.mark.parametrize(
    ("schedule", "message"),
    [
        ({"audio_weight": 1.5}, r"schedule.audio_weight must lie in \[0, 1\], got 1.5"),
        ({"audio_weight_final": -0.1}, r"schedule.audio_weight_final must lie in \[0, 1\], got -0.1"),
        ({"posteriors_from": "memory"}, r"schedule.posteriors_from must be one of pass, training, got 'memory'"),
        ({"memory_momentum": 1.0}, r"schedule.memory_momentum must lie in \[0, 1\), got 1.0"),
    ],
)
def test_train_refuses_a_bad_preset_before_writing_anything(tiny_catalog: Path, tmp_path: Path, schedule, message):
    with pytest.raises(SelaviError, match=message):
        train(tiny_catalog, tmp_path / "run", TINY.with_overrides(schedule=schedule), device="cpu", log=lambda *a: None)
    assert not (tmp_path / "run").exists()


def test_the_audio_weight_ramps_linearly_over_training_and_is_logged(tiny_catalog: Path, tmp_path: Path):
    preset = TINY.with_overrides(schedule={"audio_weight": 0.2, "audio_weight_final": 0.6, "n_opts": 5})
    trainer = Trainer(tiny_catalog, tmp_path, preset, ctx=Context(torch.device("cpu")), log=lambda *a: None)
    trainer.fit(preset.optim.epochs)
    total = preset.optim.epochs * trainer.batches_per_epoch
    logged = [(r["iteration"], r["audio_weight"]) for r in trainer.state.history]
    assert len(logged) == 4 and logged[0] == (0, 0.2)
    for it, w in logged:
        assert w == pytest.approx(0.2 + 0.4 * it / total, abs=1e-4)
    assert logged[-1][1] > 0.45
    flat = TINY.with_overrides(schedule={"audio_weight": 0.3, "audio_weight_final": None})
    constant = Trainer(tiny_catalog, tmp_path / "c", flat, ctx=Context(torch.device("cpu")), log=lambda *a: None)
    constant.state.iteration = 10**6
    assert constant.audio_weight() == 0.3


def test_posteriors_from_training_labels_from_the_posteriors_of_the_training_steps(tiny_catalog, tmp_path):
    """After the first labelling's pass, labels come from what each clip's last training step predicted."""
    preset = TINY.with_overrides(schedule={"posteriors_from": "training", "prior": "uniform", "memory_momentum": 0.0})
    trainer = Trainer(tiny_catalog, tmp_path, preset, ctx=Context(torch.device("cpu")), log=lambda *a: None)
    trainer.relabel()  # the first labelling runs the pass and fills the memory from it
    mem_v, mem_a = trainer.labeller.memory
    assert mem_v.shape == (trainer.model.heads, N_CLIPS, 2) and np.isfinite(mem_v).all() and np.isfinite(mem_a).all()
    # one training step overwrites exactly its batch's rows
    before = mem_v.copy()
    rows = np.arange(TINY.optim.batch_size)
    video, audio = trainer.maker.batch(trainer.rows[rows], train=True, rng=np.random.default_rng(0))
    y = torch.from_numpy(trainer.state.labels[rows])
    trainer.net.train()
    trainer._loss(*trainer.precision.inputs(video, audio), y, rows)
    assert not np.allclose(mem_v[:, rows], before[:, rows])
    np.testing.assert_array_equal(mem_v[:, len(rows) :], before[:, len(rows) :])
    np.testing.assert_allclose(np.exp(mem_v[:, rows]).sum(axis=2), 1.0, rtol=1e-5)
    # a labelling now follows the memory alone: plant a balanced, confident split and get it back
    planted = np.arange(N_CLIPS) % 2
    mem_v[:] = np.log(np.where(np.eye(2)[planted] > 0, 0.9, 0.1))[None]
    mem_a[:] = mem_v
    trainer.relabel()
    for h in range(trainer.model.heads):
        np.testing.assert_array_equal(trainer.state.labels[:, h], planted)


def test_the_kept_posteriors_are_a_running_mean_with_memory_momentum(tiny_catalog, tmp_path):
    """With momentum m a training step leaves m p_old + (1 - m) p_step in its rows (probabilities, not logs)."""
    trainers = []
    for m in (0.0, 0.75):
        preset = TINY.with_overrides(schedule={"posteriors_from": "training", "memory_momentum": m})
        trainers.append(
            Trainer(tiny_catalog, tmp_path / str(m), preset, ctx=Context(torch.device("cpu")), log=lambda *a: None)
        )
    plain, mean = trainers
    plain.relabel()
    mean.model.load_state_dict(plain.model.state_dict())
    before = tuple(x.copy() for x in plain.labeller.memory)
    mean.labeller.memory = tuple(x.copy() for x in before)
    rows = np.arange(TINY.optim.batch_size)
    video, audio = plain.maker.batch(plain.rows[rows], train=True, rng=np.random.default_rng(0))
    y = torch.from_numpy(plain.state.labels[rows])
    for t in trainers:
        t.net.train()
        torch.manual_seed(5)  # the same dropout masks in both
        t._loss(*t.precision.inputs(video, audio), y, rows)
    for old, step, got in zip(before, plain.labeller.memory, mean.labeller.memory, strict=True):
        expected = np.log(0.75 * np.exp(old[:, rows]) + 0.25 * np.exp(step[:, rows]))
        np.testing.assert_allclose(got[:, rows], expected, rtol=1e-5, atol=1e-6)
        np.testing.assert_array_equal(got[:, len(rows) :], old[:, len(rows) :])


@pytest.mark.parametrize("target", ["prior", "uniform"])
def test_the_refine_target_sets_the_sizes_the_heads_are_held_to(tiny_catalog: Path, tmp_path: Path, target: str):
    """A uniform refine target ends with equal target sizes in every head; the prior keeps each head's own draw."""
    preset = TINY.with_overrides(
        model={"clusters": 3}, schedule={"prior": "gauss:0.3"}, refine={"rounds": 2, "target": target}
    )
    train(tiny_catalog, tmp_path / "run", preset, device="cpu", log=lambda *a: None)
    priors = Run(tmp_path / "run").priors
    assert priors.shape == (3, 3) and np.allclose(priors.sum(axis=1), 1.0)
    if target == "uniform":
        np.testing.assert_allclose(priors, 1 / 3)
    else:
        assert np.abs(priors - 1 / 3).max() > 0.01  # the Gaussian draws (sd 0.3) are far from equal
