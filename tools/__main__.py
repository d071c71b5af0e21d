"""`python -m tools ...` is `vcc ...` (the cluster launcher starts its children this way)."""

from tools.cli import main

if __name__ == "__main__":
    main()
