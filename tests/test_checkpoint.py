"""Checkpoints: the official SeLaVi layout loads by name, misfits are named, unsafe files are refused, ours round-trips."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from selavi_core.config import CPU_SMALL, ModelSpec, Preset
from selavi_core.errors import CheckpointError
from selavi_core.model.checkpoint import (
    FORMAT,
    is_official,
    is_ours,
    load_checkpoint,
    load_model,
    load_official,
    save_checkpoint,
)
from selavi_core.model.networks import SeLaViModel

pytestmark = pytest.mark.usefixtures("one_torch_thread")


N_TRAIN = 37  # rows of selflabels in the fake official file


def randomise_buffers(model: nn.Module, seed: int) -> None:
    """BatchNorm statistics that differ from a fresh model, so loading them is actually tested."""
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=g) * 0.1)
            m.running_var.copy_(torch.rand(m.running_var.shape, generator=g) + 0.5)
            m.num_batches_tracked.fill_(int(torch.randint(1, 1000, (1,), generator=g)))


def official_state(model: SeLaViModel, *, dist: list[torch.Tensor] | None = None) -> dict:
    """Exactly what the official training loop saves: a DDP state_dict ("module." on every key) plus bookkeeping."""
    return {
        "model": {f"module.{k}": v.clone() for k, v in model.state_dict().items()},
        "epoch": 3,
        "dist": dist,
        "selflabels": torch.zeros(N_TRAIN, model.heads, dtype=torch.int64),
        "optimizer": {},
    }


def inputs(b: int = 2, t: int = 4, hw: int = 32) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    return torch.randn(b, 3, t, hw, hw, generator=g), torch.randn(b, 1, 40, 60, generator=g)


@torch.inference_mode()
def outputs(model: SeLaViModel, video: torch.Tensor, audio: torch.Tensor) -> torch.Tensor:
    lv, la = model.eval()(video, audio)
    return torch.stack(lv + la)


def make_model(spec: ModelSpec, clusters: int, seed: int) -> SeLaViModel:
    torch.manual_seed(seed)
    model = SeLaViModel(spec, clusters)
    with torch.no_grad():
        randomise_buffers(model, seed)
    return model.eval()


@pytest.mark.parametrize(
    "spec, clusters, hw",
    [
        (ModelSpec(heads=10), 309, 16),  # the paper model, as in selavi_vgg_sound.pth (tiny input to stay fast)
        (ModelSpec(video_widths=(16, 32, 64, 128), audio_widths=(8, 16, 32, 64), heads=3), 7, 32),
    ],
    ids=["paper", "narrow"],
)
def test_official_layout_loads_with_identical_outputs(tmp_path: Path, spec: ModelSpec, clusters: int, hw: int):
    model = make_model(spec, clusters, seed=0)
    dist = [torch.rand(clusters, 1, dtype=torch.float64) for _ in range(spec.heads)]
    path = tmp_path / "selavi_official.pth"
    torch.save(official_state(model, dist=dist), path)
    state = load_checkpoint(path)
    assert is_official(state) and not is_ours(state)

    loaded, info = load_official(path)
    assert not loaded.training
    assert (info["heads"], info["clusters"]) == (spec.heads, clusters)
    assert (info["video_widths"], info["audio_widths"]) == (spec.video_widths, spec.audio_widths)
    assert info["epoch"] == 3 and info["selflabels_shape"] == (N_TRAIN, spec.heads)
    torch.testing.assert_close(info["dist"], torch.cat(dist, dim=1).T)
    video, audio = inputs(t=2 if hw < 32 else 4, hw=hw)
    expected = outputs(model, video, audio)
    assert expected.shape == (2 * spec.heads, 2, clusters)
    assert torch.equal(outputs(loaded, video, audio), expected)
    if spec.heads < 10:  # (once is enough: outputs depend on the weights, and load_model dispatches here)
        assert not torch.allclose(outputs(make_model(spec, clusters, seed=1), video, audio), expected)
        via_dispatch, info2 = load_model(path)
        assert info2["format"] == "official" and torch.equal(outputs(via_dispatch, video, audio), expected)


def narrow_spec(heads: int = 2) -> ModelSpec:
    return ModelSpec(video_widths=(8, 8, 16, 16), audio_widths=(8, 8, 16, 16), heads=heads)


def test_official_single_head_naming_loads(tmp_path: Path):
    model = make_model(narrow_spec(heads=1), 4, seed=2)
    state = official_state(model)
    state["model"] = {k.replace("mlp_v0.", "mlp_v.").replace("mlp_a0.", "mlp_a."): v for k, v in state["model"].items()}
    assert "module.mlp_v.block_forward.8.weight" in state["model"]
    torch.save(state, tmp_path / "h1.pth")
    loaded, info = load_official(tmp_path / "h1.pth")
    assert info["heads"] == 1 and info["dist"] is None
    video, audio = inputs(hw=24)
    assert torch.equal(outputs(loaded, video, audio), outputs(model, video, audio))


def test_official_misfit_lists_the_keys(tmp_path: Path):
    model = make_model(narrow_spec(), 5, seed=3)
    state = official_state(model)
    sd = state["model"]
    sd["module.audio_network.base.layer3.0.bn2.wieght"] = sd.pop("module.audio_network.base.layer3.0.bn2.weight")
    del sd["module.mlp_a1.block_forward.4.running_var"]
    sd["module.mlp_v1.block_forward.8.bias"] = torch.zeros(6)  # K=5 elsewhere
    torch.save(state, tmp_path / "bad.pth")
    with pytest.raises(CheckpointError) as err:
        load_official(tmp_path / "bad.pth")
    msg = str(err.value)
    assert "2 missing keys" in msg and "audio_network.base.layer3.0.bn2.weight" in msg
    assert "mlp_a1.block_forward.4.running_var" in msg
    assert "1 unexpected keys" in msg and "audio_network.base.layer3.0.bn2.wieght" in msg
    assert "mlp_v1.block_forward.8.bias checkpoint (6,) vs model (5,)" in msg
    assert str(tmp_path / "bad.pth") in msg


def test_official_misfit_listing_is_capped(tmp_path: Path):
    model = make_model(narrow_spec(), 5, seed=4)
    state = official_state(model)
    state["model"] = {k.replace("layer4", "layer5") if "video" in k else k: v for k, v in state["model"].items()}
    with pytest.raises(CheckpointError) as err:
        load_official(state)
    msg = str(err.value)
    n = sum("video_network.base.layer4" in k for k in model.state_dict())
    assert n > 20 and f"{n} missing keys" in msg and f"... and {n - 20} more" in msg


def test_official_linear_heads_are_refused_with_a_reason():
    model = make_model(narrow_spec(), 5, seed=5)
    state = official_state(model)
    sd = {k: v for k, v in state["model"].items() if ".mlp_" not in k}
    for h in range(2):
        for m in "va":
            sd[f"module.mlp_{m}{h}.weight"] = torch.zeros(5, 16)
            sd[f"module.mlp_{m}{h}.bias"] = torch.zeros(5)
    state["model"] = sd
    assert is_official(state)
    with pytest.raises(CheckpointError, match="linear heads"):
        load_official(state)


class Trap:
    """Unpickling this (unsafely) would create a file; weights_only loading must never run it."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def test_pickled_objects_are_refused_without_running_them(tmp_path: Path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pth"
    with open(path, "wb") as f:
        torch.save({"model": {"module.x": torch.zeros(1)}, "epoch": Trap(marker)}, f)
    with pytest.raises(CheckpointError, match="refused to load.*untrusted") as err:
        load_checkpoint(path)
    assert "open" in str(err.value)  # names the offending global
    with pytest.raises(CheckpointError):
        load_model(path)
    assert not marker.exists()


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
def test_unreadable_files_give_human_errors(tmp_path: Path):
    with pytest.raises(CheckpointError, match="not found"):
        load_checkpoint(tmp_path / "nope.pth")
    with pytest.raises(CheckpointError, match="folder"):
        load_checkpoint(tmp_path)
    (tmp_path / "empty.pth").write_bytes(b"")
    with pytest.raises(CheckpointError, match="empty file"):
        load_checkpoint(tmp_path / "empty.pth")
    (tmp_path / "notes.txt").write_text("these are not weights\n")
    with pytest.raises(CheckpointError, match="not a PyTorch checkpoint"):
        load_checkpoint(tmp_path / "notes.txt")
    (tmp_path / "plain.pkl").write_bytes(pickle.dumps({"a": 1}))
    with pytest.raises(CheckpointError, match="not a PyTorch checkpoint"):
        load_checkpoint(tmp_path / "plain.pkl")
    good = tmp_path / "good.pth"
    torch.save({"model": {"w": torch.randn(1000, 100)}}, good)
    (tmp_path / "cut.pth").write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(CheckpointError, match="not a PyTorch checkpoint"):
        load_checkpoint(tmp_path / "cut.pth")
    torch.save([torch.zeros(1)], tmp_path / "list.pth")
    with pytest.raises(CheckpointError, match="expected a dict"):
        load_checkpoint(tmp_path / "list.pth")
    torch.save({"weights": torch.zeros(1)}, tmp_path / "other.pth")
    with pytest.raises(CheckpointError, match="neither a SeLaVi Studio checkpoint nor an official"):
        load_model(tmp_path / "other.pth")


def tiny_preset(fusion: str = "augment") -> Preset:
    return CPU_SMALL.with_overrides(
        model={"video_widths": (8, 8, 16, 16), "audio_widths": (8, 16, 16, 16), "heads": 2, "fusion": fusion}
    )


def train_step(model: SeLaViModel, opt: torch.optim.Optimizer, video, audio, labels) -> None:
    model.train()
    first, second = model(video, audio)
    loss = sum(F.cross_entropy(x, labels) for x in first + (second or []))
    opt.zero_grad()
    loss.backward()
    opt.step()


@pytest.mark.parametrize("fusion", ["augment", "concat"])
def test_our_format_round_trips_model_optimizer_and_extra(tmp_path: Path, fusion: str):
    preset = tiny_preset(fusion)
    torch.manual_seed(0)
    model = SeLaViModel(preset.model, 4)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    video, audio = inputs(b=4, hw=24)
    labels = torch.tensor([0, 1, 2, 3])
    train_step(model, opt, video, audio, labels)
    extra = {
        "priors": np.full((2, 4), 0.25),
        "rng": {"torch": torch.get_rng_state(), "numpy": np.random.default_rng(0).bit_generator.state},
        "schedule_position": 5,
        "labels": torch.randint(0, 4, (11, 2)),
        "note": "resume",
    }
    path = tmp_path / "ckpt" / "checkpoint.pt"
    save_checkpoint(path, model=model, optimizer=opt, epoch=7, preset=preset, clusters=4, extra=extra)
    assert [p.name for p in path.parent.iterdir()] == ["checkpoint.pt"]  # no temp file left behind

    raw = torch.load(path, weights_only=True)  # readable by plain safe torch.load
    assert raw["format"] == FORMAT and (raw["heads"], raw["clusters"], raw["fusion"]) == (2, 4, fusion)
    assert Preset.from_dict(raw["preset"]) == preset
    state = load_checkpoint(path)
    assert is_ours(state) and not is_official(state)
    assert state["epoch"] == 7
    ex = state["extra"]
    assert isinstance(ex["priors"], torch.Tensor) and torch.equal(
        ex["priors"], torch.full((2, 4), 0.25, dtype=torch.float64)
    )
    assert torch.equal(ex["rng"]["torch"], extra["rng"]["torch"]) and ex["schedule_position"] == 5
    assert ex["rng"]["numpy"]["state"]["state"] == extra["rng"]["numpy"]["state"]["state"]
    assert torch.equal(ex["labels"], extra["labels"]) and ex["note"] == "resume"

    loaded, info = load_model(path)
    assert info["format"] == FORMAT and info["epoch"] == 7 and info["preset"] == preset and not loaded.training
    assert loaded.fusion == fusion
    first, _ = model.eval()(video, audio)
    first_loaded, _ = loaded(video, audio)
    for a, b in zip(first, first_loaded, strict=True):
        assert torch.equal(a, b)

    # resuming from the optimizer state continues exactly like the original
    opt2 = torch.optim.Adam(loaded.parameters(), lr=1e-3)
    opt2.load_state_dict(state["optimizer"])
    torch.manual_seed(9)  # same dropout masks for both
    train_step(model, opt, video, audio, labels)
    torch.manual_seed(9)
    train_step(loaded, opt2, video, audio, labels)
    for (name, p), q in zip(model.named_parameters(), loaded.parameters(), strict=True):
        torch.testing.assert_close(q, p, msg=name)


def test_save_refuses_unsafe_extra_and_keeps_the_old_file(tmp_path: Path):
    preset = tiny_preset()
    model = SeLaViModel(preset.model, 3)
    path = tmp_path / "checkpoint.pt"
    save_checkpoint(path, model=model, epoch=1, preset=preset, clusters=3, extra={})
    before = path.read_bytes()
    with pytest.raises(TypeError, match=r"extra\['bad'\]: a Trap cannot be stored"):
        save_checkpoint(path, model=model, epoch=2, preset=preset, clusters=3, extra={"bad": Trap(tmp_path / "x")})
    with pytest.raises(ValueError, match="clusters"):
        save_checkpoint(path, model=model, epoch=2, preset=preset, clusters=4, extra={})
    assert path.read_bytes() == before and [p.name for p in tmp_path.iterdir()] == ["checkpoint.pt"]
    save_checkpoint(path, model=model, epoch=2, preset=preset, clusters=3, extra=None)  # overwrite in place
    assert load_checkpoint(path)["epoch"] == 2 and load_checkpoint(path)["optimizer"] is None


def test_our_checkpoint_with_a_foreign_model_state_is_named(tmp_path: Path):
    preset = tiny_preset()
    model = SeLaViModel(preset.model, 3)
    path = tmp_path / "checkpoint.pt"
    save_checkpoint(path, model=model, epoch=1, preset=preset, clusters=3, extra={})
    state = load_checkpoint(path)
    state["model"].pop("mlp_v1.block_forward.2.weight")
    with pytest.raises(CheckpointError, match=r"1 missing keys.*mlp_v1\.block_forward\.2\.weight"):
        load_model(state)
    state["format"] = "selavi-studio/9"
    with pytest.raises(CheckpointError, match="newer"):
        load_model(state)


class DDPLike(nn.Module):
    """Holds the model as ``.module`` exactly like DistributedDataParallel (which needs a process group)."""

    def __init__(self, module: nn.Module):
        super().__init__()
        self.module = module


def test_wrapped_models_are_saved_with_plain_keys(tmp_path: Path):
    preset = tiny_preset()
    model = SeLaViModel(preset.model, 3)
    wrapped = DDPLike(model)
    assert all(k.startswith("module.") for k in wrapped.state_dict())
    path = save_checkpoint(tmp_path / "c.pt", model=wrapped, epoch=0, preset=preset, clusters=3, extra={})
    assert set(load_checkpoint(path)["model"]) == set(model.state_dict())
    with pytest.raises(TypeError, match="expected a SeLaViModel"):
        save_checkpoint(tmp_path / "d.pt", model=nn.Linear(2, 2), epoch=0, preset=preset, clusters=3, extra={})
