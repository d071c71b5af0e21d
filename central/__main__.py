"""python -m central --config PROVINCE.yaml [--seed-customers N]"""

from __future__ import annotations

import argparse

from central.main import run


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m central", description="The provincial central service of vcc."
    )
    parser.add_argument("--config", required=True, help="the province config (YAML)")
    parser.add_argument("--seed-customers", type=int, default=0, metavar="N", help="create N demo customers")
    args = parser.parse_args(argv)
    run(args.config, args.seed_customers)


if __name__ == "__main__":
    main()
