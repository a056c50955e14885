"""CLI sub-commands, one module each; see ``selavi_core.cli``.

Shared here: ``add_store_argument``, the one ``--store`` option of every command that reads labels (``selavi
labels``, ``export``, ``train --labels-from``, ``app``), so its meaning and help read the same everywhere.
"""

from __future__ import annotations

import argparse

#: What every ``--store`` accepts (the help text ends with the command's default).
STORE_HELP = (
    "the label store: a SQLAlchemy URL, e.g. postgresql+psycopg://USER@HOST/DB for a team's server "
    "(see the README), or a SQLite file path"
)


def add_store_argument(
    parser: argparse.ArgumentParser, *, default: str = "RUN_DIR/labels.sqlite", when: str = ""
) -> None:
    """Add ``--store URL`` (dest ``store``, None when not given). ``when``: a condition prefixed to the help."""
    text = f"{STORE_HELP} (default {default})"
    parser.add_argument("--store", metavar="URL", help=f"{when}: {text}" if when else text)
