"""Run central until SIGTERM or SIGINT (the `vcc central` command and `python -m central`)."""

from __future__ import annotations

import asyncio
import logging
import re
import signal
import sys

from central.app import DEFAULT_REPLICA_ID, CentralApp, central_tls, with_database_retry
from central.customers import MAX_DEMO_CUSTOMERS
from central.db.migrate import current_revision, upgrade
from central.servicedesk.settings import check_environment
from vcc import eventloop, logs, tls
from vcc.config import ConfigError, ProvinceConfig, load_province
from vcc.sdnotify import Notifier
from vcc.tracing import Tracing

log = logging.getLogger(__name__)

# Exit status for a config that cannot be used (as for a command-line usage error).
EXIT_BAD_CONFIG = 2
# Exit status when central cannot start (port taken, database unreachable...).
EXIT_CANNOT_START = 1


def run(
    config_path: str,
    seed_customers: int = 0,
    listen: str | None = None,
    replica_id: str = DEFAULT_REPLICA_ID,
    metrics_listen: str | None = None,
    log_format: str | None = None,
) -> None:
    """Serve the province described by the config file as one replica of its central; a bad config
    (or a replica other than the first without --listen) exits with status 2."""
    try:
        logs.configure("central", fmt=log_format)
    except ValueError as exc:
        print(f"central: --log-format: {exc}", file=sys.stderr)
        raise SystemExit(EXIT_BAD_CONFIG) from None
    logs.bind_context(replica=replica_id)
    # Alembic narrates every step at INFO; central.db.migrate logs the schema change once.
    logging.getLogger("alembic").setLevel(logging.WARNING)
    try:
        config = load_province(config_path)
        if not 0 <= seed_customers <= MAX_DEMO_CUSTOMERS:
            raise ConfigError(f"--seed-customers: 0 to {MAX_DEMO_CUSTOMERS}, not {seed_customers}")
        check_replica(config, listen, replica_id)
        if metrics_listen is not None and not re.fullmatch(r"[^\s:]+:[0-9]{1,5}|", metrics_listen):
            raise ConfigError(f"--metrics-listen: host:port, not {metrics_listen!r}")
        # The service desk's SMTP, SMS gateway and retry settings (central's environment).
        check_environment()
        eventloop.chosen()
        eventloop.gc_threshold()
        files = central_tls(config, replica_id)
        if files is not None:
            # Every link this replica dials (etcd, the leader's health) shows its certificate.
            tls.adopt(files)
    except (ConfigError, tls.TlsError, eventloop.EventLoopError) as exc:
        print(f"central: {exc}", file=sys.stderr)
        raise SystemExit(EXIT_BAD_CONFIG) from None
    eventloop.run(serve(config, seed_customers, listen, replica_id, metrics_listen))


def check_replica(config: ProvinceConfig, listen: str | None, replica_id: str) -> None:
    """`central.listen` belongs to the first replica; every other one needs its own --listen."""
    if not re.fullmatch(r"[A-Za-z0-9_-]{1,32}", replica_id):
        raise ConfigError(f"--replica-id: letters, digits, '-' or '_' (not {replica_id!r})")
    if listen is not None and not re.fullmatch(r"[^\s:]+:[0-9]{1,5}", listen):
        raise ConfigError(f"--listen: host:port, not {listen!r}")
    if replica_id != DEFAULT_REPLICA_ID and (listen is None or listen == config.central.listen):
        raise ConfigError(
            f"--listen: replica {replica_id} needs its own address "
            f"(central.listen {config.central.listen} is replica {DEFAULT_REPLICA_ID}'s)"
        )


async def serve(
    config: ProvinceConfig,
    seed_customers: int = 0,
    listen: str | None = None,
    replica_id: str = DEFAULT_REPLICA_ID,
    metrics_listen: str | None = None,
) -> None:
    log.info("event loop: %s", eventloop.in_use())
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stopping.set)
    tracing = Tracing(f"central:{replica_id}", config.tracing)
    app = CentralApp(
        config, seed_customers, listen, replica_id, metrics_listen=metrics_listen, tracing=tracing
    )
    # systemd (Type=notify): READY=1 once serving, the watchdog fed from this loop.
    notifier = Notifier.from_env()
    try:
        try:
            await app.start()
        except Exception as exc:
            log.error("central cannot start: %s", exc, exc_info=log.isEnabledFor(logging.DEBUG))
            raise SystemExit(EXIT_CANNOT_START) from None
        notifier.ready(f"replica {replica_id} serving on port {app.port}")
        await stopping.wait()
        log.info("stopping on signal")
    finally:
        await notifier.stopping()
        await app.stop()
        await notifier.close()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)


def migrate(config_path: str, log_format: str | None = None) -> str:
    """`vcc central migrate`: bring central's database to the newest schema, once, as its own step
    (before replicas that start with central.schema_mode: require). Returns the schema revision."""
    try:
        logs.configure("central-migrate", fmt=log_format)
        config = load_province(config_path)
    except (ConfigError, ValueError) as exc:
        print(f"central migrate: {exc}", file=sys.stderr)
        raise SystemExit(EXIT_BAD_CONFIG) from None
    logging.getLogger("alembic").setLevel(logging.WARNING)
    url = config.central.database_url

    async def run_once() -> str:
        await with_database_retry(url, lambda: upgrade(url))
        return await current_revision(url) or ""

    try:
        return asyncio.run(run_once())
    except Exception as exc:
        log.error("migration failed: %s", exc, exc_info=log.isEnabledFor(logging.DEBUG))
        raise SystemExit(EXIT_CANNOT_START) from None
