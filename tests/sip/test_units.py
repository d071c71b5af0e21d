"""The SIP and media adapters' pure parts, and the call control's failed line: no network."""

from __future__ import annotations

import json
from typing import Any

import pytest

from site_node.callcontrol.domain import EventKind, Outcome
from site_node.media.bencode import BencodeError, decode, encode
from site_node.media.control import sink_answer
from site_node.media.dtmf import parse_report
from site_node.sip.message import (
    NameAddr,
    SipParseError,
    Via,
    parse,
    response,
    session_interval,
    split_host_port,
    uri_user,
)
from tests.helpers import full_width
from tests.site_node.test_switchboard import (
    journal,
    journal_kinds,
    offer,
    queued_call,
    ready_agents,
    site_dict,
    switchboard,
    to_caller,
)
from vcc.config import ConfigError, parse_province

INVITE = (
    b"INVITE sip:10000@127.0.0.1:5061 SIP/2.0\r\n"
    b"v: SIP/2.0/UDP 10.0.0.1:5070;branch=z9hG4bKabc;rport, SIP/2.0/UDP 10.0.0.2;branch=z9hG4bKdef\r\n"
    b'f: "A, B" <sip:13800000001@10.0.0.1>;tag=t1\r\n'
    b"t: <sip:10000@127.0.0.1>\r\ni: call-1\r\nCSeq: 1 INVITE\r\n"
    b"Record-Route: <sip:p1;lr>, <sip:p2;lr>\r\n"
    b"Subject: folded\r\n  line\r\n"
    b"l: 4\r\n\r\nbodyEXTRA"
)


# Messages -------------------------------------------------------------------------------------


def test_a_request_parses_with_compact_forms_lists_folding_and_its_content_length() -> None:
    msg = parse(INVITE)
    assert msg.method == "INVITE" and uri_user(msg.uri) == "10000"
    assert msg.all("via") == [
        "SIP/2.0/UDP 10.0.0.1:5070;branch=z9hG4bKabc;rport",
        "SIP/2.0/UDP 10.0.0.2;branch=z9hG4bKdef",
    ]
    assert msg.top_via == Via("UDP", "10.0.0.1", 5070, {"branch": "z9hG4bKabc", "rport": ""})
    assert (
        NameAddr.parse(msg.need("from")).tag == "t1"
        and NameAddr.parse(msg.need("from")).user == "13800000001"
    )
    assert msg.all("record-route") == ["<sip:p1;lr>", "<sip:p2;lr>"]
    assert msg.get("subject") == "folded line"
    assert msg.body == b"body"
    assert msg.cseq == (1, "INVITE")


def test_a_response_copies_vias_from_call_id_cseq_and_tags_the_to() -> None:
    out = parse(response(parse(INVITE), 486, to_tag="mine").encode())
    assert out.status == 486 and out.all("via") == parse(INVITE).all("via")
    assert NameAddr.parse(out.need("to")).tag == "mine"
    assert out.call_id == "call-1" and out.get("content-length") == "0"


@pytest.mark.parametrize(
    "bad",
    [
        b"",
        b"INVITE sip:x SIP/2.0\r\n",  # no end of headers
        b"INVITE sip:x SIP/3.0\r\n\r\n",
        b"INVITE http://x SIP/2.0\r\n\r\n",
        b"INV ITE sip:x SIP/2.0\r\n\r\n",
        b"SIP/2.0 99 Odd\r\n\r\n",
        b"INVITE sip:x SIP/2.0\r\nno colon here\r\n\r\n",
        b"INVITE sip:x SIP/2.0\r\nContent-Length: 10\r\n\r\nshort",
        b"INVITE sip:x SIP/2.0\r\nContent-Length: -1\r\n\r\n",
        b"INVITE sip:x SIP/2.0\r\n\xff\xfe: x\r\n\r\n",
        b"INVITE sip:x SIP/2.0\r\n" + b"X-A: 1\r\n" * 101 + b"\r\n",
        # Full-width digits are digits to str.isdigit() and int(), not in SIP (RFC 3261's DIGIT).
        f"INVITE sip:x SIP/2.0\r\nContent-Length: {full_width('0')}\r\n\r\n".encode(),
        f"SIP/2.0 {full_width('200')} OK\r\n\r\n".encode(),
    ],
)
def test_what_is_not_sip_raises_a_parse_error(bad: bytes) -> None:
    with pytest.raises(SipParseError):
        parse(bad)


@pytest.mark.parametrize(
    "cseq", ["x INVITE", "1", "4294967296 INVITE", "-1 INVITE", full_width("1") + " INVITE"]
)
def test_a_bad_cseq_is_a_parse_error(cseq: str) -> None:
    msg = parse(INVITE.replace(b"CSeq: 1 INVITE", f"CSeq: {cseq}".encode()))
    with pytest.raises(SipParseError):
        _ = msg.cseq


def test_ports_and_session_intervals_are_ascii_digits_only() -> None:
    """A trunk answers 400 to what does not parse: a full-width port in a Via or a Contact, or
    full-width seconds in a Session-Expires, are refused, not read as the number they look like."""
    assert split_host_port("10.0.0.1:5070", 5060) == ("10.0.0.1", 5070)
    assert session_interval("1800;refresher=uac") == 1800
    with pytest.raises(SipParseError, match="bad port"):
        split_host_port(f"10.0.0.1:{full_width('5070')}", 5060)
    with pytest.raises(SipParseError, match="bad Session-Expires"):
        session_interval(f"{full_width('1800')};refresher=uac")
    via = parse(INVITE.replace(b"10.0.0.1:5070", f"10.0.0.1:{full_width('5070')}".encode()))
    with pytest.raises(SipParseError):
        _ = via.top_via


# Media ----------------------------------------------------------------------------------------


def test_bencode_round_trips_and_refuses_garbage() -> None:
    value: Any = {"command": "offer", "flags": ["a", "b"], "n": -3, "sdp": b"v=0\r\n"}
    assert decode(encode(value)) == {"command": b"offer", "flags": [b"a", b"b"], "n": -3, "sdp": b"v=0\r\n"}
    assert encode({"b": 1, "a": 2}) == b"d1:ai2e1:bi1ee"
    for bad in (b"", b"i12", b"5:abc", b"d1:a", b"x", b"le1", b"l" * 40 + b"e" * 40):
        with pytest.raises(BencodeError):
            decode(bad)


def test_a_dtmf_report_names_the_call_and_the_digit() -> None:
    report = {"callid": "c1", "source_tag": "t", "event": 11, "duration": 200, "volume": 10}
    assert parse_report(json.dumps(report).encode()) == ("c1", "#")
    assert parse_report(b"not json") is None
    assert parse_report(json.dumps({**report, "event": 16}).encode()) is None
    assert parse_report(json.dumps({"event": 1}).encode()) is None


def test_the_sink_answer_accepts_every_offered_codec_at_the_discard_port() -> None:
    offer_sdp = (
        "v=0\r\nm=audio 30000 RTP/AVP 8 101\r\na=rtpmap:8 PCMA/8000\r\n"
        "a=rtpmap:101 telephone-event/8000\r\na=fmtp:101 0-15\r\n"
    )
    sdp = sink_answer(offer_sdp, "127.0.0.1")
    assert "m=audio 9 RTP/AVP 8 101" in sdp and "a=fmtp:101 0-15" in sdp and "c=IN IP4 127.0.0.1" in sdp


# Config ---------------------------------------------------------------------------------------


def province(sip: dict[str, Any], second: dict[str, Any] | None = None) -> dict[str, Any]:
    sites = [site_dict(sip=sip)]
    if second is not None:
        sites.append(site_dict(id="sz", name="Shenzhen", listen="127.0.0.1:7102", sip=second))
    return {"province": {"id": "gd", "name": "Guangdong"}, "sites": sites}


def test_the_sip_section_is_validated() -> None:
    ok = parse_province(province({"listen": "127.0.0.1:5061", "trunk_group": "pstn"}))
    assert ok.sites[0].sip is not None and ok.sites[0].sip.busy_status == 503
    with pytest.raises(ConfigError, match=r"sip\.trunk_group: unknown trunk group"):
        parse_province(province({"listen": "127.0.0.1:5061", "trunk_group": "nope"}))
    with pytest.raises(ConfigError, match="busy_status"):
        parse_province(province({"listen": "127.0.0.1:5061", "trunk_group": "pstn", "busy_status": 480}))
    with pytest.raises(ConfigError, match="unknown key"):
        parse_province(province({"listen": "127.0.0.1:5061", "trunk_group": "pstn", "colour": "red"}))
    with pytest.raises(ConfigError, match="overlap"):
        parse_province(
            province(
                {"listen": "127.0.0.1:5061", "trunk_group": "pstn"},
                {"listen": "127.0.0.1:5062", "trunk_group": "pstn"},
            )
        )
    with pytest.raises(ConfigError, match="appears twice"):
        parse_province(
            province(
                {"listen": "127.0.0.1:5061", "trunk_group": "pstn"},
                {
                    "listen": "127.0.0.1:5061",
                    "trunk_group": "pstn",
                    "media": {"port_min": 31000, "port_max": 31999},
                },
            )
        )


# The call control: a line lost on our side ---------------------------------------------------


def test_a_line_lost_in_the_queue_ends_the_call_failed_not_abandoned() -> None:
    sb = switchboard()
    call_id, _ = queued_call(sb, 0.0, "k1")
    fx = sb.caller_line_failed(1.0, call_id, "media-engine-lost")
    assert EventKind.ABANDONED not in journal_kinds(fx, call_id)
    [end] = [e for e in journal(fx, call_id) if e.kind == EventKind.ENDED]
    assert end.outcome == Outcome.FAILED and dict(end.data)["reason"] == "media-engine-lost"
    assert to_caller(fx, "ended")[0].outcome == Outcome.FAILED
    assert sb.counters.failed == 1 and sb.counters.abandoned == 0
    assert sb.trunks["pstn"].busy == 0 and not sb.calls


def test_a_line_lost_while_talking_ends_the_call_answered_and_frees_the_agent() -> None:
    sb = switchboard(wrap_up_s=0)
    ready_agents(sb, 0.0, "0101")
    call_id, _ = offer(sb, 0.0, "k1")
    sb.caller_digits(0.5, call_id, "2")
    sb.answer(1.0, "0101", call_id)
    fx = sb.caller_line_failed(2.0, call_id, "media-engine-lost")
    [end] = [e for e in journal(fx, call_id) if e.kind == EventKind.ENDED]
    assert end.outcome == Outcome.ANSWERED
    assert sb.agent("0101").call_id == ""


def test_a_flows_prompt_files_are_named_by_their_text_and_cover_every_key_an_option_can_get() -> None:
    from site_node.media.prompts import flow_prompt_name, flow_prompt_specs
    from tools.province.prompts import example_flows

    postal = next(f for f in example_flows() if f.id == "postal-185")
    specs = {s.text: s for s in flow_prompt_specs(postal)}
    # Each prompt in each language; an option with each key it can get, the agent's with 0.
    assert "您好，欢迎致电中国邮政185客户服务中心。" in specs and "Please choose a service." in specs
    assert "For parcel and letter tracking, press 1." in specs
    assert "For philately, press 4." in specs and "For philately, press 5." not in specs
    assert "For an agent, press 0." in specs
    # A text filled in at run time has no file (the site plays its menu there).
    assert not [t for t in specs if "{" in t]
    assert specs["Please choose a service."].voice == "en"
    # The name is stable, and a reworded text or another language is another file.
    name = flow_prompt_name("postal-185", "main", "Please choose a service.", "en")
    assert specs["Please choose a service."].name == name
    assert name != flow_prompt_name("postal-185", "main", "Please choose a service!", "en")
    assert name != flow_prompt_name("postal-185", "main", "Please choose a service.", "zh")


def test_a_broken_flow_document_is_a_clear_prompt_build_error(tmp_path: Any) -> None:
    from tools.province.prompts import PromptBuildError, load_flows

    broken = tmp_path / "broken.yaml"
    broken.write_text("id: x\nversion: 1\n", encoding="utf-8")
    with pytest.raises(PromptBuildError, match=r"broken\.yaml"):
        load_flows([broken])
    with pytest.raises(PromptBuildError, match="cannot read"):
        load_flows([tmp_path / "absent.yaml"])
