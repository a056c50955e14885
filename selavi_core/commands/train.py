"""``selavi train``: train SeLaVi on a catalog and write the run folder."""

from __future__ import annotations

import argparse
import os
from typing import Any

from selavi_core.commands import add_store_argument
from selavi_core.config import PRESETS, ConfigError, Preset, get_preset

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
        "--workers",
        type=int,
        help="DataLoader worker processes that decode and augment batches (default: the preset's; "
        "paper: one per core, cpu-small: 0 = in the training process)",
    )
    p.add_argument(
        "--refine-rounds",
        type=int,
        help="rounds of head-only self-labelling on frozen features after the last epoch "
        "(default: the preset's; 0 = none, as in the paper)",
    )
    p.add_argument(
        "--refine-marginal-strength",
        type=float,
        metavar="S",
        help="how firmly the refine rounds hold their cluster sizes, in (0, 1] (default: the preset's; "
        "1 = exactly equal sizes; lower, e.g. 0.5, lets a class much larger than its share stay whole on "
        "imbalanced data, but on balanced data it can leave a cluster empty)",
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


#: The preset field each flag sets (``Preset.validate`` checks them; its errors are reworded with the flag).
FLAGS = {
    "model.heads": "--heads",
    "model.clusters": "--clusters",
    "model.fusion": "--fusion",
    "optim.batch_size": "--batch-size",
    "optim.lr": "--lr",
    "optim.seed": "--seed",
    "optim.epochs": "--epochs",
    "optim.workers": "--workers",
    "schedule.n_opts": "--labellings",
    "schedule.groups": "--groups",
    "schedule.prior": "--prior",
    "refine.rounds": "--refine-rounds",
    "refine.marginal_strength": "--refine-marginal-strength",
    "contrast.weight": "--contrast-weight",
}


def preset_from_args(args: argparse.Namespace) -> Preset:
    """The preset with every flag that was given (0 and "" included) put into its field; not yet validated."""
    given = {field: getattr(args, flag[2:].replace("-", "_")) for field, flag in FLAGS.items()}
    sections: dict[str, dict[str, Any]] = {}
    for field, value in given.items():
        if value is not None and field != "optim.epochs":
            section, name = field.split(".")
            sections.setdefault(section, {})[name] = value
    return get_preset(args.preset).with_overrides(**sections).with_epochs(args.epochs)


def checked_preset(args: argparse.Namespace) -> Preset:
    """``preset_from_args`` validated, and its K and batch size checked against the catalog's usable clips.

    Runs before any work; a bad value is a ``ConfigError`` naming the flag and the values it may take
    (the CLI prints it on one line and exits with status 2)."""
    from selavi_core.catalog import load_catalog, ok_clips

    try:
        preset = preset_from_args(args).validate()
    except ConfigError as err:
        raise err.for_flags(FLAGS) from None
    clips = len(ok_clips(load_catalog(args.catalog)))
    k = preset.model.clusters
    if k is not None and k > clips:
        raise ConfigError(
            f"--clusters must be at most the number of usable clips in {args.catalog} ({clips}), got {k}",
            field="model.clusters",
            value=k,
        )
    batch = preset.optim.batch_size
    if batch > clips:
        given = "" if args.batch_size is not None else f" (the {preset.name} preset's)"
        raise ConfigError(
            f"--batch-size must be at most the number of usable clips in {args.catalog} ({clips}), got {batch}{given}",
            field="optim.batch_size",
            value=batch,
        )
    return preset


def run(args: argparse.Namespace) -> int:
    from selavi_core.errors import SelaviError
    from selavi_core.training.trainer import train

    preset = checked_preset(args)
    constraints = None
    if args.labels_from is None:
        if args.labels_head is not None or args.store is not None:
            raise SelaviError("--head and --store choose the labels of --labels-from RUN1; give --labels-from too")
    else:
        from selavi_core.training.constraints import LabelConstraints

        constraints = LabelConstraints.from_run(args.labels_from, args.labels_head, args.store)
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
