"""A customer's interaction time line (pure): items of every source, newest first, paged."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum


class ItemKind(StrEnum):
    CALL = "call"
    TICKET = "ticket"
    NOTIFICATION = "notification"
    CALLBACK = "callback"


@dataclass(frozen=True)
class Item:
    at: float
    kind: ItemKind
    ref_id: str
    site_id: str = ""
    sites: tuple[str, ...] = ()
    summary: str = ""

    @property
    def key(self) -> tuple[float, str, str]:
        """Newest first; a tie in time is broken by kind and id, the same way every time."""
        return (-self.at, self.kind.value, self.ref_id)


Cursor = tuple[float, str, str]


def merge(
    sources: Iterable[Iterable[Item]], page_size: int, after: Cursor | None
) -> tuple[list[Item], Cursor | None]:
    """The page after `after` (the key of the last item shown), and the next page's cursor."""
    items = sorted(
        {(i.kind, i.ref_id): i for source in sources for i in source}.values(), key=lambda i: i.key
    )
    if after is not None:
        items = [i for i in items if i.key > after]
    page = items[:page_size]
    return page, (page[-1].key if len(items) > page_size else None)
