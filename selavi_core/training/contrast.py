"""Cross-modal correspondence as a second training signal beside self-labelling (not in the paper).

SeLaVi's labels start from random encoders: until one modality predicts them, the labels follow whatever
each network happens to separate first (a clip's colours, the word's onset, the speaker), and on small CPU
budgets the run's outcome depends on how early the shared factor wins (AV-digits best heads 0.52-0.92
over four seeds). Matching each clip's picture to its own sound among the other clips of the batch
(symmetric InfoNCE on small projections of the two pooled features) rewards exactly the factors both
modalities share from the first step, so the labels have something cross-modal to follow at once.

The projections live outside :class:`~selavi_core.model.networks.SeLaViModel`, so the network and its checkpoint
layout stay SeLaVi's; :class:`TrainingNet` bundles both for one forward pass (one DistributedDataParallel
wrapper covers both).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from selavi_core.config import ContrastSpec
from selavi_core.model.networks import SeLaViModel


class Projection(nn.Module):
    """Pooled feature -> unit vector: a two-layer MLP, as in SimCLR/CLIP-style objectives."""

    def __init__(self, in_dim: int, out_dim: int):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(in_dim, in_dim), nn.ReLU(inplace=True), nn.Linear(in_dim, out_dim))

    def forward(self, x: Tensor) -> Tensor:
        return F.normalize(self.net(x.float()), dim=1)


class CrossModalProjector(nn.Module):
    """One projection per modality into a shared space of ``spec.dim`` dimensions."""

    def __init__(self, video_dim: int, audio_dim: int, spec: ContrastSpec):
        super().__init__()
        self.video = Projection(video_dim, spec.dim)
        self.audio = Projection(audio_dim, spec.dim)
        self.temperature = float(spec.temperature)

    def forward(self, fv: Tensor, fa: Tensor) -> tuple[Tensor, Tensor]:
        return self.video(fv), self.audio(fa)


def correspondence_loss(zv: Tensor, za: Tensor, temperature: float) -> Tensor:
    """Symmetric InfoNCE: each clip's video must pick its own audio among the batch's, and the reverse."""
    logits = zv @ za.t() / temperature
    target = torch.arange(len(zv), device=zv.device)
    return 0.5 * (F.cross_entropy(logits, target) + F.cross_entropy(logits.t(), target))


class TrainingNet(nn.Module):
    """The SeLaVi model plus the optional projector: logits of every head and, if any, the projections."""

    def __init__(self, model: SeLaViModel, projector: CrossModalProjector | None):
        super().__init__()
        self.model = model
        self.projector = projector

    def forward(
        self, video: Tensor, audio: Tensor
    ) -> tuple[list[Tensor], list[Tensor] | None, tuple[Tensor, Tensor] | None]:
        fv, fa = self.model.encode(video, audio)
        out_a, out_b = self.model.heads_logits(fv, fa)
        z = None if self.projector is None else self.projector(fv, fa)
        return out_a, out_b, z
