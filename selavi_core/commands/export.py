"""``selavi export``: the curated labels of a run in the field's formats, with a provenance sidecar."""

from __future__ import annotations

import argparse

from selavi_core.commands import add_store_argument

FORMATS = ("csv", "json", "kinetics", "vggsound", "fiftyone", "labelstudio")  # = labels.exports.FORMATS

HELP = """\
Write the human labels of RUN_DIR (cluster names propagated to their members, per-clip overrides
and rejections; see `selavi labels`) as FORMAT to OUT, plus OUT.provenance.json (run, catalog and
checkpoint hashes, head, snapshot, counts per label and per source, annotators).

formats:
  csv          clip_id,path,start_s,end_s,label,label_source,head,cluster,confidence,annotator,time
  json         the same rows plus the label vocabulary with counts
  kinetics     label,youtube_id,time_start,time_end,split (YouTube ids from the catalog's source_id)
  vggsound     headerless youtube_id,start,label,split
  fiftyone     FiftyOne VideoClassificationDirectoryTree: OUT/<class>/<clip>.<ext>, OUT/_unlabeled/
               (symlinks; --copy copies; clip windows use their preview cut when one exists)
  labelstudio  Label Studio import JSON: one task per clip, the label as a prediction (choices) with
               the model version and the confidence as score; the labelling config is in the sidecar

Files are written atomically: an interrupted export never leaves a half file under OUT.
--min-confidence drops cluster-propagated labels (and unlabelled clips) below the model's
confidence; a label a person gave a clip is always kept.
"""


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "export",
        help="export the curated labels (csv, json, kinetics, vggsound, fiftyone, labelstudio)",
        description=HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("run_dir", metavar="RUN_DIR")
    p.add_argument("--format", required=True, choices=FORMATS, dest="fmt", metavar="FORMAT", help=", ".join(FORMATS))
    p.add_argument("--out", required=True, metavar="PATH", help="output file (a folder for fiftyone)")
    p.add_argument("--head", type=int, default=0, help="which head's clusters and names (default 0)")
    p.add_argument("--snapshot", metavar="NAME", help="export the labels as they were at this named snapshot")
    p.add_argument("--only-named", action="store_true", help="leave out clips without a label")
    p.add_argument("--min-confidence", type=float, metavar="X", help="drop cluster labels below this confidence")
    add_store_argument(p)
    p.add_argument("--run-key", metavar="KEY", help="which run's labels, in a store shared by several runs")
    p.add_argument("--copy", action="store_true", help="fiftyone: copy media instead of symlinking")
    p.add_argument("--url-prefix", metavar="URL", help="labelstudio: prefix for video URLs, e.g. /data/local-files/?d=")
    p.add_argument("--media-root", metavar="DIR", help="labelstudio: video paths are made relative to DIR")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from selavi_core.config import check_flag, check_head
    from selavi_core.labels.exports import export_labels, summary
    from selavi_core.labels.store import LabelStore

    check_flag("--min-confidence", args.min_confidence, 0.0)
    with LabelStore.open(args.run_dir, store=args.store, run_key=args.run_key) as store:
        if store.run is not None:
            check_head("--head", args.head, store.run.meta.heads)
        result = export_labels(
            store,
            args.fmt,
            args.out,
            head=args.head,
            snapshot=args.snapshot,
            only_named=args.only_named,
            min_confidence=args.min_confidence,
            copy=args.copy,
            url_prefix=args.url_prefix,
            media_root=args.media_root,
        )
    print(summary(result))
    return 0
