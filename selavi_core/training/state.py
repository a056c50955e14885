"""What a training run carries from step to step and across a resume, besides model and optimiser weights."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

ARRAYS = ("labels", "prior_bases", "marginals")


@dataclass
class TrainState:
    """Everything a resume needs besides model and optimiser weights (and the random generators)."""

    epoch: int = 0
    iteration: int = 0
    labels: np.ndarray | None = None  # (N, H) current pseudo-labels
    prior_bases: np.ndarray | None = None  # (H, K) per-head prior draws
    marginals: np.ndarray | None = None  # (H, K) marginals used at the last labelling
    aligned: bool = False
    n_labellings: int = 0
    refined: bool = False  # the heads went through RefineSpec's rounds after the last epoch
    history: list[dict] = field(default_factory=list)

    def to_extra(self) -> dict[str, Any]:
        """The checkpoint's ``extra`` entries of this state (tensors, numbers and JSON text only: weights_only-safe).
        The epoch travels as the checkpoint's own ``epoch``."""
        return {
            "iteration": self.iteration,
            "aligned": self.aligned,
            "n_labellings": self.n_labellings,
            "refined": self.refined,
            **{name: None if getattr(self, name) is None else torch.from_numpy(getattr(self, name)) for name in ARRAYS},
            "history": json.dumps(self.history),
        }

    @staticmethod
    def from_checkpoint(ckpt: dict[str, Any]) -> TrainState:
        extra = ckpt["extra"]
        arrays = {name: None if extra.get(name) is None else extra[name].numpy() for name in ARRAYS}
        return TrainState(
            epoch=int(ckpt["epoch"]),
            iteration=int(extra["iteration"]),
            aligned=bool(extra["aligned"]),
            n_labellings=int(extra["n_labellings"]),
            refined=bool(extra.get("refined", False)),
            history=json.loads(extra["history"]),
            **arrays,
        )
