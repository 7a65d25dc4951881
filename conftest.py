"""Fixtures and helpers of the suite (test_backlog_mcp.py), and its two markers.

The Backlog stand-in (tests/fake_backlog.py) in process behind `responses` (`backlog`) or over
real HTTP (`fake`, `elsewhere`, `two`, `big`, `bulk`); one request through dispatch and the one
writer of stdout (`rpc`, `call`, `run_serve`, `conversation`); the built .pyz and bundle, and
the spawned server (`Process`, `cli`, `python_sdk`).

Markers, given by construction in pytest_collection_modifyitems: `e2e` for a test that starts a
process (it uses the `pyz` or `bundle` fixture, or says so with @pytest.mark.e2e), `fuzz` for a
generated-input test (a hypothesis test, or @pytest.mark.fuzz). `pytest -m "not e2e and not
fuzz"` is the quick loop; plain `pytest` runs everything.
"""

import asyncio
import io
import json
import os
import queue
import re
import shutil
import subprocess
import sys
import threading
import time
import zipfile
import zlib
from urllib.parse import parse_qsl, unquote, urlsplit

import pytest
import responses

HERE = os.path.dirname(os.path.abspath(__file__))
# This tree's module first (not another checkout's editable install), then the helpers of
# tests/ and benchmarks/.
sys.path[:0] = [HERE, os.path.join(HERE, "tests"), os.path.join(HERE, "benchmarks")]

import backlog_mcp as b  # noqa: E402
from fake_backlog import Backlog, FakeBacklog, body_of  # noqa: E402
from hostile import strict_json  # noqa: E402

KEY = "test-key-1234567890"
BASE = "https://example.backlog.com"
DATA = os.path.join(HERE, "tests", "data")
ENV = {"BACKLOG_BASE_URL": BASE, "BACKLOG_API_KEY": KEY, "BACKLOG_TOOLSETS": "all",
       "BACKLOG_WRITABLE": ",".join(b.WRITE_GROUPS), "BACKLOG_UPLOAD_DIRS": DATA}
PYZ = os.path.join(HERE, "backlog_mcp.pyz")
WORK_KEY, CLIENT_KEY = "work-key-1234567890abc", "client-key-0987654321xyz"
MCPB_NODE = os.path.join(HERE, "tests", "ts", "node_modules", "@anthropic-ai", "mcpb")


# == Markers ===================================================================

SPAWNING = {"pyz", "bundle"}  # fixtures whose tests start the server (or build it) as a process


def pytest_collection_modifyitems(items):
    for item in items:
        if SPAWNING & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.e2e)
        if hasattr(getattr(item, "obj", None), "hypothesis"):
            item.add_marker(pytest.mark.fuzz)


@pytest.fixture(autouse=True)
def spawns_only_when_e2e(request, monkeypatch):
    """A test not marked e2e that starts a process fails, so the quick loop stays quick and
    the marker stays true."""
    if request.node.get_closest_marker("e2e") is None:
        def refused(*args, **kwargs):
            raise AssertionError(f"{request.node.name} starts a process: mark it e2e")
        monkeypatch.setattr(subprocess, "Popen", refused)


# == Every test ================================================================

@pytest.fixture(autouse=True)
def settings(monkeypatch):
    """Every test starts configured for the stand-in, with all groups writable, no waits."""
    monkeypatch.setattr(b, "RETRY_BACKOFF", (0, 0))
    monkeypatch.setattr(b, "BULK_GAP", 0.0)  # a batch's pacing: waited for where a test asks
    b.configure(ENV)
    yield
    b.configure(ENV)


@pytest.fixture(autouse=True)
def no_key_in_output(capfd):
    """Across the whole suite: the API key never reaches stdout or stderr."""
    yield
    out, err = capfd.readouterr()
    for form in (KEY, KEY.replace("-", "%2D")):
        assert form not in out and form not in err


# == The Backlog stand-in ======================================================

@pytest.fixture
def backlog():
    """The stand-in behind `responses`: every request is answered and recorded."""
    fake = Backlog(KEY)

    def answer(request):
        url = urlsplit(request.url)
        body = request.body or b""
        form, files = body_of(body.encode() if isinstance(body, str) else body,
                              request.headers.get("Content-Type"))
        status, headers, data = fake.respond(request.method, unquote(url.path),
                                             parse_qsl(url.query, keep_blank_values=True),
                                             form, request.headers, url.path, files)
        return status, headers, data

    with responses.RequestsMock(assert_all_requests_are_fired=False) as mock:
        for method in ("GET", "POST", "PATCH", "DELETE"):
            mock.add_callback(method, re.compile(re.escape(BASE) + r"/.*"), callback=answer)
        fake.mock = mock
        yield fake


@pytest.fixture
def fake():
    with FakeBacklog(KEY) as server:
        yield server


@pytest.fixture
def elsewhere():
    """A second stand-in on another port: any request that reaches it has left the space."""
    with FakeBacklog(KEY) as server:
        yield server


def fault_env(fake, **extra):
    return dict(ENV, BACKLOG_BASE_URL=fake.url, BACKLOG_TIMEOUT="1", **extra)


@pytest.fixture
def two():
    with FakeBacklog(WORK_KEY) as work, FakeBacklog(CLIENT_KEY) as client:
        yield work, client


def two_env(work, client, **extra):
    return dict({"BACKLOG_SPACES": "work,client", "BACKLOG_WORK_BASE_URL": work.url,
                 "BACKLOG_WORK_API_KEY": WORK_KEY, "BACKLOG_CLIENT_BASE_URL": client.url,
                 "BACKLOG_CLIENT_API_KEY": CLIENT_KEY, "BACKLOG_TOOLSETS": "all",
                 "BACKLOG_UPLOAD_DIRS": DATA, "BACKLOG_TIMEOUT": "5",
                 "BACKLOG_WORK_WRITABLE": ",".join(b.WRITE_GROUPS),
                 "BACKLOG_CLIENT_WRITABLE": ",".join(b.WRITE_GROUPS)}, **extra)


@pytest.fixture
def big():
    """The stand-in as a big space (tests/big_space.py), for the bounded answers."""
    with FakeBacklog(KEY, big=True) as server:
        b.configure(dict(fault_env(server), BACKLOG_TIMEOUT="30",
                         BACKLOG_MAX_DOWNLOAD_BYTES=str(8 * 1024 * 1024)))
        yield server


KEYS_12 = [f"DEMO-{n}" for n in range(1, 13)]


@pytest.fixture
def bulk(fake, monkeypatch):
    """The stand-in over HTTP, every tool on (its rate limit simulated where a test says)."""
    b.configure(dict(fault_env(fake), BACKLOG_TIMEOUT="5"))
    return fake


def gzip_bytes(data, wbits=31):
    packer = zlib.compressobj(9, zlib.DEFLATED, wbits)
    return packer.compress(data) + packer.flush()


# == In process: dispatch and the one writer of stdout =========================

def rpc(method, params=None, id_=1, session=None):
    """One request through dispatch and the one writer of stdout: what the client reads."""
    message = {"jsonrpc": "2.0", "id": id_, "method": method}
    if params is not None:
        message["params"] = params
    reply = b.handle(message, session or b.Session())
    return None if reply is None else strict_json(b.wire(reply))


def call(_tool, **arguments):
    """tools/call through dispatch; returns the result, checked to carry no key."""
    reply = rpc("tools/call", {"name": _tool, "arguments": arguments})
    assert "result" in reply, reply
    text = json.dumps(reply)
    assert KEY not in text
    return reply["result"]


def data(result):
    assert result["isError"] is False, result
    return json.loads(result["content"][0]["text"])


def error(result):
    assert result["isError"] is True, result
    return result["content"][0]["text"]


def sent(fake, method, path):
    """The one request of that method and path; fails if there is none."""
    found = [r for r in fake.requests if r.method == method and r.path == "/api/v2/" + path]
    assert found, f"no {method} {path} in {fake.requests}"
    return found[-1]


def seen(reply):
    """What a client reads in a reply: the result's texts, or the error's message."""
    if "error" in reply:
        return reply["error"]["message"]
    return json.dumps(reply["result"], ensure_ascii=False)


H = "backlog://example.backlog.com/"


def run_serve(payload):
    out = io.BytesIO()
    b.serve(io.BytesIO(payload), out)
    return [json.loads(line) for line in out.getvalue().splitlines()], out.getvalue()


def conversation(*messages):
    replies, _ = run_serve(b"".join(json.dumps(m).encode() + b"\n" for m in messages))
    return replies


INIT_LINE = {"jsonrpc": "2.0", "id": 1, "method": "initialize",
             "params": {"protocolVersion": "2025-06-18"}}
ELICIT_INIT = {"jsonrpc": "2.0", "id": 0, "method": "initialize",
               "params": {"protocolVersion": "2025-11-25", "capabilities": {"elicitation": {}}}}
DELETE = {"jsonrpc": "2.0", "id": 1, "method": "tools/call",
          "params": {"name": "issue_delete", "arguments": {"issue_id_or_key": "DEMO-42"}}}


def answer(action, confirm=None, id_="confirm-1"):
    result = {"action": action}
    if confirm is not None:
        result["content"] = {"confirm": confirm}
    return {"jsonrpc": "2.0", "id": id_, "result": result}


# == Built: the .pyz and the bundle ============================================

@pytest.fixture(scope="session")
def pyz():
    """The built zipapp; (re)built here when absent or older than the module."""
    if not os.path.exists(PYZ) or os.path.getmtime(PYZ) < os.path.getmtime(b.__file__):
        subprocess.run(["bash", os.path.join(HERE, "zipapp.sh"), PYZ], check=True)
    return PYZ


@pytest.fixture(scope="session")
def bundle(pyz):
    """The built backlog_mcp.mcpb (zipapp.sh builds it beside the .pyz)."""
    path = pyz[:-len(".pyz")] + ".mcpb"
    sources = (pyz, b.__file__, os.path.join(HERE, "zipapp.sh"))
    if not os.path.exists(path) or os.path.getmtime(path) < max(map(os.path.getmtime, sources)):
        subprocess.run(["bash", os.path.join(HERE, "zipapp.sh"), pyz], check=True)
    return path


def need_node(what="tests/ts/node_modules"):
    """Skip where npm has not installed the Node side; on CI with npm there, fail instead."""
    if not os.path.isdir(MCPB_NODE):
        if os.environ.get("CI") and shutil.which("npm"):
            pytest.fail(f"npm is here but {what} is not: .ci/run runs `npm ci --prefix tests/ts`")
        pytest.skip("run `npm ci --prefix tests/ts` (the CI script does)")


@pytest.fixture
def unpacked(bundle, tmp_path):
    """The bundle unpacked where a host keeps it: by the toolchain's own unpacker when npm
    has installed it, else by zipfile."""
    where = tmp_path / "Claude Extensions" / "mcp-backlog-server"
    if os.path.isdir(MCPB_NODE):
        done = subprocess.run([os.path.join(HERE, "tests", "ts", "node_modules", ".bin", "mcpb"),
                               "unpack", bundle, str(where)], capture_output=True, text=True,
                              timeout=60)
        assert done.returncode == 0, done.stdout + done.stderr
    else:
        with zipfile.ZipFile(bundle) as mcpb:
            mcpb.extractall(where)
    return where


# == Spawned: the server as a process ==========================================

def child_env(fake_url=None, **extra):
    """What SDK stdio clients pass: a minimal environment plus the configured variables."""
    env = {k: os.environ[k] for k in ("PATH", "HOME", "LANG") if k in os.environ}
    if fake_url:
        env.update(BACKLOG_BASE_URL=fake_url, BACKLOG_API_KEY=KEY)
    env.update(extra)
    return env


def commands(pyz_path):
    return {"module": [sys.executable, os.path.join(HERE, "backlog_mcp.py")],
            "pyz": [sys.executable, "-I", pyz_path]}


class Process:
    """A spawned server driven over stdio, with every stdout byte kept for inspection."""

    def __init__(self, command, env):
        self.proc = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, env=env, cwd=HERE)
        self.lines, self.raw = queue.Queue(), []

        def pump():
            for line in self.proc.stdout:
                self.raw.append(line)
                self.lines.put(line)
            self.lines.put(None)
        threading.Thread(target=pump, daemon=True).start()

    def send(self, message):
        data = message if isinstance(message, bytes) else json.dumps(message).encode()
        self.proc.stdin.write(data + b"\n")
        self.proc.stdin.flush()

    def reply(self, timeout=20):
        line = self.lines.get(timeout=timeout)
        assert line is not None, "server closed stdout"
        return json.loads(line)

    def request(self, method, params=None, id_=1):
        self.send({"jsonrpc": "2.0", "id": id_, "method": method, "params": params or {}})
        return self.reply()

    def close(self):
        self.proc.stdin.close()
        code = self.proc.wait(timeout=10)
        return code, self.proc.stderr.read().decode()


def cli(pyz, fake, *args, stdin=None, **env):
    done = subprocess.run([sys.executable, "-I", pyz, *args], input=stdin, capture_output=True,
                          env=child_env(fake.url if fake else None, **env), timeout=60)
    out, err = done.stdout.decode(), done.stderr.decode()
    assert KEY not in out and KEY not in err
    return done.returncode, out, err


def python_sdk(pyz, fake, work, **client_options):
    """Run `await work(client, started)` in the official Python SDK client, connected to the
    spawned .pyz (`mode` and the callbacks in client_options)."""
    mcp = pytest.importorskip("mcp")
    from mcp.client.stdio import stdio_client

    async def session():
        params = mcp.StdioServerParameters(command=sys.executable, args=["-I", pyz],
                                           env=child_env(fake.url))
        started = time.monotonic()
        with open(os.devnull, "w") as devnull:
            async with mcp.Client(stdio_client(params, errlog=devnull),
                                  **client_options) as client:
                return await work(client, started)
    return asyncio.run(session())
