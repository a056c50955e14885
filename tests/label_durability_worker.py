"""A label-store writer for the durability and multi-process tests (run as a subprocess).

    python label_durability_worker.py RUN_DIR WHO SEED [--edits N] [--clusters 0,1] [--barrier DIR] [--store URL]

Appends edits to RUN_DIR's label store in a loop (forever, or ``--edits`` times), alternating at
random between renaming one of ``--clusters`` of head 0 and overriding one clip. After each edit
*returns* it prints ``ACK <json>`` (event id, action, target, value) and flushes, so whatever the
parent read was acknowledged to the caller before the process died. Every edit passes
``expected_version=store.version()`` read just before it: edits to other clusters or clips appended
by another process in between must not make it stale. Prints ``GO <time>`` before the first edit and
``DONE <time>`` at the end of a bounded run.
With ``--barrier DIR`` it writes ``DIR/ready-WHO`` once its store is open and starts editing only
when ``DIR/go`` exists, so that several workers really append at the same moment. ``--store URL``: the label
store is there (a PostgreSQL database in the tests) instead of RUN_DIR/labels.sqlite.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from pathlib import Path

from selavi_core.labels import LabelStore
from selavi_core.runs.run import Run


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("run_dir")
    p.add_argument("who")
    p.add_argument("seed", type=int)
    p.add_argument("--edits", type=int, default=0, help="0: until killed")
    p.add_argument("--clusters", default="0,1,2,3")
    p.add_argument("--barrier", help="folder for the ready/go files")
    p.add_argument("--store", help="label store URL (default RUN_DIR/labels.sqlite)")
    args = p.parse_args()
    rng = random.Random(args.seed)
    clusters = [int(c) for c in args.clusters.split(",")]
    store = LabelStore.open(args.run_dir, store=args.store)
    clips = [str(c) for c in Run(args.run_dir).clip_ids]
    mine = clips[args.seed % 4 :: 4]  # a disjoint quarter of the clips per seed (mod 4)
    if args.barrier:
        Path(args.barrier, f"ready-{args.who}").touch()
        while not Path(args.barrier, "go").exists():
            time.sleep(0.001)
    print(f"GO {time.time()}", flush=True)
    i = 0
    while args.edits == 0 or i < args.edits:
        value = f"{args.who}-{i}"
        if rng.random() < 0.5:
            c = rng.choice(clusters)
            ev = store.rename_cluster(0, c, value, annotator=args.who, expected_version=store.version())
        else:
            c = rng.choice(mine)
            ev = store.override_clips([c], value, annotator=args.who, expected_version=store.version())
        print("ACK " + json.dumps({"id": ev.id, "action": ev.action, "target": c, "value": value}), flush=True)
        i += 1
    print(f"DONE {time.time()}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
