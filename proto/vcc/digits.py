"""ASCII digits: what a number sent, dialled or typed into vcc is made of.

`str.isdigit()`, `int()` and the regex `\\d` also take full-width digits (U+FF10 to U+FF19, what a
Chinese input method types) and other scripts' digits and superscripts: a number so written
would be stored or compared as text no phone or peer ever sends, or read as another number.
Where vcc parses a number, only 0-9 are digits; anything else is refused with a clear error.
"""

from __future__ import annotations


def is_digits(text: str) -> bool:
    """At least one character, every one of them an ASCII digit 0-9."""
    return text.isascii() and text.isdigit()
