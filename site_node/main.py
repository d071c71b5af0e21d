"""`vcc site --config F --site ID`: run one city's site node until SIGTERM or SIGINT.

Under systemd (Type=notify) it says READY=1 once it serves, feeds the watchdog from its event
loop, and says STOPPING=1 when a signal starts the graceful stop.
"""

from __future__ import annotations

import asyncio
import logging
import signal

from site_node.app import SiteNode, site_tls
from site_node.links import customers
from site_node.records.shipper import linger_from_env, raw_from_env
from site_node.step_observers import after_step_chosen
from vcc import eventloop, logs, tls
from vcc.config import ConfigError, load_province
from vcc.sdnotify import Notifier
from vcc.tracing import Tracing

log = logging.getLogger(__name__)

# Exit status when the site cannot start (its port taken, its outbox folder unwritable...).
EXIT_CANNOT_START = 1


async def serve(config_path: str, site_id: str, metrics_listen: str | None = None) -> None:
    log.info("event loop: %s", eventloop.in_use())
    province = load_province(config_path)
    files = site_tls(province, site_id)
    if files is not None:
        # Every link this process dials (central, peers, etcd) shows the site's certificate.
        tls.adopt(files)
    tracing = Tracing(f"site:{site_id}", province.tracing)
    node = SiteNode(province, site_id, files, metrics_listen=metrics_listen, tracing=tracing)
    notifier = Notifier.from_env()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        try:
            await node.start()
        except Exception as exc:
            # A port taken, a folder it cannot write...: one readable line, the parts it had
            # started stopped (finally), and the exit status says it (as central's does).
            log.error("site %s cannot start: %s", site_id, exc, exc_info=log.isEnabledFor(logging.DEBUG))
            raise SystemExit(EXIT_CANNOT_START) from None
        notifier.ready(f"serving on {node.address}")
        await stop.wait()
        log.info("stopping on signal")
    finally:
        await notifier.stopping()
        await node.stop()
        await notifier.close()


def run(
    config_path: str, site_id: str, metrics_listen: str | None = None, log_format: str | None = None
) -> None:
    """Raises vcc.config.ConfigError for a bad config or certificate (the CLI prints it, exits 2)."""
    province = load_province(config_path)
    province.site(site_id)
    try:
        site_tls(province, site_id)
    except tls.TlsError as exc:
        raise ConfigError(f"tls: {exc}") from None
    try:
        logs.configure(f"site:{site_id}", fmt=log_format)
    except ValueError as exc:
        raise ConfigError(f"--log-format: {exc}") from None
    logs.bind_context(site=site_id)
    try:
        eventloop.chosen()
        eventloop.gc_threshold()
        linger_from_env()
        raw_from_env()
        customers.batched_from_env()
        customers.linger_from_env()
        after_step_chosen()
    except ValueError as exc:  # EventLoopError is one
        raise ConfigError(str(exc)) from None
    eventloop.run(serve(config_path, site_id, metrics_listen))
