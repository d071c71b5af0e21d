"""The province's SIP entry in front of the cities: Kamailio (deploy/kamailio/kamailio.cfg) with
a dispatcher list made from the province config, and a supervised Kamailio process for the tests
and local clusters.

Each city has an interconnect on the entry (a listen port); the dispatcher set named by that port
lists the city first and the other cities after it, so a call goes to the caller's city and, when
that city is down (OPTIONS probes) or answers 503, to the next one.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
from collections.abc import Mapping
from pathlib import Path

from vcc.config import ProvinceConfig

CONFIG = Path(__file__).resolve().parents[2] / "deploy" / "kamailio" / "kamailio.cfg"
HOME_PRIORITY = 100
STOP_GRACE_S = 5.0


def dispatcher_list(config: ProvinceConfig, entries: Mapping[str, int]) -> str:
    """One set per city's entry port: that city first, then the others in config order."""
    trunks = {s.id: s.sip.listen for s in config.sites if s.sip is not None}
    unknown = [site for site in entries if site not in trunks]
    if unknown:
        raise ValueError(f"no SIP trunk for site(s) {', '.join(unknown)} in the province config")
    lines = ["# setid destination flags priority attributes (vcc kamailio-dispatcher)"]
    for home, port in entries.items():
        lines.append(f"{port} sip:{trunks[home]} 0 {HOME_PRIORITY} site={home}")
        others = [s for s in trunks if s != home]
        for rank, other in enumerate(others):
            lines.append(f"{port} sip:{trunks[other]} 0 {HOME_PRIORITY - 10 * (rank + 1)} site={other}")
    return "\n".join(lines) + "\n"


class KamailioEntry:
    """A Kamailio process listening on one port per city (stopped with `stop`)."""

    def __init__(self, host: str, entries: Mapping[str, int], list_file: Path, work: Path) -> None:
        self.host = host
        self.entries = dict(entries)
        self.list_file = list_file
        self.work = work
        self.log_path = work / "kamailio.log"
        self._proc: asyncio.subprocess.Process | None = None

    def address(self, site_id: str) -> str:
        return f"{self.host}:{self.entries[site_id]}"

    def command(self) -> list[str]:
        binary = shutil.which("kamailio") or "/usr/sbin/kamailio"
        cmd = [binary, "-DD", "-E", "-f", str(CONFIG), "-Y", str(self.work / "run"), "-w", str(self.work)]
        for port in self.entries.values():
            cmd += ["-l", f"udp:{self.host}:{port}"]
        return [*cmd, "-A", f'DISPATCHER_LIST="{self.list_file}"']

    async def start(self) -> None:
        await asyncio.to_thread((self.work / "run").mkdir, parents=True, exist_ok=True)
        with self.log_path.open("ab") as out:
            self._proc = await asyncio.create_subprocess_exec(
                *self.command(), stdin=asyncio.subprocess.DEVNULL, stdout=out, stderr=out
            )
        # Ready when it logs that it listens (its children are forked by then).
        for _ in range(100):
            if self._proc.returncode is not None:
                raise RuntimeError(f"kamailio exited ({self._proc.returncode}); log: {self.log_path}")
            text = await asyncio.to_thread(self.log_path.read_text, errors="replace")
            if "main(): processes" in text:
                return
            await asyncio.sleep(0.1)
        raise RuntimeError(f"kamailio did not start; log: {self.log_path}")

    async def stop(self) -> None:
        proc = self._proc
        if proc is None or proc.returncode is not None:
            return
        proc.terminate()
        try:
            await asyncio.wait_for(proc.wait(), STOP_GRACE_S)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()
