"""The arguments of a served request, checked one way for every transport: each parser returns the value the
service uses or raises `QueryError` with a message for the user that never repeats a long value whole (`shorten`),
names no exception class and no server path (`user_message`)."""

from __future__ import annotations

import math
import numbers
import re

from modeling.retrieval.common.types import QueryError
from modeling.retrieval.understanding.parser import INTENT_ATTRIBUTES, NOT

MAX_K = 50
MAX_ID_CHARS = 64
_ABSOLUTE_PATH = re.compile(r"(?<![\w.])/(?:[^\s'\"/]+/)+([^\s'\"/]+)")


def shorten(value, limit: int = 40) -> str:
    """A value as messages quote it: its repr, cut to `limit` characters with its full length said."""
    text = repr(value)
    if len(text) <= limit:
        return text
    size = f" ({len(value):,} characters)" if isinstance(value, str) else ""
    return f"{text[:limit]}…{size}"


def user_message(error: BaseException) -> str:
    """The message of a refused request as users see it: absolute paths cut to the file's name."""
    return _ABSOLUTE_PATH.sub(r"\1", str(error))


def parse_k(value, max_k: int = MAX_K) -> int:
    """The number of results: a whole number in [1, max_k] (an int, an integral float such as a slider's 10.0, or
    its decimal string). Anything else is refused, not clamped: 0, 3.7 or 10**9 are mistakes worth reporting."""
    number = None
    integral = isinstance(value, numbers.Integral) or (
        isinstance(value, numbers.Real) and math.isfinite(value) and float(value).is_integer())
    # ASCII digits only: int() would also read full-width or Arabic-Indic digits ("１０"), which no client means.
    if (integral and not isinstance(value, bool)) or (isinstance(value, str) and re.fullmatch(r"\s*[0-9]{1,6}\s*",
                                                                                             value)):
        number = int(value)
    if number is None or not 1 <= number <= max_k:
        raise QueryError(f"The number of results (k) must be a whole number from 1 to {max_k}; got "
                         f"{shorten(value)}.")
    return number


def parse_weight(value, what: str = "weight") -> float:
    """A weight in [0, 1]: a finite number or its decimal string."""
    number = None
    if isinstance(value, numbers.Real) and not isinstance(value, bool):
        number = float(value)
    elif isinstance(value, str) and len(value) <= 32 and value.isascii():  # "０.５" is refused, as "１０" for k
        try:
            number = float(value)
        except ValueError:
            number = None
    if number is None or not math.isfinite(number) or not 0.0 <= number <= 1.0:
        raise QueryError(f"The {what} must be a number from 0 to 1; got {shorten(value)}.")
    return number


def parse_item_id(value) -> str:
    """A catalog item id as a string of at most MAX_ID_CHARS characters (ints are accepted, ids compare as text)."""
    if isinstance(value, numbers.Integral) and not isinstance(value, bool):
        value = str(value)
    if not isinstance(value, str) or not value.strip():
        raise QueryError(f"Give the id of a catalog item (a text such as '15970'); got {shorten(value)}.")
    if len(value) > MAX_ID_CHARS:
        raise QueryError(f"The item id is {len(value):,} characters long; catalog ids have at most {MAX_ID_CHARS}.")
    return value.strip()


def parse_ignore(value) -> list[str]:
    """Chip keys to switch off: a list (or comma-separated text) of intent attributes, each optionally "not:"-
    prefixed (a negation only); empty or None for none."""
    if value is None or value == "":
        return []
    keys = [v.strip() for v in value.split(",")] if isinstance(value, str) else value
    if not isinstance(keys, (list, tuple)) or len(keys) > 2 * len(INTENT_ATTRIBUTES):
        raise QueryError(f"'ignore' takes a list of chip keys (e.g. ['gender', 'not:baseColour']); "
                         f"got {shorten(value)}.")
    known = {*INTENT_ATTRIBUTES, *(NOT + a for a in INTENT_ATTRIBUTES)}
    for key in keys:
        if key not in known:
            raise QueryError(f"Unknown chip key {shorten(key)}; use one of {', '.join(sorted(known))}.")
    return list(dict.fromkeys(keys))


__all__ = ["MAX_ID_CHARS", "MAX_K", "parse_ignore", "parse_item_id", "parse_k", "parse_weight", "shorten",
           "user_message"]
