"""`vcc bench throughput`: the step's verdict fails on every kind of broken step, the ladder climbs
until a failure, the CPU per call and the side-by-side comparison add up, and one real (tiny)
plaintext province runs a step through (the bench-only switch; every other cluster is mTLS)."""

from __future__ import annotations

import dataclasses
import gc
import os
import subprocess
import sys
import threading
from collections import Counter
from pathlib import Path
from typing import Any

import psutil
import pytest

from tests.tools.test_checks import K, caller, event, record
from tests.tools.test_cli import EXAMPLE
from tools.bench import cluster as bench
from tools.bench import threads
from tools.province.generate import SiteSpec
from tools.simulation.traffic import CallerView
from vcc import eventloop
from vcc.config import load_province

STEP_S = 10.0


def ringing(view: CallerView, after_s: float) -> CallerView:
    """The caller heard the menu at once and `ringing` after_s after dialling."""
    at = view.offered_at
    rang = {"site_id": view.entry_site_id, "agent_code": view.agent_code}
    view.progress[1:1] = [
        ("prompt", at + 0.01, {}),
        ("digits", at + 0.01, {}),
        ("ringing", at + after_s, rang),
    ]
    return view


def _view(*, messages_in: int, messages_out: int) -> CallerView:
    return dataclasses.replace(caller("m"), messages_in=messages_in, messages_out=messages_out)


def rec(view: CallerView) -> Any:
    """Central's record of the call, its agent's ring included."""
    if view.outcome != "answered":
        return record(view)
    rang = event(view.call_id, K.CALL_EVENT_KIND_RINGING, view.offered_at + 0.1, agent=view.agent_code)
    return record(view, extra=[rang])


def calls(n: int = 10, ring_s: float = 0.1) -> list[CallerView]:
    return [
        ringing(caller(f"c{i}", agent=f"01{i:02d}", offered=100.0 + i, talk=(101.0 + i, 102.0 + i)), ring_s)
        for i in range(n)
    ]


def verdict(views: list[CallerView], records: list[Any] | None = None, rate: float = 1.0) -> dict[str, Any]:
    return bench._step_verdict(
        views, rate, STEP_S, records if records is not None else [rec(v) for v in views]
    )


def test_a_sound_step_passes_with_its_figures() -> None:
    step = verdict(calls())
    assert step["ok"], step["failures"]
    assert step["dial_to_ringing_ms"]["p99"] == pytest.approx(100.0)
    assert step["prompt_to_ringing_ms"]["p50"] == pytest.approx(90.0)
    assert step["reconciliation"]["missing"] == 0 and step["blocked_share"] == 0.0


@pytest.mark.parametrize(
    "broken", ["record missing", "record twice", "slow ringing", "blocked", "lost", "too few offered"]
)
def test_every_broken_step_fails(broken: str) -> None:
    views = calls()
    records = [rec(v) for v in views]
    rate = 1.0
    if broken == "record missing":
        records.pop()
    elif broken == "record twice":
        records.append(rec(views[0]))
    elif broken == "slow ringing":
        views[-1] = ringing(caller("c9", agent="0109", offered=109.0, talk=(111.0, 112.0)), 1.5)
        records[-1] = rec(views[-1])
    elif broken == "blocked":
        views[-1] = caller("c9", "blocked", offered=109.0)
        records[-1] = rec(views[-1])
    elif broken == "lost":
        views[-1].outcome = "lost"
    else:
        rate = 3.0  # 30 planned over the step, 10 offered
    step = verdict(views, records, rate)
    assert not step["ok"]
    assert len(step["failures"]) == 1, step["failures"]


def test_a_bound_on_blocking_lets_a_few_through() -> None:
    views = calls(20)
    views[-1] = caller("c19", "blocked", offered=119.0)
    step = bench._step_verdict(views, 2.0, STEP_S, [rec(v) for v in views], max_blocked_share=0.05)
    assert step["ok"], step["failures"]
    assert step["blocked_share"] == pytest.approx(0.05)


def test_the_ladder_and_the_step_between() -> None:
    assert bench.ladder(None, 250) == [50, 100, 150, 200, 250]
    assert bench.ladder([300, 100, 100], 50) == [100, 300]
    with pytest.raises(ValueError):
        bench.ladder(None, 10)
    assert bench.halfway(400, 500) == 450
    assert bench.halfway(100, 120) is None


def test_cpu_per_call_and_side_by_side() -> None:
    before = {"site gz": 1.0, "central": 2.0, "etcd": 0.5, "bench client": 3.0}
    after = {"site gz": 1.5, "central": 2.25, "etcd": 0.5, "bench client": 3.5}
    cpu = bench.cpu_per_call_ms(before, after, 100)
    assert cpu["site gz"] == 5.0 and cpu["central"] == 2.5 and cpu["bench client"] == 5.0
    assert cpu["cluster (sites + central)"] == 7.5 and cpu["all"] == 12.5

    def run(name: str, cpu_ms: float, rates: list[float]) -> dict[str, Any]:
        steps = [
            {
                "target_rate_per_s": r,
                "ok": True,
                "dial_to_ringing_ms": {"p50": 10.0, "p99": 90.0},
                "cluster_cpu_ms_per_call": cpu_ms,
                "cpu_ms_per_call": {"all": cpu_ms + 1},
                "load_average": {"after": (3.0, 2.0, 1.0)},
            }
            for r in rates
        ]
        return {"variant": {"name": name}, "steps": steps, "ceiling_rate_per_s": max(rates)}

    compared = bench.side_by_side(run("asyncio", 4.0, [50, 100]), run("uvloop", 3.0, [50, 100, 150]))
    assert compared["names"] == ["asyncio", "uvloop"]
    assert compared["ceiling_ratio_after_before"] == 1.5
    assert [r["target_rate_per_s"] for r in compared["rows"]] == [50, 100]
    assert compared["rows"][0]["cpu_ratio_after_before"] == 0.75


def test_top_functions_of_a_profile() -> None:
    collapsed = (
        "process 1;main (a/app.py:3);work (a/app.py:10);encode (b/proto.py:7) 6\n"
        "process 1;main (a/app.py:3);work (a/app.py:10) 2\n"
        "process 1;main (a/app.py:3);wait (c/loop.py:1) 2\n"
        "garbage\n"
    )
    top = bench.top_functions(collapsed)
    assert top["self"][0] == ("encode (proto.py)", 0.6)
    assert dict(top["inclusive"])["work (app.py)"] == 0.8
    assert bench.top_functions("") == {"self": [], "inclusive": []}


def test_cpu_by_thread_names_pools_once_and_counts_new_threads_from_zero() -> None:
    dump = (
        "Process 18872: python t.py\n"
        'Thread 18872 (active+gil): "MainThread"\n'
        "    <module> (t.py:4)\n"
        'Thread 18874 (idle): "outbox_0"\n'
        'Thread 0x7F00 (idle): "hex ids are not OS ids"\n'
    )
    names = {18873: "grpc_global_tim", **threads.names_from_dump(dump)}
    assert names == {18872: "MainThread", 18873: "grpc_global_tim", 18874: "outbox_0"}
    assert [threads.pool_name(n) for n in ("outbox_0", "ThreadPoolExecutor-0_1", "MainThread")] == [
        "outbox",
        "ThreadPoolExecutor",
        "MainThread",
    ]
    before = {18872: 1.0, 18873: 0.5, 18874: 0.0}
    after = {18872: 1.5, 18873: 0.5, 18874: 0.1, 18875: 0.2, 18876: 0.05}
    per = threads.thread_cpu_ms_per_call(before, after, {**names, 18875: "outbox_1"}, 100)
    # The idle thread is left out; an unnamed one is "?"; the outbox's two threads are one line.
    assert per == {"MainThread": 5.0, "outbox": 3.0, "?": 0.5}
    assert list(per) == ["MainThread", "outbox", "?"]


def test_a_process_s_own_threads_are_read_by_id() -> None:
    spent = threads.thread_cpu_s(psutil.Process())
    assert threading.get_native_id() in spent and all(v >= 0 for v in spent.values())


# -- the event loop ---------------------------------------------------------------------------------


def test_asyncio_by_default_and_uvloop_on_request(monkeypatch: pytest.MonkeyPatch) -> None:
    async def which() -> str:
        return eventloop.in_use()

    monkeypatch.delenv(eventloop.LOOP_ENV, raising=False)
    assert eventloop.run(which()) == "asyncio"
    monkeypatch.setenv(eventloop.LOOP_ENV, "uvloop")
    assert eventloop.run(which()) == "uvloop"
    monkeypatch.setenv(eventloop.LOOP_ENV, "tokio")
    with pytest.raises(eventloop.EventLoopError, match="VCC_EVENT_LOOP"):
        eventloop.run(which())


def test_the_collector_as_asked_or_as_python_has_it(monkeypatch: pytest.MonkeyPatch) -> None:
    async def threshold() -> int:
        return gc.get_threshold()[0]

    saved = gc.get_threshold()
    try:
        monkeypatch.delenv(eventloop.GC_ENV, raising=False)
        assert eventloop.run(threshold()) == saved[0]
        monkeypatch.setenv(eventloop.GC_ENV, "50000")
        assert eventloop.run(threshold()) == 50_000
        for bad in ("many", "99", "2000000"):
            monkeypatch.setenv(eventloop.GC_ENV, bad)
            gc.set_threshold(*saved)
            with pytest.raises(eventloop.EventLoopError, match="VCC_GC_GEN0"):
                eventloop.run(threshold())
            assert gc.get_threshold() == saved
    finally:
        gc.set_threshold(*saved)
        gc.unfreeze()


# -- a real province, in plaintext (bench only) ------------------------------------------------------


async def test_a_plaintext_province_runs_a_step_and_reports_each_process(
    tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # An identity this process was given must not be used on the plaintext province (nor kept).
    monkeypatch.setenv("VCC_TLS_CA", str(tmp_path / "nowhere-ca.crt"))
    result = await bench.throughput(
        rates=[6.0],
        step_s=2.0,
        handle_s=0.1,
        variant=bench.COMPARISONS["tls"],
        run_dir=tmp_path,
        refine=False,
    )
    (step,) = result["steps"]
    assert step["ok"], step["failures"]
    assert result["variant"]["tls"] is False and result["ceiling_rate_per_s"] == 6.0
    assert {"site gz", "site sz", "site fs", "central", "etcd", "bench client"} <= set(
        step["cpu_ms_per_call"]
    )
    assert all(v >= 0 for v in step["cpu_ms_per_call"].values())
    # Messages per call are counted: every caller's stream carried at least its offer, digit and
    # the end; the robots (auto-answer) sent the hang-up only; the sites and central served unary
    # RPCs (the hang-ups at least), read from their metrics.
    messages = step["messages_per_call"]
    assert messages["caller_stream"] >= 3 and messages["desktop_stream"] >= 2
    assert 1 <= messages["desktop_requests"] < 2, messages
    assert messages["unary_served_by_method"]["HangUp"] >= 1, messages
    assert "Answer" not in messages["unary_served_by_method"], messages
    # The cluster ran without certificates, and this process's environment is as it was.
    assert not (tmp_path / "cluster" / "certs").exists()
    assert os.environ["VCC_TLS_CA"] == str(tmp_path / "nowhere-ca.crt")


def test_rpc_counts_are_read_from_a_metrics_page_and_divided_per_call() -> None:
    page = "\n".join(
        [
            "# HELP vcc_rpc_server_duration_seconds Time a unary RPC took",
            'vcc_rpc_server_duration_seconds_count{code="OK",method="HangUp",service="vcc.v1.X"} 30.0',
            'vcc_rpc_server_duration_seconds_count{code="NOT_FOUND",method="HangUp",service="vcc.v1.X"} 2.0',
            'vcc_rpc_server_duration_seconds_sum{code="OK",method="HangUp",service="vcc.v1.X"} 1.5',
            'vcc_rpc_client_duration_seconds_count{code="OK",method="Ingest",service="vcc.v1.Y"} 9.0',
        ]
    )
    counts = bench.parse_rpc_counts(page)
    assert counts == {"HangUp": 32}
    views = [_view(messages_in=4, messages_out=2), _view(messages_in=3, messages_out=3)]
    per_call = bench.messages_per_call(views, (10, 5), (16, 7), Counter({"HangUp": 2}), counts, 2)
    assert per_call["caller_stream"] == 6.0 and per_call["desktop_stream"] == 3.0
    assert per_call["desktop_requests"] == 1.0 and per_call["unary_served"] == 15.0
    assert per_call["all_stream_messages_and_unary"] == 24.0
    # Without metrics (observability off) the requests the robots sent stand for the unary RPCs.
    assert (
        bench.messages_per_call(views, (0, 0), (6, 2), None, None, 2)["all_stream_messages_and_unary"] == 10.0
    )


def test_the_cores_bound_rate() -> None:
    assert bench.cores_bound_rate(10.0, cores=2) == 200.0
    assert bench.cores_bound_rate(0.0, cores=2) is None


@pytest.mark.parametrize(
    ("args", "env", "named"),
    [
        # The site's loop and linger are checked in one place: the linger stands for both there.
        (["central", "--config", str(EXAMPLE)], {"VCC_EVENT_LOOP": "tokio"}, "VCC_EVENT_LOOP"),
        (
            ["site", "--config", str(EXAMPLE), "--site", "gz"],
            {"VCC_SHIPPER_LINGER_S": "soon"},
            "VCC_SHIPPER_LINGER_S",
        ),
        (["central", "--config", str(EXAMPLE)], {"VCC_GC_GEN0": "often"}, "VCC_GC_GEN0"),
        (["site", "--config", str(EXAMPLE), "--site", "gz"], {"VCC_GC_GEN0": "10"}, "VCC_GC_GEN0"),
        (
            ["site", "--config", str(EXAMPLE), "--site", "gz"],
            {"VCC_OBSERVE_AFTER_STEP": "later"},
            "VCC_OBSERVE_AFTER_STEP",
        ),
    ],
    ids=["central-loop", "site-linger", "central-gc", "site-gc", "site-observers"],
)
def test_a_bad_loop_or_linger_refuses_the_start(args: list[str], env: dict[str, str], named: str) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "tools", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={**os.environ, **env},
    )
    assert done.returncode == 2, done.stderr
    assert named in done.stderr and "Traceback" not in done.stderr


def test_the_fold_comparison_sets_every_site_through_its_config(tmp_path: Path) -> None:
    for name, folded in (("fold", False), ("messages", False), ("loop", True)):
        variant = bench.COMPARISONS[name]
        run = tmp_path / name
        run.mkdir()
        written = bench._province(
            [SiteSpec(s, s, trunk_channels=3, agents={"general": 1}) for s in bench.THROUGHPUT_SITES],
            run,
            site_settings=variant.site_settings,
        )
        config = load_province(written)
        assert [s.desk_states_in_call_events for s in config.sites] == [folded] * 3, name


def _run(name: str, cpu: dict[float, float]) -> dict[str, Any]:
    steps = [
        {
            "target_rate_per_s": rate,
            "ok": True,
            "cluster_cpu_ms_per_call": ms,
            "cpu_ms_per_call": {"cluster (sites + central)": ms, "all": ms + 1},
            "load_average": {"after": [10.0, 9.0, 8.0]},
        }
        for rate, ms in cpu.items()
    ]
    return {"variant": {"name": name}, "steps": steps}


def test_pairs_alternate_their_order_and_report_the_median_ratio(monkeypatch: pytest.MonkeyPatch) -> None:
    from tools.bench import cli

    ran: list[str] = []
    # As shipped costs 1.1, 1.0, 1.3, 1.2 ms per call against 1.0 for the comparison.
    shipped = iter([1.1, 1.0, 1.3, 1.2])

    def fake_run(rates: Any, step_s: float, *, variant: Any, **_kw: Any) -> dict[str, Any]:
        ran.append(variant.name)
        ms = next(shipped) if variant is bench.AS_SHIPPED else 1.0
        return _run(variant.name, {50.0: ms})

    monkeypatch.setattr(cli, "run_throughput", fake_run)
    result = cli.run_pairs("tls", 4, [50.0], 8.0)
    other = bench.COMPARISONS["tls"].name
    assert ran == [bench.AS_SHIPPED.name, other, other, bench.AS_SHIPPED.name] * 2
    ratios = [row["ratio"]["cluster (sites + central)"] for row in result["per_rate"][50.0]]
    assert ratios == [1.1, 1.0, 1.3, 1.2]
    assert result["median_ratio"][50.0]["cluster (sites + central)"] == 1.15
    # "all" counts the bench client (1 ms here): 2.1/2, 2.0/2, 2.3/2, 2.2/2 -> median 1.075.
    assert result["median_ratio"][50.0]["all"] == 1.075


def test_the_routing_bench_takes_comparisons_of_the_environment_only() -> None:
    assert bench.routing_variant("instep").env == {"VCC_OBSERVE_AFTER_STEP": "0"}
    with pytest.raises(ValueError, match="one of"):
        bench.routing_variant("nonesuch")
    with pytest.raises(ValueError, match="switches nothing"):
        bench.routing_variant("again")
    # Traces off, a robots' setting, a site's config: the routing bench sets those up itself.
    for name in ("observability", "answer", "fold"):
        with pytest.raises(ValueError, match="more than the processes' environment"):
            bench.routing_variant(name)
