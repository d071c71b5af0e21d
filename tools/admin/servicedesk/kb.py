"""`vcc kb`: propose, publish, reject, search, list articles of the knowledge base."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from tools.admin.servicedesk.session import (
    DEADLINE_S,
    ByOpt,
    CentralOpt,
    ConfigOpt,
    JsonOpt,
    call_central,
    show,
)
from tools.console import print_table

if TYPE_CHECKING:
    import grpc

kb_app = typer.Typer(help="The knowledge base (F32).", no_args_is_help=True)


ARTICLE_COLUMNS = ["id", "state", "title", "category", "service", "tags", "by", "reviewer"]


def _article_row(a: Any) -> list[Any]:
    return [
        a.article_id,
        a.state,
        a.title,
        a.category,
        a.service,
        ",".join(a.tags),
        a.proposed_by,
        a.reviewed_by,
    ]


@kb_app.command("propose")
def kb_propose(
    *,
    title: Annotated[str, typer.Option()],
    body: Annotated[str, typer.Option()],
    by: ByOpt,
    category: str = "",
    service: str = "",
    tag: Annotated[list[str] | None, typer.Option(help="Repeat for several.")] = None,
    question: Annotated[str, typer.Option(help="The caller's question it answers.")] = "",
    idempotency_key: str = "",
    central: CentralOpt = None,
    config: ConfigOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Propose an article (a reviewer publishes it)."""
    from vcc.v1 import servicedesk_pb2 as pb
    from vcc.v1 import servicedesk_pb2_grpc as pb_grpc

    request = pb.ProposeArticleRequest(
        title=title, body=body, author=by, category=category, service=service, tags=tag or [],
        question=question, idempotency_key=idempotency_key,
    )  # fmt: skip
    reply = call_central(
        central,
        config,
        lambda ch: pb_grpc.KnowledgeServiceStub(ch).ProposeArticle(request, timeout=DEADLINE_S),
    )
    show(reply, as_json, lambda: print_table("proposed", ARTICLE_COLUMNS, [_article_row(reply.article)]))


def _review(
    article_id: str, by: str, *, publish: bool, central: str | None, config: Path | None, as_json: bool
) -> None:
    from vcc.v1 import servicedesk_pb2 as pb
    from vcc.v1 import servicedesk_pb2_grpc as pb_grpc

    async def work(ch: grpc.aio.Channel) -> Any:
        stub = pb_grpc.KnowledgeServiceStub(ch)
        if publish:
            return await stub.PublishArticle(
                pb.PublishArticleRequest(article_id=article_id, reviewer=by), timeout=DEADLINE_S
            )
        return await stub.RejectArticle(
            pb.RejectArticleRequest(article_id=article_id, reviewer=by), timeout=DEADLINE_S
        )

    reply = call_central(central, config, work)
    show(reply, as_json, lambda: print_table("reviewed", ARTICLE_COLUMNS, [_article_row(reply.article)]))


@kb_app.command("publish")
def kb_publish(
    article_id: str, by: ByOpt, central: CentralOpt = None, config: ConfigOpt = None, as_json: JsonOpt = False
) -> None:
    """Publish a proposed article: it is indexed and found from now on."""
    _review(article_id, by, publish=True, central=central, config=config, as_json=as_json)


@kb_app.command("reject")
def kb_reject(
    article_id: str, by: ByOpt, central: CentralOpt = None, config: ConfigOpt = None, as_json: JsonOpt = False
) -> None:
    """Reject a proposed article."""
    _review(article_id, by, publish=False, central=central, config=config, as_json=as_json)


@kb_app.command("search")
def kb_search(
    *,
    query: str,
    service: str = "",
    category: str = "",
    limit: Annotated[int, typer.Option(min=1, max=100)] = 10,
    central: CentralOpt = None,
    config: ConfigOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Published articles for a question, best first (Chinese or English)."""
    from vcc.v1 import servicedesk_pb2 as pb
    from vcc.v1 import servicedesk_pb2_grpc as pb_grpc

    request = pb.SearchArticlesRequest(query=query, service=service, category=category, limit=limit)
    reply = call_central(
        central,
        config,
        lambda ch: pb_grpc.KnowledgeServiceStub(ch).SearchArticles(request, timeout=DEADLINE_S),
    )
    rows = [[f"{h.score:.2f}", *_article_row(h.article)] for h in reply.hits]
    show(reply, as_json, lambda: print_table(f"articles for {query!r}", ["score", *ARTICLE_COLUMNS], rows))


@kb_app.command("list")
def kb_list(
    *,
    state: Annotated[str, typer.Option(help="proposed (the review queue), published, rejected.")] = "",
    service: str = "",
    category: str = "",
    page_size: Annotated[int, typer.Option(min=1, max=500)] = 50,
    page_token: str = "",
    central: CentralOpt = None,
    config: ConfigOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Articles by state, category, service."""
    from vcc.v1 import servicedesk_pb2 as pb
    from vcc.v1 import servicedesk_pb2_grpc as pb_grpc

    request = pb.ListArticlesRequest(
        state=state, service=service, category=category, page_size=page_size, page_token=page_token
    )
    reply = call_central(
        central, config, lambda ch: pb_grpc.KnowledgeServiceStub(ch).ListArticles(request, timeout=DEADLINE_S)
    )
    show(
        reply,
        as_json,
        lambda: print_table("articles", ARTICLE_COLUMNS, [_article_row(a) for a in reply.articles]),
    )
