"""Human labels of one run as constraints on the next run's Sinkhorn labels (``selavi train --labels-from``)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from label_fixtures import make_label_run
from tiny_training import N_CLIPS
from tiny_training import TINY as TINY_2

from selavi_core.catalog import load_catalog
from selavi_core.cli import main
from selavi_core.errors import SelaviError
from selavi_core.labels.store import LabelStore
from selavi_core.model.checkpoint import load_checkpoint
from selavi_core.runs.run import Run, RunMeta, write_run
from selavi_core.selflabel.sinkhorn import sinkhorn_knopp
from selavi_core.training.constraints import (
    ConstraintError,
    FixedRows,
    LabelConstraints,
    constrained_sinkhorn,
    human_labels,
    reduced_marginal,
)
from selavi_core.training.trainer import Context, Trainer, train

SK = {"lam": 20.0, "tol": 1e-8, "max_iter": 3000}


def log_posteriors(n: int, k: int, seed: int, scale: float = 2.0) -> np.ndarray:
    logits = np.random.default_rng(seed).normal(size=(n, k)) * scale
    return logits - np.logaddexp.reduce(logits, axis=1, keepdims=True)


# ------------------------------------------------------------------------------------------ constrained Sinkhorn


def test_pinned_rows_keep_their_cluster_and_the_rest_fill_the_reduced_marginal():
    n, k = 600, 5
    log_p = log_posteriors(n, k, seed=0)
    rng = np.random.default_rng(1)
    pinned = rng.choice(n, 150, replace=False)
    fixed = np.full(n, -1)
    fixed[pinned[:100]] = 0  # more than cluster 0's share (60 rows): it gets no free row
    fixed[pinned[100:]] = 3  # less than cluster 3's share (150 rows): 100 free rows join it
    r = np.array([0.1, 0.3, 0.2, 0.25, 0.15])

    res = constrained_sinkhorn(log_p, r, fixed, **SK)

    np.testing.assert_array_equal(res.labels[pinned[:100]], 0)
    np.testing.assert_array_equal(res.labels[pinned[100:]], 3)
    assert res.n_fixed == 150 and res.n_iter > 0
    free = fixed < 0
    # what the pins leave: r * N minus the pinned counts, clipped at 0, over the 450 free rows
    want_rows = np.maximum(r * n - np.bincount(fixed[~free], minlength=k), 0)
    want_rows *= free.sum() / want_rows.sum()
    np.testing.assert_allclose(res.target * free.sum(), want_rows)
    counts = np.bincount(res.labels[free], minlength=k)
    assert counts[0] == 0
    assert np.abs(counts - want_rows).max() <= 3, (counts, want_rows)
    # the soft plan of the free rows meets the reduced marginal
    np.testing.assert_allclose(res.result.marginal, res.target[1:], atol=1e-4)


def test_with_nothing_pinned_it_is_plain_sinkhorn():
    log_p = log_posteriors(300, 6, seed=2)
    r = np.random.default_rng(3).uniform(0.5, 1.5, 6)
    plain = sinkhorn_knopp(log_p, r, **SK)
    for constraints in (None, np.full(300, -1), FixedRows.from_array(np.full(300, -1), 6)):
        res = constrained_sinkhorn(log_p, r, constraints, **SK)
        np.testing.assert_array_equal(res.labels, plain.labels)
        assert res.n_iter == plain.n_iter and res.n_fixed == 0
        np.testing.assert_array_equal(res.target, plain.target)


def test_reduced_marginal_and_edge_cases():
    fixed = FixedRows.from_array([0, 0, 0, 1, -1, -1, -1, -1, -1, -1, -1, -1], 4)  # 12 rows, 4 pinned
    np.testing.assert_allclose(reduced_marginal(None, fixed, 4), np.array([0, 2, 3, 3]) / 8)
    exact = FixedRows.from_array([0, 0, 0, 1, 1, 1] + [-1] * 6, 4)  # clusters 0 and 1 exactly full
    assert list(reduced_marginal(None, exact, 4)) == [0, 0, 0.5, 0.5]
    log_p = log_posteriors(12, 4, seed=4)
    res = constrained_sinkhorn(log_p, None, exact, **SK)
    assert set(res.labels[6:]) <= {2, 3} and list(res.labels[:6]) == [0, 0, 0, 1, 1, 1]
    # only one cluster left to fill: no solve needed
    one = constrained_sinkhorn(log_p[:4], [0.25, 0.25, 0.5, 1e-9], [0, 1, -1, -1], **SK)
    assert list(one.labels) == [0, 1, 2, 2] and one.result is None
    # every row pinned
    allp = constrained_sinkhorn(log_p[:3], None, [2, 0, 2], **SK)
    assert list(allp.labels) == [2, 0, 2] and allp.n_iter == 0
    with pytest.raises(ConstraintError, match="0..3"):
        constrained_sinkhorn(log_p, None, np.full(12, 4), **SK)
    with pytest.raises(ConstraintError, match="rows"):
        constrained_sinkhorn(log_p, None, np.full(5, -1), **SK)


WORKER = """
import sys
sys.path.insert(0, {root!r})
import numpy as np, torch.distributed as dist
from selavi_core.training.constraints import FixedRows, constrained_sinkhorn
from selavi_core.selflabel.sinkhorn import sinkhorn_knopp_distributed
dist.init_process_group("gloo")
rank = dist.get_rank()
data = np.load(sys.argv[1])
fixed = FixedRows.from_array(data["fixed"], data["log_p"].shape[1])
block = slice(0, 130) if rank == 0 else slice(130, None)
res = constrained_sinkhorn(data["log_p"][block], data["r"], fixed.shard(block), solver=sinkhorn_knopp_distributed,
                           lam=20.0, tol=1e-8, max_iter=3000)
np.save(sys.argv[2] + f"/labels{{rank}}.npy", res.labels)
dist.destroy_process_group()
"""


def test_sharded_rows_under_torchrun_give_the_single_process_labels(tmp_path: Path):
    """Each rank pins its own rows and reduces the marginal with the global counts: labels are bit-identical."""
    n, k = 300, 4
    log_p = log_posteriors(n, k, seed=5)
    fixed = np.full(n, -1)
    fixed[::7] = np.arange(len(fixed[::7])) % 2
    r = np.array([0.2, 0.3, 0.3, 0.2])
    np.savez(tmp_path / "case.npz", log_p=log_p, fixed=fixed, r=r)
    script = tmp_path / "worker.py"
    script.write_text(WORKER.format(root=str(Path(__file__).resolve().parents[1])))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", str(script),
           str(tmp_path / "case.npz"), str(tmp_path)]  # fmt: skip
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    sharded = np.concatenate([np.load(tmp_path / "labels0.npy"), np.load(tmp_path / "labels1.npy")])
    single = constrained_sinkhorn(log_p, r, fixed, **SK)
    np.testing.assert_array_equal(sharded, single.labels)


# ------------------------------------------------------------------------------------------ reading human labels


def test_human_labels_fold_names_clip_labels_and_rejections(tmp_path: Path):
    run_dir = make_label_run(tmp_path, n=48, heads=2, k=4)  # clip i: cluster i % 4 (head 0), (i // 3) % 4 (head 1)
    ids = list(Run(run_dir).clip_ids)
    with LabelStore.open(run_dir) as store:
        store.rename_cluster(0, 1, "dog", annotator="ana", expected_version=None)
        store.override_clips([ids[5]], "cat", annotator="ana", expected_version=None)  # a member of cluster 1
        store.reject_clips(0, [ids[9], ids[13]], annotator="bo", expected_version=None)  # members of cluster 1
        store.override_clips([ids[13]], "dog puppy", annotator="bo", expected_version=None)  # rejected, then own label
        store.label_clips([ids[2], ids[6]], "bird", annotator="bo", expected_version=None)  # cluster 2: unnamed

    labels = human_labels(run_dir)
    assert labels.attrs["head"] == 0  # the head the names and rejections were made on
    want = {ids[i]: "dog" for i in range(48) if i % 4 == 1 and i not in (5, 9, 13)}
    want |= {ids[5]: "cat", ids[13]: "dog puppy", ids[2]: "bird", ids[6]: "bird"}
    assert labels.to_dict() == want
    # head 1: head 0's name and rejections do not apply; per-clip labels hold in every head
    assert human_labels(run_dir, head=1).to_dict() == {ids[5]: "cat", ids[13]: "dog puppy", ids[2]: "bird",
                                                       ids[6]: "bird"}  # fmt: skip

    c = LabelConstraints.from_run(run_dir)
    assert c.names == ("bird", "cat", "dog", "dog puppy")  # sorted: name i is cluster i
    rows = [ids[2], "not-in-run1", ids[5], ids[9], ids[13], ids[1]]
    fixed = c.for_rows(rows, clusters=4)
    assert list(fixed.cluster) == [0, -1, 1, -1, 3, 2]
    assert list(fixed.counts) == [1, 1, 1, 1] and fixed.n_rows == 6
    info = c.summary(fixed)
    assert info["labelled_clips"] == len(want) and info["fixed_rows"] == 4 and info["ignored_clips"] == len(want) - 4
    assert info["head"] == 0 and info["run_dir"] == str(run_dir.resolve())
    with pytest.raises(ConstraintError, match="4 names .* 3 clusters"):
        c.for_rows(rows, clusters=3)


def test_the_default_head_is_where_the_names_were_given(tmp_path: Path):
    run_dir = make_label_run(tmp_path, n=24, heads=3, k=4)
    ids = list(Run(run_dir).clip_ids)
    with LabelStore.open(run_dir) as store:
        store.label_clips(ids[:2], "x", annotator="ana", expected_version=None)
        assert human_labels(run_dir).attrs["head"] == 0  # per-clip labels only: they hold in every head
        store.rename_cluster(2, 3, "y", annotator="ana", expected_version=None)
        assert human_labels(run_dir).attrs["head"] == 2
        store.rename_cluster(1, 0, "z", annotator="ana", expected_version=None)
        assert human_labels(run_dir).attrs["head"] == 2  # head 2 labels 8 clips (6 + "x"), head 1 6 ("x" inside)
        store.rename_cluster(1, 1, "w", annotator="ana", expected_version=None)
        assert human_labels(run_dir).attrs["head"] == 1
        store.undo("ana")
        store.undo("ana")
        assert human_labels(run_dir).attrs["head"] == 2  # undone names do not count


def test_missing_runs_stores_labels_and_heads_are_refused_clearly(tmp_path: Path):
    with pytest.raises(ConstraintError, match="no such run folder"):
        human_labels(tmp_path / "nope")
    run_dir = make_label_run(tmp_path, n=24, heads=2, k=4)
    with pytest.raises(ConstraintError, match="no human labels"):
        human_labels(run_dir)
    assert not (run_dir / "labels.sqlite").exists()  # reading did not create an empty store
    with pytest.raises(ConstraintError, match="no such label store"):
        human_labels(run_dir, store_url=tmp_path / "other.sqlite")
    ids = list(Run(run_dir).clip_ids)
    with LabelStore.open(run_dir) as store:
        store.rename_cluster(0, 1, "dog", annotator="ana", expected_version=None)
        store.rename_cluster(0, 1, None, annotator="ana", expected_version=None)  # cleared again
        store.reject_clips(0, ids[:1], annotator="ana", expected_version=None)
    with pytest.raises(ConstraintError, match="no clip has a human label in head 0"):
        human_labels(run_dir)
    with pytest.raises(ConstraintError, match="heads 0..1"):
        human_labels(run_dir, head=2)


# ------------------------------------------------------------------------------------------ training with constraints

TINY = TINY_2.with_overrides(model={"clusters": 3})


@pytest.fixture(scope="module")
def labelled_run1(tiny_catalog: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, int]]:
    """RUN1 over the catalog's clips plus one clip the catalog lacks, with human labels; (run, clip -> cluster).

    Labels cut across the catalog's classes, so no self-labelling would give them by chance in every head.
    """
    ids = [str(c) for c in load_catalog(tiny_catalog)["clip_id"]] + ["gone-from-the-catalog"]
    n, heads, k = len(ids), 2, 3
    joint = np.stack([np.arange(n) % k, np.arange(n) // 9], axis=1).astype(np.int32)
    conf = np.full((n, heads), 0.9, np.float32)
    run_dir = tmp_path_factory.mktemp("run1") / "run1"
    meta = RunMeta(catalog_dir=str(tiny_catalog), catalog_hash="run1", heads=heads, clusters=k, preset="cpu-small")
    write_run(run_dir, meta, ids, joint=joint, video=joint, audio=joint, confidence=conf, margin=conf,
              features_video=np.zeros((n, 4)), features_audio=np.zeros((n, 4)), priors=np.full((heads, k), 1 / k))  # fmt: skip
    with LabelStore.open(run_dir) as store:
        store.rename_cluster(0, 2, "zebra", annotator="ana", expected_version=None)  # clips 2, 5, 8, ..., 23
        store.reject_clips(0, [ids[5], ids[8]], annotator="ana", expected_version=None)
        store.override_clips([ids[0], ids[7], ids[24]], "aardvark", annotator="ana", expected_version=None)
    # names sorted: aardvark -> 0, zebra -> 1
    want = {ids[i]: 1 for i in range(2, N_CLIPS, 3) if i not in (5, 8)} | {ids[0]: 0, ids[7]: 0}
    return run_dir, want


def test_a_trainer_keeps_the_pinned_clips_in_their_cluster_at_every_labelling(tiny_catalog, labelled_run1, tmp_path):
    run1, want = labelled_run1
    constraints = LabelConstraints.from_run(run1)
    trainer = Trainer(tiny_catalog, tmp_path, TINY, ctx=Context(torch.device("cpu")), log=lambda *a: None,
                      constraints=constraints)  # fmt: skip
    row = {c: i for i, c in enumerate(trainer.clip_ids)}
    rows, clusters = np.array([row[c] for c in want]), np.array(list(want.values()))
    assert trainer.fixed.n_fixed == len(want) == 8 and trainer.constraints_info["ignored_clips"] == 1
    trainer.bn_warmup()
    for _ in range(3):
        trainer.relabel()
        labels = trainer.state.labels
        for h in range(3):
            np.testing.assert_array_equal(labels[rows, h], clusters)
        assert trainer.state.history[-1]["fixed_rows"] == 8
        free = np.setdiff1d(np.arange(N_CLIPS), rows)
        assert len(np.unique(labels[free, 0])) >= 2  # the free clips still self-label over the clusters


def test_train_with_labels_from_pins_clips_and_records_provenance(tiny_catalog, labelled_run1, tmp_path: Path):
    run1, want = labelled_run1
    run2 = tmp_path / "run2"
    train(tiny_catalog, run2, TINY, device="cpu", log=lambda *a: None, constraints=LabelConstraints.from_run(run1))
    ckpt = load_checkpoint(run2 / "checkpoint.pt")
    ids = json.loads(ckpt["extra"]["clip_ids"])
    labels = ckpt["extra"]["labels"].numpy()
    for clip, cluster in want.items():
        assert list(labels[ids.index(clip)]) == [cluster] * 3
    log = [json.loads(line) for line in (run2 / "train_log.jsonl").read_text().splitlines()]
    assert all(r["labelling_log"][0]["fixed_rows"] == 8 for r in log if r["type"] == "epoch")
    assert [r["fixed_rows"] for r in log if r["type"] == "refine"] == [8] * TINY.refine.rounds
    info = Run(run2).meta.extra["labels_from"]
    assert info["run_dir"] == str(run1.resolve()) and info["head"] == 0 and info["names"] == ["aardvark", "zebra"]
    assert (info["labelled_clips"], info["fixed_rows"], info["ignored_clips"]) == (9, 8, 1)
    assert json.loads(ckpt["extra"]["labels_from"]) == info


def test_the_cli_refuses_unusable_labels_in_one_line(tiny_catalog, labelled_run1, tmp_path: Path, capsys):
    run1, _ = labelled_run1
    base = ["train", str(tiny_catalog), "--out", str(tmp_path / "run2"), "--epochs", "1", "--batch-size", "6"]
    assert main([*base, "--labels-from", str(tmp_path / "missing")]) == 2
    assert "no such run folder" in capsys.readouterr().err
    assert main([*base, "--labels-from", str(run1), "--head", "5"]) == 2
    assert "heads 0..1" in capsys.readouterr().err
    assert main([*base, "--head", "1"]) == 2
    assert "give --labels-from too" in capsys.readouterr().err
    assert main([*base, "--labels-from", str(run1), "--clusters", "1", "--refine-rounds", "0"]) == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if "error:" in line]
    assert len(errors) == 1 and "2 names (aardvark, zebra)" in errors[0] and "1 clusters" in errors[0]
    assert not (tmp_path / "run2" / "run.json").exists()
    with pytest.raises(SelaviError):
        LabelConstraints.from_labels(pd.Series(dtype=object))
