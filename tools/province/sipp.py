"""SIPp (Debian's sip-tester) as an independent caller for the tests and `vcc bench sip`:
scenarios written here, run as a supervised subprocess on loopback, their outcome read from
SIPp's own exit code and logs."""

from __future__ import annotations

import asyncio
import contextlib
import re
from dataclasses import dataclass
from pathlib import Path

from tools.province.sip import free_udp_port

SIPP = "sipp"
SHARE = Path("/usr/share/sip-tester")
DTMF = {d: SHARE / f"dtmf_2833_{d}.pcap" for d in "0123456789"}
G711A = SHARE / "g711a.pcap"

_SDP = """v=0
o=caller 1 1 IN IP[local_ip_type] [local_ip]
s=-
c=IN IP[media_ip_type] [media_ip]
t=0 0
m=audio {media_port} RTP/AVP 8 0 101
a=rtpmap:8 PCMA/8000
a=rtpmap:0 PCMU/8000
a=rtpmap:101 telephone-event/8000
a=fmtp:101 0-15
a=sendrecv
"""

_INVITE = """  <send retrans="500">
    <![CDATA[
INVITE sip:[service]@[remote_ip]:[remote_port] SIP/2.0
Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
From: "caller" <sip:[ani]@[local_ip]:[local_port]>;tag=[pid]SIPpTag[call_number]
To: <sip:[service]@[remote_ip]:[remote_port]>
Call-ID: [call_id]
CSeq: 1 INVITE
Contact: <sip:[ani]@[local_ip]:[local_port]>
Max-Forwards: 70
Content-Type: application/sdp
Content-Length: [len]

{sdp}
    ]]>
  </send>
"""

_ACK_2XX = """  <send>
    <![CDATA[
ACK [next_url] SIP/2.0
Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
[routes]
[last_From:]
[last_To:]
Call-ID: [call_id]
CSeq: 1 ACK
Max-Forwards: 70
Content-Length: 0

    ]]>
  </send>
"""

# The ACK of a non-2xx final answer: on the INVITE's branch (its Via), §17.1.1.3.
_ACK_REFUSAL = """  <send>
    <![CDATA[
ACK sip:[service]@[remote_ip]:[remote_port] SIP/2.0
[last_Via:]
[last_From:]
[last_To:]
Call-ID: [call_id]
CSeq: 1 ACK
Max-Forwards: 70
Content-Length: 0

    ]]>
  </send>
"""

_BYE = """  <send retrans="500">
    <![CDATA[
BYE [next_url] SIP/2.0
Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
[routes]
[last_From:]
[last_To:]
Call-ID: [call_id]
CSeq: 2 BYE
Max-Forwards: 70
Content-Length: 0

    ]]>
  </send>
  <recv response="200" crlf="true"/>
"""

_ANSWERED = """  <recv response="100" optional="true"/>
  <recv response="200" rtd="true" rrs="true">
    <action>
      <ereg regexp="X-VCC-Call-ID: ([0-9a-f]+)" search_in="msg" check_it="true" assign_to="all,vcc"/>
      <log message="vcc-call-id [$vcc] sip-call-id [call_id] ([$all])"/>
    </action>
  </recv>
"""


def call_scenario(
    digits: str = "",
    talk_ms_var: bool = True,
    media_port: str = "[media_port]",
    audio: Path | None = None,
    stream: Path | None = None,
    settle_ms: int = 1500,
    events: bool = True,
) -> str:
    """Dial, be answered, wait `settle_ms`, press `digits` (RFC 2833 packets from SIPp's pcaps),
    then say `audio` (a G.711 pcap) if given, and stream `stream` (raw A-law, in a loop) if given,
    stay on the line for -d milliseconds, hang up. `events=False`: a caller that offers no
    telephone-event (its digits, if any, are tones in its audio)."""
    sdp = _SDP.format(media_port=media_port)
    if not events:
        sdp = sdp.replace(" 8 0 101\n", " 8 0\n").replace(
            "a=rtpmap:101 telephone-event/8000\na=fmtp:101 0-15\n", ""
        )
    steps = [_INVITE.format(sdp=sdp), _ANSWERED, _ACK_2XX]
    if settle_ms:
        steps.append(f'  <pause milliseconds="{settle_ms}"/>\n')
    for d in digits:
        steps.append(f'  <nop><action><exec play_pcap_audio="{DTMF[d]}"/></action></nop>\n')
        steps.append('  <pause milliseconds="700"/>\n')
    if audio is not None:
        steps.append('  <pause milliseconds="1000"/>\n')
        steps.append(f'  <nop><action><exec play_pcap_audio="{audio}"/></action></nop>\n')
    if stream is not None:
        steps.append(f'  <nop><action><exec rtp_stream="{stream},-1,8"/></action></nop>\n')
    steps.append("  <pause/>\n" if talk_ms_var else "")
    if stream is not None:
        steps.append('  <nop><action><exec rtp_stream="pause"/></action></nop>\n')
    steps.append(_BYE)
    return _wrap("".join(steps))


def listening_scenario(media_port: int, hold_ms: int) -> str:
    """Dial with `media_port` as the caller's RTP (a listener of our own hears the call and sends
    its keys), stay until the site hangs up (its BYE answered; logged `ended-by site`) or
    `hold_ms` passed (then hang up; `ended-by caller`)."""
    body = _INVITE.format(sdp=_SDP.format(media_port=media_port)) + _ANSWERED + _ACK_2XX
    body += f"""  <recv request="BYE" timeout="{hold_ms}" ontimeout="1">
    <action><log message="ended-by site"/></action>
  </recv>
  <send next="2">
    <![CDATA[
SIP/2.0 200 OK
[last_Via:]
[last_From:]
[last_To:]
[last_Call-ID:]
[last_CSeq:]
Content-Length: 0
    ]]>
  </send>
  <label id="1"/>
  <nop><action><log message="ended-by caller"/></action></nop>
"""
    body += _BYE + '  <label id="2"/>\n'
    return _wrap(body)


def flood_scenario() -> str:
    """Dial; answered: stay -d milliseconds and hang up; refused (503 or 486): ACK and stop.
    Each outcome is logged, so a flood's answered and refused calls can be counted."""
    body = _INVITE.format(sdp=_SDP.format(media_port="[media_port]"))
    body += """  <recv response="100" optional="true"/>
  <recv response="503" optional="true" next="refused"/>
  <recv response="486" optional="true" next="refused"/>
  <recv response="200" rrs="true">
    <action><log message="flood answered [call_id]"/></action>
  </recv>
"""
    body += _ACK_2XX + "  <pause/>\n" + _BYE + '  <nop next="done"/>\n'
    body += (
        '  <label id="refused"/>\n  <nop><action><log message="flood refused [call_id]"/></action></nop>\n'
    )
    body += _ACK_REFUSAL + '  <label id="done"/>\n'
    return _wrap(body)


def refused_scenario(status: int) -> str:
    """Dial and expect the final answer `status` (then ACK it on the INVITE's branch)."""
    recv = f"""  <recv response="100" optional="true"/>
  <recv response="{status}">
    <action>
      <ereg regexp="X-VCC-Call-ID: ([0-9a-f]+)" search_in="msg" check_it="false" assign_to="all,vcc"/>
      <log message="refused {status} vcc-call-id [$vcc] ([$all])"/>
    </action>
  </recv>
"""
    return _wrap(_INVITE.format(sdp=_SDP.format(media_port="[media_port]")) + recv + _ACK_REFUSAL)


def _wrap(body: str) -> str:
    return (
        '<?xml version="1.0" encoding="ISO-8859-1" ?>\n'
        '<!DOCTYPE scenario SYSTEM "sipp.dtd">\n'
        '<scenario name="vcc caller">\n' + body + "</scenario>\n"
    )


def media_port() -> int:
    """An even UDP port whose successor is free too (SIPp's RTP and RTCP)."""
    while True:
        port = free_udp_port()
        if port % 2 == 0 and port < 65000:
            return port


@dataclass
class SippResult:
    returncode: int
    log: str
    stdout: str
    errors: str

    @property
    def vcc_call_ids(self) -> list[str]:
        return re.findall(r"vcc-call-id ([0-9a-f]+)", self.log)

    @property
    def sip_call_ids(self) -> list[str]:
        return re.findall(r"sip-call-id (\S+)", self.log)

    @property
    def ok(self) -> bool:
        return self.returncode == 0


async def run_sipp(
    scenario: str,
    target: str,
    work: Path,
    *,
    name: str = "caller",
    calls: int = 1,
    rate: float = 10.0,
    hold_ms: int = 1000,
    service: str = "10000",
    ani: str = "13800000001",
    timeout_s: float = 60.0,
    limit: int | None = None,
) -> SippResult:
    """Run one SIPp client until it ends (or is stopped at `timeout_s`); its logs from `work`."""
    xml = await asyncio.to_thread(_write_scenario, work, name, scenario)
    cmd = [
        SIPP, target, "-sf", str(xml), "-m", str(calls), "-r", str(rate), "-d", str(hold_ms),
        "-i", "127.0.0.1", "-mi", "127.0.0.1", "-p", str(free_udp_port()), "-mp", str(media_port()),
        "-s", service, "-key", "ani", ani,
        "-trace_logs", "-log_file", str(work / f"{name}.log"),
        "-trace_err", "-error_file", str(work / f"{name}.err"),
        "-nostdin", "-timeout", f"{int(timeout_s)}s", "-timeout_error", "-max_recv_loops", "1000",
    ]  # fmt: skip
    if limit is not None:
        cmd += ["-l", str(limit)]
    proc = await asyncio.create_subprocess_exec(
        *cmd, cwd=work, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
    )
    try:
        out, _ = await asyncio.wait_for(proc.communicate(), timeout_s + 10)
    except TimeoutError:
        proc.kill()
        out, _ = await proc.communicate()
    finally:
        if proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()
    log, errors = await asyncio.to_thread(_read_logs, work, name)
    code = proc.returncode if proc.returncode is not None else -1
    return SippResult(code, log, out.decode(errors="replace")[-4000:], errors[-4000:])


def _write_scenario(work: Path, name: str, scenario: str) -> Path:
    work.mkdir(parents=True, exist_ok=True)
    xml = work / f"{name}.xml"
    xml.write_text(scenario, encoding="ascii")
    return xml


def _read_logs(work: Path, name: str) -> tuple[str, str]:
    log_file = work / f"{name}.log"
    err_file = work / f"{name}.err"
    log = log_file.read_text(errors="replace") if log_file.exists() else ""
    return log, err_file.read_text(errors="replace") if err_file.exists() else ""
