"""Wall time of `selavi demo-data` (selavi_core/datasets/avdigits.py): the Zipf set (879 clips) by default.

Targets on the 2-core machine, with the default workers (= cores):
- real sources: the Zipf variant in under 3 minutes;
- fallback sources (`--fallback --variant balanced`: the set a machine without ../shared/data builds, 2,400
  clips): in a minute or two, so that scripts/demo.sh (which then trains) is up within 15 minutes.
  Measured (os.cpu_count() 2, other jobs on the same cores): 150-157 s CPU (63-65 ms a clip, espeak-ng
  included), 13.2 KB a clip (32 MB); 135 s wall at load average 2.5-4, 213 s at load 6; by the CPU time
  about 80 s on 2 idle cores.
Also prints CPU time (parent + workers, espeak-ng calls included), bytes per clip, the clips/s rate and the
core count.

    .venv/bin/python bench/bench_demo_data.py [--variant zipf|balanced] [--workers N] [--fallback] [--out DIR]
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import tempfile
import time
from pathlib import Path


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--variant", default="zipf", choices=("balanced", "zipf"))
    ap.add_argument("--workers", type=int, default=None)
    ap.add_argument("--fallback", action="store_true")
    ap.add_argument("--limit-per-class", type=int, default=None)
    ap.add_argument("--out", default=None, help="build here (default: a temporary folder, removed after)")
    args = ap.parse_args()

    from selavi_core.datasets.avdigits import build_avdigits

    out = Path(args.out) if args.out else Path(tempfile.mkdtemp(prefix="avdigits-bench-")) / "set"
    try:
        t0 = time.perf_counter()
        result = build_avdigits(
            out,
            variant=args.variant,
            workers=args.workers,
            limit_per_class=args.limit_per_class,
            sources="fallback" if args.fallback else "auto",
            show_progress=False,
        )
        wall = time.perf_counter() - t0
        own = resource.getrusage(resource.RUSAGE_SELF)
        kids = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu = own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime
        print(
            f"{args.variant}: {result.n_clips} clips in {wall:.1f} s wall, {cpu:.1f} s CPU "
            f"({cpu / max(1, result.built) * 1000:.0f} ms CPU per clip), {result.n_clips / wall:.1f} clips/s, "
            f"{result.bytes / max(1, result.n_clips) / 1000:.1f} KB per clip; {os.cpu_count()} cores, "
            f"load average {os.getloadavg()[0]:.1f}; "
            f"sources {result.sources['images']['kind']} + {result.sources['sounds']['kind']}"
        )
    finally:
        if not args.out:
            shutil.rmtree(out.parent, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
