#!/usr/bin/env python3
"""Chaos fuzzer of the spawned server: hostile client lines in, a misbehaving Backlog behind it.

    python3 benchmarks/fuzz.py [--server "python3 -I backlog_mcp.pyz"] [--seconds 600] [--seed 1]

Stdlib only. In this process run
  * a chaos stand-in: tests/fake_backlog.FakeBacklog answering about half of the requests
    normally and the rest with odd statuses (1xx before the answer, 2xx, 3xx to itself, to an
    "other host" or to garbage, 4xx, 5xx), odd headers (content types, gzip / deflate / a gzip
    bomb, wrong Content-Length, odd Content-Disposition) and odd bodies (lone surrogates,
    invalid UTF-8, NaN / Infinity / 1e400, nesting 900 and 5,000 deep, wrong shapes and types,
    truncated, empty, over 64 KiB), resets, hangs and, in runs of 50 s or more, once per
    300 s (at least once), a 40 s trickle of `100 Continue` lines or of header bytes;
  * "other host" listeners on 127.0.0.1 and 127.0.0.2: any connection to them is a crossing.
The server (its command split with shlex, run from the repository root) gets a stream of lines
drawn with a seeded RNG: tools/call of the tools its own tools/list gives, with arguments made
from each inputSchema (plausible values, hostile strings and numbers, wrong types, unknown
keys), protocol junk, batches, notifications and pings. Each step of lines ends with a ping, the
barrier: a request with a usable id must get exactly one reply with that id, and a step whose
output stops for 30 s loses its replies (a server that does not answer the barrier either is
restarted).

Checked on every stdout line: UTF-8, strict JSON (no NaN / Infinity), no lone surrogate but
the echo of the client's own, an
object with jsonrpc "2.0" and an id, one of result / error; no error -32603. Also: no
"Traceback" on stderr, the API key (and its percent-encoded form, its first and last 16
characters) never in stdout or stderr, the server alive to the end (then stdin closed: exit
status 0 within 10 s), no crossing, and every request at the stand-in carrying exactly the
configured key (requests carrying no key are only counted, under "keyless", on stderr).
A dead server is counted, restarted and initialized again.

One summary line on stdout; the first offenders of each kind on stderr (key shown as ***).
Exit status 1 when any count but "lines sent" and "replies checked" is non-zero.
"""

import argparse
import gzip
import json
import os
import queue
import random
import re
import shlex
import shutil
import string
import subprocess
import sys
import tempfile
import threading
import time
import zlib
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qsl, quote, unquote, urlsplit

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if hasattr(sys, "set_int_max_str_digits"):
    sys.set_int_max_str_digits(0)  # this process writes and reads 5,000-digit numbers
sys.setrecursionlimit(max(sys.getrecursionlimit(), 12000))  # reads replies nested 5,000 deep
sys.path.insert(0, os.path.join(ROOT, "tests"))

import fake_backlog as fb  # noqa: E402
# The hostile values and the oracle of what a line deserves, shared with the tests.
from hostile import (  # noqa: E402
    BIG_INT, EMOJI, GROUPS, LONE, ODD_KEYS, SURROGATE, Raw, owed, walk,
)

PROTOCOL = "2025-06-18"
REPLY_SILENCE = 30.0   # seconds without any stdout line after which the awaited replies are lost
EXIT_WAIT = 10.0       # seconds for the server to exit once stdin is closed


# == Client lines ==============================================================

def enc(value, ascii_only=True):
    """A value as JSON bytes; a str with a lone surrogate is written as an escape, or with
    ascii_only=False as raw (invalid) UTF-8 bytes."""
    if isinstance(value, Raw):
        return value.data
    if value is None:
        return b"null"
    if value is True:
        return b"true"
    if value is False:
        return b"false"
    if isinstance(value, int):
        return str(value).encode()
    if isinstance(value, float):
        if value != value:
            return b"NaN"
        if value in (float("inf"), float("-inf")):
            return b"1e400" if value > 0 else b"-1e400"
        return repr(value).encode()
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=ascii_only).encode("utf-8", "surrogatepass")
    if isinstance(value, (list, tuple)):
        return b"[" + b",".join(enc(v, ascii_only) for v in value) + b"]"
    if isinstance(value, dict):
        return b"{" + b",".join(enc(str(k), ascii_only) + b":" + enc(v, ascii_only)
                                for k, v in value.items()) + b"}"
    raise TypeError(type(value))


def nested(depth, leaf=1, kind="list"):
    value = leaf
    for _ in range(depth):
        value = [value] if kind == "list" else {"a": value}
    return value


def deep_raw(depth):
    return Raw(b"[" * depth + b"]" * depth)


def hostile_scalar(rng):
    group = rng.choice(GROUPS)
    value = rng.choice(group)
    if rng.random() < 0.08:
        value = rng.choice([nested(50), nested(50, kind="dict"), "x" * 100000,
                            "\U0001f600" * 20000, "é" * 50000])
    return value


class Client:
    """Draws the lines sent to the server."""

    def __init__(self, rng, tools, upload_dir, upload_file):
        self.rng = rng
        self.tools = tools  # name -> inputSchema
        self.names = sorted(tools)
        self.upload_dir, self.upload_file = upload_dir, upload_file
        self.next_id = 0
        self.host = "127.0.0.1"

    def new_id(self):
        self.next_id += 1
        n = self.next_id
        r = self.rng.random()
        if r < 0.6:
            return n
        if r < 0.75:
            return f"s{n}"
        if r < 0.85:
            return f"é-{n}-\U0001f600"
        if r < 0.92:
            return -n
        return 2 ** 53 + n

    # -- values ------------------------------------------------------------------------------

    def plausible(self, name, schema):
        rng = self.rng
        if schema.get("enum"):
            return rng.choice(schema["enum"])
        kind = schema.get("type")
        if kind == "array":
            item = schema.get("items") or {"type": "string"}
            return [self.plausible(name.rstrip("s"), item) for _ in range(rng.randint(1, 3))]
        if kind == "integer":
            if name.startswith("count"):
                return rng.choice([1, 5, 20, 100])
            return rng.choice([1, 1, 42, 0, 101, 913, 4001])
        if kind == "number":
            return rng.choice([1.5, 2, 0.25])
        if kind == "boolean":
            return rng.random() < 0.5
        if kind == "object":
            return rng.choice([{"Severity": "High"}, {}, {"Customer ref": "X-1"},
                               {"4001": "abc"}])
        if "project" in name:
            return rng.choice(["DEMO", "DEMO", "101", "OTHER"])
        if "issue" in name:
            return rng.choice(["DEMO-42", "DEMO-1", "913", "OTHER-1"])
        if name.startswith("repo"):
            return rng.choice(["app", "1", "secret"])
        if name in ("document_id", "parent_id"):
            return rng.choice(["01939983409c79d5a06a49859789e38f", "f" * 32])
        if name == "file_path":
            return rng.choice([self.upload_file, self.upload_file, "note.txt",
                               os.path.join(self.upload_dir, "missing.txt")])
        if "date" in name or name.endswith(("_since", "_until")) or name in ("since", "until"):
            return rng.choice(["2024-01-01", "2025-12-31"])
        if name == "path":
            return rng.choice(["/", "/docs", "docs/a"])
        if name in ("base", "branch"):
            return "main"
        if name == "key":
            return rng.choice(["NEWPROJ", "DEMO"])
        return rng.choice(["hello", "テスト", "a b", "DEMO", "line\nbreak", "Bug"])

    def hostile(self, name, schema):
        rng = self.rng
        if name == "file_path" and rng.random() < 0.5:
            return rng.choice(["/etc/passwd", "../" * 12 + "etc/passwd", self.upload_dir,
                               os.path.join(self.upload_dir, ".."), "/proc/self/environ",
                               "/dev/zero", self.upload_file + "\x00.txt",
                               self.upload_file + "\ud800", "~/" + "x" * 5000])
        if schema.get("type") == "array" and rng.random() < 0.5:
            return [hostile_scalar(rng) for _ in range(rng.randint(1, 4))]
        if schema.get("type") == "object" and rng.random() < 0.5:
            return rng.choice([{"\ud800": 1}, {"Severity": Raw("NaN")}, {"x" * 1000: [[[]]]},
                               {"": None}, {"1": {"a": 1}}, {"Severity": BIG_INT},
                               {"Severity": ["a", {"b": Raw("1e400")}]}, {"4001": "\ud83d"}])
        return hostile_scalar(rng)

    def arguments(self, schema):
        rng = self.rng
        props = schema.get("properties") or {}
        required = schema.get("required") or []
        args = {}
        for name in props:
            if name in required or rng.random() < 0.3:
                args[name] = self.plausible(name, props[name])
        mode = rng.random()
        if mode < 0.5 or not props:
            pass
        elif mode < 0.8:
            for name in rng.sample(sorted(props), min(len(props), rng.randint(1, 3))):
                args[name] = self.hostile(name, props[name])
        elif mode < 0.87:
            look_alike = rng.choice(sorted(props)) + "\u200b"
            key = rng.choice(ODD_KEYS[:-1] + [look_alike] + ODD_KEYS[-1:])
            args[key] = rng.choice([1, "x", None, Raw("NaN")])
        elif mode < 0.92 and required:
            del args[rng.choice(required)]
        else:
            return rng.choice([[], "x", 1, None, Raw("NaN"), [args], nested(50), Raw("1e400"),
                               {"\ud800": args}])
        return args

    # -- lines -------------------------------------------------------------------------------

    def message(self, method, params=None, id_=None):
        message = {"jsonrpc": "2.0", "id": self.new_id() if id_ is None else id_,
                   "method": method}
        if params is not None:
            message["params"] = params
        return message

    def line(self, value):
        return enc(value, ascii_only=self.rng.random() < 0.85)

    def tool_call(self):
        rng = self.rng
        name = rng.choice(self.names)
        params = {"name": name, "arguments": self.arguments(self.tools[name])}
        r = rng.random()
        if r < 0.05:
            params["name"] = rng.choice([name + "\ud800", name.upper(), "nope", 1, None,
                                         name + "\u200b", "\ud83d", ["x"]])
        elif r < 0.1:
            params["_meta"] = rng.choice([{"progressToken": 1}, {"progressToken": Raw("NaN")},
                                          {"progressToken": "\ud800"}, Raw("1e400")])
        elif r < 0.12:
            del params["arguments"]
        return self.line(self.message("tools/call", params))

    def junk(self):
        rng = self.rng
        n = self.new_id()
        meta_key = "io.modelcontextprotocol/protocolVersion"
        choices = [
            lambda: b'{"jsonrpc":"2.0","id":%s,' % enc(n),
            lambda: rng.choice([b"{]", b"[", b"nul", b'"str"', b"1", b"null", b"[]", b"{}",
                                b"true", b"}", b'{"a":1}{"b":2}', b"\x00", b"\xef\xbb\xbf{}"]),
            lambda: bytes(rng.randrange(256) for _ in range(rng.randrange(1, 80)))
            .replace(b"\n", b" "),
            lambda: b'{"jsonrpc":"2.0","id":%s,"method":"ping","params":{"x":"\xff\xfe"}}'
            % enc(n),
            lambda: b'{"jsonrpc":"2.0","id":%s,"method":"ping","params":{"x":"\xed\xa0\x80"}}'
            % enc(n),
            lambda: b'\xef\xbb\xbf{"jsonrpc":"2.0","id":%s,"method":"ping"}' % enc(n),
            lambda: enc({"jsonrpc": "2.0", "id": rng.choice(LONE) + str(n), "method": "ping"}),
            lambda: enc({"jsonrpc": "2.0", "id": n, "method": rng.choice(LONE + EMOJI)}),
            lambda: enc({"jsonrpc": "2.0", "id": n,
                         "method": "tools/list", "params": {"cursor": rng.choice(
                             LONE + ["1", "0", "-1", "²", "٣", "9" * 5000, "200"]
                             + [Raw("NaN"), BIG_INT, 1, [], {}])}}),
            lambda: enc({"jsonrpc": "2.0", "id": n, "method": rng.choice(
                ["ping", "tools/list", "tools/call", "initialize"]),
                "params": {"_meta": {meta_key: rng.choice(
                    [Raw("NaN"), "\ud800", Raw("1e400"), nested(20), "2026-07-28", BIG_INT,
                     {"a": Raw("NaN")}, Raw("Infinity"), "2025-06-18"]),
                    "io.modelcontextprotocol/clientCapabilities": rng.choice(
                        [{}, None, Raw("NaN")])}}}),
            # prompts, resources, completions: names, arguments and URIs of every odd kind
            lambda: enc({"jsonrpc": "2.0", "id": n, "method": "prompts/get", "params": {
                "name": rng.choice(["triage", "standup", "release_notes", "draft_issue",
                                    "review_pr", "nope"] + LONE),
                "arguments": rng.choice([{}, {"issue": "DEMO-42"}, {"issue": "OTHER-1"},
                                         {"project": rng.choice(LONE + ["DEMO", "²", ""])},
                                         {"repo": "DEMO/webapp", "number": "4"},
                                         {"repo": "x" * 5000}, {"issue": 5}, [], None])}}),
            lambda: enc({"jsonrpc": "2.0", "id": n, "method": rng.choice(
                ["resources/list", "resources/templates/list", "prompts/list"]),
                "params": rng.choice([{}, {"cursor": rng.choice(["50", "²", "9" * 5000, 1])}])}),
            lambda: enc({"jsonrpc": "2.0", "id": n, "method": "resources/read", "params": {
                "uri": rng.choice([f"backlog://{self.host}/view/DEMO-42",
                                   f"backlog://{self.host}/wiki/5001",
                                   f"backlog://{self.host}/file/DEMO/825",
                                   f"backlog://{self.host}/view/OTHER-1",
                                   f"backlog://{self.host}/view/../../x", "backlog://evil/view/A-1",
                                   "\ud800", 5, None, "x" * 5000])}}),
            lambda: enc({"jsonrpc": "2.0", "id": n, "method": "completion/complete", "params": {
                "ref": {"type": "ref/prompt", "name": "triage"},
                "argument": rng.choice([{"name": "project", "value": "D"},
                                        {"name": "issue", "value": "DEMO-"},
                                        {"name": "repo", "value": "DEMO/"},
                                        {"name": "milestone", "value": "v"}, [], None,
                                        {"name": "issue", "value": "\ud800"}]),
                "context": rng.choice([{"arguments": {"project": "DEMO"}}, [], None])}}),
            lambda: enc({"jsonrpc": "2.0", "id": n, "method": "server/discover",
                         "params": rng.choice([{}, {"_meta": Raw("NaN")}, {"x": "\ud800"}])}),
            lambda: enc({"jsonrpc": "2.0", "id": n, "method": "initialize", "params": {
                "protocolVersion": rng.choice([PROTOCOL, PROTOCOL, Raw("NaN"), "\ud800",
                                               ["2025-06-18"], BIG_INT, "2024-11-05"]),
                "capabilities": {}, "clientInfo": {"name": "fuzz\ud800", "version": "1"}}}),
            lambda: enc([{"jsonrpc": "2.0", "id": n, "method": "ping"},
                         {"jsonrpc": "2.0", "id": self.new_id(), "method": "tools/list"}]),
            lambda: rng.choice([b"[]", b"[1]", b"[[]]", b"[{}]",
                                enc([{"jsonrpc": "2.0", "method": "notifications/initialized"}])]),
            lambda: enc({"jsonrpc": "2.0", "id": n, "method": "ping",
                         "params": {"a": rng.choice([Raw("NaN"), Raw("Infinity"),
                                                     Raw("-Infinity"), Raw("1e400")])}}),
            lambda: enc({"jsonrpc": "2.0", "id": rng.choice([Raw("NaN"), Raw("Infinity"),
                                                             Raw("1e400"), 1.0, Raw("-0"),
                                                             BIG_INT, True, None, [n], {}]),
                         "method": "ping"}),
            lambda: enc({"jsonrpc": "2.0", "id": n, "method": "ping",
                         "params": {"a": deep_raw(10000)}}),
            lambda: deep_raw(10000).data,
            lambda: b"{" * 10000 + b"}" * 10000,
            # A duplicate key: the last one counts, as JavaScript's and Python's parsers read it
            lambda: b'{"jsonrpc":"2.0","id":"dup","id":%s,"method":"ping"}' % enc(n),
            lambda: enc({"jsonrpc": "2.0", "id": n, "result": {}}),
            lambda: enc({"jsonrpc": "2.0", "id": n, "error": {"code": 1, "message": "x"}}),
            lambda: enc({"jsonrpc": rng.choice(["1.0", None, 2, "\ud800"]), "id": n,
                         "method": "ping"}),
            lambda: enc({"jsonrpc": "2.0", "id": n, "method": rng.choice([1, None, [], {}])}),
            lambda: enc({"jsonrpc": "2.0", "id": n, "method": "tools/call",
                         "params": rng.choice([[], "x", 1, Raw("NaN"), {"name": {}},
                                               {"name": "ping", "arguments": []}])}),
            lambda: enc({"jsonrpc": "2.0", "id": n, "method": "ping",
                         "params": {"pad": "x" * rng.choice([1000, 2 * 1024 * 1024])}}),
            lambda: enc({"jsonrpc": "2.0", "id": n, "method": "ping"}) + b"\r",
            lambda: b"   \t  " + enc({"jsonrpc": "2.0", "id": n, "method": "ping"}),
            lambda: b"",
        ]
        return rng.choice(choices)()

    def notification(self):
        rng = self.rng
        return self.line({"jsonrpc": "2.0", "method": rng.choice(
            ["notifications/initialized", "notifications/cancelled", "notifications/progress",
             "notifications/\ud800", "notifications/roots/list_changed"]),
            "params": rng.choice([{}, {"requestId": self.next_id, "reason": "x"},
                                  {"requestId": Raw("NaN")}, {"requestId": "\ud800"}])})

    def ping(self):
        return self.line(self.message("ping", self.rng.choice([None, {}, {"_meta": {}}])))

    def tools_list(self):
        return self.line(self.message("tools/list", self.rng.choice(
            [None, {}, {"cursor": None}, {"cursor": "0"}])))

    def draw(self):
        r = self.rng.random()
        if r < 0.7:
            return self.tool_call()
        if r < 0.86:
            return self.junk()
        if r < 0.91:
            return self.notification()
        if r < 0.97:
            return self.ping()
        return self.tools_list()


def id_key(id_):
    return (type(id_).__name__, id_)


def classify(line):
    """What the server owes a line (hostile.owed), as the fuzzer waits for it: ("need", [ids]),
    ("may", [ids]) (the line holds something a strict server may refuse as a whole: a lone
    surrogate, NaN, a huge number, a batch), or ("none", []). A refused line gets one reply with
    id null, which is not waited for."""
    line_owed = owed(line)
    if not line_owed.ids:
        return "none", []
    return ("need" if line_owed.strict else "may"), line_owed.ids


# == The chaos stand-in ========================================================

CTYPES = ["application/json;charset=utf-8", "application/json", "text/html", None,
          "application/json; charset=utf-7", "text/plain; charset=unicode_escape",
          "application/json; charset=nonexistent", "APPLICATION/JSON", "application/problem+json",
          "application/octet-stream", "text/plain", "image/png",
          "application/json; charset=utf-16",
          "multipart/form-data; boundary=x", "text/plain; charset=\"rot13\"", "²/json"]
DISPOSITIONS = ["attachment; filename*=utf-7''+ZeE-", 'attachment; filename="a{b}c.txt"',
                "attachment; filename*=UTF-8''%ff", 'attachment; filename="../../etc/passwd"',
                "attachment; filename*=UTF-8''%E2%80%AE.png", "attachment; filename*=x-unknown''a",
                "attachment; filename*=''", 'attachment; filename="', "attachment; filename=" +
                "x" * 5000, "attachment; filename*=UTF-8''%00.txt", "inline", "attachment",
                "attachment; filename*=UTF-8''%ed%a0%80.txt", 'attachment; filename="\\"x.txt"']
TOKENS = [b'"\\ud83d"', b'"\xed\xa0\x80"', b'"\xff\xfe"', b'"a\\udc80b"', b"NaN", b"Infinity",
          b"-Infinity", b"1e400", b"-1e400", b"9" * 5000, b"[" * 900 + b"]" * 900,
          b"[" * 5000 + b"]" * 5000, b'"' + b"x" * 70000 + b'"', b"{}", b"[]", b"null",
          b'"\\u0000"', b"true", b'["a","b"]', b"-0", b"1.5", b'{"a":NaN}', b"[NaN]"]
SWAPS = [["a", "b"], {"x": 1}, 5, None, True, "text", [1, None, "x", {}], [[["deep"]]], -1, 1.5,
         "\ud83d", "", {"id": "x"}, [{"id": [1]}], {"errors": [{"code": [1]}]}]
BAD_ERRORS = [{"errors": [{"message": "x", "code": [1], "moreInfo": ""}]},
              {"errors": [{"message": {"a": 1}, "code": "11", "moreInfo": 5}]},
              {"errors": "boom"}, {"errors": [1, 2]}, {"errors": None}, [], {"errors": []},
              {"errors": [{"message": "\ud83d", "code": 5}]}, {"errors": [[]]},
              {"errors": {"message": "x"}}, {"errors": [{"code": 1e308 * 10}]},
              {"errors": [{"code": 5, "message": "x" * 70000}]},
              {"errors": [{"code": 5, "message": "m", "moreInfo": "y"}] * 3000}]
MARK = "\u0001FUZZMARK\u0001"
MARK_JSON = json.dumps(MARK).encode()


def leaves(value, limit=5000):
    """(container, key) of the scalar leaves and of the dict members, iteratively."""
    out, stack = [], [value]
    while stack and len(out) < limit:
        item = stack.pop()
        pairs = item.items() if isinstance(item, dict) else enumerate(item) \
            if isinstance(item, list) else ()
        for k, v in pairs:
            out.append((item, k))
            if isinstance(v, (dict, list)):
                stack.append(v)
    return out


def dump_with(value, token):
    """The JSON of `value` with MARK replaced by the raw token bytes."""
    return json.dumps(value, ensure_ascii=True).encode().replace(MARK_JSON, token)


class Chaos(fb.FakeBacklog):
    def __init__(self, key, seed, bomb, others, trickles):
        super().__init__(key)
        self.seed, self.bomb, self.others = seed, bomb, others
        self.lock = threading.Lock()
        self.counter = 0
        self.tag = None
        self.calm = False
        self.by_tag = {}
        self.wrong_keys = []   # (tag, description): the first 50
        self.wrong_key_count = 0
        self.keyless = 0
        self.stand_in_errors = 0
        self.trickles = trickles  # how many 100-Continue or header trickles are left
        self.trickles_used = 0
        self.odd = 0

    # Longer than the fuzzer's wait for a reply (30 s): a server that waits the trickle out
    # loses the reply for sure, not by a race.
    TRICKLE_SECONDS = 40.0

    def note(self, tag, text):
        with self.lock:
            notes = self.by_tag.setdefault(tag, [])
            if len(notes) < 8:
                notes.append(text)
            if len(self.by_tag) > 2000:
                for old in list(self.by_tag)[:1000]:
                    del self.by_tag[old]

    def handle(self, h):
        try:
            self._handle(h)
        except Exception as exc:  # never a traceback from the stand-in
            self.stand_in_errors += 1
            h.close_connection = True
            self.note(self.tag, f"stand-in error {type(exc).__name__}")

    def _handle(self, h):
        url = urlsplit(h.path)
        try:
            length = max(0, int(h.headers.get("Content-Length") or 0))
        except ValueError:
            length = 0
        raw = h.rfile.read(min(length, 256 * 1024 * 1024)) if length else b""
        try:
            form, files = fb.body_of(raw, h.headers.get("Content-Type"))
        except Exception:
            form, files = [], []
        query = parse_qsl(url.query, keep_blank_values=True)
        path = unquote(url.path)
        keys = [v for k, v in query if k == "apiKey"]
        with self.lock:
            n, tag = self.counter, self.tag
            self.counter += 1
            if len(self.requests) > 5000:
                del self.requests[:4000]
        shown = redact(f"{h.command} {h.path}", self.api_key)[:200]
        if keys and keys != [self.api_key]:
            self.wrong_key_count += 1
            if len(self.wrong_keys) < 50:
                self.wrong_keys.append((tag, f"{shown} (apiKey "
                                             f"{redact(repr(keys), self.api_key)[:80]})"))
        elif not keys:
            self.keyless += 1
        normal = self.respond(h.command, path, query, form, h.headers, url.path, files)
        rng = random.Random(f"{self.seed}/{n}")
        plan = None if self.calm else self.plan(rng, h, url, normal)
        self.note(tag, f"{shown} -> {'normal ' + str(normal[0]) if plan is None else plan[2]}")
        if plan is None:
            try:
                return self.send_bytes(h, normal[0], normal[2], normal[1])
            except OSError:
                h.close_connection = True
                return None
        kind, arg, _ = plan
        self.odd += 1
        if kind == "prelude":
            prelude, answer = arg
            try:
                h.wfile.write(prelude)
            except OSError:
                return None
            return self.send_raw(h, *answer)
        return self.misbehave(h, kind, arg)

    # -- what to answer ----------------------------------------------------------------------

    def plan(self, rng, h, url, normal):
        if rng.random() < 0.5:
            return None
        status, headers, data = normal
        try:
            value = json.loads(data) if data else None
        except ValueError:
            value = None
        kind = rng.choices(["body", "headers", "status", "redirect", "1xx", "transport",
                            "trickle"], [30, 20, 20, 12, 4, 6, 1])[0]
        if kind == "trickle":
            which = rng.choice(["continue_trickle", "header_trickle"])
            with self.lock:
                if self.trickles > 0:
                    self.trickles -= 1
                    self.trickles_used += 1
                    interval = 0.2 if which == "continue_trickle" else 0.5
                    return which, interval, f"{which} {interval}"
            kind = "body"
        if kind == "body":
            body, what = self.body(rng, value, data)
            ctype = headers.get("Content-Type", "application/json;charset=utf-8")
            return "raw", (status, {"Content-Type": ctype}, body), f"{status} body {what}"
        if kind == "headers":
            body, what = (data, "normal") if rng.random() < 0.6 else self.body(rng, value, data)
            pairs, body, hw = self.headers(rng, body, headers)
            return "raw", (status, pairs, body), f"{status} headers {hw}, body {what}"
        if kind == "status":
            return self.status(rng, value, data)
        if kind == "redirect":
            code = rng.choice([301, 302, 303, 307, 308])
            location, where = self.location(rng, h, url)
            body = rng.choice([b"", b'{"moved": true}', data])
            return "raw", (code, [("Location", location), ("Content-Type", "application/json")],
                           body), f"{code} Location {where} " \
                f"{redact(location, self.api_key)[:80]!r}"
        if kind == "1xx":
            prelude = rng.choice([b"HTTP/1.1 100 Continue\r\n\r\n",
                                  b"HTTP/1.1 100 Continue\r\n\r\n" * 3,
                                  b"HTTP/1.1 103 Early Hints\r\n"
                                  b"Link: </a.css>; rel=preload\r\n\r\n",
                                  b"HTTP/1.1 102 Processing\r\n\r\n"])
            return "prelude", (prelude, (status, headers, data)), \
                f"{prelude[:20]!r}.. then normal {status}"
        fault = rng.choice([("reset", None), ("reset_mid_body", None), ("truncated", None),
                            ("empty", 200), ("html", 502), ("hang", 3),
                            ("status", (500, None, None)),
                            ("empty", 204), ("trickle", 0.001)])
        return fault[0], fault[1], f"fault {fault[0]} {fault[1]}"

    def body(self, rng, value, data):
        """A body derived from the normal answer, and a word on it."""
        r = rng.random()
        if value is not None and r < 0.45:
            copy_ = json.loads(data)
            spots = leaves(copy_)
            if spots:
                container, key = rng.choice(spots)
                if rng.random() < 0.55:
                    token = rng.choice(TOKENS)
                    container[key] = MARK
                    return dump_with(copy_, token), f"{key!r} = {token[:20]!r}"
                swap = rng.choice(SWAPS)
                if isinstance(container, dict) and "customFields" in container \
                        and rng.random() < 0.5:
                    key, swap = "customFields", ["a", "b"]
                container[key] = swap
                return json.dumps(copy_).encode(), f"{key!r} = {json.dumps(swap)[:40]}"
        if r < 0.6:
            if isinstance(value, dict):
                swap = rng.choice([[value], [], "text", 1, None, True, [[value]]])
            elif isinstance(value, list):
                swap = rng.choice([{"a": 1}, value[0] if value else {}, "x", {}, {"errors": []}])
            else:
                swap = rng.choice([{}, [], {"id": 1}])
            return json.dumps(swap).encode(), f"shape {json.dumps(swap)[:40]}"
        choices = [
            (lambda: data[:rng.randrange(max(1, len(data)))], "truncated"),
            (lambda: b"", "empty"),
            (lambda: b"<html><body>502</body></html>", "html"),
            (lambda: b"\xff\xfe\xfd" + data, "invalid UTF-8"),
            (lambda: data.replace(b'"', b'"\xed\xa0\x80', 1), "raw ED A0 80"),
            (lambda: b"\xef\xbb\xbf" + data, "BOM"),
            (lambda: data.decode("utf-8", "replace").encode("utf-16"), "UTF-16"),
            (lambda: rng.choice(TOKENS), "a bare token"),
            (lambda: b"[" * 900 + b"]" * 900, "nested 900"),
            (lambda: b"[" * 5000 + b"]" * 5000, "nested 5000"),
            (lambda: b'{"id":1,"name":' + b"[" * 5000 + b"]" * 5000 + b"}", "member nested 5000"),
            (lambda: json.dumps({"errors": [{"message": "x" * 70000, "code": 5}]}).encode(),
             "error body over 64 KiB"),
            (lambda: data + b"garbage", "trailing garbage"),
            (lambda: data + b"\n" + data, "two documents"),
        ]
        make, what = rng.choice(choices)
        return make(), what

    def headers(self, rng, body, base):
        pairs, words = [], []
        ctype = rng.choice(CTYPES + [base.get("Content-Type")] * 4)
        if ctype:
            pairs.append(("Content-Type", ctype))
        words.append(f"type {ctype}")
        r = rng.random()
        if r < 0.15:
            body = gzip.compress(body, 6, mtime=0)
            pairs.append(("Content-Encoding", "gzip"))
            words.append("gzip")
        elif r < 0.22:
            body = zlib.compress(body)
            pairs.append(("Content-Encoding", "deflate"))
            words.append("deflate")
        elif r < 0.27:
            body = self.bomb
            pairs.append(("Content-Encoding", "gzip"))
            words.append("gzip bomb 50 MiB")
        elif r < 0.31:
            pairs.append(("Content-Encoding", rng.choice(["gzip", "deflate", "br", "x-nope"])))
            words.append("encoding header on a plain body")
        elif r < 0.34:
            body = gzip.compress(gzip.compress(body, mtime=0), mtime=0)
            pairs.append(("Content-Encoding", "gzip, gzip"))
            words.append("gzip twice")
        r = rng.random()
        if r < 0.1:
            pairs.append(("Content-Length", str(max(0, len(body) - rng.randint(1, 20)))))
            words.append("length short")
        elif r < 0.16:
            pairs.append(("Content-Length", str(len(body) + rng.randint(1, 100))))
            words.append("length long")
        elif r < 0.24:
            text = rng.choice(["²", "9" * 5000, "-1", "1, 2", "0x10", "", " 5", "1e3"])
            pairs.append(("Content-Length", text))
            words.append(f"length {text[:10]!r}")
        elif r < 0.28:
            pairs += [("Content-Length", str(len(body))), ("Content-Length", str(len(body) + 1))]
            words.append("two lengths")
        elif r < 0.33:
            pairs.append(("Transfer-Encoding", "chunked"))
            if rng.random() < 0.5:
                body = b"%x\r\n%s\r\n0\r\n\r\n" % (len(body), body) if body else b"0\r\n\r\n"
                words.append("chunked")
            else:
                body = b"zz\r\n" + body
                words.append("bad chunked")
        if rng.random() < 0.3:
            disposition = rng.choice(DISPOSITIONS)
            pairs.append(("Content-Disposition", disposition))
            words.append(f"disposition {disposition[:40]!r}")
        if rng.random() < 0.2:
            value = rng.choice(["²", "9" * 5000, "-1e400", "nan", "0", "x"])
            pairs += [("X-RateLimit-Remaining", value), ("X-RateLimit-Reset", value)]
            words.append(f"rate-limit {value[:10]!r}")
        return pairs, body, ", ".join(words)

    def status(self, rng, value, data):
        group = rng.choices(["2xx", "4xx", "5xx", "odd"], [3, 5, 3, 1])[0]
        code = rng.choice({"2xx": [200, 201, 202, 204, 206], "odd": [600, 999, 199, 299],
                           "4xx": [400, 401, 403, 404, 405, 409, 410, 413, 414, 422, 429, 429],
                           "5xx": [500, 502, 503, 504, 599]}[group])
        r = rng.random()
        if r < 0.3 and group != "2xx":
            name = {401: "error_401", 403: "error_403", 404: "error_404", 429: "error_429",
                    500: "error_500"}.get(code, rng.choice(["error_400", "error_multiple"]))
            body, what = json.dumps(fb.load(name)).encode(), name
        elif r < 0.65:
            bad = rng.choice(BAD_ERRORS)
            body, what = json.dumps(bad).encode(), f"error {json.dumps(bad)[:50]}"
        elif r < 0.75:
            token = rng.choice(TOKENS)
            body = dump_with({"errors": [{"message": "m", "code": MARK, "moreInfo": ""}]}, token)
            what = f"error code {token[:20]!r}"
        else:
            body, what = self.body(rng, value, data)
        pairs = [("Content-Type", rng.choice(["application/json;charset=utf-8", "text/html",
                                              "application/json"]))]
        if code == 429:
            wait = rng.choice(["0", "1", "-1", "²", "1e400", "nan", "inf", "9" * 5000,
                               "Wed, 21 Oct 2015 07:28:00 GMT", "", "0.1", "-inf"])
            pairs.append((rng.choice(["Retry-After", "X-RateLimit-Reset"]), wait))
            what += f", wait {wait[:12]!r}"
        return "raw", (code, pairs, body), f"{code} {what}"

    def location(self, rng, h, url):
        me = self.url
        other = self.others[0].url
        other2 = self.others[-1].hostport
        same = rng.choice([
            (f"{me}{h.path}", "same request"), (f"{me}/api/v2/space", "same host, no key"),
            (f"{me}/api/v2/space?apiKey=wrong-key", "same host, another key"),
            ("/api/v2/users/myself", "relative"), (h.path, "itself (a loop)"),
            ("space", "relative segment")])
        cross = rng.choice([
            (f"{other}/api/v2/space", "other host"),
            (f"{other}{h.path}", "other host, same query"),
            (f"http://localhost:{self.others[0].port}/x", "other host as localhost"),
            (f"http://127.1:{self.others[0].port}/", "other host as 127.1"),
            (f"HTTP://127.0.0.1:{self.others[0].port}/", "other host, scheme in capitals"),
            (f"http://user:pw@127.0.0.1:{self.others[0].port}/", "other host with a password"),
            (f"https://127.0.0.1:{self.others[0].port}/", "https to the other host"),
            (f"//{other2}/x", "scheme-relative 127.0.0.2")])
        garbage = rng.choice([
            ("", "empty"), ("http://[::1", "broken IPv6"), ("ht!tp://x", "bad scheme"),
            ("javascript:alert(1)", "javascript"), ("file:///etc/passwd", "file"),
            ("http://127.0.0.1:99999/", "bad port"), ("\x7f", "DEL"), ("http://%zz/", "bad host"),
            ("/" + "x" * 10000, "10,000 characters"), ("http://\u00e9.invalid/", "non-ASCII"),
            ("//", "just //"), ("http:///x", "no host")])
        return rng.choice([same, cross, cross, (f"//{other2}/x", "scheme-relative 127.0.0.2"),
                           garbage])


class OtherHost:
    """A plain HTTP listener standing for another host: every connection is recorded."""

    def __init__(self, host, port=0, key="", tag_of=lambda: None):
        outer = self
        self.connections = 0
        self.seen = []
        self.lock = threading.Lock()
        space = json.dumps(fb.load("space")).encode()

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.0"

            def handle(self):
                with outer.lock:
                    outer.connections += 1
                super().handle()

            def log_message(self, *args):
                pass

            def do_GET(self):
                with outer.lock:
                    if len(outer.seen) < 50:
                        outer.seen.append((tag_of(), redact(f"{self.command} {host}:{outer.port}"
                                                            f"{self.path}", key)[:200]))
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(space)))
                self.end_headers()
                self.wfile.write(space)

            do_POST = do_PATCH = do_DELETE = do_PUT = do_HEAD = do_GET

            def handle_one_request(self):
                try:
                    super().handle_one_request()
                except Exception:
                    self.close_connection = True

        self.server = ThreadingHTTPServer((host, port), Handler)
        self.server.daemon_threads = True
        self.server.handle_error = lambda *a: None
        self.port = self.server.server_address[1]
        self.hostport = f"{host}:{self.port}"
        self.url = f"http://{self.hostport}"
        threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.01},
                         daemon=True).start()

    def stop(self):
        self.server.shutdown()
        self.server.server_close()


# == The spawned server ========================================================

def short_traceback(data):
    """The last frames and the exception line of a traceback (and of what it chained)."""
    text = data.decode("utf-8", "replace") if isinstance(data, bytes) else data
    text = text.split("\nmcp-backlog-server:", 1)[0]  # the next log line
    lines = text.splitlines()
    frames = [line.strip() for line in lines if line.strip().startswith("File ")]
    ends = [line for line in lines[1:] if line.strip() and not line.startswith((" ", "\t"))
            and not set(line.strip()) <= set("^~ ") and not line.startswith(("Traceback",
                                                                              "During handling",
                                                                              "The above"))]
    return " | ".join(frames[-3:] + [ends[-1] if ends else "(exception line not seen)"])


def redact(text, key):
    text = str(text)
    for form in sorted({key, quote(key, safe=""), key[:16], key[-16:]}, key=len, reverse=True):
        text = text.replace(form, "***")
    return text


class Server:
    """One spawned server: a writer thread (stdin), reader threads (stdout lines, stderr)."""

    def __init__(self, command, env, key):
        self.proc = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, env=env, cwd=ROOT)
        self.lines = queue.Queue()
        self.outbox = queue.Queue()
        self.broken = False
        self.key = key
        threading.Thread(target=self._read, daemon=True).start()
        threading.Thread(target=self._write, daemon=True).start()
        self.err_lock = threading.Lock()
        self.err_chunks = []
        threading.Thread(target=self._stderr, daemon=True).start()

    def _read(self):
        for line in iter(self.proc.stdout.readline, b""):
            self.lines.put((time.monotonic(), line))
        self.lines.put((time.monotonic(), None))

    def _write(self):
        while True:
            data = self.outbox.get()
            try:
                if data is None:
                    self.proc.stdin.close()
                    return
                self.proc.stdin.write(data)
                self.proc.stdin.flush()
            except (OSError, ValueError):
                self.broken = True
                return

    def _stderr(self):
        """Read stderr only while holding err_lock: whoever holds it and sees the pipe empty
        has every byte written so far in err_chunks."""
        import select
        fd = self.proc.stderr.fileno()
        while True:
            readable = select.select([fd], [], [], 0.2)[0]
            if not readable:
                continue
            with self.err_lock:
                chunk = os.read(fd, 65536)
                self.err_chunks.append(chunk)
            if not chunk:
                return

    def stderr_so_far(self):
        """Every stderr byte the server has written until now (bounded wait)."""
        import select
        fd = self.proc.stderr.fileno()
        for _ in range(200):
            with self.err_lock:
                if self.err_chunks and self.err_chunks[-1] == b"" \
                        or not select.select([fd], [], [], 0)[0]:
                    chunks, self.err_chunks = self.err_chunks, []
                    return b"".join(chunks)
            time.sleep(0.002)
        with self.err_lock:
            chunks, self.err_chunks = self.err_chunks, []
        return b"".join(chunks)

    def send(self, line):
        self.outbox.put(line + b"\n")

    def close_stdin(self):
        self.outbox.put(None)

    def kill(self):
        self.outbox.put(None)  # the writer thread ends
        if self.proc.poll() is None:
            self.proc.kill()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            pass


class Fuzz:
    KINDS = ("deaths", "lost replies", "internal errors", "non-strict lines", "key leaks",
             "crossings", "wrong keys", "stray replies", "tracebacks")

    def __init__(self, args):
        self.args = args
        self.rng = random.Random(args.seed)
        self.key = "".join(self.rng.choice(string.ascii_letters + string.digits)
                           for _ in range(40))
        self.key_forms = sorted({f.encode() for f in (self.key, quote(self.key, safe=""),
                                                      self.key[:16], self.key[-16:])})
        self.counts = dict.fromkeys(self.KINDS, 0)
        self.examples = dict.fromkeys(self.KINDS, 0)
        self.sent = self.checked = 0
        self.stderr_tail = b""
        self.stderr_lock = threading.Lock()
        self.step = 0
        self.step_lines = []
        self.history = []  # the last steps: (step, lines)
        self.sync = 0
        self.late_ok = {}  # ids whose reply may still come: lost ones, and the "may" ones
        self.sent_by_id = {}  # id key -> the line that carried it (the last 20,000)
        self.signatures = {}  # kind -> the causes shown

    # -- reporting ---------------------------------------------------------------------------

    def show(self, data, limit=300):
        """Redacted first, then cut: a key across the cut cannot show half of itself."""
        if isinstance(data, bytes):
            text = redact(repr(data), self.key)
            more = f"... ({len(data)} bytes)"
        else:
            text, more = redact(data, self.key), "..."
        return text[:limit + 3] + (more if len(text) > limit + 3 else "")

    def fail(self, kind, what, line=None, step=None, reply=None, sig=None):
        """Count one failure; show it when it is among the first --examples of its kind, or
        the first of its signature (a distinct cause: up to 4 x --examples of them)."""
        self.counts[kind] += 1
        if sig is not None:
            seen = self.signatures.setdefault(kind, set())
            if sig in seen or len(seen) >= 4 * self.args.examples:
                return
            seen.add(sig)
        elif self.examples[kind] >= self.args.examples:
            return
        if line is None and reply is not None:  # the line that carried the reply's id
            try:
                id_ = json.loads(reply).get("id")
                line = self.sent_by_id.get(id_key(id_))
            except (ValueError, RecursionError, AttributeError, TypeError):
                pass
        if sig is None:
            self.examples[kind] += 1
        step = self.step if step is None else step
        out = [f"fuzz: {kind} #{self.counts[kind]}: {self.show(what, 500)}"]
        lines = [line] if line is not None else dict(self.history).get(step, self.step_lines)
        for sent in lines[:7]:
            out.append(f"  client line: {self.show(sent)}")
        if reply is not None:
            out.append(f"  server line: {self.show(reply)}")
        for note in self.chaos.by_tag.get(step, [])[:6]:
            out.append(f"  stand-in: {self.show(note, 240)}")
        sys.stderr.write("\n".join(out) + "\n")
        sys.stderr.flush()

    # -- the server ----------------------------------------------------------------------------

    def drain_stderr(self, step=None):
        chunk = self.server.stderr_so_far()
        if chunk:
            self.on_stderr(chunk, step)

    def on_stderr(self, chunk, step=None):
        with self.stderr_lock:
            data = self.stderr_tail[-200:] + chunk
            start = len(self.stderr_tail[-200:])
            for form in self.key_forms:
                i = data.find(form)
                while i != -1:
                    if i + len(form) > start:
                        self.fail("key leaks", "API key on stderr: "
                                  f"{data[max(0, i - 80):i + 80]!r}", step=step)
                    i = data.find(form, i + 1)
            i = data.find(b"Traceback")
            while i != -1:
                if i + 9 > start:
                    text = short_traceback(data[i:i + 20000])
                    self.fail("tracebacks", text, step=step,
                              sig=re.sub(r"'.*?'|\d+", "", " | ".join(text.split(" | ")[-2:])))
                i = data.find(b"Traceback", i + 1)
            self.stderr_tail = (self.stderr_tail + chunk)[-8192:]

    def spawn(self):
        for attempt in range(3):
            self.server = Server(self.command, self.env, self.key)
            init = {"jsonrpc": "2.0", "id": "init", "method": "initialize",
                    "params": {"protocolVersion": PROTOCOL, "capabilities": {},
                               "clientInfo": {"name": "fuzz", "version": "1"}}}
            reply = self.request(init)
            if reply is not None:
                self.server.send(enc({"jsonrpc": "2.0", "method": "notifications/initialized"}))
                self.sent += 1
                return reply
            self.server.kill()
        raise SystemExit("fuzz: the server does not answer initialize; stderr:\n"
                         + redact(self.stderr_tail.decode("utf-8", "replace"), self.key))

    def lines_until(self, deadline):
        """The server's stdout lines until the deadline (None once stdout is closed)."""
        while time.monotonic() < deadline:
            try:
                _, line = self.server.lines.get(timeout=max(0.01, deadline - time.monotonic()))
            except queue.Empty:
                return
            yield line

    def request(self, message, timeout=20.0):
        """Send one request outside the fuzzing steps and return its reply (or None)."""
        self.server.send(enc(message))
        self.sent += 1
        for line in self.lines_until(time.monotonic() + timeout):
            if line is None:
                return None
            reply = self.check_line(line)
            if isinstance(reply, dict) and reply.get("id") == message["id"]:
                self.drain_stderr()
                return reply
        return None

    def tools_of(self):
        tools, cursor = {}, None
        for page in range(20):
            params = {} if cursor is None else {"cursor": cursor}
            reply = self.request({"jsonrpc": "2.0", "id": f"list-{page}", "method": "tools/list",
                                  "params": params})
            result = (reply or {}).get("result") or {}
            for t in result.get("tools", []):
                tools[t["name"]] = t.get("inputSchema") or {}
            cursor = result.get("nextCursor")
            if not cursor:
                break
        return tools

    # -- one stdout line -------------------------------------------------------------------

    def check_line(self, line, step=None):
        """The checks every stdout line gets; the decoded message, or None."""
        self.checked += 1
        for form in self.key_forms:
            if form in line:
                self.fail("key leaks", "API key on stdout", reply=line, step=step)
                break
        try:
            text = line.decode("utf-8")
        except UnicodeDecodeError:
            self.fail("non-strict lines", "not UTF-8", reply=line, step=step)
            return None

        def constant(token):
            raise ValueError(f"non-standard constant {token}")
        try:
            message = json.loads(text, parse_constant=constant)
        except RecursionError:
            self.fail("non-strict lines", "nested too deep to parse", reply=line, step=step)
            return None
        except ValueError as exc:
            self.fail("non-strict lines", f"not strict JSON: {exc}", reply=line, step=step)
            return None
        if isinstance(message, dict) and message.get("method") == "notifications/progress" \
                and "id" not in message and isinstance(message.get("params"), dict) \
                and isinstance(message["params"].get("progress"), (int, float)):
            return None  # progress for a request that asked for it: not a reply
        if not isinstance(message, dict) or message.get("jsonrpc") != "2.0" \
                or "id" not in message or (("result" in message) == ("error" in message)):
            self.fail("non-strict lines", "not a JSON-RPC 2.0 reply object", reply=line,
                      step=step)
            return message if isinstance(message, dict) else None
        if any(SURROGATE.search(s) for s in walk(message)):
            # Allowed only as the echo of the client's own (an id must round-trip): what
            # Backlog sent is never echoed with one.
            origin = self.sent_by_id.get(id_key(message["id"])) \
                if isinstance(message["id"], (str, int)) else None
            if origin is None or not re.search(rb"\\u[dD][89a-fA-F][0-9a-fA-F]{2}", origin):
                self.fail("non-strict lines", "a lone surrogate in a string", reply=line,
                          step=step)
        error = message.get("error")
        if isinstance(error, dict) and error.get("code") == -32603:
            origin = self.sent_by_id.get(id_key(message["id"])) \
                if isinstance(message["id"], (str, int)) else None
            tool = re.search(rb'"name":\s*("(?:[^"\\]|\\.)*")', origin or b"")
            self.fail("internal errors", f"error -32603: {error.get('message')}", reply=line,
                      step=step, sig=tool.group(1) if tool else None)
        elif "error" in message and not (isinstance(error, dict)
                                         and isinstance(error.get("code"), int)
                                         and isinstance(error.get("message"), str)):
            self.fail("non-strict lines", "an error without an integer code and a message",
                      reply=line, step=step)
        return message

    # -- the run ----------------------------------------------------------------------------

    def run(self):
        args = self.args
        self.command = shlex.split(args.server) if args.server else \
            [sys.executable, "-I", os.path.join(ROOT, "backlog_mcp.pyz")]
        upload_dir = tempfile.mkdtemp(prefix="fuzz-upload-")
        upload_file = os.path.join(upload_dir, "note.txt")
        with open(upload_file, "wb") as fh:
            fh.write(b"hello from the fuzzer\n")
        bomb = gzip.compress(b"\0" * (50 * 1024 * 1024), 9, mtime=0)
        tag_of = lambda: self.step  # noqa: E731
        others = [OtherHost("127.0.0.1", key=self.key, tag_of=tag_of)]
        for port in (others[0].port, 0):
            try:
                others.append(OtherHost("127.0.0.2", port, key=self.key, tag_of=tag_of))
                break
            except OSError:
                pass
        trickles = 0 if args.seconds < 50 else max(1, int(args.seconds // 300))
        self.chaos = Chaos(self.key, args.seed, bomb, others, trickles).start()
        self.env = {k: os.environ[k] for k in ("PATH", "HOME", "LANG") if k in os.environ}
        self.env.update(BACKLOG_BASE_URL=self.chaos.url, BACKLOG_API_KEY=self.key,
                        BACKLOG_TIMEOUT="2", BACKLOG_UPLOAD_DIRS=upload_dir)
        if args.tools == "all":  # the extra tools and every write group too
            self.env.update(BACKLOG_TOOLSETS="all", BACKLOG_WRITABLE=(
                "issue,git,wiki,document,project,notification,star"))
        started = time.monotonic()
        end = started + args.seconds
        try:
            self.chaos.calm = True
            self.spawn()
            tools = self.tools_of()
            if not tools:
                raise SystemExit("fuzz: tools/list gave no tools")
            self.chaos.calm = False
            client = Client(self.rng, tools, upload_dir, upload_file)
            client.host = self.chaos.url.split("://", 1)[1]  # resources name the space's host
            while time.monotonic() < end:
                self.run_step(client)
            self.chaos.calm = True
            self.chaos.stopping.set()  # a trickle still running ends now
            self.finish()
        finally:
            self.chaos.calm = True
            self.server.kill()
            self.chaos.stop()
            for other in others:
                other.stop()
            shutil.rmtree(upload_dir, ignore_errors=True)
        elapsed = time.monotonic() - started
        self.counts["crossings"] = sum(o.connections for o in others)
        for tag, seen in [s for o in others for s in o.seen][:args.examples]:
            sys.stderr.write(f"fuzz: crossing: {seen}\n")
            for note in self.chaos.by_tag.get(tag, [])[:4]:
                sys.stderr.write(f"  stand-in: {self.show(note, 240)}\n")
            for line in dict(self.history).get(tag, [])[:2]:
                sys.stderr.write(f"  client line: {self.show(line)}\n")
        self.counts["wrong keys"] = self.chaos.wrong_key_count
        for tag, seen in self.chaos.wrong_keys[:args.examples]:
            lines = dict(self.history).get(tag, [])
            sys.stderr.write(f"fuzz: wrong key at the stand-in: {seen}\n"
                             + "".join(f"  client line: {self.show(x)}\n" for x in lines[:2]))
        sys.stderr.write(f"fuzz: info: {self.chaos.counter} stand-in requests "
                         f"({self.chaos.odd} not answered normally, "
                         f"{self.chaos.trickles_used} 30 s trickles), "
                         f"{self.chaos.keyless} without a key, "
                         f"{self.chaos.stand_in_errors} stand-in errors\n")
        summary = (f"fuzz: {self.sent} lines sent, {self.checked} replies checked, "
                   + ", ".join(f"{self.counts[k]} {k}" for k in self.KINDS)
                   + f" in {elapsed:.0f} s")
        print(summary, flush=True)
        return 1 if any(self.counts.values()) else 0

    def run_step(self, client):
        self.step += 1
        self.chaos.tag = self.step
        count = 1 if self.rng.random() < 0.93 else self.rng.randint(2, 6)
        lines = [client.draw() for _ in range(count)]
        self.sync += 1
        barrier = {"jsonrpc": "2.0", "id": f"sync-{self.sync}", "method": "ping"}
        lines_all = lines + [enc(barrier)]
        self.step_lines = lines
        self.history.append((self.step, [line[:2000] for line in lines]))
        del self.history[:-3000]
        need, may = {}, {}
        for line in lines:
            kind, ids = classify(line)
            for id_, method in ids:
                (need if kind == "need" else may)[id_key(id_)] = (line, method)
                self.sent_by_id[id_key(id_)] = line[:2000]
        while len(self.sent_by_id) > 20000:
            del self.sent_by_id[next(iter(self.sent_by_id))]
        need[id_key(barrier["id"])] = (lines_all[-1], "ping")
        for line in lines_all:
            self.server.send(line)
            self.sent += 1
        self.wait(need, may, barrier["id"], len(lines_all))

    def wait(self, need, may, barrier_id, count):
        step = self.step
        last = time.monotonic()
        hard = last + REPLY_SILENCE * (count + 1)
        try:
            self._wait(step, need, may, barrier_id, count, last, hard)
            self.drain_stderr(step)
        finally:
            self.late_ok.update(dict.fromkeys(list(need) + list(may)))
            while len(self.late_ok) > 20000:
                del self.late_ok[next(iter(self.late_ok))]

    def _wait(self, step, need, may, barrier_id, count, last, hard):
        nulls = 0
        barrier_seen = False
        while need:
            now = time.monotonic()
            if barrier_seen:  # every line before it is read: only tools/call may still run
                for k, (line, method) in list(need.items()):
                    if method != "tools/call" or (nulls and count == 2):
                        null = " (a reply with id null came)" if nulls else ""
                        self.fail("lost replies", f"no reply with id {k[1]!r}, and the ping "
                                  f"sent after it was answered{null}", line=line, step=step)
                        self.late_ok[k] = None
                        del need[k]
                if not need:
                    return
            timeout = min(last + REPLY_SILENCE, hard) - now
            if timeout <= 0:
                barrier_lost = id_key(barrier_id) in need
                for k, (line, _) in need.items():
                    if k[1] != barrier_id or len(need) == 1:
                        self.fail("lost replies", f"no reply with id {k[1]!r} within "
                                                  f"{REPLY_SILENCE:g} s", line=line, step=step)
                self.late_ok.update(dict.fromkeys(need))
                need.clear()
                if barrier_lost:  # stuck: start again
                    self.drain_stderr(step)
                    self.server.kill()
                    self.spawn()
                return
            try:
                _, line = self.server.lines.get(timeout=min(timeout, 1.0))
            except queue.Empty:
                self.drain_stderr(step)
                continue
            last = time.monotonic()
            if line is None:
                need.clear()
                may.clear()
                self.death(step)
                return
            message = self.check_line(line, step)
            if not isinstance(message, dict) or "id" not in message:
                continue
            id_ = message["id"]
            if id_ is None:
                nulls += 1
                continue
            try:
                k = id_key(id_)
                hash(k)
            except TypeError:
                self.fail("stray replies", "a reply with an id that no request had", reply=line,
                          step=step)
                continue
            if k in need:
                del need[k]
                barrier_seen = barrier_seen or id_ == barrier_id
            elif k in may:
                del may[k]
            elif k in self.late_ok:
                del self.late_ok[k]
            else:
                mangled = [k2[1] for k2 in list(may) + list(self.late_ok)
                           if isinstance(k2[1], str) and isinstance(id_, str)
                           and SURROGATE.sub("\ufffd", k2[1]) == id_]
                why = f" (the request's id was {mangled[0]!r}: its lone surrogate replaced)" \
                    if mangled else ""
                self.fail("stray replies", f"a reply with id {id_!r} no pending request "
                                           f"has{why}", reply=line, step=step)

    def death(self, step):
        try:
            code = self.server.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            code = "(stdout closed, still running)"
        self.drain_stderr(step)
        with self.stderr_lock:
            tail = self.stderr_tail.decode("utf-8", "replace")
        last = tail[tail.rfind("Traceback"):] if "Traceback" in tail else tail[-300:]
        self.fail("deaths", f"the server died (exit status {code}): {short_traceback(last)}",
                  step=step)
        self.server.kill()
        self.spawn()

    def finish(self):
        """Close stdin once everything is answered: exit status 0 within EXIT_WAIT s."""
        self.server.close_stdin()
        deadline = time.monotonic() + EXIT_WAIT
        for line in self.lines_until(deadline):
            if line is None:
                break
            message = self.check_line(line)
            if isinstance(message, dict) and message.get("id") is not None:
                try:
                    late = id_key(message["id"]) in self.late_ok
                except TypeError:
                    late = False
                if not late:
                    self.fail("stray replies", "a reply after the last step", reply=line)
        try:
            code = self.server.proc.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            code = None
        self.drain_stderr()
        if code != 0:
            self.fail("deaths", "after stdin was closed: " + (
                f"exit status {code}" if code is not None else f"still running after "
                                                               f"{EXIT_WAIT:g} s"),
                      line=b"(stdin closed)")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--server", default=None,
                        help="server command (split with shlex, run from the repository root); "
                             "default: this Python -I backlog_mcp.pyz")
    parser.add_argument("--seconds", type=float, default=600.0)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--tools", choices=("all", "default"), default="all",
                        help="the tools called: every one the server has (default), or the "
                             "default list only")
    parser.add_argument("--examples", type=int, default=3,
                        help="offending inputs shown on stderr for each kind (default 3)")
    args = parser.parse_args(argv)
    return Fuzz(args).run()


if __name__ == "__main__":
    sys.exit(main())
