"""``selavi demo-data OUT_DIR``: build the AV-digits demo and benchmark set (see selavi_core/datasets/avdigits.py)."""

from __future__ import annotations

import argparse
import sys

DESCRIPTION = """\
Build AV digits: short MP4 clips that show a real handwritten digit (MNIST) and speak the same digit in a
real voice (FSDD), one clip per recording, with opaque file names and the labels in OUT_DIR/labels.csv
(path,label,speaker,mnist_index,source_file,split; fallback builds add image_variant). The label is carried
by both modalities and nothing else, which is what SeLaVi exploits.

variants:
  balanced   all 300 recordings of every digit: 3,000 clips (fallback: 240 per digit, 2,400 clips)
  zipf       n_d = round(300 / (rank + 1)) over a seeded class order: 879 clips (fallback: 703)

Sources default to ../shared/data (fsdd/recordings and mnist-10k.npz, or $SELAVI_SHARED_DATA). Where they
are absent, zero-download sources are used instead, so the demo works anywhere: espeak-ng speech (80
synthetic speakers, 8 accents x 10 voice variants, 3 takes of every digit at jittered speed and pitch) and
scikit-learn's bundled 8x8 digits, varied per clip (stroke, rotation, shear, aspect, elastic warp, scale,
position; flat, gradient or textured backgrounds). The balanced fallback set builds in a minute or two on
2 cores. manifest.json records which sources were used. FSDD (CC BY-SA 4.0) and MNIST (CC BY-SA 3.0) are
share-alike: so is the built set (see OUT_DIR/LICENSE.txt).

Re-running with the same settings into a complete OUT_DIR does nothing; an interrupted build resumes.
"""

EPILOG = """\
examples:
  selavi demo-data data/avdigits
  selavi demo-data data/avdigits-zipf --variant zipf --seed 1
  selavi demo-data /tmp/tiny --fallback --limit-per-class 3
"""


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "demo-data",
        help="build the AV-digits demo set (MP4s + labels.csv)",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "out_dir", metavar="OUT_DIR", help="folder to write (created; must be new, empty or a previous build)"
    )
    p.add_argument(
        "--variant", choices=("balanced", "zipf"), default="balanced", help="class balance (default: balanced)"
    )
    p.add_argument("--seed", type=int, default=0, help="seed for every random choice (default: 0)")
    p.add_argument(
        "--fsdd", metavar="DIR", default=None, help="FSDD recordings folder (default: ../shared/data/fsdd/recordings)"
    )
    p.add_argument(
        "--mnist",
        metavar="NPZ",
        default=None,
        help="MNIST npz with x (N,28,28) uint8 and y (default: ../shared/data/mnist-10k.npz)",
    )
    src = p.add_mutually_exclusive_group()
    src.add_argument(
        "--fallback",
        action="store_true",
        help="use scikit-learn digits and espeak-ng speech even when the real data is present",
    )
    src.add_argument(
        "--require-real", action="store_true", help="fail instead of falling back when FSDD or MNIST is missing"
    )
    p.add_argument(
        "--workers",
        type=int,
        default=None,
        metavar="N",
        help="parallel encoder processes (default: the number of cores)",
    )
    p.add_argument(
        "--limit-per-class",
        type=int,
        default=None,
        metavar="N",
        help="at most N clips per digit (the largest Zipf class), for quick tests",
    )
    p.add_argument("--zipf-s", type=float, default=1.0, metavar="S", help="Zipf exponent (default: 1.0)")
    p.add_argument(
        "--speaker-palette",
        action="store_true",
        help="harder variant: the background hue follows the speaker, so clustering by speaker "
        "is also a consistent cross-modal solution",
    )
    p.add_argument("--overwrite", action="store_true", help="replace an AV-digits build with other settings in OUT_DIR")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from selavi_core.config import check_flag
    from selavi_core.datasets.avdigits import build_avdigits

    for flag, value, low in (
        ("--seed", args.seed, 0),
        ("--workers", args.workers, 1),
        ("--limit-per-class", args.limit_per_class, 1),
        ("--zipf-s", args.zipf_s, 0),
    ):
        check_flag(flag, value, low)

    mode = "fallback" if args.fallback else "real" if args.require_real else "auto"
    result = build_avdigits(
        args.out_dir,
        variant=args.variant,
        seed=args.seed,
        fsdd=args.fsdd,
        mnist=args.mnist,
        sources=mode,
        workers=args.workers,
        limit_per_class=args.limit_per_class,
        zipf_s=args.zipf_s,
        speaker_palette=args.speaker_palette,
        overwrite=args.overwrite,
        log=lambda msg: print(msg, file=sys.stderr),
    )
    images, sounds = result.sources["images"]["kind"], result.sources["sounds"]["kind"]
    counts = " ".join(f"{d}:{n}" for d, n in result.counts.items())
    if result.skipped:
        print(f"{result.out_dir} is already complete with these settings ({result.n_clips} clips): nothing to do")
        return 0
    for note in result.notes:
        print(note)
    print(
        f"wrote {result.n_clips} clips ({result.built} encoded now, {result.bytes / 1e6:.1f} MB) to {result.out_dir} "
        f"in {result.seconds:.1f} s\n"
        f"  sources: images {images}, speech {sounds}\n"
        f"  clips per digit: {counts}\n"
        f"  labels: {result.out_dir / 'labels.csv'}  "
        + ("(share-alike licence: see LICENSE.txt)" if {images, sounds} & {"mnist", "fsdd"} else "(see LICENSE.txt)")
    )
    if images != "mnist" or sounds != "fsdd":
        print(
            "  note: fallback sources (synthetic speech, 8x8 digits) serve the demo and smoke tests; "
            "quote quality numbers on the real FSDD + MNIST set"
        )
    return 0
