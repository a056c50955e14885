"""The Sinkhorn problem's contract, shared by the solver, the reference and the public API (``sinkhorn.py``, which
re-exports all of it): the error raised for bad input, the input checks, and the result type.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from selavi_core.errors import SelaviError


class SinkhornInputError(SelaviError, ValueError):
    """Bad input to Sinkhorn (shape, NaN, a marginal that is not a positive vector): a ValueError users can act on."""


@dataclass(frozen=True)
class SinkhornResult:
    """Labels and diagnostics of one Sinkhorn-Knopp solve.

    ``labels`` (N,) int64 are the hard pseudo-labels (local rows in the distributed version). ``marginal`` is the
    achieved column marginal of the soft plan ``Q`` at the last iterate (whose rows sum to exactly 1/N); ``target`` is
    the normalised marginal asked for. ``log_alpha`` is the absolute log column scaling: ``Q_ik`` is proportional
    within a row to ``exp(lam*log_p_ik + log_alpha_k)``, which is how the soft plan can be rebuilt (see
    ``soft_plan``). ``counts`` are the hard-label counts over all rows (all ranks).
    """

    labels: np.ndarray
    n_iter: int
    error: float
    marginal: np.ndarray
    target: np.ndarray
    log_alpha: np.ndarray
    counts: np.ndarray
    converged: bool
    lam: float
    tol: float
    max_iter: int
    n_rows: int  # rows over all ranks
    storage: str  # "sparse" | "dense" | "reference"
    density: float  # kept fraction of N*K in the last kernel build
    rebuilds: int  # kernel rebuilds after the first build (dual absorption)
    repairs: int  # exact log-domain column updates for clusters with no kept mass
    precision: str
    seconds: float
    timings: dict[str, float] = field(default_factory=dict)  # seconds per phase: build, iterate, repair, labels

    @property
    def capped(self) -> bool:
        """True when the iteration cap was hit before the stopping rule was met."""
        return not self.converged


def as_numpy(log_p: Any) -> np.ndarray:
    """numpy view (float32/float64, C-contiguous) of an array or torch tensor; torch tensors are moved to CPU."""
    if type(log_p).__module__.startswith("torch"):
        import torch

        t = log_p.detach()
        if t.dtype not in (torch.float32, torch.float64):
            t = t.to(torch.float32)
        log_p = t.cpu().numpy()
    arr = np.asarray(log_p)
    if arr.dtype not in (np.float32, np.float64):
        if not np.issubdtype(arr.dtype, np.number):
            raise SinkhornInputError(f"log_p must be a numeric (N, K) array, got dtype {arr.dtype}")
        arr = arr.astype(np.float32 if arr.dtype == np.float16 else np.float64)
    return np.ascontiguousarray(arr)


def check_shape(arr: np.ndarray) -> str | None:
    if arr.ndim != 2:
        return f"log_p must be 2-D (N samples, K clusters), got shape {arr.shape}"
    if arr.shape[1] < 1:
        return f"log_p needs at least one cluster column, got shape {arr.shape}"
    return None


def normalise_marginal(marginal: Any, k: int) -> np.ndarray:
    """The target cluster marginal as a float64 probability vector; uniform when None.

    Raises SinkhornInputError unless it is a finite, strictly positive vector of length K (a zero target would ask
    for an empty cluster, which the scaling cannot express).
    """
    if marginal is None:
        return np.full(k, 1.0 / k)
    if type(marginal).__module__.startswith("torch"):
        marginal = marginal.detach().cpu().numpy()
    try:
        r = np.asarray(marginal, dtype=np.float64)
    except (TypeError, ValueError) as err:
        raise SinkhornInputError(f"marginal must be a vector of {k} positive numbers: {err}") from None
    if r.ndim != 1 or r.shape[0] != k:
        raise SinkhornInputError(f"marginal must have shape ({k},) to match log_p's {k} clusters, got {r.shape}")
    if not np.all(np.isfinite(r)):
        raise SinkhornInputError("marginal contains NaN or infinite values")
    if np.any(r <= 0):
        raise SinkhornInputError(f"marginal must be strictly positive; cluster {int(np.argmin(r))} has {r.min():g}")
    return r / r.sum()


def check_params(lam: float, tol: float, max_iter: int, check_every: int, marginal_strength: float = 1.0) -> None:
    if not (np.isfinite(lam) and lam > 0):
        raise SinkhornInputError(f"lam must be a positive finite number, got {lam}")
    if not (np.isfinite(tol) and tol >= 0):
        raise SinkhornInputError(f"tol must be a non-negative finite number, got {tol}")
    if int(max_iter) != max_iter or max_iter < 1:
        raise SinkhornInputError(f"max_iter must be a positive integer, got {max_iter}")
    if int(check_every) != check_every or check_every < 1:
        raise SinkhornInputError(f"check_every must be a positive integer, got {check_every}")
    if not (np.isfinite(marginal_strength) and 0 < marginal_strength <= 1):
        raise SinkhornInputError(
            f"marginal_strength must be in (0, 1] (1 = the column marginal is exact), got {marginal_strength}"
        )
