"""Search terms and BM25 ranking (pure, no database)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from central.servicedesk import textsearch as ts


def rank(query: str, docs: dict[str, str]) -> list[str]:
    postings: dict[str, dict[str, int]] = {}
    lengths: dict[str, int] = {}
    for doc, text in docs.items():
        counts = ts.term_counts((text, 1))
        lengths[doc] = sum(counts.values())
        for term, tf in counts.items():
            postings.setdefault(term, {})[doc] = tf
    hits = ts.bm25(
        ts.query_terms(query),
        postings,
        doc_freq={t: len(p) for t, p in postings.items()},
        doc_len=lengths,
        n_docs=len(docs),
        avg_len=sum(lengths.values()) / len(lengths),
    )
    return [doc for doc, _ in hits]


def test_chinese_is_bigrams_and_a_word_is_found_inside_a_phrase() -> None:
    assert ts.terms("邮政编码") == ["邮政", "政编", "编码"]
    phrase = ts.terms("查询邮政编码的方法")
    assert all(t in phrase for t in ts.terms("邮政编码"))
    assert ts.terms("邮") == ["邮"]


def test_latin_words_are_folded() -> None:
    assert ts.terms(
        "Tracking the PARCELS, \uff30\uff4f\uff53\uff54\uff41\uff4c codes!"
    )  # full-width "Postal" == ["track", "parcel", "postal", "code"]
    assert ts.terms("boxes queries") == ["box", "query"]


def test_ranking_prefers_the_whole_word_and_more_of_the_query() -> None:
    docs = {
        "zip": "查询邮政编码的方法：登录网站输入地址",
        "post": "邮政储蓄的营业时间",
        "code": "如何修改密码",
        "none": "包裹丢失怎么办",
    }
    ranked = rank("邮政编码", docs)
    assert ranked[0] == "zip"
    assert "none" not in ranked and "code" not in ranked
    assert ranked.index("zip") < ranked.index("post")


def test_english_ranking() -> None:
    docs = {
        "track": "How to track a parcel: enter the tracking number on the website",
        "fees": "Parcel fees depend on weight",
        "hours": "Opening hours of post offices",
    }
    assert rank("track my parcel", docs)[:2] == ["track", "fees"]
    assert rank("opening hour", docs) == ["hours"]


def test_no_match_and_unknown_terms() -> None:
    assert rank("火星", {"a": "邮政编码"}) == []
    assert ts.query_terms("the of and") == []


HAN = st.text(alphabet=st.characters(min_codepoint=0x4E00, max_codepoint=0x9FFF), min_size=1, max_size=12)


@given(word=HAN.filter(lambda w: len(w) > 1), before=HAN, after=HAN)
def test_a_chinese_word_is_found_wherever_it_sits_in_a_phrase(word: str, before: str, after: str) -> None:
    assert set(ts.query_terms(word)) <= set(ts.terms(before + word + after))
    assert "in" in rank(word, {"in": before + word + after, "other": "English only"})
