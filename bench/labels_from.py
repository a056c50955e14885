"""What curated names buy: SeLaVi trained with a few human labels (--labels-from) against the same run without.

For each seed: train a baseline run (no labels); give it a label store in which annotator "bench" labelled a
fraction (default 5%) of the clips with their ground-truth class (per-clip labels through the store API, as
the Studio's map selection does); train RUN2 with those labels as constraints (``selavi train --labels-from``);
print head 0's NMI of both against the ground truth, over all clips and over the clips nobody labelled (the
labelled ones are pinned, so only the rest show what the labels taught), and the differences.

    .venv/bin/python bench/labels_from.py [--catalog DIR] [--fraction 0.05] [--seeds 0 1 2] [--epochs N]
        [--preset cpu-small] [--device auto] [--work data/bench/labels-from]

Without --catalog it uses (and builds, like bench/avdigits.py) AV digits at data/bench/catalog-balanced. Runs
already trained in --work are reused unless --fresh; a short check: --epochs 1 on a small catalog.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

os.environ.setdefault("NUMBA_THREADING_LAYER", "workqueue")


def default_catalog(work: Path) -> Path:
    """AV digits (balanced, 3,000 clips) ingested like bench/avdigits.py does."""
    from selavi_core.cli import main as cli

    clips, catalog = work / "avdigits-balanced", work / "catalog-balanced"
    if not (catalog / "clips.parquet").is_file():
        assert cli(["demo-data", str(clips), "--variant", "balanced"]) == 0
        assert cli(["ingest", str(clips), "--format", "csv", "--out", str(catalog)]) == 0
    return catalog


def label_fraction(run_dir: Path, store: Path, fraction: float, seed: int) -> int:
    """A fresh label store for ``run_dir`` in which "bench" gave ``fraction`` of the clips their true class."""
    import numpy as np
    import pandas as pd

    from selavi_core.labels.store import LabelStore
    from selavi_core.runs.run import Run

    for suffix in ("", "-wal", "-shm"):
        Path(f"{store}{suffix}").unlink(missing_ok=True)
    run = Run(run_dir)
    truth = run.catalog["label"]
    known = np.flatnonzero(truth.notna().to_numpy())
    n = max(1, round(fraction * len(known)))
    chosen = np.random.default_rng(seed).choice(known, n, replace=False)
    picked = pd.DataFrame({"clip_id": np.asarray(run.clip_ids)[chosen], "label": truth.to_numpy()[chosen]})
    with LabelStore.open(run, store=store) as s:
        for label, group in picked.groupby("label"):
            s.label_clips(group["clip_id"].tolist(), str(label), annotator="bench", expected_version=None,
                          source="bench")  # fmt: skip
    return n


def head0_nmi(run_dir: Path, exclude: set[str]) -> tuple[float, float]:
    """NMI of head 0's joint clusters with the ground truth: all labelled-in-catalog clips, and those not in ``exclude``."""
    import numpy as np

    from selavi_core.evaluation.metrics import nmi
    from selavi_core.runs.run import Run

    run = Run(run_dir)
    codes, _ = run.ground_truth
    pred = np.asarray(run.assignments("joint"))[:, 0]
    known = codes >= 0
    rest = known & ~np.isin(np.asarray(run.clip_ids).astype(str), list(exclude))
    return float(nmi(codes[known], pred[known])), float(nmi(codes[rest], pred[rest]))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--catalog", help="a catalog with ground-truth labels (default: AV digits, built if missing)")
    ap.add_argument("--work", default="data/bench/labels-from", help="where the runs and label stores go")
    ap.add_argument("--fraction", type=float, default=0.05, help="share of the clips given a human label")
    ap.add_argument("--preset", default="cpu-small")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0])
    ap.add_argument("--epochs", type=int, help="override the preset's epochs (short checks)")
    ap.add_argument("--heads", type=int, help="override the preset's heads")
    ap.add_argument("--clusters", type=int, help="K (default: the number of ground-truth classes)")
    ap.add_argument("--batch-size", type=int, help="override the preset's batch size (small catalogs)")
    ap.add_argument("--device", default="auto", help="auto | cpu | cuda")
    ap.add_argument("--fresh", action="store_true", help="retrain runs that exist already")
    args = ap.parse_args()
    if not 0 < args.fraction <= 1:
        ap.error("--fraction must lie in (0, 1]")

    from selavi_core.config import get_preset
    from selavi_core.training.constraints import LabelConstraints
    from selavi_core.training.trainer import train

    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    catalog = Path(args.catalog) if args.catalog else default_catalog(Path("data/bench"))
    model = {k: v for k, v in (("heads", args.heads), ("clusters", args.clusters)) if v is not None}
    optim = {} if args.batch_size is None else {"batch_size": args.batch_size}
    rows = []
    for seed in args.seeds:
        preset = get_preset(args.preset).with_overrides(model=model, optim={**optim, "seed": seed})
        preset = preset.with_epochs(args.epochs)
        base, run2 = work / f"baseline-seed{seed}", work / f"labels{args.fraction:g}-seed{seed}"
        store = work / f"labels{args.fraction:g}-seed{seed}.sqlite"
        t0 = time.time()
        if args.fresh or not (base / "run.json").is_file():
            train(catalog, base, preset, device=args.device)
        t_base = time.time() - t0
        n_labelled = label_fraction(base, store, args.fraction, seed)
        constraints = LabelConstraints.from_run(base, store_url=store)
        t0 = time.time()
        if args.fresh or not (run2 / "run.json").is_file():
            train(catalog, run2, preset, device=args.device, constraints=constraints)
        t_run2 = time.time() - t0
        pinned = set(constraints.labels.index)
        b_all, b_rest = head0_nmi(base, pinned)
        c_all, c_rest = head0_nmi(run2, pinned)
        rows.append({"seed": seed, "labelled": n_labelled, "baseline": b_all, "with_labels": c_all,
                     "diff": c_all - b_all, "baseline_unlabelled": b_rest, "with_labels_unlabelled": c_rest,
                     "diff_unlabelled": c_rest - b_rest, "train_s": [round(t_base, 1), round(t_run2, 1)]})  # fmt: skip

    print(f"\nhead 0 NMI, {args.preset}, {args.fraction:.0%} of the clips labelled from the ground truth ({catalog})")
    print(f"{'seed':>4} {'labelled':>8} {'baseline':>9} {'labels':>9} {'diff':>7} | unlabelled clips: "
          f"{'baseline':>9} {'labels':>9} {'diff':>7}")  # fmt: skip
    for r in rows:
        print(f"{r['seed']:>4} {r['labelled']:>8} {r['baseline']:>9.4f} {r['with_labels']:>9.4f} {r['diff']:>+7.4f} | "
              f"{'':>18}{r['baseline_unlabelled']:>9.4f} {r['with_labels_unlabelled']:>9.4f} "
              f"{r['diff_unlabelled']:>+7.4f}")  # fmt: skip
    if len(rows) > 1:
        mean = {k: sum(r[k] for r in rows) / len(rows) for k in ("diff", "diff_unlabelled")}
        print(f"mean diff {mean['diff']:+.4f} (all clips), {mean['diff_unlabelled']:+.4f} (unlabelled clips)")
    (work / f"result-{args.fraction:g}.json").write_text(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
