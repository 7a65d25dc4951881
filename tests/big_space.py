"""A big Backlog space for the stand-in (tests/fake_backlog.py, `FakeBacklog(big=True)`): the
sizes a real space reaches, for the scale benchmark and the tests of bounded answers.

3,000 users (all members of DEMO), 200 projects (DEMO and OTHER among them), 50,000 issues in
DEMO, whose descriptions run to Backlog's 100,000 characters (comments to 50,000), 2,000 wiki
pages, a page history whose every version carries the whole page, 300 comments on an issue,
3,000 notifications each embedding its issue, a pull request embedding its issue, documents
with ProseMirror JSON beside the text, 200 milestones (most archived), 300 categories, a
document tree of 2,000 nodes, and attachments that are 2 MB text logs. Everything is made on
demand from the fixtures, the same for the same request.
"""

import copy
import re

USERS = 3000
PROJECTS = 200
ISSUES = 50000
WIKIS = 2000
COMMENTS = 300
NOTIFICATIONS = 3000
MILESTONES = 200
CATEGORIES = 300
TREE = 2000
LOG_BYTES = 2 * 1024 * 1024
LONG = 100000   # Backlog's limit on a description or a wiki page
COMMENT = 50000  # and on a comment

PARAGRAPH = ("ログインすると 500 エラーになる。Steps: open the login page, enter the SSO user, "
             "press Login; expected the dashboard, got a stack trace in the log. ")


def text(size, seed=0):
    """`size` characters of Japanese and English prose, different for each seed."""
    head = f"[{seed}] "
    body = (PARAGRAPH * (size // len(PARAGRAPH) + 1))
    return (head + body)[:size]


def log_file():
    line = "2025-06-01T09:00:00Z INFO request id=123456 path=/login status=500 ms=42\n"
    data = (line * (LOG_BYTES // len(line) + 1)).encode()[:LOG_BYTES]
    return data, {"Content-Type": "text/plain; charset=utf-8",
                  "Content-Disposition": "attachment; filename*=UTF-8''server.log"}


class BigSpace:
    """Answers of a big space, by route; None for what it leaves to the fixtures."""

    def __init__(self, load, to_other):
        self.load, self.to_other = load, to_other
        self.user = load("myself")
        self.issue = load("issue")
        self.project = load("project")

    def users(self):
        return [dict(copy.deepcopy(self.user), id=i, userId=f"user{i:04d}",
                     name=f"ユーザー {i:04d}", mailAddress=f"user{i:04d}@example.com",
                     keyword=f"ユーザー {i:04d} USER{i:04d}") for i in range(1, USERS + 1)]

    def projects(self):
        found = [self.project, self.to_other(self.project)]
        found += [dict(self.project, id=1000 + i, projectKey=f"P{i:03d}", name=f"Project {i:03d}")
                  for i in range(PROJECTS - 2)]
        return found

    def one_issue(self, key_id, description=LONG):
        issue = copy.deepcopy(self.issue)
        issue.update(id=100000 + key_id, keyId=key_id, issueKey=f"DEMO-{key_id}",
                     summary=f"Issue {key_id}: login fails for some SSO users",
                     description=text(description if key_id % 10 == 2 else 2000, key_id))
        return issue

    def issues(self, query):
        """Newest first, or in the order they were made (order=asc): keyIds 1 to ISSUES."""
        offset = int(query.get("offset", 0))
        count = int(query.get("count", 20))
        if query.get("order") == "asc":
            keys = range(offset + 1, min(offset + count, ISSUES) + 1)
        else:
            keys = range(ISSUES - offset, max(ISSUES - offset - count, 0), -1)
        return [self.one_issue(k) for k in keys]

    def comments(self, query):
        count = int(query.get("count", 20))
        base = self.load("comments_list")[0]
        return [dict(copy.deepcopy(base), id=9000 + i, content=text(COMMENT if i % 7 == 0
                                                                   else 1500, i))
                for i in range(COMMENTS, COMMENTS - count, -1)]

    def wiki_pages(self):
        base = self.load("wikis_list")[0]
        return [dict(copy.deepcopy(base), id=5001 + i, name=f"Guides/Page {i:04d}")
                for i in range(WIKIS)]

    def history(self, query):
        count = int(query.get("count", 20))
        base = self.load("wiki_history")[0]
        return [dict(copy.deepcopy(base), version=v, content=text(LONG, v))
                for v in range(100, 100 - count, -1)]

    def notifications(self, query):
        count = int(query.get("count", 20))
        bound = int(query.get("maxId") or NOTIFICATIONS + 1)
        base = self.load("notifications_list")[0]
        out = []
        for i in range(min(bound - 1, NOTIFICATIONS), 0, -1):
            if len(out) == count:
                break
            item = dict(copy.deepcopy(base), id=i, issue=self.one_issue(i % 500 + 1))
            out.append(self.to_other(item) if i % 3 == 0 else item)
        return out

    def tree(self):
        children = [{"id": f"{i:032x}", "name": f"Doc {i}", "emoji": "",
                     "children": [{"id": f"{i * 10 + j:032x}", "name": f"Sub {j}", "emoji": "",
                                   "children": []} for j in range(4)]}
                    for i in range(TREE // 5)]
        return {"projectId": 101, "activeTree": {"id": "Active", "children": children},
                "trashTree": {"id": "Trash", "children": []}}

    def answer(self, method, sub, query):
        """The big answer to a request, or None."""
        query = dict(query)
        if method != "GET":
            return None
        routes = [
            (r"users", lambda: self.users()),
            (r"projects/(?:DEMO|101)/users", lambda: self.users()),
            (r"issues/[A-Z_0-9]+-\d+/participants", lambda: self.users()[:500]),
            (r"projects", lambda: self.projects()),
            (r"issues", lambda: self.issues(query)),
            (r"issues/count", lambda: {"count": ISSUES}),
            (r"issues/DEMO-42|issues/913", lambda: self.one_issue(42, LONG)),
            (r"issues/[A-Z_0-9]+-\d+/comments", lambda: self.comments(query)),
            (r"issues/[A-Z_0-9]+-\d+/comments/\d+",
             lambda: dict(self.load("comment"), content=text(COMMENT, 7))),
            (r"wikis", lambda: self.wiki_pages() if query.get("projectIdOrKey") in (
                "DEMO", "101") else None),
            (r"wikis/5001", lambda: dict(self.load("wiki"), content=text(LONG, 5001))),
            (r"wikis/5001/history", lambda: self.history(query)),
            (r"notifications", lambda: self.notifications(query)),
            (r"notifications/count", lambda: {"count": NOTIFICATIONS}),
            (r"projects/(?:DEMO|101)/versions", lambda: [
                dict(self.load("versions")[0], id=3000 + i, name=f"v{i // 10}.{i % 10}",
                     archived=i < MILESTONES - 10) for i in range(MILESTONES)]),
            (r"projects/(?:DEMO|101)/categories", lambda: [
                dict(self.load("categories")[0], id=7000 + i, name=f"Area {i}")
                for i in range(CATEGORIES)]),
            (r"documents/tree", lambda: self.tree()),
            (r"documents/[0-9a-f]{32}", lambda: dict(
                self.load("document"), plain=text(LONG, 3),
                json='{"type":"doc","content":[' + ",".join(
                    '{"type":"paragraph","content":[{"type":"text","text":"%s"}]}'
                    % text(200, i) for i in range(int(LONG * 1.7 / 250))) + "]}")),
            (r"projects/DEMO/git/repositories/webapp/pullRequests/\d+",
             lambda: dict(self.load("pull_request"), issue=self.one_issue(42, LONG),
                          description=text(20000, 8))),
        ]
        for pattern, make in routes:
            if re.fullmatch(pattern, sub):
                return make()
        return None
