"""``selavi evaluate``: the paper's metrics table for a run, against its catalog's ground-truth labels."""

from __future__ import annotations

import argparse
import json

DESCRIPTION = """\
Score every head's joint cluster assignment (argmax of p_video * p_audio) of RUN_DIR against the
labels of the catalog the run was made from: NMI, aNMI, ARI, Hungarian accuracy (one-to-one, works
for K != number of classes), purity (unweighted mean over clusters, as in the official code),
size-weighted purity and mean cluster entropy (nats). Clips without a label are not scored.

The head marked '*' has the best NMI against the ground truth: SeLaVi's protocol, an oracle choice.
Head 0 and the mean over heads are shown as label-free references.

Baselines: the best head's video-only and audio-only predictions, and spherical k-means (faiss,
K = the run's cluster count) on the run's video, audio and concatenated features, and on raw inputs
(a few tiny grey frames per clip; per-band log-mel mean and std; both) to show what no learning gives.
Run folders made before raw features existed need `selavi assign` again for the raw baselines.

examples:
  selavi evaluate runs/demo
  selavi evaluate runs/demo --json > scores.json
  selavi evaluate runs/vgg --no-anmi --no-baselines
"""


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "evaluate",
        help="the paper's metrics table against ground truth",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("run_dir", metavar="RUN_DIR", help="run folder written by `selavi train` or `selavi assign`")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of the table")
    p.add_argument("--no-baselines", action="store_true", help="skip the modality-only and k-means baselines")
    p.add_argument(
        "--no-anmi", action="store_true", help="skip adjusted NMI (its expected-MI term is the slowest metric)"
    )
    p.add_argument("--seed", type=int, default=0, help="seed of the k-means baselines (default: 0)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from selavi_core.config import check_flag
    from selavi_core.evaluation.evaluate import evaluate_run, format_table

    check_flag("--seed", args.seed, 0)

    result = evaluate_run(args.run_dir, adjusted=not args.no_anmi, baselines=not args.no_baselines, seed=args.seed)
    print(json.dumps(result, indent=2) if args.json else format_table(result))
    return 0
