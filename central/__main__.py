"""python -m central --config PROVINCE.yaml [--listen ADDR] [--replica-id ID] [--seed-customers N]"""

from __future__ import annotations

import argparse

from central.app import DEFAULT_REPLICA_ID
from central.main import run


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m central", description="The provincial central service of vcc."
    )
    parser.add_argument("--config", required=True, help="the province config (YAML)")
    parser.add_argument("--seed-customers", type=int, default=0, metavar="N", help="create N demo customers")
    parser.add_argument(
        "--listen", default=None, metavar="ADDR", help="host:port of this replica (default: central.listen)"
    )
    parser.add_argument(
        "--replica-id", default=DEFAULT_REPLICA_ID, metavar="ID", help="this replica's id (default: 1)"
    )
    args = parser.parse_args(argv)
    run(args.config, args.seed_customers, args.listen, args.replica_id)


if __name__ == "__main__":
    main()
