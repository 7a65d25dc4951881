"""A local stand-in for the Backlog API v2 (stdlib only), for the tests and the benchmark.

It answers with the example bodies in tests/data (copied from Backlog's documented shapes),
records every request, and can be told to misbehave (stall, reset, trickle, proxy pages, a raw
answer of any status, headers and body).

Two projects exist: DEMO (id 101), whose data are the fixtures, and OTHER (id 202), whose data
are the same fixtures with their project rewritten and their texts marked OTHER_TEXT;
space-wide lists hold items of both (those of OTHER with ids 100000 higher).
Identifiers of OTHER: project OTHER/202, issue OTHER-1/999, wiki 6001, document 'f' * 32,
repository 'secret', watching 9999, notification 100808, star 1166. Identifiers that no
project has (answered 404, as Backlog does): MISSING.
"""

import base64
import copy
import json
import os
import re
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qsl, unquote, urlsplit

DATA = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data")
PNG = (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x00\x01\x00\x00\x00\x01\x08\x06\x00\x00"
       b"\x00\x1f\x15\xc4\x89\x00\x00\x00\rIDATx\x9cc\xf8\xff\xff?\x03\x00\x08\xfc\x02\xfe\xa7"
       b"\x9a\xa0\xa0\x00\x00\x00\x00IEND\xaeB`\x82")
OTHER_MARKERS = re.compile(r"(?:^|/)(?:OTHER|202|OTHER-\d+|999|6001|f{32}|secret|9999)(?:/|$)")
OTHER_TEXT = "⟦other⟧ "  # the start of every text of project OTHER
MISSING = {"project": "NOPE", "project id": "303", "issue": "DEMO-9999", "issue id": "9999999",
           "wiki": "7777", "document": "e" * 32, "repo": "nothere", "watching": "8888"}
MISSING_MARKERS = re.compile(r"(?:^|/)(?:%s)(?:/|$)" % "|".join(map(re.escape, MISSING.values())))
P = r"projects/[A-Za-z_0-9]+"
ISSUE = r"(?:[A-Z_0-9]+-\d+|\d+)"
D = r"[0-9a-f]{32}"
R = P + r"/git/repositories/[\w.-]+"

ROUTES = [  # method, path below /api/v2/, fixture (or a callable name on the server)
    ("GET", r"space", "space"), ("GET", r"space/activities", "@activities"),
    ("GET", r"users", "users_list"), ("GET", r"users/myself", "myself"),
    ("GET", r"users/\d+/activities", "@activities"),
    ("GET", r"users/\d+/stars/count", "user_stars_count"),
    ("GET", r"users/\d+/watchings", "@watchings"),
    ("GET", r"users/\d+/watchings/count", "watchings_count"),
    ("GET", r"watchings/\d+", "watching"), ("POST", r"watchings", "watching"),
    ("PATCH", r"watchings/\d+", "watching"), ("DELETE", r"watchings/\d+", "watching"),
    ("POST", r"watchings/\d+/markAsRead", None),
    ("GET", r"projects", "@projects"), ("POST", r"projects", "project"),
    ("GET", P, "project"), ("PATCH", P, "project"), ("DELETE", P, "project"),
    ("GET", P + r"/statuses", "statuses"), ("GET", P + r"/issueTypes", "issue_types"),
    ("GET", P + r"/categories", "categories"), ("POST", P + r"/categories", "categories#0"),
    ("GET", P + r"/versions", "versions"), ("POST", P + r"/versions", "versions#0"),
    ("PATCH", P + r"/versions/\d+", "versions#0"), ("DELETE", P + r"/versions/\d+", "versions#0"),
    ("GET", P + r"/customFields", "custom_fields"), ("GET", P + r"/users", "users_list"),
    ("GET", P + r"/activities", "project_activities"),
    ("GET", r"priorities", "priorities"), ("GET", r"resolutions", "resolutions"),
    ("GET", r"issues", "issues_list"), ("GET", r"issues/count", "issues_count"),
    ("POST", r"issues", "issue_created"), ("GET", "issues/" + ISSUE, "issue"),
    ("PATCH", "issues/" + ISSUE, "issue"), ("DELETE", "issues/" + ISSUE, "issue"),
    ("GET", "issues/" + ISSUE + "/comments", "comments_list"),
    ("POST", "issues/" + ISSUE + "/comments", "comment"),
    ("PATCH", "issues/" + ISSUE + r"/comments/\d+", "comment_updated"),
    ("DELETE", "issues/" + ISSUE + r"/comments/\d+", "comment"),
    ("DELETE", "issues/" + ISSUE + r"/attachments/\d+", "issue_attachments#0"),
    ("POST", r"space/attachment", "@upload"),
    ("GET", "issues/" + ISSUE + "/attachments", "issue_attachments"),
    ("GET", "issues/" + ISSUE + r"/attachments/\d+", "@file"),
    ("GET", "issues/" + ISSUE + "/sharedFiles", "issue_shared_files"),
    ("GET", "issues/" + ISSUE + "/relatedIssues", "issues_list"),
    ("POST", "issues/" + ISSUE + "/relatedIssues", "issue"),
    ("DELETE", "issues/" + ISSUE + r"/relatedIssues/\d+", "issue"),
    ("GET", r"wikis", "@wikis"), ("GET", r"wikis/count", "wikis_count"),
    ("GET", r"wikis/tags", "wiki_tags"), ("POST", r"wikis", "wiki"),
    ("GET", r"wikis/\d+", "wiki"), ("PATCH", r"wikis/\d+", "wiki"),
    ("GET", r"wikis/\d+/history", "wiki_history"),
    ("GET", r"wikis/\d+/attachments", "wiki_attachments"),
    ("GET", r"wikis/\d+/attachments/\d+", "@file"),
    ("GET", r"documents", "documents_list"), ("GET", r"documents/tree", "document_tree"),
    ("POST", r"documents", "document_created"), ("GET", "documents/" + D, "document"),
    ("DELETE", "documents/" + D, "document"), ("GET", r"documents/count", "documents_count"),
    ("GET", "documents/" + D + "/comments", "document_comments"),
    ("POST", "documents/" + D + "/tags", "document_tags"), ("DELETE", "documents/" + D + "/tags", None),
    ("GET", "documents/" + D + r"/attachments/\d+", "@file"),
    ("GET", P + r"/git/repositories", "git_repositories"),
    ("GET", R, "git_repository"),
    ("GET", R + "/pullRequests", "pull_requests_list"),
    ("POST", R + "/pullRequests", "pull_request"),
    ("GET", R + "/pullRequests/count", "pull_requests_count"),
    ("GET", R + r"/pullRequests/\d+", "pull_request"),
    ("PATCH", R + r"/pullRequests/\d+", "pull_request"),
    ("GET", R + r"/pullRequests/\d+/attachments", "pull_request_attachments"),
    ("GET", R + r"/pullRequests/\d+/attachments/\d+", "@file"),
    ("GET", R + r"/pullRequests/\d+/comments", "pull_request_comments"),
    ("POST", R + r"/pullRequests/\d+/comments", "pull_request_comment"),
    ("PATCH", R + r"/pullRequests/\d+/comments/\d+", "pull_request_comment"),
    ("GET", P + r"/files/metadata(?:/.*)?", "shared_files_list"),
    ("GET", P + r"/files/\d+", "@file"),
    ("GET", r"notifications", "@notifications"),
    ("GET", r"notifications/count", "notifications_count"),
    ("POST", r"notifications/markAsRead", "notifications_mark_all_as_read"),
    ("POST", r"notifications/\d+/markAsRead", None),
    ("GET", "issues/" + ISSUE + "/participants", "users_list"),
    ("GET", "issues/" + ISSUE + r"/comments/count", "comments_count"),
    ("GET", "issues/" + ISSUE + r"/comments/\d+", "comment"),
    ("GET", "issues/" + ISSUE + r"/comments/\d+/notifications", "comment_notifications"),
    ("POST", "issues/" + ISSUE + r"/comments/\d+/notifications", "comment"),
    ("POST", "issues/" + ISSUE + "/sharedFiles", "issue_shared_files"),
    ("DELETE", "issues/" + ISSUE + r"/sharedFiles/\d+", "issue_shared_files#0"),
    ("DELETE", r"wikis/\d+", "wiki"),
    ("POST", r"wikis/\d+/attachments", "wiki_attachments"),
    ("DELETE", r"wikis/\d+/attachments/\d+", "wiki_attachments#0"),
    ("GET", r"wikis/\d+/sharedFiles", "issue_shared_files"),
    ("POST", r"wikis/\d+/sharedFiles", "issue_shared_files"),
    ("DELETE", r"wikis/\d+/sharedFiles/\d+", "issue_shared_files#0"),
    ("GET", R + r"/pullRequests/\d+/comments/count", "pull_request_comments_count"),
    ("GET", r"users/myself/recentlyViewedIssues", "@recent_issues"),
    ("GET", r"users/myself/recentlyViewedProjects", "@recent_projects"),
    ("GET", r"users/myself/recentlyViewedWikis", "@recent_wikis"),
    ("GET", r"users/\d+", "myself"), ("GET", r"users/\d+/stars", "@stars"),
    ("POST", r"stars", None), ("DELETE", r"stars/\d+", None),
    ("GET", r"rateLimit", "rate_limit"),
    ("GET", r"space/notification", "@space_notice"),
]
COMPILED = [(m, re.compile(p + r"\Z"), f) for m, p, f in ROUTES]


def load(name):
    with open(os.path.join(DATA, name + ".json"), encoding="utf-8") as fh:
        return json.load(fh)


def to_other(value):
    """The same data, moved to project OTHER (id 202)."""
    if isinstance(value, list):
        return [to_other(v) for v in value]
    if not isinstance(value, dict):
        return value
    out = {}
    for key, item in value.items():
        if key == "projectId" and item == 101:
            item = 202
        elif key == "projectKey" and item == "DEMO":
            item = "OTHER"
        elif key == "issueKey" and isinstance(item, str):
            item = item.replace("DEMO-", "OTHER-")
        elif key == "project" and isinstance(item, dict) and item.get("id") == 101:
            item = dict(to_other(item), id=202)
        elif key in ("summary", "description", "content", "title", "plain") \
                and isinstance(item, str):
            item = OTHER_TEXT + item
        else:
            item = to_other(item)
        out[key] = item
    if out.get("projectKey") == "OTHER" and out.get("id") == 101:
        out["id"] = 202
    return out


class Request:
    def __init__(self, method, path, query, form, headers, raw_path=None, files=()):
        self.method, self.path, self.query, self.form, self.headers = (method, path, query, form,
                                                                       headers)
        self.raw_path = raw_path or path  # as sent, still percent-encoded
        self.files = list(files)  # (field, filename, bytes) of a multipart/form-data body
        self.at = time.monotonic()  # when it came

    def q(self, key):
        return [v for k, v in self.query if k == key]

    def f(self, key):
        return [v for k, v in self.form if k == key]

    def __repr__(self):
        return f"<{self.method} {self.path} {self.query} {self.form}>"


def multipart(body, content_type):
    """(field, filename, bytes) for each part of a multipart/form-data body."""
    from email.parser import BytesParser
    from email.policy import HTTP
    message = BytesParser(policy=HTTP).parsebytes(
        b"Content-Type: " + content_type.encode() + b"\r\n\r\n" + body)
    return [(part.get_param("name", header="content-disposition"), part.get_filename(),
             part.get_payload(decode=True)) for part in message.iter_parts()]


def body_of(raw, content_type):
    """(form pairs, files) of a request body: url-encoded, or multipart/form-data."""
    if (content_type or "").startswith("multipart/"):
        return [], multipart(raw, content_type)
    return parse_qsl(raw.decode("utf-8", "replace"), keep_blank_values=True), []


def json_reply(status, value, headers=None):
    data = b"" if value is None else json.dumps(value, ensure_ascii=False).encode("utf-8")
    base = {"Content-Type": "application/json;charset=utf-8", "X-RateLimit-Limit": "600",
            "X-RateLimit-Remaining": "599", "X-RateLimit-Reset": str(int(time.time()) + 60)}
    return status, dict(base, **(headers or {})), data


class Backlog:
    """The stand-in's answers: (status, headers, body) for a request; no HTTP involved."""

    def __init__(self, api_key="test-key-1234567890", big=False):
        self.api_key = api_key
        self.big = None
        if big:  # a space of real size (tests/big_space.py)
            from big_space import BigSpace, log_file
            self.big = BigSpace(load, to_other)
            self.file = log_file()
        self.requests = []
        self.fixtures = {}
        self.files = {}           # path regex -> (body bytes, headers)
        self.errors = []          # (method, path regex, status, body): answered instead
        self.update_limit = None  # (requests, seconds): Backlog's per-key limit of writes
        self.updates = []         # when the writes in the current window came
        self.limited = 0          # writes answered 429
        self.say_remaining = True  # False: a write's answer hides how many are left
        self.file = self.file if big else (
            PNG, {"Content-Type": "image/png",
                  "Content-Disposition": "attachment; filename*=UTF-8''"
                                         "screenshot%20%E7%94%BB%E9%9D%A2.png"})

    def calls(self, method=None):
        return [r for r in self.requests if method is None or r.method == method]

    def respond(self, method, path, query, form, headers=None, raw_path=None, files=()):
        """The answer to one request, with Backlog's rate-limit headers of the update class
        for a write when update_limit is set (and 429 past the limit, as Backlog answers)."""
        if self.update_limit is None or method == "GET":
            return self.answer(method, path, query, form, headers, raw_path, files)
        limit, window = self.update_limit
        now = time.time()
        self.updates = [t for t in self.updates if t > now - window]
        reset = (self.updates[0] if self.updates else now) + window
        said = {"X-RateLimit-Limit": str(limit), "X-RateLimit-Reset": f"{reset:.3f}"}
        if len(self.updates) >= limit:
            self.limited += 1
            self.requests.append(Request(method, path, query, form, dict(headers or {}),
                                         raw_path, files))
            return json_reply(429, load("error_429"), dict(said, **{
                "X-RateLimit-Remaining": "0", "Retry-After": f"{reset - now:.3f}"}))
        self.updates.append(now)
        status, answer_headers, data = self.answer(method, path, query, form, headers,
                                                   raw_path, files)
        if not self.say_remaining:
            return status, answer_headers, data
        return status, dict(answer_headers, **said, **{
            "X-RateLimit-Remaining": str(limit - len(self.updates))}), data

    def answer(self, method, path, query, form, headers=None, raw_path=None, files=()):
        key = dict(query).get("apiKey")
        self.keys = [v for k, v in query if k == "apiKey"]
        query = [(k, v) for k, v in query if k != "apiKey"]
        request = Request(method, path, query, form, dict(headers or {}), raw_path, files)
        request.key = key  # the apiKey it carried
        self.requests.append(request)
        for err_method, where, status, body in self.errors:
            if err_method == method and re.search(where, path):
                return json_reply(status, body)
        if key != self.api_key:
            return json_reply(401, {"errors": [{"message": "Authentication failure.",
                                                "code": 11, "moreInfo": ""}]})
        sub = path[len("/api/v2/"):] if path.startswith("/api/v2/") else None
        if sub is not None and (MISSING_MARKERS.search(sub) or set(MISSING.values()) & {
                str(v) for _, v in query + form}):
            return json_reply(404, {"errors": [{"message": "No resource.", "code": 6,
                                                "moreInfo": ""}]})
        route = next((f for m, rx, f in COMPILED if sub is not None and m == method
                      and rx.match(sub)), "missing")
        if route == "missing":
            return json_reply(404, {"errors": [{"message": "No resource.", "code": 6,
                                                "moreInfo": ""}]})
        if route is None:
            return 204, {}, b""
        big = self.big.answer(method, sub, query) if self.big and route != "@file" else None
        if big is not None:
            return json_reply(200, big)
        parts = sub.split("/")
        if parts[0] == "projects" and len(parts) > 1 \
                and parts[1] not in ("DEMO", "101", "OTHER", "202"):
            return json_reply(404, load("error_404_project"))
        other = bool(OTHER_MARKERS.search(sub)) or "202" in [v for _, v in query + form]
        if route == "@file":
            for rx, (data, file_headers) in self.files.items():
                if re.search(rx, path):
                    return 200, dict(file_headers), data
            return 200, dict(self.file[1]), self.file[0]
        if route.startswith("@"):
            value = getattr(self, "list_" + route[1:])(request)
            if isinstance(value, tuple):  # a whole reply, an error
                return value
        else:
            name, _, index = route.partition("#")
            value = copy.deepcopy(self.fixtures.get(name) or load(name))
            if index:
                value = value[int(index)]
            if other:
                value = to_other(value)
            number = re.fullmatch(r"issues/DEMO-(\d+)", sub)
            if route == "issue" and number and number.group(1) != "42":
                value = dict(value, issueKey=f"DEMO-{number.group(1)}",  # each issue its own
                             keyId=int(number.group(1)), id=900000 + int(number.group(1)))
        return json_reply(201 if route == "issue_created" else 200, value)

    def both(self, name):
        items = load(name)
        return items + [dict(item, id=item["id"] + 100000) for item in to_other(items)]

    def list_activities(self, request):
        return self.both("project_activities")

    def list_watchings(self, request):
        return self.both("watchings_list")

    def list_notifications(self, request):
        return self.both("notifications_list")

    def list_upload(self, request):
        found = [(name, data) for field, name, data in request.files if field == "file"]
        if not found:
            return json_reply(400, {"errors": [{"message": "Please specify file.", "code": 7,
                                                "moreInfo": ""}]})
        return {"id": 1, "name": found[0][0], "size": len(found[0][1])}

    def list_recent_issues(self, request):
        return [{"issue": issue, "updated": issue["updated"]} for issue in
                load("issues_list")[:1] + to_other(load("issues_list")[:1])]

    def list_recent_projects(self, request):
        return [{"project": project, "updated": "2025-05-01T09:00:00Z"}
                for project in self.both("projects_list")]

    def list_recent_wikis(self, request):
        return [{"page": page, "updated": page["updated"]} for page in
                load("wikis_list")[:1] + to_other(load("wikis_list")[:1])]

    def list_stars(self, request):
        stars = copy.deepcopy(self.fixtures.get("user_stars") or load("user_stars"))
        other = copy.deepcopy(stars[:1])
        for star in other:
            star["id"] += 1000
            star["url"] = re.sub(r"/view/[A-Z_0-9]+-", "/view/OTHER-", star["url"])
        return stars + other

    def list_space_notice(self, request):
        return {"content": "Maintenance on Saturday", "updated": "2025-05-01T09:00:00Z"}

    def list_projects(self, request):
        return self.both("projects_list")

    def list_wikis(self, request):
        project = dict(request.query).get("projectIdOrKey")
        if project in ("OTHER", "202"):
            return to_other(load("wikis_list"))
        if project in ("DEMO", "101"):
            return load("wikis_list")
        # Backlog requires the project (both Nulab clients treat it so)
        return json_reply(400, {"errors": [{"message": "Please specify projectIdOrKey.",
                                            "code": 7, "moreInfo": ""}]})


class FakeBacklog(Backlog):
    """Start with `with FakeBacklog() as fake:`; fake.url is the base URL, fake.requests the log."""

    def __init__(self, api_key="test-key-1234567890", big=False):
        super().__init__(api_key, big)
        self.faults = []          # (path regex or None, kind, arg, method), consumed in order
        self.server = None
        self.stopping = threading.Event()  # set by stop(): the long trickles end at once

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    def start(self):
        fake = self
        self.stopping.clear()

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def setup(self):
                super().setup()
                self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

            def log_message(self, *args):
                pass

            def do_GET(self):
                fake.handle(self)

            do_POST = do_PATCH = do_DELETE = do_PUT = do_GET

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        # A short poll: shutdown() waits for the loop to notice (0.5 s by default, paid by
        # every test that starts a stand-in).
        threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.01},
                         daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        return self

    def stop(self):
        self.stopping.set()
        if self.server:
            self.server.shutdown()
            self.server.server_close()

    def fault(self, kind, arg=None, path=None, times=1, method=None):
        for _ in range(times):
            self.faults.append((path, kind, arg, method))

    def handle(self, h):
        url = urlsplit(h.path)
        length = int(h.headers.get("Content-Length") or 0)
        form, files = body_of(h.rfile.read(length) if length else b"",
                              h.headers.get("Content-Type"))
        query = parse_qsl(url.query, keep_blank_values=True)
        path = unquote(url.path)
        if path == "/_control/fault":  # for a stand-in in another process (the benchmark)
            args = dict(query)
            arg = (int(args["size"]), args.get("type", "application/octet-stream")) \
                if args["kind"] == "big" else None
            if args["kind"] in ("continue_trickle", "header_trickle") and "interval" in args:
                arg = float(args["interval"])
            if args["kind"] == "raw":  # status=, headers= a JSON object, body= base64
                arg = (int(args.get("status", 200)), json.loads(args.get("headers") or "{}"),
                       base64.b64decode(args.get("body", "")))
            self.fault(args["kind"], arg, args.get("path"), int(args.get("times", 1)))
            return self.send_bytes(h, 204, b"", {})
        for i, (where, kind, arg, method) in enumerate(self.faults):
            if (where is None or re.search(where, path)) and method in (None, h.command):
                del self.faults[i]
                self.requests.append(Request(h.command, path, query, form, dict(h.headers)))
                return self.misbehave(h, kind, arg)
        status, headers, data = self.respond(h.command, path, query, form, h.headers, url.path,
                                             files)
        self.send_bytes(h, status, data, headers)

    def send_bytes(self, h, status, data, headers, length=None):
        h.send_response(status)
        for k, v in headers.items():
            h.send_header(k, v)
        h.send_header("Content-Length", str(len(data) if length is None else length))
        h.end_headers()
        if callable(data):
            data(h)
        else:
            h.wfile.write(data)

    def misbehave(self, h, kind, arg):
        """Faults: status (with a body or none), html, empty, truncated, hang, reset, trickle,
        big (a streamed body of `arg` bytes), continue_trickle (`100 Continue` every `arg` s,
        never a final answer), header_trickle (a status line, then a header one byte every
        `arg` s), raw (`arg` = (status, headers, body bytes), sent as they are)."""
        if kind == "status":
            status, body, headers = arg
            data = b"" if body is None else json.dumps(body).encode()
            return self.send_bytes(h, status, data, dict(
                {"Content-Type": "application/json;charset=utf-8"}, **(headers or {})))
        if kind == "html":
            return self.send_bytes(h, arg or 502, b"<html><body><h1>502 Bad Gateway</h1>"
                                                  b"</body></html>", {"Content-Type": "text/html"})
        if kind == "empty":
            return self.send_bytes(h, arg or 200, b"", {"Content-Type": "application/json"})
        if kind == "truncated":
            return self.send_bytes(h, 200, b'{"id": 913, "summ', {
                "Content-Type": "application/json;charset=utf-8"})
        if kind == "hang":
            time.sleep(arg or 5)
            h.close_connection = True
            return None
        if kind in ("reset", "reset_mid_body"):
            if kind == "reset_mid_body":
                h.send_response(200)
                h.send_header("Content-Type", "application/json")
                h.send_header("Content-Length", "5000")
                h.end_headers()
                h.wfile.write(b'{"id": 913, ')
                h.wfile.flush()
            # SO_LINGER 0: closing sends a TCP reset instead of a clean end
            h.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\0\0\0\0\0\0\0")
            h.close_connection = True
            h.connection.close()
            return None
        if kind == "trickle":
            h.send_response(200)
            h.send_header("Content-Type", "application/json")
            h.send_header("Content-Length", "1000")
            h.end_headers()
            for _ in range(1000):
                try:
                    h.wfile.write(b" ")
                    h.wfile.flush()
                except OSError:
                    return None
                time.sleep(arg or 0.05)
            return None
        if kind == "big":
            size, ctype = arg

            def stream(handler, size=size):
                chunk = b"\0" * 65536
                left = size
                try:
                    while left > 0:
                        handler.wfile.write(chunk[:min(left, len(chunk))])
                        left -= len(chunk)
                except OSError:
                    pass
            return self.send_bytes(h, 200, stream, {
                "Content-Type": ctype, "Content-Disposition": "attachment; filename=\"big.bin\""},
                length=size)
        if kind == "continue_trickle":
            return self._trickle(h, 0.2 if arg is None else arg, b"",
                                 [b"HTTP/1.1 100 Continue\r\n\r\n"])
        if kind == "header_trickle":
            return self._trickle(h, 0.5 if arg is None else arg, b"HTTP/1.1 200 OK\r\n",
                                 [bytes([c]) for c in b"Content-Type: application/json\r\n"])
        if kind == "raw":
            return self.send_raw(h, *arg)
        if kind == "raw_idle_close":  # keep-alive said, then closed after `delay` seconds
            *answer, delay = arg
            return self.send_raw(h, *answer, close_after=delay)
        raise ValueError(kind)

    TRICKLE_SECONDS = 30.0  # the longest a trickle lasts

    def _trickle(self, h, interval, first, pieces):
        """`first`, then `pieces` in a cycle, one every `interval` seconds, for at most
        TRICKLE_SECONDS; never a whole answer. Ends quietly when the socket breaks."""
        h.close_connection = True
        deadline = time.monotonic() + self.TRICKLE_SECONDS
        try:
            if first:
                h.wfile.write(first)
                h.wfile.flush()
            i = 0
            while time.monotonic() < deadline and not self.stopping.is_set():
                h.wfile.write(pieces[i % len(pieces)])
                h.wfile.flush()
                i += 1
                self.stopping.wait(max(0.0, min(interval, deadline - time.monotonic())))
        except OSError:
            pass
        return None

    def send_raw(self, h, status, headers, body, close_after=None):
        """Exactly this status line, these headers (a dict, or (name, value) pairs; str or
        bytes) and body bytes; a Content-Length of the body is added unless the headers have
        Content-Length or Transfer-Encoding. The connection is closed afterwards, and says so
        (Connection: close) unless `close_after` is given: then it is closed that many seconds
        later without a word, as a server that drops idle keep-alive connections does."""
        from http import HTTPStatus
        try:
            phrase = HTTPStatus(status).phrase
        except ValueError:
            phrase = "Unknown"
        pairs = list(headers.items() if isinstance(headers, dict) else headers or ())
        names = {(k.decode("latin-1") if isinstance(k, bytes) else k).lower() for k, _ in pairs}
        if not names & {"content-length", "transfer-encoding"}:
            pairs.append(("Content-Length", str(len(body))))
        if close_after is None and "connection" not in names:
            pairs.append(("Connection", "close"))

        def raw(text):
            if isinstance(text, bytes):
                return text
            try:
                return str(text).encode("latin-1")
            except UnicodeEncodeError:
                return str(text).encode("utf-8", "surrogatepass")
        head = b"HTTP/1.1 %d %s\r\n" % (status, phrase.encode())
        head += b"".join(raw(k) + b": " + raw(v) + b"\r\n" for k, v in pairs) + b"\r\n"
        h.close_connection = True
        try:
            h.wfile.write(head + (body or b""))
            h.wfile.flush()
            if close_after is not None:
                self.stopping.wait(close_after)
        except OSError:
            pass
        return None


def main():
    """Serve until killed; print the base URL on the first line of stdout."""
    import sys
    fake = FakeBacklog(sys.argv[1] if len(sys.argv) > 1 else "test-key-1234567890").start()
    print(fake.url, flush=True)
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
