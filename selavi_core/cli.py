"""The ``selavi`` command line: one sub-command per pipeline stage.

Each sub-command lives in ``selavi_core/commands/<name>.py`` and exposes ``register(subparsers)``,
which adds its parser and sets ``func``. Command modules import heavy libraries (torch, av) inside
their functions so that ``selavi --help`` stays instant.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from selavi_core import __version__
from selavi_core.errors import SelaviError

#: Pipeline order: media -> catalog -> run -> labels -> exports.
COMMANDS = ("demo_data", "ingest", "previews", "train", "assign", "evaluate", "app", "users", "labels", "export")

DESCRIPTION = """\
SeLaVi Studio: turn a folder of unlabelled videos into named, curated labels.

pipeline:
  selavi demo-data DIR           build the AV-digits demo set (MP4s + labels.csv)
  selavi ingest SRC --out CAT    clip catalog (clips.parquet) from a data-set layout
  selavi previews CAT            browser previews (H.264/AAC MP4 + poster JPEG) per clip
  selavi train CAT --out RUN     train SeLaVi and write per-head assignments
  selavi assign CAT --checkpoint CKPT --out RUN
                                 assignments from a trained or official checkpoint
  selavi evaluate RUN            the paper's metrics table against ground truth
  selavi app RUN                 the Studio in a browser (--auth USERS_TOML: sign-in, `selavi users add NAME`)
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="selavi", description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--version", action="version", version=f"selavi {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMANDS:
        try:
            module = importlib.import_module(f"{__package__}.commands.{name}")
        except ModuleNotFoundError as err:
            if err.name == f"{__package__}.commands.{name}":
                continue  # a stage that is not built yet
            raise
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except SelaviError as err:
        print(f"selavi {args.command}: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"selavi {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
