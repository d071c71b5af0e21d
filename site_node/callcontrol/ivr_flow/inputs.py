"""What one key means: in a menu (an option, the agent, back, repeat) and in a digit collection."""

from __future__ import annotations

from dataclasses import dataclass

from vcc.ivr.flow import CollectNode, MenuNode, MenuOption

DIGITS = frozenset("0123456789")


@dataclass(frozen=True)
class Choose:
    """Go to `target` (an option, or the agent on 0)."""

    target: str
    effect: str


@dataclass(frozen=True)
class SayAgain:
    effect: str


@dataclass(frozen=True)
class Wrong:
    effect: str = "invalid"


MenuKey = Choose | SayAgain | Wrong


def menu_key(node: MenuNode, offered: list[MenuOption], menus: list[str], key: str) -> MenuKey:
    """`offered`: the options this caller hears, keyed 1.. in order; `menus`: the way here."""
    if key == "#":
        return SayAgain("repeat")
    if key == "*":
        if len(menus) >= 2:
            return Choose(menus[-2], f"back -> {menus[-2]}")
        return SayAgain("repeat (top menu)")
    if key == "0" and node.agent is not None:
        return Choose(node.agent, f"agent -> {node.agent}")
    if key in DIGITS and 1 <= int(key) <= len(offered):
        return Choose(offered[int(key) - 1].next, f"option {key} -> {offered[int(key) - 1].next}")
    return Wrong()


@dataclass(frozen=True)
class Typed:
    """One more digit; wait for the next."""

    effect: str


@dataclass(frozen=True)
class Entered:
    value: str
    effect: str


EntryKey = Typed | Entered | Wrong


def entry_key(node: CollectNode, collected: str, key: str) -> EntryKey:
    """A key in a collection that holds `collected` so far."""
    if key == node.terminator:
        if node.min_length <= len(collected):
            return Entered(collected, "end of entry")
        return Wrong("too short")
    if key not in DIGITS:
        return Wrong()
    collected += key
    if len(collected) >= node.max_length:
        return Entered(collected, f"digit {len(collected)}/{node.max_length}")
    return Typed(f"digit {len(collected)}/{node.max_length}")
