"""``selavi train``: train SeLaVi on a catalog and write the run folder."""

from __future__ import annotations

import argparse

from ..config import PRESETS

HELP = """\
Train SeLaVi (self-labelling with Sinkhorn-Knopp, modality as augmentation, decorrelated heads) on
the ok clips of CATALOG_DIR, then write per-head assignments into RUN_DIR as `selavi assign` does.
Checkpoints are written every epoch (RUN_DIR/checkpoint.pt); --resume continues from the last one.
After the last epoch, presets that set it (cpu-small) refine the heads alone on frozen features:
rounds of Sinkhorn labels and head training that let the heads catch up with the encoders
(--refine-rounds 0 ends training as the paper does).
Several processes or GPUs: launch with torchrun, e.g.
  torchrun --nproc_per_node 2 -m selavi_core.cli train CATALOG_DIR --out RUN_DIR
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
    p.add_argument("--epochs", type=int, help="training epochs (default: the preset's)")
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
    p.add_argument("--device", default="auto", help="auto | cpu | cuda")
    p.add_argument("--resume", action="store_true", help="continue from RUN_DIR/checkpoint.pt")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..config import get_preset
    from ..train import train

    preset = get_preset(args.preset)
    model = {k: v for k, v in (("heads", args.heads), ("clusters", args.clusters), ("fusion", args.fusion)) if v}
    optim = {
        k: v
        for k, v in (("epochs", args.epochs), ("batch_size", args.batch_size), ("lr", args.lr), ("seed", args.seed))
        if v is not None
    }
    schedule = {k: v for k, v in (("n_opts", args.labellings), ("groups", args.groups), ("prior", args.prior)) if v}
    refine = {} if args.refine_rounds is None else {"rounds": args.refine_rounds}
    preset = preset.with_overrides(model=model, optim=optim, schedule=schedule, refine=refine)
    out = train(args.catalog, args.out, preset, device=args.device, prior=args.prior, resume=args.resume)
    print(f"run written to {out}; next: selavi evaluate {out}")
    return 0
