"""Fencing in the database (SQLite and PostgreSQL): two replicas believe they lead; the one with the
older epoch is refused, and nothing it tried to write lands."""

from __future__ import annotations

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from central.store import Fenced, RecordedDecision, Store
from tests.central.factories import answered_call
from tests.central.test_router_store import decision


async def test_a_deposed_leader_writes_nothing(engine: AsyncEngine) -> None:
    old, new = Store(engine), Store(engine)
    await old.take_over(5)
    await old.ingest("gz", answered_call("before"))
    # The new leader takes over with a higher epoch; the old one still believes it leads.
    await new.take_over(7)
    assert await new.leadership_epoch() == 7

    with pytest.raises(Fenced) as refused:
        await old.ingest("gz", answered_call("stale"))
    assert refused.value.error_id == "fenced-leader" and refused.value.stored == 7
    with pytest.raises(Fenced):
        await old.record_decisions([RecordedDecision("d-stale", "stale", 1.0, decision())])
    with pytest.raises(Fenced):
        await old.upsert_customers([])
    # Taking over again with its old epoch does not lower the database's.
    with pytest.raises(Fenced):
        await old.take_over(5)
    assert await new.leadership_epoch() == 7

    assert await old.get_call("stale") is None
    assert await new.decisions_by_id(["d-stale"]) == {}
    # The leader's own writes go through, and what was written before the takeover stays.
    await new.ingest("gz", answered_call("after"))
    assert {r.call_id for r in (await new.list_calls())[0]} == {"before", "after"}


async def test_the_epoch_only_grows_and_an_unfenced_store_still_writes(engine: AsyncEngine) -> None:
    store = Store(engine)
    assert await store.leadership_epoch() == 0
    # Never elected (a lone central without election, a tool): writes are not fenced.
    await store.ingest("gz", answered_call("lone"))
    await store.take_over(3)
    await store.take_over(3)  # the same term again (a retried takeover) is fine
    assert await store.leadership_epoch() == 3
    await store.ingest("gz", answered_call("fenced"))
    assert await store.get_call("fenced") is not None
