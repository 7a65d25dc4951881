"""Hostile inputs, and what the server owes them: one corpus and one oracle for the tests
(test_backlog_mcp.py) and the chaos fuzzer (benchmarks/fuzz.py).

  * The corpus: groups of hostile values (lone surrogates, emoji, look-alikes, odd digits,
    injections, odd numbers, wrong types). The fuzzer draws a group, then one of its values;
    the tests try every value (HOSTILE) as every argument of every tool.
  * The oracle: `owed(line)`, what one line a client sends deserves from the server (nothing,
    one refusal with id null, one reply with its id, or the replies of a batch), and whether
    the line holds what a strict server may refuse as a whole.
  * `strict_json`: a line of the server's stdout as RFC 8259 reads it.

Stdlib only: benchmarks/fuzz.py runs as a script and imports this module from tests/.
"""

import json
import re
from typing import NamedTuple


class Raw:
    """JSON text put into a line as it is (NaN, 1e400, deep nesting, raw bytes)."""

    def __init__(self, data):
        self.data = data if isinstance(data, bytes) else data.encode("utf-8", "surrogatepass")

    def __repr__(self):
        return f"Raw({self.data[:40]!r}{'...' if len(self.data) > 40 else ''})"


# == The corpus ================================================================

BIG_INT = 10 ** 5000
LONE = ["\ud800", "\udfff", "a\udc80b", "DEMO-\ud800", "\ud83d", "\ud83dx"]
EMOJI = ["\U0001f600", "DEMO-\U0001f600", "\U0001f469\u200d\U0001f469\u200d\U0001f467" * 20,
         "\U0001d54f\U0001d54f"]
COMBINING = ["e\u0301" * 20, "D\u0301EMO", "\u0338" * 300, "DEMO\u200b", "\u202edemo",
             "ＤＥＭＯ-１"]
DIGITS = ["²", "¹²³", "٣", "１２３", "DEMO-²", "DEMO-١", "٢٠٢٤-٠١-٠١", "２０２４-０１-０１",
          "2024-02-30", "9999-99-99", "2024-1-1", "1e400", "NaN", "-0", "0x10", " 1 ", "1_000",
          "9" * 5000, "DEMO-" + "9" * 5000]
INJECT = ["../", "..", "%2e%2e", "a/b", "x\r\nX-Injected: 1", "\x00", "%00", "?apiKey=x",
          "&apiKey=evil", "#frag", "DEMO-1/../../users", "", " ", "\t"]
NUMBERS = [BIG_INT, -BIG_INT, Raw("1e400"), Raw("-1e400"), Raw("NaN"), Raw("Infinity"),
           Raw("-Infinity"), 1e308, -0.0, 2 ** 63, 2 ** 64, -1, 1.5, 0, Raw("1E+2"), Raw("-0")]
WRONG = [True, False, None, {}, [], [None], {"a": [1]}, [[]], 1.5, "x"]
# The fuzzer draws one of these groups, then one of its values: a seed gives the same lines
# only while the order stays.
GROUPS = [LONE, EMOJI, COMBINING, DIGITS, INJECT, NUMBERS, WRONG]
# Path segments and queries that must never reach Backlog as such, a long value, and numbers
# and objects of the wrong kind.
PATHS = [".", "%2F", "../../users/myself", "DEMO-1?x=1", "A" * 5000]
SHAPES = [-1e308, 3.5, ["../"], {"$ne": 1}]
# Argument names that look like a tool's own, or are none.
ODD_KEYS = ["extra", "__proto__", "\ud800", "", "issue_іd_or_key", "ｉｓｓｕｅ", "x" * 10000]


def unique(values):
    """The values once each, in order; 1, 1.0 and True are three values here."""
    seen, out = set(), []
    for value in values:
        key = (type(value).__name__, value if type(value) is int else repr(value))
        if key not in seen:
            seen.add(key)
            out.append(value)
    return out


# Every hostile value a call's arguments can carry as such: a Raw is JSON text that only a
# line can carry (the fuzzer's lines carry them; the tests send NaN and 1e400 in lines too).
HOSTILE = unique(PATHS + INJECT + SHAPES + [value for group in GROUPS for value in group
                                            if not isinstance(value, Raw)])


# == The oracle ================================================================

SURROGATE = re.compile("[\ud800-\udfff]")
STRINGS = re.compile(r'"(?:[^"\\]|\\.)*"')
BRACKETS = re.compile(r"[\[\]{}]")
MAX_DIGITS = 4300  # CPython's int() refuses longer numbers by default (3.11, and fixes before)


def refuse(constant):
    raise ValueError(f"{constant} is not RFC 8259 JSON")


def limited_int(text):
    if len(text.lstrip("-")) > MAX_DIGITS:
        raise ValueError("too many digits")
    return int(text)


def strict_json(line):
    """One line of stdout as RFC 8259 reads it: no NaN, no Infinity, UTF-8 only."""
    return json.loads(line.decode("utf-8") if isinstance(line, bytes) else line,
                      parse_constant=refuse)


def walk(value, budget=200000):
    """Every str (keys too) in a decoded JSON value, iteratively; bounded."""
    stack = [value]
    while stack and budget > 0:
        budget -= 1
        item = stack.pop()
        if isinstance(item, str):
            yield item
        elif isinstance(item, list):
            stack.extend(item)
        elif isinstance(item, dict):
            for k, v in item.items():
                yield k
                stack.append(v)


def has_nonfinite(value, budget=200000):
    stack = [value]
    while stack and budget > 0:
        budget -= 1
        item = stack.pop()
        if isinstance(item, float) and (item != item or item in (float("inf"), float("-inf"))):
            return True
        if isinstance(item, list):
            stack.extend(item)
        elif isinstance(item, dict):
            stack.extend(item.values())
    return False


def depth_of(text):
    depth = top = 0
    for b in BRACKETS.findall(STRINGS.sub("", text)):
        depth += 1 if b in "[{" else -1
        top = max(top, depth)
    return top


class Owed(NamedTuple):
    """What one client line deserves.

    kind: "nothing" (a blank line, a notification, a response: no reply), "refusal" (one
    error reply with id null, -32700 or -32600), "reply" (one reply carrying the request's
    id) or "batch" (a JSON array: where 2025-03-26 was negotiated, one line holding the
    replies its items deserve, or none if they deserve none; else one refusal, as for an
    empty batch).
    ids: [(id, method)] of the requests in the line that have a usable id (a string or an
    integer); for a refused line, as a lenient reader (NaN, Infinity, any number) finds them.
    strict: False when the line holds what a strict server may refuse as a whole (a lone
    surrogate, NaN or Infinity, a number too long or too large, nesting past 500, a batch).
    items: of a batch, what each item deserves (a batch in a batch: a refusal).
    """
    kind: str
    ids: list
    strict: bool
    items: tuple = ()


def requests_in(message):
    """(id, method) of each request of a message or batch that has a usable id."""
    found = []
    for m in message if isinstance(message, list) else [message]:
        if not isinstance(m, dict) or "id" not in m:
            continue
        id_ = m["id"]
        if not (isinstance(id_, str) or (isinstance(id_, int) and not isinstance(id_, bool))):
            continue
        if "method" not in m and ("result" in m or "error" in m):
            continue  # a response (to a question of the server's)
        found.append((id_, m.get("method")))
    return found


def owed(line):
    """What the server owes one line a client sent (bytes, without its newline): an Owed.

    The server reads a line as strict JSON (RFC 8259: NaN and Infinity refused, numbers of at
    most 4,300 digits) in UTF-8, raw control characters in strings allowed; a line it cannot
    read, or that is not a request object with a string or integer id, or a notification, or a
    response, gets one error with id null."""
    if not line.strip():  # ASCII white space only: "\u3000" is a line the server refuses
        return Owed("nothing", [], True)
    try:
        text = line.decode("utf-8")
    except UnicodeDecodeError:
        return Owed("refusal", [], True)
    try:
        message = json.loads(text, strict=False, parse_constant=refuse, parse_int=limited_int)
    except RecursionError:
        return Owed("refusal", [], True)
    except ValueError:
        try:
            lenient = json.loads(text, strict=False)
        except (ValueError, RecursionError):
            return Owed("refusal", [], True)
        return Owed("refusal", requests_in(lenient), False)
    strict = not (isinstance(message, list) or has_nonfinite(message)
                  or any(SURROGATE.search(s) for s in walk(message))
                  or depth_of(text) > 500)  # a server's parser may stop at its recursion limit
    if isinstance(message, list):
        return Owed("batch", requests_in(message), strict, tuple(
            Owed("refusal", [], strict) if isinstance(item, list) else owed_message(item, strict)
            for item in message))
    return owed_message(message, strict)


def owed_message(message, strict=True):
    """What one decoded message (not a batch) deserves: an Owed."""
    ids = requests_in(message)
    if not isinstance(message, dict):
        return Owed("refusal", [], strict)
    if "method" not in message and {"result", "error"} & set(message):
        return Owed("nothing", [], strict)  # a response, whatever its id, is never answered
    if "id" not in message:
        return Owed("nothing" if "method" in message else "refusal", [], strict)
    return Owed("reply", ids, strict) if ids else Owed("refusal", [], strict)
