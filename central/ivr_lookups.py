"""Answers to the flows' data look-ups (vcc.ivr.lookups) from central's tables.

Only what central keeps is answered; a look-up without a source here is refused with
`lookup-not-available`, and the flow takes its on_timeout path as for any failed answer.
"""

from __future__ import annotations

from collections.abc import Mapping

from central.customer_pins import CustomerPins
from central.store import Store
from vcc.errors import FailedPrecondition, InvalidArgument
from vcc.ivr.lookups import LOOKUPS

MAX_ARG_CHARS = 64


class Lookups:
    def __init__(self, store: Store, pins: CustomerPins | None = None) -> None:
        self._store = store
        self._pins = pins

    async def answer(self, name: str, args: Mapping[str, str], *, asker: str = "") -> dict[str, str] | None:
        """The fields found (None: nothing on record)."""
        spec = LOOKUPS.get(name)
        if spec is None:
            raise InvalidArgument(
                "unknown-lookup", f"name: no look-up {name!r} (known: {', '.join(sorted(LOOKUPS))})"
            )
        missing = [a for a in spec.args if not args.get(a)]
        extra = [a for a in args if a not in spec.args]
        if missing or extra or any(len(v) > MAX_ARG_CHARS for v in args.values()):
            raise InvalidArgument(
                "bad-lookup-args",
                f"args: {name} takes {', '.join(spec.args)} (each at most {MAX_ARG_CHARS} chars)",
            )
        if name == "customer":
            customer = await self._store.lookup_customer(args["phone"])
            if customer is None:
                return None
            return {"level": customer.level, "name": customer.name, "city": customer.city}
        if name == "verify_pin" and self._pins is not None:
            # Only verified, not verified or locked comes back; the digits go no further than the hash.
            checked = await self._pins.verify(args["card"], args["pin"], actor=asker or "ivr")
            return {"verified": checked.value}
        raise FailedPrecondition("lookup-not-available", f"central has no source for {name!r} yet")
