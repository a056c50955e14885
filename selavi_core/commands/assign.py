"""``selavi assign``: per-head cluster assignments of a checkpoint over a catalog."""

from __future__ import annotations

import argparse

HELP = """\
Run a checkpoint over every ok clip of CATALOG_DIR (one centred clip and crop, as the official
evaluation) and write RUN_DIR: per clip and head the joint, video-only and audio-only cluster, the
joint probability of the chosen cluster and its margin, the pooled features of each modality, and
run.json (catalog location and hash, checkpoint hash, preset, K, H, prior).
CKPT may be a SeLaVi Studio checkpoint or an official SeLaVi file (selavi_vgg_sound.pth etc.).
"""


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "assign",
        help="assignments from a trained or official checkpoint",
        description=HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("catalog", metavar="CATALOG_DIR")
    p.add_argument("--checkpoint", required=True, metavar="CKPT")
    p.add_argument("--out", required=True, metavar="RUN_DIR")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from selavi_core.runs.assign import assign

    out = assign(args.catalog, args.checkpoint, args.out, device=args.device)
    print(f"run written to {out}")
    return 0
