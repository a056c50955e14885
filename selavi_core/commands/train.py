"""``selavi train``: train SeLaVi on a catalog and write the run folder."""

from __future__ import annotations

import argparse
import os

from selavi_core.commands import add_store_argument
from selavi_core.config import PRESETS

HELP = """\
Train SeLaVi (self-labelling with Sinkhorn-Knopp, modality as augmentation, decorrelated heads) on
the ok clips of CATALOG_DIR, then write per-head assignments into RUN_DIR as `selavi assign` does.
Checkpoints are written every epoch (RUN_DIR/checkpoint.pt); --resume continues from the last one.
After the last epoch, presets that set it (cpu-small) refine the heads alone on frozen features:
rounds of Sinkhorn labels and head training that let the heads catch up with the encoders
(--refine-rounds 0 ends training as the paper does).
Several processes or GPUs: launch with torchrun, e.g.
  torchrun --nproc_per_node 2 -m selavi_core.cli train CATALOG_DIR --out RUN_DIR

Curated names flow back: --labels-from RUN1 trains with the human labels of RUN1 (cluster names
given in the Studio propagated to their members in one head, per-clip labels, "not this"
rejections, exactly as `selavi export` reads them) as constraints. Label names are sorted and name
i becomes cluster i of every head; every labelled clip keeps that cluster in every Sinkhorn
labelling, and the other clips self-label as before under the prior's marginal less what the
labelled clips already fill. Clips of RUN1 that are not in CATALOG_DIR are ignored (counted in the
log). The source run, head and counts are recorded in RUN_DIR/run.json (extra.labels_from), e.g.
  selavi train CATALOG_DIR --out RUN2 --labels-from RUN1 --head 3
"""


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "train",
        help="train SeLaVi on a catalog",
        description=HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("catalog", metavar="CATALOG_DIR")
    p.add_argument("--out", required=True, metavar="RUN_DIR")
    p.add_argument(
        "--preset",
        choices=sorted(PRESETS),
        default="cpu-small",
        help="paper: the published input sizes and networks (GPU); cpu-small: same method, small inputs",
    )
    p.add_argument(
        "--epochs",
        type=int,
        help="training epochs, exactly (default: the preset's; cpu-small trains small sets for more epochs, "
        "so that they get as many steps as 54 epochs of 3,000 clips)",
    )
    p.add_argument("--heads", type=int, help="clustering heads per modality (default 10)")
    p.add_argument(
        "--clusters", type=int, help="K clusters per head (default: number of ground-truth classes, else 100)"
    )
    p.add_argument("--prior", help="cluster-size prior: uniform | gauss | gauss-reciprocal | zipf:S | PATH (K numbers)")
    p.add_argument(
        "--fusion",
        choices=("augment", "concat"),
        help="augment: modality as augmentation (SeLaVi); concat: heads on concatenated features",
    )
    p.add_argument("--batch-size", type=int)
    p.add_argument("--lr", type=float)
    p.add_argument("--labellings", type=int, help="Sinkhorn labellings over training (n in t_j = T (j/(n-1))^p)")
    p.add_argument("--groups", type=int, help="decorrelated head groups (one augmented pass each)")
    p.add_argument("--seed", type=int)
    p.add_argument(
        "--refine-rounds",
        type=int,
        help="rounds of head-only self-labelling on frozen features after the last epoch "
        "(default: the preset's; 0 = none, as in the paper)",
    )
    p.add_argument(
        "--contrast-weight",
        type=float,
        metavar="W",
        help="weight of the picture-to-sound matching loss beside the labels (default: the preset's; "
        "0 = SeLaVi's loss alone, as in the paper)",
    )
    p.add_argument("--device", default="auto", help="auto | cpu | cuda")
    p.add_argument("--resume", action="store_true", help="continue from RUN_DIR/checkpoint.pt")
    p.add_argument(
        "--labels-from",
        metavar="RUN1",
        help="train with the human labels of run RUN1 as constraints (needs --clusters >= the number of names)",
    )
    p.add_argument(
        "--head",
        type=int,
        dest="labels_head",
        metavar="H",
        help="with --labels-from: the head of RUN1 whose cluster names count (default: the head the labels "
        "were made on; per-clip labels hold in every head)",
    )
    add_store_argument(p, default="RUN1/labels.sqlite", when="with --labels-from")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from selavi_core.config import get_preset
    from selavi_core.errors import SelaviError
    from selavi_core.training.trainer import train

    constraints = None
    if args.labels_from is None:
        if args.labels_head is not None or args.store is not None:
            raise SelaviError("--head and --store choose the labels of --labels-from RUN1; give --labels-from too")
    else:
        from selavi_core.training.constraints import LabelConstraints

        constraints = LabelConstraints.from_run(args.labels_from, args.labels_head, args.store)
    preset = get_preset(args.preset)
    model = {k: v for k, v in (("heads", args.heads), ("clusters", args.clusters), ("fusion", args.fusion)) if v}
    optim = {k: v for k, v in (("batch_size", args.batch_size), ("lr", args.lr), ("seed", args.seed)) if v is not None}
    schedule = {k: v for k, v in (("n_opts", args.labellings), ("groups", args.groups), ("prior", args.prior)) if v}
    refine = {} if args.refine_rounds is None else {"rounds": args.refine_rounds}
    contrast = {} if args.contrast_weight is None else {"weight": args.contrast_weight}
    preset = preset.with_overrides(model=model, optim=optim, schedule=schedule, refine=refine, contrast=contrast)
    preset = preset.with_epochs(args.epochs)
    out = train(
        args.catalog,
        args.out,
        preset,
        device=args.device,
        resume=args.resume,
        constraints=constraints,
    )
    if int(os.environ.get("RANK", "0")) != 0:  # under torchrun, one process reports
        return 0
    print(f"run written to {out}; next: selavi evaluate {out}")
    print(training_report(out))
    return 0


def training_report(run_dir: str | os.PathLike) -> str:
    """The warnings of ``selavi_core.training.diagnostics`` for a trained run folder, in plain words (ground truth unused)."""
    from selavi_core.training.diagnostics import assess_training, format_warnings, load_run_training

    curves = load_run_training(run_dir)
    if curves is None:
        return f"no training log in {run_dir}: nothing to diagnose"
    return format_warnings(assess_training(curves))
