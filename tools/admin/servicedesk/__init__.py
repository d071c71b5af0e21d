"""`vcc customers|tickets|kb|history ...`: the service desk at central from the command line.

Every command talks gRPC to central (`--central HOST:PORT`, or `--config F` for central.listen),
prints a table, or the reply as JSON with `--json`. A refused request prints its message and
error id and exits 1. `vcc bench servicedesk` is in tools/bench/servicedesk.py.
"""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    """Add the service desk's commands to `vcc` (tools/cli.py calls this once)."""
    from tools.admin.servicedesk.customers import customers_app
    from tools.admin.servicedesk.history import history
    from tools.admin.servicedesk.kb import kb_app
    from tools.admin.servicedesk.tickets import tickets_app

    app.add_typer(customers_app, name="customers")
    app.add_typer(tickets_app, name="tickets")
    app.add_typer(kb_app, name="kb")
    app.command("history")(history)
