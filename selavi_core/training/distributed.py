"""One process or many under torchrun: the process group and the few collectives training needs.

Every helper is a no-op (returns its input) for a single process, so the training code reads the same either
way. Pseudo-labelling shards rows across ranks (``local_block``); each rank keeps only its rows' posteriors and
all-reduces sums, so no rank ever holds N x K for the whole data set. Floats that must be identical on every
rank (marginals, refined heads) are broadcast from rank 0, because all-reduced floats can differ in the last
bit between ranks.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
import torch
import torch.distributed as dist

from selavi_core.model.device import resolve_device
from selavi_core.model.networks import SeLaViModel


@dataclass
class Context:
    """Where this process runs: device and (optional) process group."""

    device: torch.device
    rank: int = 0
    world: int = 1

    @property
    def distributed(self) -> bool:
        return self.world > 1

    @property
    def main(self) -> bool:
        return self.rank == 0


def setup_context(device: str = "auto") -> Context:
    """Join the torchrun process group when launched by torchrun, else run alone."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Context(resolve_device(device))
    rank, local = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    dev = resolve_device(device)
    if dev.type == "cuda":
        dev = torch.device("cuda", local)
        torch.cuda.set_device(dev)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if dev.type == "cuda" else "gloo")
    return Context(dev, rank, world)


def barrier(ctx: Context) -> None:
    if ctx.distributed:
        dist.barrier()


def shutdown(ctx: Context) -> None:
    """Wait for every rank, then leave the process group."""
    if ctx.distributed:
        dist.barrier()
        dist.destroy_process_group()


def wrap(ctx: Context, net: torch.nn.Module) -> torch.nn.Module:
    """``net`` in DistributedDataParallel under torchrun (gradients all-reduced), else as it is."""
    if not ctx.distributed:
        return net
    return torch.nn.parallel.DistributedDataParallel(
        net, device_ids=[ctx.device.index] if ctx.device.type == "cuda" else None
    )


def local_block(ctx: Context, n: int) -> slice:
    """This rank's contiguous share of ``n`` rows."""
    w, r = ctx.world, ctx.rank
    return slice(r * n // w, (r + 1) * n // w)


def allreduce(ctx: Context, arr: np.ndarray) -> np.ndarray:
    """The sum of ``arr`` over ranks."""
    if not ctx.distributed:
        return arr
    t = torch.from_numpy(np.ascontiguousarray(arr)).to(ctx.device)
    dist.all_reduce(t)
    return t.cpu().numpy()


def gather_sample(ctx: Context, x: np.ndarray, max_rows: int) -> np.ndarray:
    """Rank 0 gets up to ``max_rows`` rows in total, the first of every rank's (others get their own rows back)."""
    x = x[: max_rows // ctx.world]
    if not ctx.distributed:
        return x
    t = torch.from_numpy(np.ascontiguousarray(x)).to(ctx.device)
    sizes = [torch.zeros(1, dtype=torch.long, device=ctx.device) for _ in range(ctx.world)]
    dist.all_gather(sizes, torch.tensor([len(x)], device=ctx.device))
    m = int(max(s.item() for s in sizes))
    pad = torch.zeros((m, x.shape[1]), dtype=t.dtype, device=t.device)
    pad[: len(x)] = t
    parts = [torch.zeros_like(pad) for _ in range(ctx.world)]
    dist.all_gather(parts, pad)
    return torch.cat([p[: int(s.item())] for p, s in zip(parts, sizes, strict=True)]).cpu().numpy()


def broadcast_array(ctx: Context, arr: np.ndarray) -> np.ndarray:
    """Rank 0's copy everywhere (all-reduced floats can differ in the last bit between ranks)."""
    if not ctx.distributed:
        return arr
    t = torch.from_numpy(np.ascontiguousarray(arr)).to(ctx.device)
    dist.broadcast(t, 0)
    return t.cpu().numpy()


def broadcast_permutation(ctx: Context, perm: np.ndarray | None, k: int) -> np.ndarray:
    """Rank 0's permutation of ``k`` clusters everywhere (other ranks pass None)."""
    if not ctx.distributed:
        if perm is None:
            raise ValueError("a single process is rank 0: it must pass its permutation")
        return perm
    t = torch.as_tensor(perm if perm is not None else np.zeros(k, np.int64), device=ctx.device)
    dist.broadcast(t, 0)
    return t.cpu().numpy()


def broadcast_heads(ctx: Context, model: SeLaViModel) -> None:
    """Rank 0's head weights and head buffers into every rank's model (in place)."""
    if not ctx.distributed:
        return
    for p in model.head_parameters():
        dist.broadcast(p.data, 0)
    for b in (b for n, b in model.named_buffers() if n.startswith("mlp_")):
        dist.broadcast(b, 0)
