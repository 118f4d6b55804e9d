"""The multi-row INSERTs a batch is written with: how many rows each, and their SQL.

One statement for many rows is what makes the writer cheap per row (docs/performance.md).
"""
from __future__ import annotations

import functools
from typing import List, Tuple

from . import schema

# Rows per INSERT, at most: larger statements insert no faster per row, and SQLite's prepare is
# quadratic in a statement's numbered parameters (docs/performance.md, "Choices the measurements made").
ROWS_PER_STATEMENT = 64


def statement_sizes(rows: int, largest: int = 0) -> List[int]:
    """Rows per INSERT for a batch: full statements of ``largest`` rows (a power of two;
    ROWS_PER_STATEMENT unless given), then the rest as powers of two.

    Powers of two bound the shapes sqlite3's statement cache keeps at seven per row width; one
    statement per distinct batch size would keep up to 128 of them, each megabytes large.
    """
    largest = largest or ROWS_PER_STATEMENT
    sizes = [largest] * (rows // largest)
    rest = rows % largest
    size = largest // 2
    while rest:
        if rest >= size:
            sizes.append(size)
            rest -= size
        size //= 2
    return sizes


@functools.lru_cache(maxsize=32)
def insert_sql(rows: int, columns: Tuple[str, ...], null_as: Tuple[Tuple[str, int], ...] = ()) -> str:
    """``INSERT INTO request_log`` of ``rows`` rows of ``columns``, with numbered parameters.

    Numbered (?1, ?2, ...) because each column's CASE reads its value twice (schema.placeholder).
    ``null_as``: (column, value) pairs whose value stands for NULL, beside schema.NULL_SENTINEL's.
    """
    width = len(columns)
    sentinels = dict(null_as)
    values = (
        "(" + ",".join(schema.placeholder(column, row * width + i + 1, sentinels.get(column))
                       for i, column in enumerate(columns)) + ")"
        for row in range(rows)
    )
    return f"INSERT INTO request_log ({', '.join(columns)}) VALUES " + ",".join(values)
