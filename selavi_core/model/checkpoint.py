"""Checkpoints: our own format, and the official SeLaVi layout (selavi-method.md section 8).

A checkpoint is untrusted input (users download them), so every read goes through ``torch.load(...,
weights_only=True)``: tensors, numbers, strings and containers only, never arbitrary pickled objects. Our own
format therefore stores nothing else (numpy arrays in ``extra`` are converted to tensors on save).

Our format (``format == "selavi-studio/1"``)::

    {"format", "model": state_dict, "optimizer": state_dict | None, "epoch": int, "preset": Preset.to_dict(),
     "clusters": int, "heads": int, "fusion": str, "extra": dict}

The official training loop saves ``{"epoch", "dist", "model", "optimizer", "selflabels"[, "amp"]}`` where
``model`` is a DistributedDataParallel state_dict (every key starts with ``module.``). :func:`load_official`
infers heads, clusters and widths from the tensors and loads them by name, strictly.
"""

from __future__ import annotations

import os
import pickle
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from selavi_core.config import ModelSpec, Preset
from selavi_core.errors import CheckpointError
from selavi_core.io import atomic_write
from selavi_core.model.networks import FULL_WIDTHS, SeLaViModel

FORMAT = "selavi-studio/1"
FORMAT_FAMILY = "selavi-studio/"
DDP_PREFIX = "module."
#: Keys listed per category when a state_dict does not fit the model.
MAX_LISTED_KEYS = 20
#: Dropout of the official heads (not stored in checkpoints; irrelevant at inference).
OFFICIAL_DROPOUT = 0.3

PathLike = str | os.PathLike


# --------------------------------------------------------------------------------------------- our own format


def _plain(obj: Any, where: str) -> Any:
    """``obj`` with numpy values turned into tensors/Python scalars; raises TypeError on anything unsafe to store."""
    if isinstance(obj, torch.Tensor):
        return obj.detach()
    if obj is None or isinstance(obj, bool | int | float | str):
        return obj
    if isinstance(obj, np.ndarray):
        if obj.dtype == object:
            raise TypeError(f"{where}: numpy object arrays cannot be stored in a checkpoint")
        return torch.from_numpy(np.ascontiguousarray(obj).copy())
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, Mapping):
        out = {}
        for k, v in obj.items():
            if not isinstance(k, str | int):
                raise TypeError(f"{where}: dict key {k!r} is a {type(k).__name__}; use str or int keys")
            out[k] = _plain(v, f"{where}[{k!r}]")
        return out
    if isinstance(obj, list | tuple):
        items = [_plain(v, f"{where}[{i}]") for i, v in enumerate(obj)]
        return items if isinstance(obj, list) else tuple(items)
    raise TypeError(
        f"{where}: a {type(obj).__name__} cannot be stored in a checkpoint (only tensors, numpy arrays, numbers, "
        "strings, None, lists, tuples and dicts, so that weights_only loading can read it)"
    )


def save_checkpoint(
    path: PathLike,
    *,
    model: nn.Module,
    optimizer: torch.optim.Optimizer | None = None,
    epoch: int,
    preset: Preset,
    clusters: int,
    extra: Mapping[str, Any] | None = None,
) -> Path:
    """Write our checkpoint atomically and durably (``io.atomic_write``): a crash never leaves a half-written file.

    ``model`` may be wrapped in DistributedDataParallel or ``torch.compile``: the plain model's keys are saved.
    ``extra`` carries training state (priors, RNG states, schedule position, self-labels, ...); numpy arrays in it
    become tensors. Raises TypeError before touching ``path`` if something in it could not be loaded back safely.
    """
    model = _unwrap(model)
    if clusters != model.clusters:
        raise ValueError(f"clusters={clusters} but the model has {model.clusters}")
    if preset.model != model.spec:
        raise ValueError(f"preset {preset.name!r} describes {preset.model}, but the model was built from {model.spec}")
    state = {
        "format": FORMAT,
        "model": _plain(model.state_dict(), "model"),
        "optimizer": None if optimizer is None else _plain(optimizer.state_dict(), "optimizer"),
        "epoch": int(epoch),
        "preset": _plain(preset.to_dict(), "preset"),
        "clusters": int(clusters),
        "heads": model.heads,
        "fusion": model.fusion,
        "extra": _plain(dict(extra or {}), "extra"),
    }
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(path) as tmp, open(tmp, "wb") as f:
        torch.save(state, f)
    return path


def _unwrap(model: nn.Module) -> SeLaViModel:
    """The SeLaViModel inside a DistributedDataParallel and/or ``torch.compile`` wrapper (keys without prefixes)."""
    while not isinstance(model, SeLaViModel):
        inner = getattr(model, "module", None) or getattr(model, "_orig_mod", None)
        if inner is None:
            raise TypeError(f"expected a SeLaViModel, got {type(model).__name__}")
        model = inner
    return model


def load_checkpoint(path: PathLike, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read any checkpoint file (ours or official) with ``weights_only=True``; CheckpointError says what is wrong."""
    p = Path(path)
    if not p.exists():
        raise CheckpointError(f"{p}: checkpoint not found")
    if p.is_dir():
        raise CheckpointError(f"{p}: is a folder, not a checkpoint file")
    if p.stat().st_size == 0:
        raise CheckpointError(f"{p}: empty file (0 bytes), not a checkpoint")
    try:
        state = torch.load(p, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:
        msg = str(e)
        detail = re.search(r"WeightsUnpickler error:\s*(.+)", msg)
        detail_line = _first_line(detail.group(1)) if detail else _first_line(msg)
        glob = re.search(r"Unsupported global: GLOBAL ([\w.<>]+)", msg)
        if glob or (detail and "Unsupported operand" not in detail_line):
            what = f" ({glob.group(1)})" if glob else f" ({detail_line})"
            raise CheckpointError(
                f"{p}: refused to load: it contains pickled Python objects{what}, not just tensors, numbers and "
                "strings. Checkpoints are untrusted input, so only weights-only content is read."
            ) from None
        raise CheckpointError(f"{p}: not a PyTorch checkpoint ({detail_line})") from None
    except Exception as e:  # the unpickler fails on garbage in many ways (IndexError, KeyError, ...)
        hint = "truncated or corrupt file" if "zip" in str(e).lower() or isinstance(e, EOFError) else "unreadable"
        reason = f"{type(e).__name__}: {_first_line(str(e))}"
        raise CheckpointError(f"{p}: not a PyTorch checkpoint, or {hint} ({reason})") from None
    if not isinstance(state, dict):
        raise CheckpointError(f"{p}: holds a {type(state).__name__}, expected a dict of checkpoint fields")
    return state


def _first_line(msg: str, limit: int = 200) -> str:
    line = msg.strip().splitlines()[0] if msg.strip() else "no details"
    return line[:limit]


def is_ours(state: Mapping[str, Any]) -> bool:
    return isinstance(state, Mapping) and isinstance(state.get("format"), str) and state["format"] == FORMAT


def model_from_ours(state: Mapping[str, Any], source: str = "checkpoint") -> tuple[SeLaViModel, dict[str, Any]]:
    """Rebuild the model of one of our checkpoints (eval mode) and its info (epoch, preset, extra)."""
    fmt = state.get("format")
    if fmt != FORMAT:
        newer = isinstance(fmt, str) and fmt.startswith(FORMAT_FAMILY)
        why = "written by a newer SeLaVi Studio" if newer else "not a SeLaVi Studio checkpoint"
        raise CheckpointError(f"{source}: format {fmt!r} is {why} (this version reads {FORMAT!r})")
    try:
        preset = Preset.from_dict(state["preset"])
        clusters = int(state["clusters"])
        model = SeLaViModel(preset.model, clusters)
    except (KeyError, TypeError, ValueError) as e:
        raise CheckpointError(f"{source}: malformed preset or model fields ({e})") from None
    load_strict(model, state["model"], source)
    info = {
        "format": FORMAT,
        "epoch": state.get("epoch"),
        "preset": preset,
        "clusters": clusters,
        "heads": model.heads,
        "fusion": model.fusion,
        "extra": state.get("extra") or {},
    }
    return model.eval(), info


# ------------------------------------------------------------------------------------------------- strict loading


def _listing(title: str, keys: list[str]) -> str:
    shown = ", ".join(keys[:MAX_LISTED_KEYS])
    more = f" ... and {len(keys) - MAX_LISTED_KEYS} more" if len(keys) > MAX_LISTED_KEYS else ""
    return f"\n  {len(keys)} {title}: {shown}{more}"


def load_strict(module: nn.Module, state_dict: Mapping[str, Any], source: str = "checkpoint") -> None:
    """``load_state_dict(strict=True)``, but a misfit raises CheckpointError listing missing, unexpected and
    mis-shaped keys (the first few of each, with counts), so a user can see which model the file belongs to."""
    expected = module.state_dict()
    missing = [k for k in expected if k not in state_dict]
    unexpected = [k for k in state_dict if k not in expected]
    shapes = [
        f"{k} checkpoint {tuple(v.shape)} vs model {tuple(expected[k].shape)}"
        for k, v in state_dict.items()
        if k in expected and (not isinstance(v, torch.Tensor) or v.shape != expected[k].shape)
    ]
    if missing or unexpected or shapes:
        msg = f"{source}: checkpoint does not fit the model"
        if isinstance(module, SeLaViModel):
            s = module.spec
            msg += (
                f" (H={s.heads}, K={module.clusters}, video widths {s.video_widths}, "
                f"audio widths {s.audio_widths}, fusion {s.fusion})"
            )
        if missing:
            msg += _listing("missing keys (in the model, not in the checkpoint)", missing)
        if unexpected:
            msg += _listing("unexpected keys (in the checkpoint, not in the model)", unexpected)
        if shapes:
            msg += _listing("shape mismatches", shapes)
        raise CheckpointError(msg)
    module.load_state_dict(state_dict, strict=True)


# ---------------------------------------------------------------------------------------------- official layout

_HEAD_KEY = re.compile(r"^mlp_([vac])(\d*)\.(.+)$")


def _model_dict(state: Mapping[str, Any]) -> Mapping[str, Any] | None:
    """The state_dict inside an official checkpoint (``state["model"]``), or ``state`` itself if it is one."""
    sd = state.get("model") if isinstance(state, Mapping) else None
    if isinstance(sd, Mapping):
        return sd
    if isinstance(state, Mapping) and state and all(isinstance(v, torch.Tensor) for v in state.values()):
        return state
    return None


def is_official(state: Any) -> bool:
    """Does ``state`` look like an official SeLaVi training checkpoint (DDP keys with both trunks and heads)?

    Linear-head checkpoints (``mlp_v0.weight``) count too, so :func:`load_official` can say why it refuses them.
    """
    sd = state.get("model") if isinstance(state, Mapping) else None
    if not isinstance(sd, Mapping) or not sd:
        return False
    keys = list(sd)
    if not all(isinstance(k, str) and k.startswith(DDP_PREFIX) for k in keys):
        return False
    n = len(DDP_PREFIX)
    return (
        any(k.startswith("video_network.base.", n) for k in keys)
        and any(k.startswith("audio_network.base.", n) for k in keys)
        and any(k.startswith(("mlp_v0.", "mlp_v."), n) for k in keys)
    )


def _infer_widths(sd: Mapping[str, Any], fmt: str, notes: list[str]) -> tuple[int, int, int, int]:
    """Stage widths from the first BatchNorm of each stage; paper widths (and a note) where a key is missing."""
    widths = []
    for i in range(1, 5):
        key = fmt.format(i)
        if isinstance(sd.get(key), torch.Tensor) and sd[key].ndim == 1:
            widths.append(int(sd[key].shape[0]))
        else:
            widths.append(FULL_WIDTHS[i - 1])
            notes.append(f"cannot infer a width from missing key {key!r}; assumed the paper's {FULL_WIDTHS[i - 1]}")
    return tuple(widths)  # type: ignore[return-value]


def load_official(path_or_state: PathLike | Mapping[str, Any]) -> tuple[SeLaViModel, dict[str, Any]]:
    """Load an official SeLaVi checkpoint (or its state_dict) into our model, strictly; model in eval mode.

    Infers H (number of ``mlp_v{h}`` heads; H=1 files name them ``mlp_v``/``mlp_a``), K (rows of the last head
    layer) and both trunks' widths from tensor shapes. ``info`` has ``epoch``, ``dist`` (the per-head Gaussian
    marginals as an (H, K) float64 tensor, or None), ``selflabels_shape`` and the inferred ``spec``. Whether the
    run used ``norm_feat`` is not recorded in the file; current official training has it off, as do we.
    """
    state, source = _state_and_source(path_or_state)
    return _official_from_state(state, source)


def _state_and_source(path_or_state: PathLike | Mapping[str, Any]) -> tuple[Mapping[str, Any], str]:
    if isinstance(path_or_state, Mapping):
        return path_or_state, "checkpoint"
    return load_checkpoint(path_or_state), str(path_or_state)


def _official_from_state(state: Mapping[str, Any], source: str) -> tuple[SeLaViModel, dict[str, Any]]:
    raw = _model_dict(state)
    if raw is None:
        keys = ", ".join(map(str, list(state)[:10])) if isinstance(state, Mapping) else type(state).__name__
        raise CheckpointError(f"{source}: no model state_dict found (top-level keys: {keys})")

    sd: dict[str, Any] = {}
    for k, v in raw.items():
        k = str(k)
        k = k[len(DDP_PREFIX) :] if k.startswith(DDP_PREFIX) else k
        m = _HEAD_KEY.match(k)
        if m:
            kind, idx, rest = m.groups()
            if not rest.startswith("block_forward."):
                raise CheckpointError(
                    f"{source}: linear heads ({k!r}; official --use_mlp False) are not supported: SeLaVi Studio "
                    "loads the MLP heads that the released models use"
                )
            k = f"mlp_{kind}{idx or 0}.{rest}"
            if k in sd:
                raise CheckpointError(f"{source}: both mlp_{kind} and mlp_{kind}0 heads present ({rest})")
        sd[k] = v

    head_ids = sorted({int(m.group(2)) for k in sd if (m := _HEAD_KEY.match(k)) and m.group(1) == "v"})
    if not head_ids:
        raise CheckpointError(f"{source}: no video heads (mlp_v0.block_forward.*) found in the checkpoint")
    last = "mlp_v0.block_forward.8.weight"
    if last not in sd:
        raise CheckpointError(f"{source}: cannot infer the number of clusters: key {last!r} is missing")
    notes: list[str] = []
    video_widths = _infer_widths(sd, "video_network.base.layer{}.0.conv1.1.weight", notes)
    audio_widths = _infer_widths(sd, "audio_network.base.layer{}.0.bn1.weight", notes)
    clusters = int(sd[last].shape[0])
    spec = ModelSpec(
        video_widths=video_widths,
        audio_widths=audio_widths,
        heads=head_ids[-1] + 1,
        clusters=clusters,
        dropout=OFFICIAL_DROPOUT,
        fusion="augment",
    )
    model = SeLaViModel(spec, clusters)
    try:
        load_strict(model, sd, source)
    except CheckpointError as e:
        raise CheckpointError("\n  ".join([str(e), *notes])) from None

    dist = state.get("dist") if "model" in state else None
    if isinstance(dist, list | tuple) and dist and all(isinstance(d, torch.Tensor) for d in dist):
        dist = torch.stack([d.reshape(-1).double() for d in dist])
    elif not isinstance(dist, torch.Tensor):
        dist = None
    selflabels = state.get("selflabels") if "model" in state else None
    info = {
        "format": "official",
        "epoch": state.get("epoch") if "model" in state else None,
        "dist": dist,
        "selflabels_shape": tuple(selflabels.shape) if isinstance(selflabels, torch.Tensor) else None,
        "heads": spec.heads,
        "clusters": clusters,
        "video_widths": video_widths,
        "audio_widths": audio_widths,
        "spec": spec,
    }
    return model.eval(), info


def load_model(path_or_state: PathLike | Mapping[str, Any]) -> tuple[SeLaViModel, dict[str, Any]]:
    """Any checkpoint we can read (ours or official) as ``(model in eval mode, info)``; ``info["format"]`` says which."""
    state, source = _state_and_source(path_or_state)
    fmt = state.get("format")
    if isinstance(fmt, str) and fmt.startswith(FORMAT_FAMILY):
        return model_from_ours(state, source)
    sd = _model_dict(state)
    if sd is not None and any(str(k).removeprefix(DDP_PREFIX).startswith("video_network.base.") for k in sd):
        return _official_from_state(state, source)
    keys = ", ".join(map(str, list(state)[:10]))
    raise CheckpointError(
        f"{source}: neither a SeLaVi Studio checkpoint nor an official SeLaVi checkpoint (top-level keys: {keys})"
    )
