"""Sinkhorn-Knopp pseudo-labels with a cluster prior: fast on two cores, safe for sharp posteriors, distributable.

SeLaVi labels N samples with K clusters by solving ``Q = diag(beta) P^lam diag(alpha)`` with row sums 1/N and
column sums r (the cluster marginal), then taking ``label_i = argmax_k Q_ik``
(../shared/docs/selavi-method.md §2). ``log_p`` is the mean of the video and audio log-posteriors, so
``P^lam = exp(lam * log_p) = (p_v p_a)^(lam/2)``.

Stopping rule (official): every ``check_every`` iterations (10; a parameter)
``err = sum_i |beta_old_i / beta_new_i - 1|``; stop when ``err <= tol`` or after ``max_iter`` iterations. One
iteration is a column update followed by a row update, started from ``beta = 1/N`` in the row-normalised gauge (the
official code starts from 1/N in the unnormalised gauge, which is what underflows; the fixed point is the same).

This module is the public API: ``sinkhorn_knopp``, ``sinkhorn_knopp_distributed``, ``soft_plan``, and, re-exported,
the result type, the input checks and ``SinkhornInputError`` (``problem.py``) and the test oracle
``sinkhorn_reference`` (``reference.py``, plain float64 log-domain with scipy ``logsumexp``). The iteration lives in
``solver.py`` (how it stays exact on sharp posteriors), its numba kernels in ``kernels.py`` and the single-process /
torch.distributed reductions in ``reducers.py``.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from selavi_core.config import SinkhornSpec
from selavi_core.selflabel.problem import (
    SinkhornInputError,
    SinkhornResult,
    as_numpy,
    check_params,
    check_shape,
    normalise_marginal,
)
from selavi_core.selflabel.reducers import LocalReducer, Reducer, TorchReducer, agree
from selavi_core.selflabel.reference import sinkhorn_reference
from selavi_core.selflabel.solver import DENSE_FRACTION, SERIAL_WORK, Solver

__all__ = [
    "DENSE_FRACTION",
    "SERIAL_WORK",
    "SinkhornInputError",
    "SinkhornResult",
    "normalise_marginal",
    "sinkhorn_knopp",
    "sinkhorn_knopp_distributed",
    "sinkhorn_reference",
    "soft_plan",
]

_SPEC = SinkhornSpec()

_PRECISION = "float32 kernel, float64 scalings, int64 fixed-point reductions, truncation < exp(-TAU) per row"


def _run(
    log_p: Any,
    marginal: Any,
    lam: float,
    tol: float,
    max_iter: int,
    check_every: int,
    marginal_strength: float,
    red: Reducer,
) -> SinkhornResult:
    t0 = time.perf_counter()
    check_params(lam, tol, max_iter, check_every, marginal_strength)
    arr = as_numpy(log_p)
    agree(red, check_shape(arr))
    k = arr.shape[1]
    ks = red.min_float(np.array([k], np.float64)), red.max_float(np.array([k], np.float64))
    if ks[0][0] != ks[1][0]:
        raise SinkhornInputError("ranks disagree on the number of clusters K")
    problem = None
    try:
        r = normalise_marginal(marginal, k)
    except SinkhornInputError as err:
        problem, r = str(err), np.full(k, 1.0 / k)
    agree(red, problem)
    if not np.array_equal(red.min_float(r), red.max_float(r)):
        raise SinkhornInputError("ranks passed different marginals")
    solver = Solver(arr, r, lam, red)
    info = solver.solve(float(tol), int(max_iter), int(check_every), float(marginal_strength))
    return SinkhornResult(
        target=r,
        lam=float(lam),
        tol=float(tol),
        max_iter=int(max_iter),
        n_rows=solver.n_total,
        precision=_PRECISION,
        seconds=time.perf_counter() - t0,
        **info,
    )


def sinkhorn_knopp(
    log_p: Any,
    marginal: Any = None,
    lam: float = _SPEC.lam,
    tol: float = _SPEC.tol,
    max_iter: int = _SPEC.max_iter,
    *,
    check_every: int = _SPEC.check_every,
    marginal_strength: float = 1.0,
) -> SinkhornResult:
    """Hard pseudo-labels for ``log_p`` ((N, K) log-posteriors, numpy or torch) whose soft plan has column marginal
    ``marginal`` (uniform when None; normalised) and row marginal 1/N.

    ``log_p`` may be float32 or float64 and need not be normalised per row (rows are shifted internally); ``-inf``
    means probability 0. It is never modified. Raises SinkhornInputError (a ValueError) on bad input.

    The stopping error is computed every ``check_every`` iterations (SeLaVi: 10), so ``n_iter`` is a multiple of it
    unless ``max_iter`` is reached first.

    ``marginal_strength`` in (0, 1]: 1 (SeLaVi) holds the column marginal exactly; below 1 it becomes a KL penalty
    of weight ``rho = eps * s / (1 - s)`` (``eps = 1/lam``, semi-relaxed OT, Chizat et al. 2018), so the sizes lean
    towards ``marginal`` without being forced to it: a class twice as frequent as its target share is no longer
    split to fit it. The achieved ``marginal`` of the result then differs from ``target``.
    """
    return _run(log_p, marginal, lam, tol, max_iter, check_every, marginal_strength, LocalReducer())


def sinkhorn_knopp_distributed(
    log_p_shard: Any,
    marginal: Any = None,
    lam: float = _SPEC.lam,
    tol: float = _SPEC.tol,
    max_iter: int = _SPEC.max_iter,
    group: Any = None,
    *,
    check_every: int = _SPEC.check_every,
    marginal_strength: float = 1.0,
) -> SinkhornResult:
    """``sinkhorn_knopp`` over rows sharded across the ranks of a torch.distributed ``group``.

    Every rank passes only its own rows (any split, any sizes, possibly zero rows) and the same ``marginal``; every
    rank must call this collectively. Column masses and the stopping error are all-reduced as int64, so no rank holds
    the whole N x K matrix and the returned labels (of the local rows) equal the single-process labels exactly.
    ``counts``, ``marginal``, ``error`` and ``n_iter`` are global and identical on every rank.
    """
    return _run(log_p_shard, marginal, lam, tol, max_iter, check_every, marginal_strength, TorchReducer(group))


def soft_plan(log_p: Any, result: SinkhornResult) -> np.ndarray:
    """The dense float64 soft plan ``Q`` (rows sum to 1/N) of a result; for checks and small N only."""
    arr = as_numpy(log_p).astype(np.float64)
    s = result.lam * arr + result.log_alpha
    s -= s.max(axis=1, keepdims=True)
    q = np.exp(s)
    q /= q.sum(axis=1, keepdims=True) * arr.shape[0]
    return q
