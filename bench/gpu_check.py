"""The paper preset on a GPU: a few hundred training steps on a generated set, then Sinkhorn at VGG-Sound scale.

Run by bench/gpu_check.sh under ``torchrun --nproc_per_node 1`` (see there). Prints one ``RESULT {json}`` line per
part, and a summary:

* train: the ``paper`` preset (R(2+1)D-18 and ResNet-9 at full width, 30 x 112^2 frames, 257-band log-mel,
  batch 16, SGD), windows decoded from the original files in DataLoader workers (one per core), bf16 autocast
  and channels_last_3d (``selavi_core.model.device`` on CUDA), for ``--steps`` steps with ``--labellings``
  Sinkhorn labellings (the paper's 100 would label every few steps on a set this small). Clips/s and the share
  of the step time spent waiting for data come from the trainer's epoch log (epochs after the first, so worker
  start-up and cuDNN autotuning stay out); GPU memory is torch's peak allocation and reservation.
* nccl: the process group is initialised with nccl (gloo on the CPU), an all-reduce checked, and the sharded
  Sinkhorn (``sinkhorn_knopp_distributed``, its reductions through the group) run on head 0.
* sinkhorn: ``--sk-heads`` heads of ``--sk-rows`` x ``--sk-clusters`` (200,000 x 309) float32 log-posteriors (bench/sinkhorn.py's inputs):
  a plain scaling Sinkhorn in torch on the GPU (SeLaVi's stopping rule) against our solver
  (``sinkhorn_knopp``, numba on the CPU cores) on ``--sk-cpu-heads`` of them, with their label agreement.

``--cpu-dry-run`` runs the same path on the CPU (gloo) at toy size: a tiny set, narrow networks, a few steps, a
small Sinkhorn. It checks the script, not the numbers.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))
sys.path.insert(0, str(ROOT / "tests"))
os.environ.setdefault("NUMBA_THREADING_LAYER", "workqueue")
os.environ.setdefault("SELAVI_NO_PROGRESS", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.distributed as dist  # noqa: E402


def result(part: str, **values) -> None:
    print("RESULT " + json.dumps({"part": part, **values}), flush=True)


def torch_sinkhorn(log_p: torch.Tensor, r: torch.Tensor, lam: float, tol: float, max_iter: int, every: int):
    """Scaling Sinkhorn-Knopp on one device: labels of Q = diag(beta) P^lam diag(alpha), rows 1/N, columns r."""
    p = torch.exp(lam * (log_p - log_p.max(dim=1, keepdim=True).values))  # each row's largest entry is 1
    n = p.shape[0]
    beta = torch.full((n,), 1.0 / n, device=p.device)
    it = 0
    for it in range(1, max_iter + 1):
        alpha = r / (p.t() @ beta)
        new = (1.0 / n) / (p @ alpha)
        if it % every == 0:
            err = float((beta / new - 1).abs().sum())
            beta = new
            if err <= tol:
                break
        else:
            beta = new
    return (p * alpha[None, :]).argmax(dim=1), it


def train_part(args, device: torch.device) -> None:
    from selavi_core.config import PAPER
    from selavi_core.training.trainer import LOG_NAME, Context, Trainer

    catalog = args.root / "catalog"
    clips = len(__import__("pandas").read_parquet(catalog / "clips.parquet"))
    preset = PAPER
    if args.cpu_dry_run:
        preset = preset.with_overrides(
            video={"num_frames": 4, "crop": 24, "train_short_side": (26, 30)},
            cache={"short_side": 28},
            model={"video_widths": (8, 8, 16, 16), "audio_widths": (8, 8, 16, 16), "heads": 2},
            optim={"batch_size": 4, "workers": 2},
            schedule={"bn_warmup_batches": 1},
        )
    per_epoch = clips // preset.optim.batch_size
    epochs = max(2, math.ceil(args.steps / per_epoch))
    preset = preset.with_overrides(optim={"epochs": epochs}, schedule={"n_opts": args.labellings + 1}).validate()
    out = args.root / "run"
    out.mkdir(parents=True, exist_ok=True)
    (out / LOG_NAME).unlink(missing_ok=True)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
        torch.cuda.reset_peak_memory_stats(device)
    t0 = time.perf_counter()
    trainer = Trainer(catalog, out, preset, ctx=Context(device), log=print)
    print(f"training {epochs} epochs x {trainer.batches_per_epoch} steps of {preset.optim.batch_size} clips, "
          f"{trainer.workers} DataLoader workers, precision bf16={trainer.precision.bf16} "
          f"channels_last={trainer.precision.channels_last}", flush=True)  # fmt: skip
    trainer.fit(epochs)
    wall = time.perf_counter() - t0
    trainer.loader.close()
    log = [json.loads(line) for line in (out / LOG_NAME).read_text().splitlines()]
    steady = [r for r in log if r["type"] == "epoch"][1:]
    labellings = [h for h in trainer.state.history if "labelling" in h]
    memory = {}
    if device.type == "cuda":
        memory = {
            "gpu_peak_allocated_gb": round(torch.cuda.max_memory_allocated(device) / 2**30, 2),
            "gpu_peak_reserved_gb": round(torch.cuda.max_memory_reserved(device) / 2**30, 2),
            "gpu": torch.cuda.get_device_name(device),
        }
    result(
        "train",
        preset="paper" + (" (dry run: toy widths)" if args.cpu_dry_run else ""),
        clips=clips,
        steps=trainer.state.iteration,
        workers=trainer.workers,
        clips_per_s=round(float(np.mean([r["clips_per_s"] for r in steady])), 1),
        data_wait_share=round(float(np.mean([r["data_wait"] for r in steady])), 3),
        labelling_seconds=[h["seconds"] for h in labellings],
        wall_s=round(wall, 1),
        final_loss=log[-1]["loss"],
        decode_failures=len(getattr(trainer.maker, "failed", ())),
        **memory,
    )


def sinkhorn_part(args, device: torch.device) -> None:
    from sinkhorn import make_log_p

    from selavi_core.config import SinkhornSpec
    from selavi_core.selflabel.sinkhorn import sinkhorn_knopp, sinkhorn_knopp_distributed

    sk = SinkhornSpec()
    n, k = args.sk_rows, args.sk_clusters
    rng = np.random.default_rng(0)
    r = np.full(k, 1.0 / k)
    # nccl (gloo on CPU): an all-reduce, then the sharded solver's reductions through the group, on one head
    t = torch.ones(4, device=device) * (dist.get_rank() + 1)
    dist.all_reduce(t)
    head0 = make_log_p(n, k, 1.0, rng)
    t0 = time.perf_counter()
    dres = sinkhorn_knopp_distributed(head0, r, **sk.solver_kwargs())
    result(
        "nccl",
        backend=str(dist.get_backend()),
        all_reduce_ok=bool(torch.allclose(t.cpu(), torch.full((4,), float(dist.get_world_size())))),
        distributed_sinkhorn_s=round(time.perf_counter() - t0, 2),
        distributed_sinkhorn_iters=int(dres.n_iter),
    )
    gpu_s, iters, agree, cpu_s = [], [], [], []
    for h in range(args.sk_heads):
        log_p = head0 if h == 0 else make_log_p(n, k, 1.0, rng)
        x = torch.from_numpy(log_p).to(device)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        t0 = time.perf_counter()
        labels, it = torch_sinkhorn(x, torch.from_numpy(r).float().to(device), sk.lam, sk.tol, sk.max_iter,
                                    sk.check_every)  # fmt: skip
        labels = labels.cpu().numpy()
        gpu_s.append(time.perf_counter() - t0)
        iters.append(it)
        if h < args.sk_cpu_heads:
            t0 = time.perf_counter()
            ref = sinkhorn_knopp(log_p, r, **sk.solver_kwargs())
            cpu_s.append(time.perf_counter() - t0)
            agree.append(float(np.mean(ref.labels == labels)))
        del x
    result(
        "sinkhorn",
        n=n,
        k=k,
        heads=args.sk_heads,
        device=str(device),
        torch_total_s=round(sum(gpu_s), 2),
        torch_per_head_s=round(float(np.median(gpu_s)), 3),
        torch_iters=iters,
        our_solver_cpu_per_head_s=round(float(np.median(cpu_s)), 2) if cpu_s else None,
        our_solver_cpu_heads=len(cpu_s),
        label_agreement=[round(a, 4) for a in agree],
    )


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--root", type=Path, required=True, help="work folder (the generated set, the run)")
    ap.add_argument("--make-set", action="store_true", help="only generate and ingest the set, then exit")
    ap.add_argument("--clips", type=int, default=512)
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--labellings", type=int, default=2)
    ap.add_argument("--sk-rows", type=int, default=200_000)
    ap.add_argument("--sk-clusters", type=int, default=309)
    ap.add_argument("--sk-heads", type=int, default=10)
    ap.add_argument("--sk-cpu-heads", type=int, default=2, help="heads also solved by our CPU solver, for comparison")
    ap.add_argument("--cpu-dry-run", action="store_true", help="the same path on the CPU (gloo) at toy size")
    args = ap.parse_args()
    if args.make_set:
        from train_throughput import make_synthetic_catalog

        make_synthetic_catalog(args.root, args.clips, seconds=args.seconds, classes=8)
        return 0
    if args.cpu_dry_run:
        device = torch.device("cpu")
    else:
        if not torch.cuda.is_available():
            raise SystemExit("no CUDA device: run with --cpu-dry-run to check the script on a CPU")
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(device)
    dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    try:
        train_part(args, device)
        sinkhorn_part(args, device)
    finally:
        dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
