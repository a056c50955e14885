"""Distributed Sinkhorn: two CPU ranks over gloo (torchrun), each holding only its rows, must reproduce the
single-process labels and diagnostics bit for bit, for uneven and empty shards, sharp inputs, a dead cluster and a
semi-relaxed column marginal."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from selavi_core.selflabel.priors import gaussian_draw
from selavi_core.selflabel.sinkhorn import sinkhorn_knopp

WORKER = Path(__file__).with_name("_dist_sinkhorn_worker.py")
ROOT = Path(__file__).resolve().parents[1]


def make_log_p(n: int, k: int, scale: float, seed: int) -> np.ndarray:
    z = scale * np.random.default_rng(seed).standard_normal((n, k))
    z -= z.max(axis=1, keepdims=True)
    return (z - np.log(np.exp(z).sum(axis=1, keepdims=True))).astype(np.float32)


def build_cases() -> dict[str, dict]:
    dead = make_log_p(4000, 30, 3.0, 5)
    dead[:, 7] = -400.0  # a cluster no row wants: its column has no kept mass and needs the exact repair
    bad = make_log_p(400, 8, 3.0, 6)
    bad[350, 2] = np.nan  # only on rank 1's rows
    return {
        "uniform": {"log_p": make_log_p(20000, 64, 3.0, 1), "marginal": None, "split": [0, 8123, 20000]},
        "gauss": {
            "log_p": make_log_p(20000, 64, 3.0, 2),
            "marginal": gaussian_draw(64, np.random.default_rng(3)),
            "split": [0, 12345, 20000],
        },
        "sharp": {
            "log_p": make_log_p(3000, 50, 30.0, 4),
            "marginal": None,
            "split": [0, 1001, 3000],
            "lam": 50.0,
            "max_iter": 400,
        },
        "dead": {"log_p": dead, "marginal": gaussian_draw(30, np.random.default_rng(7)), "split": [0, 2500, 4000]},
        "empty_rank": {"log_p": make_log_p(1500, 12, 3.0, 8), "marginal": None, "split": [0, 0, 1500]},
        # semi-relaxed column marginal (refine's setting): the absolute dual gauge must agree across ranks too
        "relaxed": {
            "log_p": make_log_p(6000, 40, 8.0, 9),
            "marginal": gaussian_draw(40, np.random.default_rng(10)),
            "split": [0, 3210, 6000],
            "strength": 0.5,
        },
        "bad": {"log_p": bad, "marginal": None, "split": [0, 200, 400]},
    }


@pytest.fixture(scope="module")
def distributed_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("dist_sk")
    cases = build_cases()
    arrays = {}
    for name, c in cases.items():
        arrays[f"{name}/log_p"] = c["log_p"]
        arrays[f"{name}/marginal"] = np.empty(0) if c["marginal"] is None else np.asarray(c["marginal"])
        arrays[f"{name}/split"] = np.asarray(c["split"], np.int64)
        arrays[f"{name}/params"] = np.array(
            [c.get("lam", 20.0), c.get("tol", 0.1), c.get("max_iter", 2000), c.get("strength", 1.0)]
        )
    np.savez(tmp / "cases.npz", **arrays)
    out = tmp / "out"
    out.mkdir()
    env = dict(
        os.environ,
        PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""),
        OMP_NUM_THREADS="1",
        NUMBA_NUM_THREADS="1",
    )  # one numba thread per rank: also shows the thread count does not matter
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node",
        "2",
        str(WORKER),
        str(tmp / "cases.npz"),
        str(out),
    ]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, f"torchrun failed:\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}"
    return cases, out


@pytest.mark.parametrize("name", ["uniform", "gauss", "sharp", "dead", "empty_rank", "relaxed"])
def test_distributed_equals_single_process_exactly(distributed_run, name):
    cases, out = distributed_run
    c = cases[name]
    single = sinkhorn_knopp(
        c["log_p"],
        c["marginal"],
        lam=c.get("lam", 20.0),
        max_iter=c.get("max_iter", 2000),
        marginal_strength=c.get("strength", 1.0),
    )
    ranks = [np.load(out / f"{name}.rank{r}.npz") for r in range(2)]
    split = c["split"]
    for r, part in enumerate(ranks):
        assert part["labels"].shape == (split[r + 1] - split[r],), "each rank returns only its own rows"
        assert int(part["n_rows"]) == len(c["log_p"])
    labels = np.concatenate([part["labels"] for part in ranks])
    np.testing.assert_array_equal(labels, single.labels)
    for part in ranks:
        assert int(part["n_iter"]) == single.n_iter
        assert float(part["error"]) == single.error
        np.testing.assert_array_equal(part["marginal"], single.marginal)
        np.testing.assert_array_equal(part["counts"], single.counts)
        np.testing.assert_array_equal(part["log_alpha"], single.log_alpha)
        assert int(part["rebuilds"]) == single.rebuilds and int(part["repairs"]) == single.repairs
    if name == "sharp":
        assert single.rebuilds > 0, "the sharp case must exercise kernel rebuilds"
    if name == "relaxed":  # the sizes leaned towards the prior without being forced onto it
        assert not np.allclose(single.marginal, single.target, atol=1e-3)
    if name == "dead":
        assert single.repairs > 0, "the dead cluster must exercise the exact column repair"


def test_invalid_shard_raises_on_every_rank(distributed_run):
    _, out = distributed_run
    messages = [str(np.load(out / f"bad.rank{r}.npz")["error"]) for r in range(2)]
    assert "NaN" in messages[1], messages
    assert messages[0], "the rank with valid rows must fail too instead of waiting forever"
