"""Full-text search terms and ranking for the knowledge base (pure; the index lives in SQL).

Chinese has no spaces, and a word-segmentation dictionary (jieba's last release is from 2020)
would decide for us where 邮政编码 ends. Overlapping character bigrams need no dictionary: a
word of n characters is n-1 bigrams, found wherever it sits inside a longer phrase
(查询邮政编码的方法 holds 邮政 政编 编码), on SQLite and PostgreSQL alike. A lone Han
character between non-Han text is kept as a unigram. Latin words are lower-cased, NFKC-folded
(full-width letters too) and lightly stemmed. Ranking is Okapi BM25 over those terms.
"""

from __future__ import annotations

import math
import re
import unicodedata
from collections import Counter
from collections.abc import Iterable, Mapping

# CJK unified ideographs with extension A, and the compatibility block.
_TOKEN = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]+|[0-9a-z]+")
_HAN = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]")
STOPWORDS = frozenset(
    [
        "a",
        "an",
        "and",
        "are",
        "as",
        "at",
        "be",
        "by",
        "for",
        "from",
        "how",
        "i",
        "in",
        "is",
        "it",
        "my",
        "of",
        "on",
        "or",
        "the",
        "to",
        "what",
        "when",
        "where",
        "which",
        "who",
        "why",
        "with",
    ]
)
MAX_TERM = 32
K1 = 1.2
B = 0.75


def _stem(word: str) -> str:
    """Enough folding for plurals and -ing forms of an FAQ's words (not a Porter stemmer)."""
    for suffix, keep in (("ies", "y"), ("sses", "ss"), ("ing", ""), ("es", ""), ("s", "")):
        if word.endswith(suffix) and len(word) - len(suffix) >= 3:
            if suffix == "es" and not word.endswith(("ches", "shes", "xes", "zes", "oes")):
                continue
            return word[: len(word) - len(suffix)] + keep
    return word


def terms(text: str) -> list[str]:
    """The index terms of a text, in order, with repeats."""
    out: list[str] = []
    for match in _TOKEN.finditer(unicodedata.normalize("NFKC", text).lower()):
        token = match.group()
        if _HAN.match(token):
            if len(token) == 1:
                out.append(token)
            else:
                out.extend(token[i : i + 2] for i in range(len(token) - 1))
        elif token not in STOPWORDS:
            out.append(_stem(token)[:MAX_TERM])
    return out


def term_counts(*fields: tuple[str, int]) -> Counter[str]:
    """Term frequencies of a document from (text, weight) fields: a title weighs more than a body."""
    counts: Counter[str] = Counter()
    for text, weight in fields:
        for term in terms(text):
            counts[term] += weight
    return counts


def query_terms(query: str) -> list[str]:
    """The distinct terms of a query, in order."""
    return list(dict.fromkeys(terms(query)))


def idf(doc_freq: int, n_docs: int) -> float:
    """BM25's inverse document frequency (the +1 keeps it positive for terms in most documents)."""
    return math.log(1.0 + (n_docs - doc_freq + 0.5) / (doc_freq + 0.5))


def bm25(
    query: Iterable[str],
    postings: Mapping[str, Mapping[str, int]],
    *,
    doc_freq: Mapping[str, int],
    doc_len: Mapping[str, int],
    n_docs: int,
    avg_len: float,
) -> list[tuple[str, float]]:
    """Documents by descending BM25 score (ties by id), from each term's postings {doc: tf}.

    `doc_freq` and `n_docs` are of the whole collection (a filtered search keeps the ranking of
    the unfiltered one); `postings` may hold only the documents the filter lets through.
    """
    scores: dict[str, float] = {}
    avg = avg_len if avg_len > 0 else 1.0
    for term in dict.fromkeys(query):
        df = doc_freq.get(term, 0)
        if df == 0:
            continue
        weight = idf(df, n_docs)
        for doc, tf in postings.get(term, {}).items():
            norm = K1 * (1.0 - B + B * doc_len.get(doc, 0) / avg)
            scores[doc] = scores.get(doc, 0.0) + weight * tf * (K1 + 1.0) / (tf + norm)
    return sorted(scores.items(), key=lambda item: (-item[1], item[0]))
