"""`vcc site --config F --site ID`: run one city's site node until SIGTERM or SIGINT."""

from __future__ import annotations

import asyncio
import logging
import signal

from site_node.app import SiteNode, site_tls
from vcc import logs, tls
from vcc.config import ConfigError, load_province

log = logging.getLogger(__name__)


async def serve(config_path: str, site_id: str) -> None:
    province = load_province(config_path)
    files = site_tls(province, site_id)
    if files is not None:
        # Every link this process dials (central, peers, etcd) shows the site's certificate.
        tls.adopt(files)
    node = SiteNode(province, site_id, files)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await node.start()
    try:
        await stop.wait()
    finally:
        await node.stop()


def run(config_path: str, site_id: str) -> None:
    """Raises vcc.config.ConfigError for a bad config or certificate (the CLI prints it, exits 2)."""
    province = load_province(config_path)
    province.site(site_id)
    try:
        site_tls(province, site_id)
    except tls.TlsError as exc:
        raise ConfigError(f"tls: {exc}") from None
    logs.configure(f"site:{site_id}")
    asyncio.run(serve(config_path, site_id))
