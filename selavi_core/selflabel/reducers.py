"""Reductions over rows: the single-process Sinkhorn solver and the distributed one share every line except these.

A reducer sums int64 arrays and takes float64 maxima/minima over all rows of the problem: the identity when one
process holds every row (``LocalReducer``), an all-reduce over a torch.distributed group otherwise (``TorchReducer``).
"""

from __future__ import annotations

from typing import Any, Protocol

import numpy as np

from selavi_core.selflabel.problem import SinkhornInputError


class Reducer(Protocol):
    def sum_int(self, a: np.ndarray) -> np.ndarray: ...

    def max_float(self, a: np.ndarray) -> np.ndarray: ...

    def min_float(self, a: np.ndarray) -> np.ndarray: ...


class LocalReducer:
    """One process holds every row: reductions are the identity."""

    def sum_int(self, a: np.ndarray) -> np.ndarray:
        return a

    def max_float(self, a: np.ndarray) -> np.ndarray:
        return a

    def min_float(self, a: np.ndarray) -> np.ndarray:
        return a


class TorchReducer:
    """All-reduce through torch.distributed (gloo tensors on CPU, CUDA tensors for nccl). Integer sums and float
    max/min are exact in any order, which is what makes the distributed labels identical to the single-process ones."""

    def __init__(self, group: Any = None):
        import torch
        import torch.distributed as dist

        if not dist.is_available() or not dist.is_initialized():
            raise RuntimeError("sinkhorn_knopp_distributed needs an initialised torch.distributed process group")
        self._torch = torch
        self._dist = dist
        self.group = group
        backend = str(dist.get_backend(group)).lower()
        self.device = torch.device("cuda", torch.cuda.current_device()) if "nccl" in backend else torch.device("cpu")

    def _reduce(self, a: np.ndarray, op: Any) -> np.ndarray:
        t = self._torch.from_numpy(np.ascontiguousarray(a)).to(self.device, copy=True)
        self._dist.all_reduce(t, op=op, group=self.group)
        return t.cpu().numpy()

    def sum_int(self, a: np.ndarray) -> np.ndarray:
        return self._reduce(np.asarray(a, dtype=np.int64), self._dist.ReduceOp.SUM)

    def max_float(self, a: np.ndarray) -> np.ndarray:
        return self._reduce(np.asarray(a, dtype=np.float64), self._dist.ReduceOp.MAX)

    def min_float(self, a: np.ndarray) -> np.ndarray:
        return self._reduce(np.asarray(a, dtype=np.float64), self._dist.ReduceOp.MIN)


def agree(red: Reducer, local_problem: str | None) -> None:
    """Raise on every rank when any rank found a problem (a lone raise would leave the others in an all-reduce)."""
    flag = red.sum_int(np.array([0 if local_problem is None else 1], np.int64))
    if flag[0]:
        raise SinkhornInputError(local_problem or "invalid Sinkhorn input on another rank")
