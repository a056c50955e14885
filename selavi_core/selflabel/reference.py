"""The plain float64 log-domain Sinkhorn-Knopp (scipy ``logsumexp``): the oracle for tests and benchmarks.

Slow (two N x K exps per iteration) but simple; same start, iteration and stopping rule as ``sinkhorn_knopp``
(``sinkhorn.py``), from which it is also importable.
"""

from __future__ import annotations

import math
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

_SPEC = SinkhornSpec()


def sinkhorn_reference(
    log_p: Any,
    marginal: Any = None,
    lam: float = _SPEC.lam,
    tol: float = _SPEC.tol,
    max_iter: int = _SPEC.max_iter,
    *,
    check_every: int = _SPEC.check_every,
    marginal_strength: float = 1.0,
) -> SinkhornResult:
    """Plain float64 log-domain Sinkhorn (scipy logsumexp): slow (two N x K exps per iteration) but simple; the
    oracle for tests and benchmarks. Same start, iteration and stopping rule as ``sinkhorn_knopp``."""
    from scipy.special import logsumexp

    t0 = time.perf_counter()
    check_params(lam, tol, max_iter, check_every, marginal_strength)
    arr = as_numpy(log_p).astype(np.float64)
    problem = check_shape(arr)
    if problem:
        raise SinkhornInputError(problem)
    n, k = arr.shape
    r = normalise_marginal(marginal, k)
    s = lam * arr
    log_c = -math.log(n)
    f = log_c - s.max(axis=1)
    err = math.inf
    converged = False
    n_iter = 0
    g = np.zeros(k)
    for it in range(1, max_iter + 1):
        g = marginal_strength * (np.log(r) - logsumexp(s + f[:, None], axis=0))
        f_new = log_c - logsumexp(s + g[None, :], axis=1)
        n_iter = it
        if it % check_every == 0:
            err = float(np.abs(np.exp(f - f_new) - 1.0).sum())
            f = f_new
            if err <= tol:
                converged = True
                break
        f = f_new
    labels = np.argmax(s + g, axis=1).astype(np.int64)
    achieved = np.exp(logsumexp(s + f[:, None] + g[None, :], axis=0))
    return SinkhornResult(
        labels=labels,
        n_iter=n_iter,
        error=err,
        marginal=achieved / achieved.sum(),
        target=r,
        log_alpha=g,
        counts=np.bincount(labels, minlength=k).astype(np.int64),
        converged=converged,
        lam=float(lam),
        tol=float(tol),
        max_iter=int(max_iter),
        n_rows=n,
        storage="reference",
        density=1.0,
        rebuilds=0,
        repairs=0,
        precision="float64 log-domain",
        seconds=time.perf_counter() - t0,
    )
