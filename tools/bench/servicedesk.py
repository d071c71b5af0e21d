"""`vcc bench servicedesk`: ticket search with 100,000 tickets, knowledge search with 10,000
articles, on SQLite and/or a temporary PostgreSQL. A table and `--json F`; figures in
docs/BENCHMARKS.md. Not a test: nothing here asserts a time.

The data is generated (seeded), written in bulk straight into the tables, then each query
runs through the same store code the gRPC services use, many times with varied parameters.
"""

from __future__ import annotations

import asyncio
import json
import random
import shutil
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Annotated, Any

import typer

CITIES = ["gz", "sz", "fs", "dg", "zh", "st", "zj", "mm", "hz", "sg"]
DEPTS = ["post", "billing", "parcel", "network", "sales"]
# Words the generated articles and tickets are made of (split at run time: one word a token).
ZH_WORDS = """
邮政 编码 包裹 查询 快递 投递 丢失 赔偿 营业 时间 网点 储蓄 汇款 业务 办理 资费
标准 国际 邮件 挂号 信函 报刊 订阅 宽带 故障 申告 话费 账单 套餐 变更 号码 过户
停机 复机 密码 修改 投诉 建议 服务 态度 延误 破损 签收 代收 退回 地址 错误 电话
短信 通知 网站 登录 手机 客户 身份证 证件 证明 发票 开具 打印 积分 兑换 活动 优惠
充值 缴费 银行 转账 到账 取消 预约 上门
""".split()  # noqa: SIM905
EN_WORDS = """
parcel tracking postal code delivery lost compensation office hours savings
remittance fee international registered letter subscription broadband fault
report bill plan change number password complaint suggestion service delay
damaged signature address phone message website login mobile customer invoice
points refund recharge payment bank transfer cancel appointment
""".split()  # noqa: SIM905
ZH_QUERIES = [
    "邮政编码",
    "包裹丢失怎么赔偿",
    "查询快递",
    "宽带故障申告",
    "修改密码",
    "营业时间",
    "发票开具",
    "国际邮件资费",
]
EN_QUERIES = [
    "parcel tracking",
    "lost parcel compensation",
    "broadband fault",
    "change password",
    "office hours",
]


def bench_command(
    *,
    json_path: Annotated[Path | None, typer.Option("--json", help="Write the results here (JSON).")] = None,
    tickets: Annotated[int, typer.Option(min=100)] = 100_000,
    articles: Annotated[int, typer.Option(min=100)] = 10_000,
    database: Annotated[str, typer.Option(help="sqlite, postgresql or both.")] = "both",
    repeat: Annotated[int, typer.Option(min=5, help="Runs of each query.")] = 60,
) -> None:
    """Ticket search (100,000 tickets) and knowledge search (10,000 articles) latency."""
    if database not in ("sqlite", "postgresql", "both"):
        raise typer.BadParameter("sqlite, postgresql or both", param_hint="--database")
    kinds = ["sqlite", "postgresql"] if database == "both" else [database]
    results = {kind: asyncio.run(_run(kind, tickets, articles, repeat)) for kind in kinds}
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"service desk: {tickets:,} tickets, {articles:,} articles (ms per query)")
    for column in ("database", "query", "rows", "p50", "p95", "max"):
        table.add_column(column, justify="right" if column in ("rows", "p50", "p95", "max") else "left")
    for kind, result in results.items():
        for name, figures in result["queries"].items():
            table.add_row(
                kind,
                name,
                f"{figures['rows_mean']:.0f}",
                f"{figures['p50_ms']:.1f}",
                f"{figures['p95_ms']:.1f}",
                f"{figures['max_ms']:.1f}",
            )
    Console(width=140).print(table)
    for kind, result in results.items():
        typer.echo(f"{kind}: loaded in {result['load_s']:.1f} s", err=True)
    if json_path is not None:
        from tools.bench.cli import machine

        json_path.parent.mkdir(parents=True, exist_ok=True)
        json_path.write_text(
            json.dumps({"bench": "servicedesk", "machine": machine(), "results": results}, indent=2),
            encoding="utf-8",
        )
        typer.echo(f"written: {json_path}", err=True)


async def _run(kind: str, n_tickets: int, n_articles: int, repeat: int) -> dict[str, Any]:
    from central.db.engine import create_engine
    from central.db.migrate import upgrade
    from central.servicedesk.kb_store import KnowledgeStore
    from central.servicedesk.ticket_queries import TicketQueries
    from central.store import Store

    server = None
    folder = ""
    if kind == "sqlite":
        folder = tempfile.mkdtemp(prefix="vcc-bench-desk-")
        url = f"sqlite+aiosqlite:///{folder}/central.db"
    else:
        from tools.province.postgres_server import create_database, start_temporary

        server = start_temporary()
        url = await create_database(server, "bench")
    try:
        await upgrade(url)
        engine = create_engine(url)
        try:
            store = Store(engine)
            now = 1_800_000_000.0
            started = time.perf_counter()
            await _load_tickets(store, n_tickets, now)
            await _load_articles(store, n_articles)
            load_s = time.perf_counter() - started
            tickets = TicketQueries(store, clock=lambda: now)
            kb = KnowledgeStore(store)
            queries = await _measure(tickets, kb, now, repeat)
            return {"tickets": n_tickets, "articles": n_articles, "load_s": load_s, "queries": queries}
        finally:
            await engine.dispose()
    finally:
        if server is not None:
            server.stop()
            shutil.rmtree(Path(server.root).parent, ignore_errors=True)
        if folder:
            shutil.rmtree(folder, ignore_errors=True)


async def _load_tickets(store: Any, n: int, now: float) -> None:
    import sqlalchemy as sa

    from central.db import models
    from central.servicedesk import tickets as tk

    table = models.Base.metadata.tables["tickets"]
    rng = random.Random(14)
    units = [f"city:{c}" for c in CITIES] + [f"dept:{d}" for d in DEPTS]
    states = list(tk.TicketState)
    categories = list(tk.Category)
    rows = []
    for i in range(n):
        created = now - rng.uniform(0, 90 * 86400)
        category = rng.choice(categories)
        state = rng.choices(states, weights=[5, 10, 10, 10, 60, 5])[0]
        due = created + tk.DEFAULT_DUE_S[category]
        closed = (
            created + rng.uniform(0, 2 * tk.DEFAULT_DUE_S[category])
            if state == tk.TicketState.CLOSED
            else None
        )
        rows.append(
            {
                "ticket_id": f"T{i:011d}",
                "category": category.value,
                "state": state.value,
                "unit": "" if state == tk.TicketState.NEW else rng.choice(units),
                "title": f"{rng.choice(ZH_WORDS)}{rng.choice(ZH_WORDS)} {rng.choice(EN_WORDS)}",
                "description": "",
                "customer_id": f"C{rng.randrange(20_000):06d}",
                "call_id": f"call-{i}",
                "origin_site_id": rng.choice(CITIES),
                "created_by": "0101",
                "created_at": created,
                "updated_at": created,
                "due_at": due,
                "escalation": 0,
                "replied_at": closed,
                "closed_at": closed,
                "reopen_count": 0,
                "entry_count": 0,
            }
        )

    async def insert(conn: Any) -> None:
        for i in range(0, len(rows), 1000):
            await conn.execute(sa.insert(table), rows[i : i + 1000])

    await store.transaction(insert, write=True)


async def _load_articles(store: Any, n: int) -> None:
    import sqlalchemy as sa

    from central.db import models
    from central.servicedesk.kb_store import Article, index_terms

    articles = models.Base.metadata.tables["kb_articles"]
    terms = models.Base.metadata.tables["kb_terms"]
    rng = random.Random(32)
    article_rows = []
    term_rows: list[dict[str, Any]] = []
    for i in range(n):
        chinese = i % 3 != 2
        words = ZH_WORDS if chinese else EN_WORDS
        joiner = "" if chinese else " "
        title = joiner.join(rng.sample(words, 3))
        body = (
            "。".join(joiner.join(rng.sample(words, 8)) for _ in range(6))
            if chinese
            else ". ".join(" ".join(rng.sample(words, 10)) for _ in range(6))
        )
        a = Article(
            f"K{i:08d}", title, body, category="faq", service=rng.choice(DEPTS), tags=(rng.choice(words),)
        )
        counts = index_terms(a)
        article_rows.append(
            {
                "article_id": a.article_id, "title": a.title, "body": a.body, "category": a.category,
                "service": a.service, "tags": json.dumps(list(a.tags), ensure_ascii=False),
                "state": "published",
                "question": "", "proposed_by": "bench", "reviewed_by": "bench", "created_at": 0.0,
                "published_at": 0.0, "length": sum(counts.values()), "version": 2,
            }
        )  # fmt: skip
        term_rows.extend({"term": t, "article_id": a.article_id, "tf": c} for t, c in counts.items())

    async def insert(conn: Any) -> None:
        for i in range(0, len(article_rows), 1000):
            await conn.execute(sa.insert(articles), article_rows[i : i + 1000])
        for i in range(0, len(term_rows), 2000):
            await conn.execute(sa.insert(terms), term_rows[i : i + 2000])

    await store.transaction(insert, write=True)


async def _measure(tickets: Any, kb: Any, now: float, repeat: int) -> dict[str, dict[str, float]]:
    from central.servicedesk import tickets as tk

    rng = random.Random(7)
    units = [f"city:{c}" for c in CITIES] + [f"dept:{d}" for d in DEPTS]
    open_states = sorted(tk.OPEN_STATES)

    async def by_unit_open() -> int:
        return len((await tickets.search(unit=rng.choice(units), states=open_states, page_size=50))[0])

    async def by_customer() -> int:
        return len((await tickets.search(customer_id=f"C{rng.randrange(20_000):06d}", page_size=50))[0])

    async def overdue() -> int:
        return len((await tickets.search(overdue_at=now, page_size=50))[0])

    async def by_category_state() -> int:
        category = rng.choice(list(tk.Category))
        return len((await tickets.search(category=category, states=[tk.TicketState.CLOSED], page_size=50))[0])

    async def fifth_page() -> int:
        token = ""
        unit = rng.choice(units)
        page: list[Any] = []
        for _ in range(5):
            page, token = await tickets.search(unit=unit, page_size=50, page_token=token)
        return len(page)

    async def report() -> int:
        return len(await tickets.report(now))

    async def kb_zh() -> int:
        return len(await kb.search(rng.choice(ZH_QUERIES), limit=10))

    async def kb_en() -> int:
        return len(await kb.search(rng.choice(EN_QUERIES), limit=10))

    async def kb_service() -> int:
        return len(await kb.search(rng.choice(ZH_QUERIES), service=rng.choice(DEPTS), limit=10))

    queries: dict[str, Callable[[], Awaitable[int]]] = {
        "tickets: open of a unit (page 1)": by_unit_open,
        "tickets: of a customer": by_customer,
        "tickets: overdue now": overdue,
        "tickets: closed of a category": by_category_state,
        "tickets: 5 pages of a unit": fifth_page,
        "tickets: report by unit and category": report,
        "kb: Chinese question": kb_zh,
        "kb: English question": kb_en,
        "kb: Chinese, one service": kb_service,
    }
    out: dict[str, dict[str, float]] = {}
    for name, query in queries.items():
        await query()  # warm the caches and the statement cache
        times: list[float] = []
        rows: list[int] = []
        runs = max(5, repeat // 6) if "report" in name or "5 pages" in name else repeat
        for _ in range(runs):
            started = time.perf_counter()
            rows.append(await query())
            times.append((time.perf_counter() - started) * 1000)
        times.sort()
        out[name] = {
            "runs": runs,
            "rows_mean": statistics.fmean(rows),
            "p50_ms": statistics.median(times),
            "p95_ms": times[min(len(times) - 1, int(0.95 * len(times)))],
            "max_ms": times[-1],
        }
    return out
