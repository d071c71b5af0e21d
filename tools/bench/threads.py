"""Where a process's CPU goes by thread: the event loop, the outbox's SQLite thread, gRPC's C-core
threads, the span exporter. py-spy's profiles sample only the thread holding the GIL, so CPU spent
without it (TLS and HTTP/2 in gRPC's threads, SQLite's fsync) is counted here instead.

A thread's name is its Python name where it has one (from `py-spy dump`, which prints each
thread's OS id beside it), else the kernel's (`/proc/PID/task/TID/comm`, as gRPC names its own).
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import shutil
import sys
from collections.abc import Mapping
from pathlib import Path

import psutil

# `Thread 18874 (idle): "outbox_0"` (py-spy 0.3 and later print the OS thread id in decimal).
_DUMP_THREAD = re.compile(r'^Thread (\d+) \([^)]*\): "(.*)"\s*$')
# "outbox_0", "ThreadPoolExecutor-0_1", "grpc_global_tim": one name for a pool's threads.
_POOL_SUFFIX = re.compile(r"[-_]?\d+(_\d+)?$")


def names_from_dump(dump: str) -> dict[int, str]:
    """OS thread id -> Python thread name, from `py-spy dump` output."""
    found: dict[int, str] = {}
    for line in dump.splitlines():
        m = _DUMP_THREAD.match(line.strip())
        if m:
            found[int(m.group(1))] = m.group(2)
    return found


def pool_name(name: str) -> str:
    """A thread's name without its number in a pool ("outbox_0" -> "outbox")."""
    return _POOL_SUFFIX.sub("", name) or name


def thread_cpu_s(proc: psutil.Process) -> dict[int, float]:
    """CPU seconds (user + system) of each live thread of `proc`, by OS thread id."""
    with contextlib.suppress(psutil.Error):
        return {t.id: t.user_time + t.system_time for t in proc.threads()}
    return {}


async def thread_names(pid: int) -> dict[int, str]:
    """Each thread's name: Python's where py-spy can tell it, else the kernel's."""
    names = await asyncio.to_thread(_kernel_names, pid)
    exe = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    with contextlib.suppress(OSError):
        child = await asyncio.create_subprocess_exec(
            exe,
            "dump",
            "--pid",
            str(pid),
            "--nonblocking",
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.DEVNULL,
        )
        try:
            out, _ = await asyncio.wait_for(child.communicate(), 20.0)
            names.update(names_from_dump(out.decode(errors="replace")))
        except TimeoutError:
            child.kill()
            await child.wait()
    return names


def _kernel_names(pid: int) -> dict[int, str]:
    names: dict[int, str] = {}
    with contextlib.suppress(OSError):
        for tid_dir in Path(f"/proc/{pid}/task").iterdir():
            with contextlib.suppress(OSError, ValueError):
                names[int(tid_dir.name)] = (tid_dir / "comm").read_text().strip()
    return names


def thread_cpu_ms_per_call(
    before: Mapping[int, float], after: Mapping[int, float], names: Mapping[int, str], calls: int
) -> dict[str, float]:
    """CPU milliseconds per call of each named thread (a pool's threads summed) over a step,
    largest first; a thread started during the step counts from zero."""
    per: dict[str, float] = {}
    for tid, spent in after.items():
        name = pool_name(names.get(tid, "?"))
        per[name] = per.get(name, 0.0) + (spent - before.get(tid, 0.0)) * 1000.0 / max(1, calls)
    return {k: round(v, 3) for k, v in sorted(per.items(), key=lambda kv: -kv[1]) if v > 0}
