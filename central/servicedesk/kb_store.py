"""The knowledge base at central: articles proposed by agents, published by a reviewer, and
found by full-text search over an inverted index table (terms and ranking: .textsearch)."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from central.db import models
from central.servicedesk import common, textsearch
from central.store import Store
from vcc.errors import FailedPrecondition, InvalidArgument, NotFound

log = logging.getLogger(__name__)

ARTICLES = models.Base.metadata.tables["kb_articles"]
TERMS = models.Base.metadata.tables["kb_terms"]
MAX_TITLE = 200
MAX_BODY = 20_000
MAX_TAGS = 20
MAX_LABEL = 64
MAX_QUERY = 200
MAX_HITS = 100
# A title says what an article is about more than any sentence of its body.
TITLE_WEIGHT = 3
TAG_WEIGHT = 2


class ArticleState(StrEnum):
    PROPOSED = "proposed"
    PUBLISHED = "published"
    REJECTED = "rejected"


@dataclass(frozen=True)
class Article:
    article_id: str
    title: str
    body: str
    category: str = ""
    service: str = ""
    tags: tuple[str, ...] = ()
    state: ArticleState = ArticleState.PROPOSED
    question: str = ""
    proposed_by: str = ""
    reviewed_by: str = ""
    created_at: float = 0.0
    published_at: float | None = None
    version: int = 1


def _check(a: Article) -> None:
    def need(ok: bool, error_id: str, message: str) -> None:
        if not ok:
            raise InvalidArgument(error_id, message)

    need(0 < len(a.title.strip()) <= MAX_TITLE, "bad-title", f"title: 1 to {MAX_TITLE} characters")
    need(0 < len(a.body.strip()) <= MAX_BODY, "bad-body", f"body: 1 to {MAX_BODY} characters")
    need(len(a.category) <= MAX_LABEL, "bad-category", f"category: at most {MAX_LABEL} characters")
    need(len(a.service) <= MAX_LABEL, "bad-service", f"service: at most {MAX_LABEL} characters")
    need(len(a.tags) <= MAX_TAGS, "bad-tags", f"tags: at most {MAX_TAGS}")
    need(all(0 < len(t) <= MAX_LABEL for t in a.tags), "bad-tags", f"tags: 1 to {MAX_LABEL} characters each")
    need(len(a.question) <= MAX_BODY, "bad-question", f"question: at most {MAX_BODY} characters")
    need(0 < len(a.proposed_by) <= MAX_LABEL, "missing-author", "author: required")


def index_terms(a: Article) -> dict[str, int]:
    counts = textsearch.term_counts((a.title, TITLE_WEIGHT), (" ".join(a.tags), TAG_WEIGHT), (a.body, 1))
    return dict(counts)


class KnowledgeStore:
    def __init__(self, store: Store, clock: Callable[[], float] = time.time) -> None:
        self._store = store
        self._clock = clock

    async def propose(self, article: Article, idempotency_key: str = "") -> Article:
        _check(article)
        common.check_idempotency_key(idempotency_key)
        digest = common.request_hash(
            {
                "title": article.title,
                "body": article.body,
                "category": article.category,
                "service": article.service,
                "tags": list(article.tags),
                "question": article.question,
                "author": article.proposed_by,
            }
        )
        now = self._clock()

        async def attempt(conn: AsyncConnection) -> str:
            earlier = await common.remembered(conn, "article", idempotency_key, digest)
            if earlier is not None:
                return earlier
            article_id = common.new_id("K")
            await conn.execute(
                sa.insert(ARTICLES).values(
                    article_id=article_id,
                    title=article.title.strip(),
                    body=article.body,
                    category=article.category,
                    service=article.service,
                    tags=json.dumps(list(article.tags), ensure_ascii=False),
                    state=ArticleState.PROPOSED.value,
                    question=article.question,
                    proposed_by=article.proposed_by,
                    reviewed_by="",
                    created_at=now,
                    published_at=None,
                    length=0,
                    version=1,
                )
            )
            await common.remember(conn, "article", idempotency_key, digest, article_id, now=now)
            return article_id

        article_id = await self._store.transaction(attempt, write=True)
        return await self.get(article_id)

    async def publish(self, article_id: str, reviewer: str) -> Article:
        """Index the article and make it findable (publishing again re-indexes it)."""
        return await self._review(article_id, reviewer, ArticleState.PUBLISHED)

    async def reject(self, article_id: str, reviewer: str) -> Article:
        return await self._review(article_id, reviewer, ArticleState.REJECTED)

    async def _review(self, article_id: str, reviewer: str, to: ArticleState) -> Article:
        if not 0 < len(reviewer) <= MAX_LABEL:
            raise InvalidArgument("missing-reviewer", "reviewer: required")
        now = self._clock()

        async def attempt(conn: AsyncConnection) -> None:
            current = await _load_one(conn, article_id)
            if current.state == ArticleState.REJECTED or (
                to == ArticleState.REJECTED and current.state != ArticleState.PROPOSED
            ):
                raise FailedPrecondition(
                    "bad-article-state",
                    f"article {article_id} is {current.state.value}: cannot be {to.value}",
                )
            await conn.execute(sa.delete(TERMS).where(TERMS.c.article_id == article_id))
            length = 0
            if to == ArticleState.PUBLISHED:
                counts = index_terms(current)
                length = sum(counts.values())
                rows = [{"term": t, "article_id": article_id, "tf": n} for t, n in counts.items()]
                for i in range(0, len(rows), 500):
                    await conn.execute(sa.insert(TERMS), rows[i : i + 500])
            await conn.execute(
                sa.update(ARTICLES)
                .where(ARTICLES.c.article_id == article_id)
                .values(
                    state=to.value,
                    reviewed_by=reviewer,
                    published_at=now if to == ArticleState.PUBLISHED else None,
                    length=length,
                    version=ARTICLES.c.version + 1,
                )
            )

        await self._store.transaction(attempt, write=True)
        log.info("article %s %s by %s", article_id, to.value, reviewer)
        return await self.get(article_id)

    async def get(self, article_id: str) -> Article:
        async def attempt(conn: AsyncConnection) -> Article:
            return await _load_one(conn, article_id)

        return await self._store.transaction(attempt)

    async def list_articles(
        self,
        *,
        state: ArticleState | None = None,
        category: str = "",
        service: str = "",
        page_size: int = common.DEFAULT_PAGE_SIZE,
        page_token: str = "",
    ) -> tuple[list[Article], str]:
        after = common.decode_token("articles", page_token, (str,))[0] if page_token else None

        async def attempt(conn: AsyncConnection) -> tuple[list[Article], str]:
            query = sa.select(ARTICLES).order_by(ARTICLES.c.article_id).limit(page_size + 1)
            if state is not None:
                query = query.where(ARTICLES.c.state == state.value)
            if category:
                query = query.where(ARTICLES.c.category == category)
            if service:
                query = query.where(ARTICLES.c.service == service)
            if after is not None:
                query = query.where(ARTICLES.c.article_id > after)
            rows = (await conn.execute(query)).all()
            page = [_article(r._mapping) for r in rows[:page_size]]
            token = common.encode_token("articles", [page[-1].article_id]) if len(rows) > page_size else ""
            return page, token

        return await self._store.transaction(attempt)

    async def search(
        self, query: str, *, category: str = "", service: str = "", limit: int = 10
    ) -> list[tuple[Article, float]]:
        """Published articles ranked by BM25 against the query's terms, best first."""
        if len(query) > MAX_QUERY:
            raise InvalidArgument("bad-query", f"query: at most {MAX_QUERY} characters")
        if not 0 < limit <= MAX_HITS:
            raise InvalidArgument("bad-limit", f"limit: 1 to {MAX_HITS}")
        wanted = textsearch.query_terms(query)
        if not wanted:
            raise InvalidArgument("bad-query", "query: no searchable word in it")

        async def attempt(conn: AsyncConnection) -> list[tuple[Article, float]]:
            published = ARTICLES.c.state == ArticleState.PUBLISHED.value
            n_docs, avg_len = (
                await conn.execute(
                    sa.select(sa.func.count(), sa.func.avg(ARTICLES.c.length)).where(published)
                )
            ).one()
            df_query = (
                sa.select(TERMS.c.term, sa.func.count())
                .where(TERMS.c.term.in_(wanted))
                .group_by(TERMS.c.term)
            )
            doc_freq = {str(term): int(n) for term, n in (await conn.execute(df_query)).all()}
            # BM25 summed in the database: only the best `limit` rows come back, however many
            # articles share a common term (textsearch.bm25 is the same formula, the tests' oracle).
            weights = {t: textsearch.idf(df, int(n_docs)) for t, df in doc_freq.items()}
            if not weights:
                return []
            avg = float(avg_len or 0.0) or 1.0
            tf = sa.cast(TERMS.c.tf, sa.Float)
            k1, b = textsearch.K1, textsearch.B
            per_term = (
                sa.case(weights, value=TERMS.c.term, else_=0.0)
                * tf
                * (k1 + 1.0)
                / (tf + k1 * (1.0 - b) + (k1 * b / avg) * ARTICLES.c.length)
            )
            score = sa.func.sum(per_term).label("score")
            query = (
                sa.select(TERMS.c.article_id, score)
                .join(ARTICLES, ARTICLES.c.article_id == TERMS.c.article_id)
                .where(TERMS.c.term.in_(sorted(weights)))
                .group_by(TERMS.c.article_id)
                .order_by(score.desc(), TERMS.c.article_id)
                .limit(limit)
            )
            if category:
                query = query.where(ARTICLES.c.category == category)
            if service:
                query = query.where(ARTICLES.c.service == service)
            ranked = [(str(a), float(sc)) for a, sc in (await conn.execute(query)).all()]
            found = await _load(conn, [a for a, _ in ranked])
            return [(found[a], score) for a, score in ranked if a in found]

        return await self._store.transaction(attempt)


async def _load_one(conn: AsyncConnection, article_id: str) -> Article:
    found = await _load(conn, [article_id])
    if article_id not in found:
        raise NotFound("article-not-found", f"no article {article_id!r}")
    return found[article_id]


async def _load(conn: AsyncConnection, ids: Sequence[str]) -> dict[str, Article]:
    if not ids:
        return {}
    rows = (await conn.execute(sa.select(ARTICLES).where(ARTICLES.c.article_id.in_(list(ids))))).all()
    return {r.article_id: _article(r._mapping) for r in rows}


def _article(row: Mapping[Any, Any]) -> Article:
    return Article(
        article_id=row["article_id"],
        title=row["title"],
        body=row["body"],
        category=row["category"],
        service=row["service"],
        tags=tuple(json.loads(row["tags"])),
        state=ArticleState(row["state"]),
        question=row["question"],
        proposed_by=row["proposed_by"],
        reviewed_by=row["reviewed_by"],
        created_at=float(row["created_at"]),
        published_at=row["published_at"],
        version=int(row["version"]),
    )
