"""Progress bars for long work (tqdm on stderr; quiet when SELAVI_NO_PROGRESS is set)."""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from typing import TypeVar

from tqdm.auto import tqdm

T = TypeVar("T")


def progress(iterable: Iterable[T], *, total: int | None = None, desc: str = "", unit: str = "it") -> Iterator[T]:
    disable = bool(os.environ.get("SELAVI_NO_PROGRESS"))
    return iter(tqdm(iterable, total=total, desc=desc, unit=unit, disable=disable, dynamic_ncols=True, leave=False))
