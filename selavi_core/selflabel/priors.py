"""Cluster priors: the target marginal r that Sinkhorn-Knopp enforces on each head's pseudo-labels.

SeLaVi does not force equal cluster sizes: each head draws a Gaussian shape once and, before every Sinkhorn call,
hands its sorted values to the clusters sorted by their current mass (selavi-method.md §2.3). Cluster indices are
arbitrary, so a prior describes *how sizes are spread*, not which cluster gets which size; every non-uniform prior
here (Gaussian, Zipf, a user file) is therefore rank-matched to the current masses.

Two directions exist:

* ``rank_match(target, mass)`` (ours, the method as described): the smallest target goes to the currently smallest
  cluster, so the assignment disturbs the present clustering least.
* ``rank_match(target, mass, reciprocal=True)``: what the official code does at HEAD. It rank-matches g the same way
  and then uses ``r = (1/g) / sum(1/g)``, which gives the currently smallest cluster the *largest* share. With sd=0.1,
  1/g has nearly the same shape, so only the direction flips. CLI spelling: ``gauss-reciprocal``.

CLI strings (``parse_prior``): ``uniform`` | ``gauss`` | ``gauss:SD`` | ``gauss-reciprocal[:SD]`` | ``zipf:S`` | PATH
(a .npy, or a text/CSV file of K positive numbers).
"""

from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from selavi_core.config import ScheduleSpec
from selavi_core.errors import SelaviError

_SCHEDULE = ScheduleSpec()

#: Gaussian draws are clamped from below at this fraction of the mean draw (1). At the default sd=0.1 the floor is
#: 9.9 sd away and never binds; for large sd it keeps every cluster's target positive, which Sinkhorn requires
#: (a zero target would ask for an empty cluster).
GAUSS_FLOOR = 0.01


class PriorError(SelaviError, ValueError):
    """A prior specification or prior file that cannot be used; the message says what to fix."""


def uniform(k: int) -> np.ndarray:
    """Equal shares, SeLa's equipartition: r_k = 1/K."""
    _check_k(k)
    return np.full(k, 1.0 / k)


def gaussian_draw(k: int, rng: np.random.Generator, sd: float = _SCHEDULE.gauss_sd) -> np.ndarray:
    """One head's Gaussian shape g = 1 + sd * z, z ~ N(0, I_K), clamped at ``GAUSS_FLOOR`` (unnormalised).

    The official draw is (1 + sd z) N/K; the factor N/K only sets the scale, which every use normalises away.
    """
    _check_k(k)
    if not (math.isfinite(sd) and sd >= 0):
        raise PriorError(f"the Gaussian prior's sd must be a non-negative number, got {sd}")
    return np.maximum(1.0 + sd * rng.standard_normal(k), GAUSS_FLOOR)


def zipf(k: int, s: float) -> np.ndarray:
    """Zipf's law over cluster ranks: r_j proportional to j**-s for j = 1..K, largest first (s=0 is uniform)."""
    _check_k(k)
    if not (math.isfinite(s) and s >= 0):
        raise PriorError(f"the Zipf exponent must be a non-negative number, got {s}")
    r = np.arange(1, k + 1, dtype=np.float64) ** -float(s)
    return r / r.sum()


def rank_match(target: Any, current_mass: Any, reciprocal: bool = False) -> np.ndarray:
    """Assign the sorted ``target`` values to clusters sorted by ``current_mass`` and return the normalised marginal.

    The smallest target value goes to the cluster with the smallest current mass (ties keep index order). With
    ``reciprocal=True`` the result is ``(1/g)/sum(1/g)`` of that rank-sorted g, the official HEAD variant, which
    gives the largest share to the currently smallest cluster.
    """
    g = np.asarray(target, dtype=np.float64)
    mass = np.asarray(current_mass, dtype=np.float64)
    if g.ndim != 1 or mass.shape != g.shape:
        raise PriorError(f"target {g.shape} and current_mass {mass.shape} must be vectors of the same length")
    if not np.all(np.isfinite(g)) or np.any(g <= 0):
        raise PriorError("prior values must be finite and strictly positive")
    if not np.all(np.isfinite(mass)):
        raise PriorError("current cluster masses must be finite")
    out = np.empty_like(g)
    out[np.argsort(mass, kind="stable")] = np.sort(g)
    if reciprocal:
        out = 1.0 / out
    return out / out.sum()


def from_file(path: str | os.PathLike, k: int) -> np.ndarray:
    """K positive numbers from a ``.npy`` file or a text/CSV file (separated by commas, semicolons or whitespace;
    lines starting with ``#`` and one leading header line are ignored). Returned normalised to sum 1."""
    _check_k(k)
    p = Path(path)
    if not p.is_file():
        raise PriorError(f"prior file {p} does not exist")
    if p.suffix.lower() == ".npy":
        try:
            values = np.load(p, allow_pickle=False)
        except (ValueError, OSError) as err:
            raise PriorError(f"prior file {p} is not a readable .npy array: {err}") from None
        values = np.asarray(values, dtype=np.float64).ravel() if np.issubdtype(values.dtype, np.number) else None
        if values is None:
            raise PriorError(f"prior file {p} does not hold numbers")
    else:
        try:
            text = p.read_text()
        except (UnicodeDecodeError, OSError) as err:
            raise PriorError(f"prior file {p} is not a readable text file: {err}") from None
        numbers: list[float] = []
        seen_data = False
        for lineno, line in enumerate(text.splitlines(), 1):
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            tokens = [t for t in re.split(r"[,;\s]+", line) if t]
            try:
                parsed = [float(t) for t in tokens]
            except ValueError:
                if not seen_data and not numbers:
                    seen_data = True  # one header line, e.g. "share"
                    continue
                raise PriorError(f"prior file {p}, line {lineno}: {line[:60]!r} is not a list of numbers") from None
            seen_data = True
            numbers.extend(parsed)
        values = np.asarray(numbers, dtype=np.float64)
    if values.size != k:
        raise PriorError(f"prior file {p} holds {values.size} numbers but the model has {k} clusters")
    if not np.all(np.isfinite(values)):
        raise PriorError(f"prior file {p} contains NaN or infinite values")
    if np.any(values <= 0):
        raise PriorError(
            f"prior file {p}: every cluster share must be positive (entry {int(np.argmin(values))} is {values.min():g})"
        )
    return values / values.sum()


def column_mass(log_p: Any, power: float = 1.0, chunk: int = 16384) -> np.ndarray:
    """Current total mass per cluster, sum_i exp(power * log_p_ik), in float64 and row chunks.

    The official code rank-matches on the masses of p_v * p_a before the power; with ``log_p`` the mean of the two
    log-posteriors that is ``power=2``.
    """
    arr = np.asarray(log_p)
    out = np.zeros(arr.shape[1], np.float64)
    for lo in range(0, arr.shape[0], chunk):
        out += np.exp(power * arr[lo : lo + chunk].astype(np.float64)).sum(axis=0)
    return out


@dataclass(frozen=True)
class PriorSpec:
    """A parsed prior: ``draw`` makes the per-head base vectors once (store them, e.g. in the checkpoint and
    ``priors.npy``), ``marginal`` turns one head's base into the target for one Sinkhorn call."""

    spec: str
    kind: str  # uniform | gauss | zipf | file
    sd: float = _SCHEDULE.gauss_sd
    s: float = 1.0
    path: str | None = None
    reciprocal: bool = False

    def __str__(self) -> str:
        return self.spec

    def draw(self, k: int, heads: int, rng: np.random.Generator) -> np.ndarray:
        """(heads, K) float64 base vectors; a Gaussian prior draws a different shape per head."""
        if heads < 1:
            raise PriorError(f"heads must be positive, got {heads}")
        if self.kind == "gauss":
            return np.stack([gaussian_draw(k, rng, self.sd) for _ in range(heads)])
        if self.kind == "zipf":
            base = zipf(k, self.s)
        elif self.kind == "file":
            if self.path is None:
                raise PriorError(f"prior {self.spec!r} is a file prior without a path")
            base = from_file(self.path, k)
        else:
            base = uniform(k)
        return np.tile(base, (heads, 1))

    def marginal(self, head_base: Any, current_mass: Any) -> np.ndarray:
        """The normalised target marginal for one Sinkhorn call: uniform, or ``head_base`` rank-matched to the
        clusters' ``current_mass`` (reciprocal for ``gauss-reciprocal``)."""
        base = np.asarray(head_base, dtype=np.float64)
        if self.kind == "uniform":
            return uniform(base.shape[0])
        return rank_match(base, current_mass, reciprocal=self.reciprocal)


def parse_prior(spec: str, gauss_sd: float = _SCHEDULE.gauss_sd) -> PriorSpec:
    """Parse a CLI prior string: ``uniform``, ``gauss`` / ``gauss:SD``, ``gauss-reciprocal`` (official HEAD
    direction), ``zipf:S`` or the path of a file of K positive numbers."""
    text = str(spec).strip()
    word, _, arg = text.partition(":")
    low = word.lower()

    def number(name: str) -> float:
        try:
            value = float(arg)
        except ValueError:
            raise PriorError(f"prior {text!r}: {name} must be a number, e.g. {word}:1.0") from None
        if not (math.isfinite(value) and value >= 0):
            raise PriorError(f"prior {text!r}: {name} must be a non-negative number")
        return value

    if low in ("uniform", "default") and not arg:
        return PriorSpec(text, "uniform")
    if low in ("gauss", "gauss-reciprocal"):
        sd = number("the standard deviation") if arg else float(gauss_sd)
        return PriorSpec(text, "gauss", sd=sd, reciprocal=low == "gauss-reciprocal")
    if low == "zipf":
        if not arg:
            raise PriorError("the Zipf prior needs an exponent, e.g. zipf:1.0")
        return PriorSpec(text, "zipf", s=number("the exponent"))
    path = Path(text).expanduser()
    if path.is_file():
        return PriorSpec(text, "file", path=str(path))
    looks_like_path = any(ch in text for ch in "/\\") or path.suffix.lower() in (".npy", ".txt", ".csv", ".tsv")
    if looks_like_path:
        raise PriorError(f"prior file {text} does not exist")
    raise PriorError(f"unknown prior {text!r}; use uniform, gauss, gauss:SD, gauss-reciprocal, zipf:S or a file path")


def _check_k(k: int) -> None:
    if int(k) != k or k < 1:
        raise PriorError(f"the number of clusters must be a positive integer, got {k}")
