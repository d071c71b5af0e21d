"""etcd's own authorization: each key writable only by the identity that owns it.

With client certificates, etcd takes a client's user name from its certificate's CN. A province
gets one user per identity, each with a role:

* `site-<id>`: read the province's keys; write its own membership key only;
* `central-<n>`: read the province's keys; write the central keys (the leader key, the election)
  and the IVR flows and catalog (`<prefix>/<province>/ivr/`);
* `tool-cli`: read the province's keys;
* any other certificate (desktop, trunk): no user, so nothing at all.

Then auth is enabled. This runs with the `root` certificate (`issue_root`: `vcc certs province`
makes it beside the CA), through `etcdctl` (aetcd has no user or role API): by `vcc cluster up`
for its own etcd, and by `vcc etcd roles --config F` for an operator's etcd cluster. Running it
again is harmless (what exists is kept, a new site or replica is added).
"""

from __future__ import annotations

import subprocess
from collections.abc import Sequence
from pathlib import Path

from tenacity import Retrying, retry_if_exception, stop_after_attempt, wait_exponential

from tools.province.etcd_server import etcd_binary
from vcc.ivr.keys import ivr_prefix
from vcc.membership import central_leader_key, site_key
from vcc.tls import TlsFiles


class EtcdRolesError(Exception):
    """etcdctl refused a step; the message names it."""


# What a slow etcd (a busy machine, a leader election) answers: the step is tried again, since
# every step is harmless to repeat.
_TRANSIENT = ("deadline exceeded", "request timed out", "unavailable", "timed out", "leader changed")
_ATTEMPTS = 4


def _transient(exc: BaseException) -> bool:
    return isinstance(exc, EtcdRolesError) and any(t in str(exc).lower() for t in _TRANSIENT)


def etcdctl() -> str:
    return str(Path(etcd_binary()).with_name("etcdctl"))


# etcdctl's answers for a step already done (a second run, a province that grew).
_ALREADY = ("already exists", "already enabled")


def _run(endpoint: str, root: TlsFiles, *args: str) -> None:
    cmd = [
        etcdctl(),
        f"--endpoints=https://{endpoint}",
        f"--cacert={root.ca}",
        f"--cert={root.cert}",
        f"--key={root.key}",
        "--dial-timeout=10s",
        "--command-timeout=15s",
        *args,
    ]
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=60, check=False)
    except subprocess.TimeoutExpired:
        raise EtcdRolesError(f"etcdctl {' '.join(args)}: timed out") from None
    if done.returncode != 0:
        said = f"{done.stderr} {done.stdout}".lower()
        if any(a in said for a in _ALREADY):
            return
        raise EtcdRolesError(f"etcdctl {' '.join(args)}: {done.stderr.strip() or done.stdout.strip()}")


def _prefix_end(prefix: str) -> str:
    """etcdctl's range end for "every key starting with prefix"."""
    return prefix[:-1] + chr(ord(prefix[-1]) + 1)


def enable_roles(
    endpoint: str,
    root: TlsFiles,
    *,
    prefix: str,
    province_id: str,
    site_ids: Sequence[str],
    central_replicas: int,
) -> None:
    for path in (root.ca, root.cert, root.key):
        if not path.is_file():
            raise EtcdRolesError(f"no {path}: etcd's root certificate (`vcc certs province` makes it)")
    province = f"{prefix.rstrip('/')}/{province_id}/"
    central = central_leader_key(prefix, province_id).rsplit("/", 1)[0] + "/"
    ivr = ivr_prefix(prefix, province_id)
    # etcdctl's `auth enable` would add the root role itself, but as a step of its own (one
    # command timeout); done here, each part is one short, repeatable step.
    steps: list[tuple[str, ...]] = [
        ("user", "add", "root", "--no-password"),
        ("role", "add", "root"),
        ("user", "grant-role", "root", "root"),
        ("role", "add", "reader"),
    ]
    steps.append(("role", "grant-permission", "reader", "read", province, _prefix_end(province)))
    for site_id in site_ids:
        role = f"site-{site_id}"
        steps += [
            ("role", "add", role),
            ("role", "grant-permission", role, "readwrite", site_key(prefix, province_id, site_id)),
            ("user", "add", role, "--no-password"),
            ("user", "grant-role", role, role),
            ("user", "grant-role", role, "reader"),
        ]
    steps += [
        ("role", "add", "central"),
        ("role", "grant-permission", "central", "readwrite", central, _prefix_end(central)),
        # The IVR flows and the service catalog central hands to every site.
        ("role", "grant-permission", "central", "readwrite", ivr, _prefix_end(ivr)),
    ]
    for n in range(1, central_replicas + 1):
        steps += [
            ("user", "add", f"central-{n}", "--no-password"),
            ("user", "grant-role", f"central-{n}", "central"),
            ("user", "grant-role", f"central-{n}", "reader"),
        ]
    steps += [("user", "add", "tool-cli", "--no-password"), ("user", "grant-role", "tool-cli", "reader")]
    steps.append(("auth", "enable"))
    for step in steps:
        for attempt in Retrying(
            stop=stop_after_attempt(_ATTEMPTS),
            wait=wait_exponential(multiplier=0.5, max=4),
            retry=retry_if_exception(_transient),
            reraise=True,
        ):
            with attempt:
                _run(endpoint, root, *step)
