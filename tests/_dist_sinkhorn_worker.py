"""torchrun worker for tests/test_distributed_sinkhorn.py (not a test module itself).

    python -m torch.distributed.run --standalone --nproc_per_node 2 tests/_dist_sinkhorn_worker.py CASES.npz OUT_DIR

For every case in CASES.npz (keys ``<case>/log_p``, ``<case>/marginal`` (empty: uniform), ``<case>/split`` (row
boundaries, one shard per rank), ``<case>/params`` (lam, tol, max_iter, marginal_strength)) this rank solves only
its own rows with ``sinkhorn_knopp_distributed`` over gloo and writes ``OUT_DIR/<case>.rank<R>.npz``; a case whose
input is invalid on some rank records the error message instead.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import torch.distributed as dist  # noqa: E402

from selavi_core.selflabel.sinkhorn import SinkhornInputError, sinkhorn_knopp_distributed  # noqa: E402


def main(cases_path: str, out_dir: str) -> int:
    dist.init_process_group("gloo")
    rank = dist.get_rank()
    data = np.load(cases_path)
    names = sorted({key.split("/")[0] for key in data.files})
    for name in names:
        split = data[f"{name}/split"]
        lam, tol, max_iter, strength = data[f"{name}/params"]
        marginal = data[f"{name}/marginal"]
        shard = data[f"{name}/log_p"][split[rank] : split[rank + 1]]
        out = Path(out_dir) / f"{name}.rank{rank}.npz"
        try:
            res = sinkhorn_knopp_distributed(
                shard,
                marginal if marginal.size else None,
                lam=float(lam),
                tol=float(tol),
                max_iter=int(max_iter),
                marginal_strength=float(strength),
            )
        except SinkhornInputError as err:
            np.savez(out, error=np.array(str(err)))
            continue
        np.savez(
            out,
            labels=res.labels,
            n_iter=res.n_iter,
            error=res.error,
            marginal=res.marginal,
            counts=res.counts,
            log_alpha=res.log_alpha,
            rebuilds=res.rebuilds,
            repairs=res.repairs,
            n_rows=res.n_rows,
        )
    dist.barrier()
    dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1], sys.argv[2]))
