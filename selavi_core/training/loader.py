"""Batches for lists of rows, made in the training process or in DataLoader worker processes.

``Loader`` wraps a batch maker (``BatchMaker`` over the uint8 cache, or ``WindowBatchMaker`` decoding the original
files) and yields ``(video, audio)`` for a sequence of row arrays, one batch each, in order:

* ``workers == 0``: in this process, lazily, drawing from the caller's generator in order. This is how the
  calibrated ``cpu-small`` recipe has always drawn its augmentations, so its numbers do not move.
* ``workers > 0``: a ``torch.utils.data.DataLoader`` whose workers make whole batches (the augmentations are
  vectorised over a batch). One number is drawn from the caller's generator per call, and batch ``i`` of the call
  gets its own generator seeded with (that number, ``i``): the batches do not depend on the number of workers or
  on which worker makes them. The workers persist between calls (one pool for the whole run, fed through a
  mutable sampler), each runs torch on one thread, and on CUDA the batches arrive in pinned memory.

Only one iteration may be in flight at a time (the pool is shared): the trainer runs its training batches in
segments between labellings, so a labelling pass never interleaves with a training epoch.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from typing import Any, Protocol

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler


class MakesBatches(Protocol):
    def batch(
        self, rows: np.ndarray, *, train: bool, rng: np.random.Generator
    ) -> tuple[torch.Tensor, torch.Tensor]: ...


#: One batch to make: (rows, train, seed).
Task = tuple[np.ndarray, bool, tuple[int, int]]


class _Tasks(Sampler):
    """The current call's tasks; the DataLoader re-reads it at every ``iter``, so one pool serves every call."""

    def __init__(self) -> None:
        self.tasks: list[Task] = []

    def __iter__(self) -> Iterator[Task]:
        return iter(self.tasks)

    def __len__(self) -> int:
        return len(self.tasks)


class _BatchDataset(Dataset):
    def __init__(self, maker: MakesBatches):
        self.maker = maker

    def __getitem__(self, task: Task) -> tuple[torch.Tensor, torch.Tensor]:
        rows, train, seed = task
        return self.maker.batch(rows, train=train, rng=np.random.default_rng(list(seed)))


def _worker_init(worker_id: int) -> None:
    torch.set_num_threads(1)  # the workers are the parallelism; threads inside them would fight for the cores
    info = torch.utils.data.get_worker_info()
    torch.manual_seed((info.seed if info is not None else 0) % 2**63)
    np.random.seed((info.seed if info is not None else worker_id) % 2**32)


class Loader:
    """``iterate(batches, train=..., rng=...)``: the batches of ``maker`` for each row array, in order.

    ``wait_s`` adds up the seconds callers spent waiting for a batch (the data side's share of a training step)."""

    def __init__(self, maker: MakesBatches, *, workers: int, device: torch.device, prefetch: int = 2):
        self.maker, self.workers, self.device = maker, int(workers), device
        self.wait_s = 0.0
        self._tasks = _Tasks()
        self._loader: DataLoader | None = None
        if self.workers > 0:
            self._loader = DataLoader(
                _BatchDataset(maker),
                batch_size=None,
                sampler=self._tasks,
                num_workers=self.workers,
                pin_memory=device.type == "cuda",
                persistent_workers=True,
                prefetch_factor=prefetch,
                worker_init_fn=_worker_init,
            )

    def batch(self, rows: np.ndarray, *, train: bool, rng: np.random.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """One batch in this process (small, one-off batches)."""
        return self.maker.batch(rows, train=train, rng=rng)

    def iterate(
        self, batches: Sequence[np.ndarray], *, train: bool, rng: np.random.Generator
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        if not len(batches):
            return
        if self._loader is None:
            for rows in batches:
                t0 = time.perf_counter()
                out = self.maker.batch(np.asarray(rows), train=train, rng=rng)
                self.wait_s += time.perf_counter() - t0
                yield out
            return
        base = int(rng.integers(2**63 - 1))
        self._tasks.tasks = [(np.asarray(rows), train, (base, i)) for i, rows in enumerate(batches)]
        it = iter(self._loader)
        try:
            while True:
                t0 = time.perf_counter()
                try:
                    video, audio = next(it)
                except StopIteration:
                    return
                self.wait_s += time.perf_counter() - t0
                yield video, audio
        finally:
            self._tasks.tasks = []
            del it

    def close(self) -> None:
        """Stop the worker processes (they also stop with the loader's last reference)."""
        loader, self._loader = self._loader, None
        if loader is not None:
            iterator: Any = getattr(loader, "_iterator", None)
            if iterator is not None:
                iterator._shutdown_workers()
