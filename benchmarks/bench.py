"""Benchmark of mcp-backlog-server: start-up, context cost, call overhead, memory, throughput,
the bundle, common answers, and every read call against a big space.

    python3 benchmarks/bench.py [--pyz backlog_mcp.pyz] [--json out.json] [--runs 20] [--calls 200]

Stdlib only (plus the project: its module, its stand-in, and the requests inside the .pyz).
A local Backlog stand-in (tests/fake_backlog.py, in its own process, TCP_NODELAY, answering
with the documented response shapes) serves every HTTP call. Each timing is the median of
repeated runs with its spread (min-max). Numbers are printed as a table; --json writes them.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "tests"))
KEY = "bench-key-1234567890"
INIT = {"jsonrpc": "2.0", "id": 0, "method": "initialize",
        "params": {"protocolVersion": "2025-11-25", "capabilities": {},
                   "clientInfo": {"name": "bench", "version": "1"}}}
HOST_PAUSE = 0.3  # seconds between tools/list and the first tools/call, a fast host's
ISSUE_CALL = {"jsonrpc": "2.0", "id": 1, "method": "tools/call",
              "params": {"name": "issue_details_get", "arguments": {"issue_id_or_key": "DEMO-42"}}}


def line(message):
    return json.dumps(message).encode() + b"\n"


def stats(samples):
    return {"median": statistics.median(samples), "min": min(samples), "max": max(samples),
            "n": len(samples)}


class StandIn:
    """tests/fake_backlog.py in its own process."""

    def __init__(self):
        self.proc = subprocess.Popen([sys.executable, os.path.join(ROOT, "tests",
                                                                    "fake_backlog.py"), KEY],
                                     stdout=subprocess.PIPE)
        self.url = self.proc.stdout.readline().decode().strip()

    def fault(self, **query):
        from urllib.parse import urlencode
        from urllib.request import Request, urlopen
        urlopen(Request(f"{self.url}/_control/fault?{urlencode(query)}", method="POST")).read()

    def close(self):
        self.proc.kill()
        self.proc.wait()


class Server:
    """The server under test, spawned; replies are read on a thread."""

    def __init__(self, command, env):
        import queue
        self.started = time.perf_counter()
        self.proc = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.DEVNULL, env=env)
        self.replies = queue.Queue()
        threading.Thread(target=self._pump, daemon=True).start()

    def _pump(self):
        for raw in self.proc.stdout:
            self.replies.put(raw)
        self.replies.put(None)

    def send(self, data):
        self.proc.stdin.write(data)
        self.proc.stdin.flush()

    def reply(self):
        raw = self.replies.get(timeout=60)
        if raw is None:
            raise RuntimeError("server exited")
        return raw

    def rss(self):
        """(current RSS, peak RSS) in KiB, from /proc."""
        with open(f"/proc/{self.proc.pid}/status") as fh:
            fields = dict(row.split(":", 1) for row in fh if ":" in row)
        return int(fields["VmRSS"].split()[0]), int(fields["VmHWM"].split()[0])

    def close(self):
        self.proc.stdin.close()
        self.proc.wait(timeout=10)


def five_spaces(url):
    """BACKLOG_SPACES with five spaces, all at the stand-in (the first is the default)."""
    names = ["one", "two", "three", "four", "five"]
    env = {"BACKLOG_SPACES": ",".join(names)}
    for name in names:
        env.update({f"BACKLOG_{name.upper()}_BASE_URL": url,
                    f"BACKLOG_{name.upper()}_API_KEY": KEY})
    return env


def env_for(url, **extra):
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": os.environ.get("HOME", "/"),
           "BACKLOG_BASE_URL": url, "BACKLOG_API_KEY": KEY}
    env.update(extra)
    return env


# == 1. Start-up ===============================================================

def startup(commands, url, runs):
    out = {}
    floor = []
    for _ in range(runs):
        started = time.perf_counter()
        subprocess.run([sys.executable, "-I", "-c", "pass"], check=True)
        floor.append(time.perf_counter() - started)
    out["python -I -c pass"] = {"initialize": stats(floor)}
    for label, command in commands.items():
        command, extra = command if isinstance(command, tuple) else (command, {})
        init, first = [], []
        for _ in range(runs):
            server = Server(command, env_for(url, **extra))
            server.send(line(INIT))
            server.reply()
            init.append(time.perf_counter() - server.started)
            server.send(line(ISSUE_CALL))
            server.reply()
            first.append(time.perf_counter() - server.started)
            server.close()
        out[label] = {"initialize": stats(init), "first_call": stats(first)}
    # What a host does: handshake, tools/list, then the model thinks before its first call.
    latency = []
    for _ in range(max(runs // 2, 1)):
        server = Server(commands["python -I backlog_mcp.pyz"], env_for(url))
        server.send(line(INIT))
        server.reply()
        server.send(line({"jsonrpc": "2.0", "method": "notifications/initialized"})
                    + line({"jsonrpc": "2.0", "id": 1, "method": "tools/list"}))
        server.reply()
        time.sleep(HOST_PAUSE)
        started = time.perf_counter()
        server.send(line(ISSUE_CALL))
        server.reply()
        latency.append(time.perf_counter() - started)
        server.close()
    out["first call after the handshake"] = stats(latency)
    base = out["python -I -c pass"]["initialize"]["median"]
    for label in commands:
        out[label]["initialize_ratio"] = out[label]["initialize"]["median"] / base
        out[label]["first_call_ratio"] = out[label]["first_call"]["median"] / base
    return out


# == 2. Context cost ===========================================================

def context_cost(url):
    import backlog_mcp as b
    from fake_backlog import load
    sizes = {}
    for label, extra in (("full set", {"BACKLOG_WRITABLE": ",".join(b.WRITE_GROUPS),
                                       "BACKLOG_UPLOAD_DIRS": ROOT, "BACKLOG_TOOLSETS": "all"}),
                         ("default set", {}), ("read-only set", {"BACKLOG_READ_ONLY": "1"})):
        b.configure(dict(env_for(url), **extra))
        session = b.Session()
        b.handle(INIT, session)
        result = b.handle({"jsonrpc": "2.0", "id": 1, "method": "tools/list"}, session)["result"]
        size = len(b.dumps(result).encode())
        # What a host hands the model of each tool: its name, description and input schema
        # (title and annotations are for the host's own display and permission prompts).
        model = sum(len(b.dumps({k: t[k] for k in ("name", "description", "inputSchema")})
                        .encode()) for t in result["tools"])
        sizes[label] = {"tools": len(result["tools"]), "bytes": size,
                        "bytes_per_tool": round(size / len(result["tools"]), 1),
                        "model_visible_bytes": model}
    issue = load("issue")
    many = [dict(issue, id=913 + i, keyId=42 + i, issueKey=f"DEMO-{42 + i}") for i in range(20)]
    answers = {"issue": ("issue_details_get", {"issue_id_or_key": "DEMO-42"}, None),
               "issue list of 20": ("issue_list_get", {"count": 20}, many),
               "wiki page": ("wiki_details_get", {"wiki_id": 5001}, None),
               "pull request": ("git_pr_details_get", {"project_id_or_key": "DEMO",
                                                       "repo_id_or_name": "webapp",
                                                       "pr_number": 1}, None),
               "issue comments": ("issue_comment_list_get", {"issue_id_or_key": "DEMO-42"}, None)}
    out = {}
    for label, (tool, arguments, fixture) in answers.items():
        row = {}
        for mode in ("lean", "full"):
            b.configure(dict(env_for(url), BACKLOG_OUTPUT=mode))
            if fixture is not None:
                b.api.get = _serving(b.api.get, fixture)
            result = b.call_tool(tool, arguments)
            row[mode] = len(result["content"][0]["text"].encode())
            b.api.__dict__.pop("get", None)
        row["lean/full"] = round(row["lean"] / row["full"], 3)
        out[label] = row
    return {"tools/list": sizes, "answers": out}


def _serving(get, value):
    def patched(path, params=None):
        return value if path == "issues" else get(path, params)
    return patched


# == 3. Call overhead ==========================================================

def call_overhead(command, url, calls, rounds=5):
    import requests
    server = Server(command, env_for(url))
    server.send(line(INIT))
    server.reply()
    server.send(line(ISSUE_CALL))
    server.reply()
    through, bare = [], []
    session = requests.Session()
    for _ in range(rounds):
        started = time.perf_counter()
        for i in range(calls):
            server.send(line(dict(ISSUE_CALL, id=i + 2)))
            server.reply()
        through.append((time.perf_counter() - started) / calls)
        started = time.perf_counter()
        for _ in range(calls):
            response = session.get(f"{url}/api/v2/issues/DEMO-42", params={"apiKey": KEY},
                                   timeout=(10, 30))
            response.json()
        bare.append((time.perf_counter() - started) / calls)
    server.close()
    return {"through server (ms/call)": stats([t * 1000 for t in through]),
            "bare requests.Session (ms/call)": stats([t * 1000 for t in bare]),
            "ratio": statistics.median(through) / statistics.median(bare)}


# == 4. Memory =================================================================

def memory(command, standin, calls, cap):
    server = Server(command, env_for(standin.url, BACKLOG_MAX_DOWNLOAD_BYTES=str(cap)))
    server.send(line(INIT))
    server.reply()
    server.send(line({"jsonrpc": "2.0", "id": 1, "method": "tools/list"}))
    server.reply()
    time.sleep(1)  # idle, as between a host's handshake and its first call: requests is loaded
    idle = server.rss()
    server.send(line(ISSUE_CALL))
    server.reply()
    after_first = server.rss()
    for i in range(calls):
        server.send(line(dict(ISSUE_CALL, id=i + 2)))
        server.reply()
    after_many = server.rss()
    download = {"jsonrpc": "2.0", "id": 9, "method": "tools/call",
                "params": {"name": "issue_attachment_download",
                           "arguments": {"issue_id_or_key": "DEMO-42", "attachment_id": 1,
                                         "format": "raw"}}}
    standin.fault(kind="big", size=cap, path="attachments")
    server.send(line(download))
    at_cap_ok = b'"isError":false' in server.reply()
    at_cap = server.rss()
    standin.fault(kind="big", size=20 * cap, path="attachments")
    server.send(line(download))
    over_refused = b'"isError":true' in server.reply()
    over_cap = server.rss()
    server.close()
    kib = 1024
    return {"idle after tools/list (MiB)": idle[0] / kib,
            "after first call (MiB)": after_first[0] / kib,
            f"after {calls} more calls (MiB)": after_many[0] / kib,
            "growth over the calls (MiB)": (after_many[0] - after_first[0]) / kib,
            f"peak after download at cap {cap} B (MiB)": at_cap[1] / kib,
            f"peak after download of {20 * cap} B, refused (MiB)": over_cap[1] / kib,
            "over-cap peak above at-cap peak (MiB)": (over_cap[1] - at_cap[1]) / kib,
            "download at cap answered": at_cap_ok, "download over cap refused": over_refused}


# == 5. Pipelined burst ========================================================

def burst(command, url, count):
    out = {}
    for label, message in (("ping", {"jsonrpc": "2.0", "method": "ping"}),
                           ("tools/list", {"jsonrpc": "2.0", "method": "tools/list"})):
        server = Server(command, env_for(url))
        server.send(line(INIT))
        server.reply()
        payload = b"".join(line(dict(message, id=i)) for i in range(count))
        started = time.perf_counter()
        threading.Thread(target=server.send, args=(payload,), daemon=True).start()
        ids = [json.loads(server.reply())["id"] for _ in range(count)]
        elapsed = time.perf_counter() - started
        server.close()
        out[label] = {"messages": count, "in order": ids == list(range(count)),
                      "ms/message": elapsed * 1000 / count}
    return out


# == 6. Stalls =================================================================

def stalls(command, standin, timeout=2):
    """Wall time of one call whose answer stalls (BACKLOG_TIMEOUT=2): '100 Continue' every
    0.2 s, a header byte every 0.5 s, a body byte every 0.05 s. One deadline covers the whole
    exchange, so each should end a little after `timeout` seconds."""
    out = {}
    for kind, interval in (("continue_trickle", 0.2), ("header_trickle", 0.5), ("trickle", None)):
        server = Server(command, env_for(standin.url, BACKLOG_TIMEOUT=str(timeout)))
        server.send(line(INIT))
        server.reply()
        query = {"kind": kind, "path": "issues"}
        if interval is not None:
            query["interval"] = interval
        standin.fault(**query)
        started = time.perf_counter()
        server.send(line(ISSUE_CALL))
        reply = json.loads(server.reply())
        out[kind] = {"seconds": time.perf_counter() - started,
                     "isError": reply["result"]["isError"]}
        server.close()
    return out


# == 7. The bundle =============================================================

def bundle(pyz_path, url, runs):
    """backlog_mcp.mcpb: its size, and start-up of the command its manifest names, run from
    the bundle unpacked as a host unpacks it."""
    import tempfile
    import zipfile
    path = pyz_path[:-len(".pyz")] + ".mcpb"
    if not os.path.exists(path):
        return {}
    with zipfile.ZipFile(path) as mcpb, tempfile.TemporaryDirectory() as where:
        sizes = {info.filename: info.file_size for info in mcpb.infolist()}
        mcpb.extractall(where)
        config = json.loads(mcpb.read("manifest.json"))["server"]["mcp_config"]
        command = [config["command"]] + [a.replace("${__dirname}", where) for a in config["args"]]
        # The command as PATH finds it (here it may be a shim, pyenv's), and the interpreter
        # that it runs in the end.
        real = subprocess.run([command[0], "-c", "import sys; print(sys.executable)"],
                              capture_output=True, text=True, check=True).stdout.strip()
        init = {}
        for label, argv in (("as named", command), ("interpreter", [real, *command[1:]])):
            init[label] = []
            for _ in range(runs):
                server = Server(argv, env_for(url))
                server.send(line(INIT))
                server.reply()
                init[label].append(time.perf_counter() - server.started)
                server.close()
    return {"bytes": os.path.getsize(path), "files": sizes,
            "initialize": {k: stats(v) for k, v in init.items()},
            "command": " ".join(command).replace(where, "DIR"), "interpreter": real}


# == 8. Scale ==================================================================

REQUIRED = {"project_id_or_key": "DEMO", "issue_id_or_key": "DEMO-42", "wiki_id": 5001,
            "document_id": "01939983409c79d5a06a49859789e38f", "repo_id_or_name": "webapp",
            "pr_number": 1, "user_id": 1, "watching_id": 5, "comment_id": 1,
            "attachment_id": 1, "shared_file_id": 1, "milestone_name": "v1.0"}
PROMPT_ARGUMENTS = {"issue": "DEMO-42", "project": "DEMO", "milestone": "v1.0",
                    "repo": "DEMO/webapp", "number": "1"}
BUDGET_BYTES = 40000  # ~10,000 tokens: Claude Code warns above this


def scale_calls(b, host):
    """Every read tool, prompt, resource and completion, with only its required arguments."""
    calls = []
    for name, tool_ in b.TOOLS.items():
        if not tool_.write and name != "space_list_get":
            calls.append((f"tool {name}", "tools/call", {
                "name": name, "arguments": {p: REQUIRED[p] for p in tool_.required}}))
    for name, found in b.PROMPTS.items():
        calls.append((f"prompt {name}", "prompts/get", {"name": name, "arguments": {
            n: PROMPT_ARGUMENTS[n] for n, _, required in found.arguments if required}}))
    for path in ("view/DEMO-42", "wiki/5001", "document/01939983409c79d5a06a49859789e38f",
                 "projects/DEMO", "git/DEMO/webapp/pullRequests/1", "file/DEMO/1"):
        calls.append((f"resource {path.split('/')[0]}", "resources/read",
                      {"uri": f"backlog://{host}/{path}"}))
    calls.append(("resources/list", "resources/list", {}))
    for prompt, argument, value in (("triage", "issue", "DEMO-4"), ("draft_issue", "project", ""),
                                    ("release_notes", "milestone", "v"),
                                    ("review_pr", "repo", "DEMO/")):
        calls.append((f"completion {argument}", "completion/complete", {
            "ref": {"type": "ref/prompt", "name": prompt},
            "argument": {"name": argument, "value": value},
            "context": {"arguments": {"project": "DEMO"}}}))
    return calls


def scale(keep=10):
    """Calls against a big space (tests/big_space.py) through the server's dispatch, in
    process: the bytes a client reads (tokens ~ bytes/3.5), Backlog requests, time; the
    worst first."""
    import backlog_mcp as b
    from fake_backlog import FakeBacklog
    rows = []
    with FakeBacklog(KEY, big=True) as fake:
        b.configure({"BACKLOG_BASE_URL": fake.url, "BACKLOG_API_KEY": KEY,
                     "BACKLOG_TOOLSETS": "all", "BACKLOG_TIMEOUT": "60",
                     "BACKLOG_MAX_DOWNLOAD_BYTES": str(8 * 1024 * 1024)})
        session = b.Session()
        b.handle(INIT, session)
        host = fake.url.split("//", 1)[1]
        for label, method, params in scale_calls(b, host):
            fake.requests.clear()
            started = time.perf_counter()
            reply = b.wire(b.handle({"jsonrpc": "2.0", "id": 1, "method": method,
                                     "params": params}, session))
            rows.append({"call": label, "bytes": len(reply),
                         "tokens": round(len(reply) / 3.5),
                         "requests": len(fake.requests),
                         "ms": round((time.perf_counter() - started) * 1000, 1),
                         "error": b'"isError":true' in reply or b'"error":{' in reply})
    rows.sort(key=lambda r: -r["bytes"])
    over = [r for r in rows if r["bytes"] > BUDGET_BYTES]
    return {"calls": len(rows), "over_budget": len(over),
            "over_100k": sum(r["bytes"] > 100000 for r in rows),
            "most_requests": max(r["requests"] for r in rows), "rows": rows,
            "worst": rows[:keep]}


COMMON = [  # what a session does most: (label, tool, arguments)
    ("an issue", "issue_details_get", {"issue_id_or_key": "DEMO-42"}),
    ("20 issues", "issue_list_get", {"count": 20}),
    ("an issue's comments", "issue_comment_list_get", {"issue_id_or_key": "DEMO-42"}),
    ("a wiki page", "wiki_details_get", {"wiki_id": 5001}),
    ("wiki pages", "wiki_list_get", {"project_id_or_key": "DEMO"}),
    ("a pull request", "git_pr_details_get", {"project_id_or_key": "DEMO",
                                              "repo_id_or_name": "webapp", "pr_number": 1}),
    ("pull requests", "git_pr_list_get", {"project_id_or_key": "DEMO",
                                          "repo_id_or_name": "webapp"}),
    ("notifications", "notification_list_get", {}),
    ("a project", "project_details_get", {"project_id_or_key": "DEMO"}),
    ("project members", "project_user_list_get", {"project_id_or_key": "DEMO"}),
    ("statuses", "project_status_list_get", {"project_id_or_key": "DEMO"}),
    ("milestones", "issue_milestone_list_get", {"project_id_or_key": "DEMO"}),
    ("custom fields", "project_custom_field_list_get", {"project_id_or_key": "DEMO"}),
    ("project activity", "project_activity_list_get", {"project_id_or_key": "DEMO"}),
    ("watchings", "user_watching_list_get", {"user_id": 1}),
    ("a document", "document_details_get", {"document_id": "01939983409c79d5a06a49859789e38f"}),
    ("recently viewed issues", "user_recent_list_get", {"kind": "issues"}),
    ("myself", "user_myself_get", {}),
]


def common_answers():
    """The model-facing bytes (and tokens ~ bytes/3.5) of COMMON, lean and full, against the
    stand-in's documented shapes (20 issues for the list)."""
    import backlog_mcp as b
    from fake_backlog import FakeBacklog, load
    issue = load("issue")
    rows = {}
    with FakeBacklog(KEY) as fake:
        fake.fixtures["issues_list"] = [dict(issue, id=913 + i, keyId=42 + i,
                                             issueKey=f"DEMO-{42 + i}") for i in range(20)]
        for mode in ("lean", "full"):
            b.configure({"BACKLOG_BASE_URL": fake.url, "BACKLOG_API_KEY": KEY,
                         "BACKLOG_OUTPUT": mode, "BACKLOG_TOOLSETS": "all"})
            for label, tool, arguments in COMMON:
                reply = b.handle({"jsonrpc": "2.0", "id": 1, "method": "tools/call",
                                  "params": {"name": tool, "arguments": arguments}}, b.Session())
                texts = "".join(c.get("text", "") for c in reply["result"]["content"])
                rows.setdefault(label, {})[mode] = len(texts.encode())
    total = {mode: sum(r[mode] for r in rows.values()) for mode in ("lean", "full")}
    return {"answers": rows, "total_bytes": total,
            "total_tokens": {m: round(v / 3.5) for m, v in total.items()}}


def scale_table(result, title="scale"):
    out = [f"{title:9} {result['calls']} calls against a big space: {result['over_budget']} over "
           f"{BUDGET_BYTES:,} bytes ({result['over_100k']} over 100,000); at most "
           f"{result['most_requests']} Backlog requests in one call"]
    for row in result["worst"]:
        out.append(f"{title:9}   {row['call']:42} {row['bytes']:>10,} B {row['tokens']:>8,} tok "
                   f"{row['requests']:>4} req {row['ms']:>8.1f} ms"
                   + ("  (an error)" if row["error"] else ""))
    return "\n".join(out)


# == Report ====================================================================

# == 9. Many at once ============================================================

def bulk(command, items=50, limit=30, window=60.0):
    """issue_bulk_update of `items` issues through the spawned server, against a stand-in
    that limits writes to `limit` a `window` seconds as Backlog limits a key: the requests
    it took, how many were answered 429, and the wall time (the server's own pacing, one
    write at least BULK_GAP apart, included)."""
    sys.path.insert(0, os.path.join(ROOT, "tests"))
    from fake_backlog import FakeBacklog
    with FakeBacklog(KEY) as fake:
        fake.update_limit = (limit, window)
        server = Server(command, env_for(fake.url, BACKLOG_TOOLSETS="all",
                                         BACKLOG_TIMEOUT="30"))
        server.send(line(INIT))
        server.reply()
        keys = [f"DEMO-{n}" for n in range(1, items + 1)]
        started = time.perf_counter()
        server.send(line({"jsonrpc": "2.0", "id": 2, "method": "tools/call", "params": {
            "name": "issue_bulk_update", "arguments": {"issues": keys, "status_id": "Resolved",
                                                       "dry_run": False}}}))
        while True:  # progress notifications come first when asked; none here
            reply = json.loads(server.replies.get(timeout=900))
            if reply.get("id") == 2:
                break
        seconds = time.perf_counter() - started
        server.close()
        receipt = json.loads(reply["result"]["content"][0]["text"])
        return {"items": items, "limit": f"{limit} writes / {window:g} s",
                "done": len(receipt.get("done", [])), "seconds": seconds,
                "requests": len(fake.requests),
                "writes": sum(r.method == "PATCH" for r in fake.requests),
                "answered 429": fake.limited}


def markdown(results):
    """The README's table of figures, from one run."""
    ms = lambda row: f"{row['median'] * 1000:.1f} ms"  # noqa: E731
    start, ctx = results["startup"], results["context"]["tools/list"]
    pyz, floor = start["python -I backlog_mcp.pyz"], start["python -I -c pass"]["initialize"]
    mem, burst_, stall = results["memory"], results["burst"], results["stalls"]
    common = results["common"]["total_tokens"]
    rows = [
        ("spawn → `initialize` reply, `.pyz` (median of "
         f"{pyz['initialize']['n']})", f"{ms(pyz['initialize'])}, ×{pyz['initialize_ratio']:.2f}"
         f" of `python -I -c pass` ({ms(floor)})"),
        ("the same with five spaces (`BACKLOG_SPACES`)",
         ms(start[".pyz with five spaces"]["initialize"])),
        ("spawn → `initialize` reply, `backlog_mcp.py`",
         f"{ms(start['python -I backlog_mcp.py']['initialize'])} (a script is compiled at every "
         "start; the `.pyz` carries bytecode)"),
        ("first `tools/call` sent 0.3 s after the handshake, as a host does",
         ms(start["first call after the handshake"])),
        (f"what a host hands the model (name, description, input schema), default set "
         f"({ctx['default set']['tools']} tools)",
         f"{ctx['default set']['model_visible_bytes']:,} bytes; `tools/list` "
         f"{ctx['default set']['bytes']:,} bytes"),
        (f"the same, every tool ({ctx['full set']['tools']}; `BACKLOG_TOOLSETS=all`, every group)"
         f" / read-only set ({ctx['read-only set']['tools']})",
         f"{ctx['full set']['model_visible_bytes']:,} / "
         f"{ctx['read-only set']['model_visible_bytes']:,} bytes"),
        (f"{len(results['common']['answers'])} common answers, lean / full",
         f"~{common['lean']:,} / ~{common['full']:,} tokens"),
        (f"{results['scale']['calls']} calls against a big space (thousands of users, "
         "100,000-character texts)", f"{results['scale']['over_budget']} over 40,000 bytes; "
         f"at most {results['scale']['most_requests']} Backlog requests in one call"),
        ("call overhead, `issue_details_get` through the server vs a bare `requests.Session`",
         f"{results['overhead']['through server (ms/call)']['median']:.2f} vs "
         f"{results['overhead']['bare requests.Session (ms/call)']['median']:.2f} ms per call, "
         f"×{results['overhead']['ratio']:.2f}"),
        ("RSS idle / after 1,000 more calls", f"{mem['idle after tools/list (MiB)']:.1f} / "
         f"{mem['after 1000 more calls (MiB)']:.1f} MiB"),
        ("a call whose answer stalls (`100 Continue` every 0.2 s · a header byte every 0.5 s · "
         "a body byte every 0.05 s), `BACKLOG_TIMEOUT=2`",
         " · ".join(f"{stall[k]['seconds']:.2f}" for k in ("continue_trickle",
                                                            "header_trickle", "trickle"))
         + " s, then an error"),
        ("1,000 pipelined `ping` / `tools/list`",
         f"all answered in order, {burst_['ping']['ms/message']:.2f} / "
         f"{burst_['tools/list']['ms/message']:.2f} ms per message"),
    ]
    if results.get("bundle"):
        rows.append(("`backlog_mcp.mcpb`, and spawn → `initialize` with its own command "
                     "(`python3 -I DIR/server/backlog_mcp.pyz`)",
                     f"{results['bundle']['bytes']:,} bytes; "
                     f"{ms(results['bundle']['initialize']['as named'])}"))
    if results.get("bulk"):
        row = results["bulk"]
        rows.append((f"`issue_bulk_update` of {row['items']} issues under a simulated limit "
                     f"of {row['limit']}", f"{row['requests']} requests ({row['writes']} "
                     f"writes, {row['answered 429']} answered 429), {row['seconds']:.1f} s"))
    return "\n".join(["| measure | figure |", "|---|---|"]
                     + [f"| {label} | {figure} |" for label, figure in rows])


def table(results):
    rows = []
    startup = dict(results["startup"])
    pause = startup.pop("first call after the handshake")
    for label, row in startup.items():
        init = row["initialize"]
        rows.append(f"start-up  {label:30} initialize {init['median'] * 1000:6.1f} ms "
                    f"({init['min'] * 1000:.1f}-{init['max'] * 1000:.1f})"
                    + (f"  x{row['initialize_ratio']:.2f}; first call "
                       f"{row['first_call']['median'] * 1000:.1f} ms x{row['first_call_ratio']:.2f}"
                       if "first_call" in row else "  (the floor)"))
    rows.append(f"start-up  first tools/call {HOST_PAUSE:g} s after the handshake (.pyz): "
                f"{pause['median'] * 1000:.1f} ms ({pause['min'] * 1000:.1f}-"
                f"{pause['max'] * 1000:.1f})")
    for label, row in results["context"]["tools/list"].items():
        rows.append(f"context   tools/list {label:19} {row['tools']} tools, {row['bytes']:,} bytes,"
                    f" {row['bytes_per_tool']} bytes/tool; name+description+schema "
                    f"{row['model_visible_bytes']:,} bytes")
    for label, row in results["context"]["answers"].items():
        rows.append(f"context   answer {label:23} lean {row['lean']:,} B, full {row['full']:,} B,"
                    f" lean/full {row['lean/full']:.2f}")
    overhead = results["overhead"]
    rows.append(f"overhead  through server {overhead['through server (ms/call)']['median']:.3f} "
                f"ms/call, bare requests.Session "
                f"{overhead['bare requests.Session (ms/call)']['median']:.3f} ms/call, "
                f"ratio {overhead['ratio']:.2f}")
    for label, value in results["memory"].items():
        rows.append(f"memory    {label:52} "
                    + (f"{value:.1f}" if isinstance(value, float) else str(value)))
    for label, row in results["burst"].items():
        rows.append(f"burst     {row['messages']} x {label:12} in order: {row['in order']}, "
                    f"{row['ms/message']:.3f} ms/message")
    for label, row in results["stalls"].items():
        rows.append(f"stall     {label:17} with BACKLOG_TIMEOUT=2: the call ends after "
                    f"{row['seconds']:.2f} s (isError {row['isError']})")
    if results["bundle"]:
        row = results["bundle"]
        rows.append(f"bundle    backlog_mcp.mcpb {row['bytes']:,} bytes ("
                    + ", ".join(f"{n} {size:,}" for n, size in row["files"].items()) + ")")
        named, real = row["initialize"]["as named"], row["initialize"]["interpreter"]
        rows.append(f"bundle    {row['command']}: initialize {named['median'] * 1000:.1f} ms "
                    f"({named['min'] * 1000:.1f}-{named['max'] * 1000:.1f}); with "
                    f"{row['interpreter']} itself {real['median'] * 1000:.1f} ms "
                    f"({real['min'] * 1000:.1f}-{real['max'] * 1000:.1f})")
    rows.append(answers_table(results))
    if "bulk" in results:
        row = results["bulk"]
        rows.append(f"bulk      {row['items']} issues updated in one call under {row['limit']}: "
                    f"{row['done']} done, {row['requests']} requests ({row['writes']} writes, "
                    f"{row['answered 429']} answered 429), {row['seconds']:.1f} s")
    return "\n".join(rows)


def answers_table(results):
    common = results["common"]
    return "\n".join([f"answers   {len(common['answers'])} common answers: lean "
                      f"{common['total_bytes']['lean']:,} B (~{common['total_tokens']['lean']:,}"
                      f" tokens), full {common['total_bytes']['full']:,} B "
                      f"(~{common['total_tokens']['full']:,})", scale_table(results["scale"])])


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--pyz", default=os.path.join(ROOT, "backlog_mcp.pyz"))
    parser.add_argument("--json", help="write the figures to this file")
    parser.add_argument("--runs", type=int, default=20, help="start-up runs per command")
    parser.add_argument("--calls", type=int, default=1000, help="calls for overhead and memory")
    parser.add_argument("--burst", type=int, default=1000, help="messages per pipelined burst")
    parser.add_argument("--worst", type=int, default=10, help="calls of the scale run shown")
    parser.add_argument("--markdown", action="store_true", help="also print the README's "
                        "table of figures")
    parser.add_argument("--bulk", action="store_true", help="also a 50-issue bulk update "
                        "under a simulated limit of 30 writes a minute (about 80 s)")
    parser.add_argument("--answers-of", metavar="DIR", help="only the answers (common and "
                        "scale) of the backlog_mcp.py in DIR: an earlier version, to compare")
    args = parser.parse_args(argv)
    if args.answers_of:
        sys.path.insert(0, os.path.abspath(args.answers_of))
        results = {"common": common_answers(), "scale": scale(keep=args.worst)}
        print(answers_table(results))
        return results
    if not os.path.exists(args.pyz):
        raise SystemExit(f"{args.pyz} not found: run `bash zipapp.sh` first")
    sys.path.insert(0, args.pyz)  # the requests that the .pyz carries, for the bare loop
    pyz = [sys.executable, "-I", args.pyz]
    module = [sys.executable, "-I", os.path.join(ROOT, "backlog_mcp.py")]
    standin = StandIn()
    try:
        results = {
            "python": sys.version.split()[0],
            "startup": startup({"python -I backlog_mcp.pyz": pyz,
                                "python -I backlog_mcp.py": module,
                                ".pyz with five spaces": (pyz, five_spaces(standin.url))},
                               standin.url, args.runs),
            "context": context_cost(standin.url),
            "overhead": call_overhead(pyz, standin.url, max(args.calls // 5, 1)),
            "memory": memory(pyz, standin, args.calls, 7 * 1024 * 1024),
            "burst": burst(pyz, standin.url, args.burst),
            "stalls": stalls(pyz, standin),
            "bundle": bundle(args.pyz, standin.url, args.runs),
            "common": common_answers(),
            "scale": scale(keep=args.worst),
        }
        if args.bulk:
            results["bulk"] = bulk(pyz)
    finally:
        standin.close()
    print(f"mcp-backlog-server benchmark, Python {results['python']}, {os.cpu_count()} cores")
    print(table(results))
    if args.markdown:
        print(markdown(results))
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(results, fh, indent=2)
    return results


if __name__ == "__main__":
    main()
