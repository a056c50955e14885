"""Where a model runs and in what precision: the one place that decides, for training, labelling and assignment.

* ``resolve_device``: ``auto`` is CUDA when there is one, else the CPU; asking for CUDA without one is an error.
* Precision: encoders run under bf16 autocast on GPUs always, and on CPUs when the preset asks for it
  (``Preset.cpu_bf16``) and the CPU runs bf16 natively (AVX512-BF16/AMX; elsewhere bf16 is slower than fp32).
  Heads and posteriors stay float32 (``selavi_core.model.inference``).
* Memory layout: the trunks and their inputs are channels-last (``channels_last_3d`` for video): on CPUs
  10-15% faster with or without bf16; on GPUs it is the layout cuDNN's bf16 tensor-core convolutions
  want (not yet measured here: bench/gpu_check.sh prints the clips/s).
"""

from __future__ import annotations

import contextlib
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from torch import Tensor

from selavi_core.errors import SelaviError

if TYPE_CHECKING:
    from selavi_core.model.networks import SeLaViModel


def resolve_device(name: str) -> torch.device:
    """``auto`` | ``cpu`` | ``cuda`` | ``cuda:N`` (or any torch device name) as a ``torch.device``."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise SelaviError("--device cuda was asked for, but no CUDA device is available")
    return torch.device(name)


def bf16_supported() -> bool:
    """True when this CPU runs bf16 convolutions natively (AVX512-BF16/AMX); elsewhere bf16 autocast is slower."""
    try:
        return bool(torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def cpu_autocast(enabled: bool) -> AbstractContextManager:
    """bf16 autocast on CPU (2.5-3x faster encoders on AVX512-BF16 CPUs; features lose precision)."""
    return torch.autocast("cpu", dtype=torch.bfloat16, enabled=enabled)


def to_channels_last(model: SeLaViModel) -> SeLaViModel:
    """Put a SeLaVi model's trunks in channels-last layouts (in place): pairs with bf16 autocast on CPU.

    Video uses ``channels_last_3d``, audio ``channels_last``; feed them inputs from :func:`channels_last_inputs`.
    With bf16 on this CPU that is ~3.5x (video) and ~1.6x (audio) the contiguous speed (bench/bench_models.py).
    """
    model.video_network.to(memory_format=torch.channels_last_3d)
    model.audio_network.to(memory_format=torch.channels_last)
    return model


def channels_last_inputs(video: Tensor, audio: Tensor) -> tuple[Tensor, Tensor]:
    """(B, 3, T, H, W) video in ``channels_last_3d`` and (B, 1, F, T) audio in ``channels_last`` (values unchanged)."""
    return video.contiguous(memory_format=torch.channels_last_3d), audio.contiguous(memory_format=torch.channels_last)


@dataclass(frozen=True)
class Precision:
    """How encoders run on ``device``: build with :func:`precision_for`."""

    device: torch.device
    cpu_bf16: bool = False  # bf16 autocast on this CPU (asked for and native)

    @property
    def channels_last(self) -> bool:
        return self.device.type in ("cpu", "cuda")

    @property
    def bf16(self) -> bool:
        """Whether encoders run under bf16 autocast."""
        return self.device.type == "cuda" or self.cpu_bf16

    def autocast(self) -> AbstractContextManager:
        if self.device.type == "cuda":
            return torch.autocast("cuda", dtype=torch.bfloat16)
        if self.cpu_bf16:
            return cpu_autocast(True)
        return contextlib.nullcontext()

    def inputs(self, video: Tensor, audio: Tensor) -> tuple[Tensor, Tensor]:
        """A batch on the device, in the layout the trunks expect."""
        video, audio = video.to(self.device, non_blocking=True), audio.to(self.device, non_blocking=True)
        return channels_last_inputs(video, audio) if self.channels_last else (video, audio)

    def prepare(self, model: SeLaViModel) -> SeLaViModel:
        """A SeLaVi model on the device, in the layout the inputs of :meth:`inputs` have."""
        model = model.to(self.device)
        return to_channels_last(model) if self.channels_last else model


def precision_for(device: torch.device, cpu_bf16: bool) -> Precision:
    """The precision policy: ``cpu_bf16`` is the preset's wish (``Preset.cpu_bf16``), honoured where the CPU has bf16."""
    return Precision(device, cpu_bf16=cpu_bf16 and device.type == "cpu" and bf16_supported())
