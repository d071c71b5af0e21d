"""How every `vcc` command prints its tables: one console, full width in a pipe or a log file
(rich's default there is 80 columns, which wraps every row), and a titled table of rows."""

from __future__ import annotations

import sys
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from rich.console import Console

PIPE_WIDTH = 160


def console(width: int = PIPE_WIDTH) -> Console:
    """A terminal's own width when there is one, else `width` columns."""
    from rich.console import Console

    return Console() if sys.stdout.isatty() else Console(width=width)


def print_table(
    title: str, columns: Sequence[str], rows: Iterable[Sequence[Any]], out: Console | None = None
) -> None:
    """A table with a title and one column per name; every cell printed as text."""
    from rich.table import Table

    table = Table(title=title)
    for column in columns:
        table.add_column(column)
    for row in rows:
        table.add_row(*(str(cell) for cell in row))
    (out or console()).print(table)
