"""What every in-memory repository shares: the clock type and ETags that change on every write."""

from __future__ import annotations

import datetime as dt
import itertools
from collections.abc import Callable

Clock = Callable[[], dt.datetime]
_etags = itertools.count(1)


def new_etag() -> str:
    return f'W/"memory-{next(_etags)}"'
