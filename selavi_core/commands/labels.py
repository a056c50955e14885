"""``selavi labels``: the label store of a run from the command line (history, undo, snapshots...)."""

from __future__ import annotations

import argparse

from selavi_core.commands import add_store_argument

HELP = """\
Read and edit the human labels of RUN_DIR (stored in RUN_DIR/labels.sqlite unless --store says
otherwise). Every edit is an event in an append-only log: nothing is overwritten, everything can be
undone per annotator, and snapshots name a state that `selavi export --snapshot` can export later.

actions:
  show [--head H]                 the label vocabulary with counts per source
  clusters [--head H]             every cluster with its name, size and version
  history [--limit N]             who did what, when (latest first)
  rename CLUSTER NAME --as WHO    name a cluster of --head (e.g. 12 or 12.a)
  undo --as WHO / redo --as WHO   undo (redo) WHO's latest edit
  snapshot NAME --as WHO          name the current labels, e.g. "label set v3"
  snapshots                       the named snapshots
  carry [--apply --as WHO]        after a retrain or re-assign into RUN_DIR: which cluster names follow
                                  their clips to which new cluster (with the overlap), and which need a
                                  look; --apply records it (one event, undoable)

Cluster names belong to the assignment they were given on; after a retrain or a re-assign they show on
no cluster until they are carried over (here or in the Studio). Per-clip labels need no carrying.
--run-key must name a key the store holds (the error lists them).
"""

ACTIONS = ("show", "clusters", "history", "rename", "undo", "redo", "snapshot", "snapshots", "carry")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "labels",
        help="label store: vocabulary, history, rename, undo/redo, snapshots",
        description=HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("run_dir", metavar="RUN_DIR")
    p.add_argument("action", choices=ACTIONS, metavar="ACTION", help=" | ".join(ACTIONS))
    p.add_argument("args", nargs="*", metavar="ARG", help="the action's arguments")
    p.add_argument("--head", type=int, default=0)
    p.add_argument("--as", dest="annotator", metavar="WHO", help="annotator name (required for edits)")
    p.add_argument("--limit", type=int, default=30, help="history: how many events")
    p.add_argument("--apply", action="store_true", help="carry: record the carry-over (else only show it)")
    add_store_argument(p)
    p.add_argument("--run-key", metavar="KEY", help="which run's labels, in a store shared by several runs")
    p.set_defaults(func=run)


def _need(args: argparse.Namespace, n: int, usage: str) -> list[str]:
    from selavi_core.labels.store import LabelError

    if len(args.args) != n:
        raise LabelError(f"usage: selavi labels RUN_DIR {usage}")
    return args.args


def run(args: argparse.Namespace) -> int:
    import sys
    from datetime import UTC, datetime

    import pandas as pd

    from selavi_core.config import check_flag, check_head
    from selavi_core.labels.store import LabelStore

    check_flag("--limit", args.limit, 1)

    def when(t: float) -> str:
        return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%d %H:%M:%S")

    display = pd.option_context("display.width", 160, "display.max_colwidth", 90, "display.max_rows", 500)
    with display, LabelStore.open(args.run_dir, store=args.store, run_key=args.run_key) as store:
        if store.run is not None:
            check_head("--head", args.head, store.run.meta.heads)
        a = args.action
        if a != "carry" and store.needs_carry():
            print(
                "note: the cluster names were given on an earlier assignment (retrained or re-assigned) and label no "
                f"cluster now; `selavi labels {args.run_dir} carry` shows where they would go",
                file=sys.stderr,
            )
        if a == "show":
            vocab = store.vocabulary(args.head)
            print(vocab.to_string(index=False) if len(vocab) else "no labels yet")
        elif a == "clusters":
            print(store.clusters(args.head).drop(columns=["time"]).to_string(index=False))
        elif a == "history":
            hist = store.history(args.limit)
            for r in hist.itertuples(index=False):
                flag = " (undone)" if r.undone else ""
                print(f"{r.id:>6}  {when(r.time)}  {r.summary}{flag}")
            if hist.empty:
                print("no edits yet")
        elif a == "rename":
            cluster, name = _need(args, 2, "rename CLUSTER NAME --as WHO")
            ev = store.rename_cluster(args.head, cluster, name, annotator=args.annotator, expected_version=None)
            print(f"event {ev.id}: cluster {ev.target['cluster']} (head {args.head}) is now {name!r}")
        elif a in ("undo", "redo"):
            ev = (store.undo if a == "undo" else store.redo)(args.annotator)
            undone = (ev.old or {}).get("summary", "an edit")  # undo/redo events record the edit's summary
            print(f"event {ev.id}: {undone} ({a} done)")
        elif a == "snapshot":
            (name,) = _need(args, 1, "snapshot NAME --as WHO")
            ev = store.snapshot(name, annotator=args.annotator)
            print(f"event {ev.id}: snapshot {name!r} saved")
        elif a == "carry":
            _need(args, 0, "carry [--apply --as WHO]")
            report = store.carry_over(apply=args.apply, annotator=args.annotator, source="cli")
            print(report.summary())
            if len(report.names):
                cols = ["head", "name", "old_cluster", "new_cluster", "overlap", "share", "size", "reason"]
                table = report.names.assign(
                    carried=report.names["carried"].map({True: "carried", False: "needs a look"})
                )[["carried", *cols]]
                print(table.to_string(index=False, float_format=lambda x: f"{x:.0%}"))
            if report.status == "planned" and not args.apply:
                print("nothing written: --apply --as WHO records this carry-over")
        elif a == "snapshots":
            snaps = store.snapshots()
            for r in snaps.itertuples(index=False):
                print(f"{r.name!r}: event {r.event_id}, by {r.annotator} at {when(r.time)}")
            if snaps.empty:
                print("no snapshots yet")
    return 0
