"""mcp-backlog-server: a Model Context Protocol server for Backlog (Nulab), in one module.

Usage:
    python3 backlog_mcp.pyz                  serve MCP on stdio (what a client's config runs)
    python3 backlog_mcp.pyz --check          check the settings against the space, then exit
    python3 backlog_mcp.pyz --list-tools     one line per tool: name, group, read/write, enabled
    python3 backlog_mcp.pyz call TOOL a=1    run one tool from the shell (see `help TOOL`)

Settings: environment variables, declared once in SETTINGS_TABLE (`--help` prints them):
BACKLOG_BASE_URL and BACKLOG_API_KEY are required; BACKLOG_PROJECTS, BACKLOG_WRITABLE,
BACKLOG_READ_ONLY and BACKLOG_TOOLSETS choose what the model may reach.

Protocol: newline-delimited JSON-RPC 2.0 on stdin/stdout; logs go to stderr only.  Two error
channels: a malformed message, an unknown method or an unknown tool is a JSON-RPC error; a tool
that fails (Backlog error, network, bad argument value, access denied) answers a result with
isError true and a text that says what to do next.

A tour of the code, in the order a request meets it:
- serve() (JSON-RPC over stdio) reads a line, handle() finds its method in METHODS (@method on
  a Session method) and writes the reply through Writer, stdout's one writer.
- tools/call enters the pipeline (call_tool): the space is bound (within), the tool found
  (find_tool), the arguments admitted (admit: addresses expanded, the schema checked, every
  identifier held to BACKLOG_PROJECTS by its parameter's owner, users resolved), the text
  rendered in the project's format (render), the person asked when it destroys (confirm),
  the tool run (run_admitted: hold, bounded), and the answer shaped and fitted to the budget
  at one exit (result_of). Prompts, resources, completions and the command line run tools
  through the same steps (run_tool).
- A tool is a function: @tool("Title", write="group") over it, its parameters annotated
  with P (type, doc, owner), its docstring its description; it talks to Backlog only
  through `api` (the Backlog client of the bound space: one deadline, one parser, the key
  only to its own host). A prompt is @prompt, a resource @resource, a completer @completer.
- The banners below are the table of contents: settings and spaces, errors, the client,
  access control, addresses, untrusted text, the registry, results and the pipeline, text
  formatting, confirmation, the tools by category, bulk changes, prompts, resources,
  completions, MCP methods, stdio, the bundle and the command line.
"""

import contextlib
import contextvars
import json
import os
import re
import sys
import time

__version__ = "0.1.0"

# == Settings ==================================================================

LEGACY_VERSIONS = ("2025-11-25", "2025-06-18", "2025-03-26", "2024-11-05")
MODERN_VERSIONS = ("2026-07-28",)
META = "io.modelcontextprotocol/"

CATEGORIES = ("document", "git", "issue", "project", "file", "user", "wiki", "space",
              "notification")
WRITE_GROUPS = ("issue", "git", "wiki", "document", "project", "notification", "star")
DEFAULT_WRITABLE = ("issue", "git", "wiki", "document", "notification", "star")

BACKLOG_HOSTS = ("backlog.com", "backlog.jp", "backlogtool.com")
PROJECT_KEY = re.compile(r"[_A-Z0-9]{1,25}\Z")
CONNECT_TIMEOUT = 10.0
READ_TIMEOUT = 30.0
MAX_DOWNLOAD = 7 * 1024 * 1024
MAX_UPLOAD = 100 * 1024 * 1024  # a file is sent from memory; Backlog's own limit may be lower
MAX_ANSWER = 40000  # bytes of one answer (~10,000 tokens, where Claude Code starts to warn)
RATE_LIMIT_MAX_WAIT = 10.0   # seconds a GET may wait on a 429 before its one retry
RETRY_BACKOFF = (0.5, 1.0)   # waits before the retries of a GET after a 5xx or a reset
CACHE_TTL = 300.0
TOOLS_PAGE_SIZE = 200        # tools/list page size; every tool fits in one page by default
MIN_SECRET = 8  # shorter ones are refused (never sent); redacting them would garble messages

LABEL = r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?"  # of a DNS name: no empty one, no end hyphen
HOST = re.compile(rf"{LABEL}(?:\.{LABEL})*\Z")  # a DNS name, no more
SPACE_NAME = re.compile(r"[a-z][a-z0-9_]{0,19}\Z")
READ, WRITE = "read", "write"  # the levels of a project in BACKLOG_PROJECTS (DEMO, OPS:read)


def _split(value):
    return [part.strip() for part in (value or "").split(",") if part.strip()]


def loopback(host):
    """localhost, an IPv4 literal in 127.0.0.0/8 or ::1; nothing else (127.evil.com is not)."""
    import ipaddress
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


# -- Parsers: each takes a setting's text (half-width unless the row is verbatim, stripped,
# never empty) and the Settings read so far, and returns the value or raises ValueError with
# words for a person. A value the server does not understand is a problem, named in --check,
# on stderr at start and in every tool result; until it is fixed no tool reaches Backlog, and
# the tool list offers only read tools.

FLAG_WORDS = {"1": True, "true": True, "yes": True, "on": True,
              "0": False, "false": False, "no": False, "off": False}


def flag(text, s):
    if text.lower() not in FLAG_WORDS:
        raise ValueError(f"'{text}' is not a yes or no; use 1/0, true/false, yes/no or on/off")
    return FLAG_WORDS[text.lower()]


def choice(*words):
    """One of `words`, in any case; with no words, any word (checked elsewhere)."""
    def parse(text, s):
        if words and text.lower() not in words:
            raise ValueError(f"'{text}' is not one of {', '.join(words)}")
        return text.lower()
    return parse


def groups(known):
    def parse(text, s):
        chosen = [part.lower() for part in _split(text)]
        unknown = [part for part in chosen if part not in known]
        if unknown or not chosen:
            near = [k for u in unknown for k in known if distance(u, k) <= 2]
            raise ValueError(f"unknown {', '.join(repr(u) for u in unknown) or 'empty list'}"
                             + (f" (did you mean {', '.join(near)}?)" if near else "")
                             + f"; choose from {', '.join(known)}")
        return set(chosen)
    return parse


def toolsets(text, s):
    return set(CATEGORIES) if text.lower() == "all" else groups(CATEGORIES)(text, s)


def number(low, high, integer=False):
    def parse(text, s):
        try:
            value = float(text)
        except ValueError:  # also UnicodeEncodeError, for bytes that are not UTF-8
            value = float("nan")
        if not low <= value <= high or (integer and not value.is_integer()):  # NaN fails too
            raise ValueError(f"'{text}' is not a{'' if integer else ' number'} "
                             f"{'whole number ' if integer else ''}from {low:g} to {high:g}")
        return int(value) if integer else value
    return parse


def timeout(text, s):
    """Seconds for a whole exchange, or connect,total."""
    parts = text.split(",")
    if len(parts) > 2:
        raise ValueError(f"'{text}' is not seconds, or connect,total seconds")
    seconds = [number(0.1, 600)(part.strip(), s) for part in parts]
    return (min(CONNECT_TIMEOUT, seconds[0]), seconds[0]) if len(seconds) == 1 \
        else tuple(seconds)


def projects(text, s):
    """{KEY: level}: DEMO,OPS:read reads and writes DEMO, only reads OPS."""
    found = {}
    for part in _split(text):
        key, colon, level = part.partition(":")  # DEMO: (a level left out) is no level
        key, level = key.strip().upper(), level.strip().lower() or (None if colon else WRITE)
        if not PROJECT_KEY.match(key) or level not in (READ, WRITE):
            raise ValueError(f"'{part}' is not a project key (letters, digits and _), "
                             "optionally with :read, e.g. DEMO,OPS:read")
        found[key] = min(found.get(key, WRITE), level, key=(READ, WRITE).index)
    if not found:
        raise ValueError(f"'{text}' is not a list of project keys (e.g. DEMO,PROJ)")
    return found


def prefix(text, s):
    if not re.match(r"[A-Za-z0-9_-]{1,32}\Z", text):
        raise ValueError("may hold only letters, digits, _ and - (at most 32)")
    return text


def api_key(text, s):
    """Backlog's keys are 64 letters and digits; a key is taken if it is 8 to 256 of them
    (and of - _ . ~, which no JSON or URL escapes), else refused and never sent."""
    if not re.match(r"[A-Za-z0-9._~-]{8,256}\Z", text):
        raise ValueError("is not an API key (8 or more letters and digits, no spaces or "
                         "quotes): paste the key alone, from Personal Settings > API")
    return text


def folders(text, s):
    """Folders by absolute paths (a host starts the server in a folder of its own choosing),
    each one that exists."""
    found = []
    for folder in text.split(os.pathsep):
        if folder.strip():
            if not os.path.isabs(os.path.expanduser(folder.strip())):
                raise ValueError(f"'{folder}' is not an absolute path")
            try:
                real = os.path.realpath(os.path.expanduser(folder.strip()))
                is_dir = os.path.isdir(real)
            except (ValueError, OSError):  # a NUL byte, an undecodable name
                is_dir = False
            if not is_dir:
                raise ValueError(f"'{folder}' is not a folder")
            found.append(real)
    return found


def one_folder(text, s):
    found = folders(text, s)
    if len(found) > 1:
        raise ValueError(f"'{text}' names {len(found)} folders; give one")
    return found


def log_file(text, s):
    """A regular file the audit log is appended to, by its absolute path; its folder must
    exist."""
    import stat
    if not os.path.isabs(os.path.expanduser(text)):
        raise ValueError(f"'{text}' is not an absolute path (a host starts the server in a "
                         "folder of its own choosing)")
    try:
        path = os.path.realpath(os.path.expanduser(text))
        folder_ok = os.path.isdir(os.path.dirname(path)) and not os.path.isdir(path)
        odd = os.path.exists(path) and not stat.S_ISREG(os.stat(path).st_mode)
    except (ValueError, OSError):
        folder_ok, odd = False, False
    if not folder_ok or odd:
        raise ValueError(f"'{text}' is not {'a regular file' if odd else 'a file'} in an "
                         "existing folder")
    return path


def domain(text, s):
    return base_url(text.strip("/"), s)


def base_url(typed, s):
    """scheme://host[:port] of the space: a host alone (what a person types in the bundle's
    form) is https, and a path, query or fragment after it (a page's address pasted whole) is
    dropped. The host is held to the characters of a DNS name, so that every parser (ours,
    requests', urllib3's, a proxy's) reads the same host; Backlog.session() checks what
    requests prepares once more."""
    from urllib.parse import urlsplit
    example = "a URL like https://your-space.backlog.com"
    raw = typed if "://" in typed else "https://" + typed
    said = "" if "@" in typed else f"'{typed}' "  # never a password, however short
    if not re.match(r"[!-~]+\Z", raw):  # urlsplit drops tabs and newlines silently
        raise ValueError(f"holds white space or characters outside ASCII: it must be {example}")
    try:
        url = urlsplit(raw)
        if url.password and len(url.password) >= MIN_SECRET:
            s.secrets.append(url.password)  # refused below; redacted wherever it shows
        host = (url.hostname or "").lower()
        if url.port == 0:  # (raises ValueError for a port that is not one)
            raise ValueError
    except ValueError:
        raise ValueError(f"{said}is not {example}") from None
    if "@" in url.netloc:
        raise ValueError("must not hold a user name or password; the API key goes in "
                         "BACKLOG_API_KEY")
    netloc = url.netloc.lower()
    literal = host == "::1" and netloc.startswith("[::1]")
    if not (HOST.match(host) or literal) \
            or not re.match(r"(\[::1\]|[a-z0-9.-]+)(:[0-9]{1,5})?\Z", netloc):
        raise ValueError(f"{said}is not {example} (letters, digits, '.' and '-' in the host)")
    if url.scheme not in ("http", "https"):
        raise ValueError("must start with https://")
    if url.scheme == "http" and not loopback(host):
        raise ValueError("must use https (plain http only for localhost, 127.x.x.x or [::1])")
    on_backlog = any(host == h or host.endswith("." + h) for h in BACKLOG_HOSTS)
    if url.scheme == "https" and not on_backlog and not loopback(host) \
            and not s.allow_custom_host:
        raise ValueError(f"host '{host}' is not on backlog.com, backlog.jp or backlogtool.com; "
                         "for Backlog on-premise also set BACKLOG_ALLOW_CUSTOM_HOST=1")
    return f"{url.scheme}://{netloc}"


def space_list(text, s):
    names = [n.lower() for n in _split(text)]
    bad = [n for n in names if not SPACE_NAME.match(n)]
    if bad:
        raise ValueError(f"'{bad[0]}' is not a space name (a letter, then letters, digits or _; "
                         "at most 20)")
    if len(set(names)) != len(names):
        raise ValueError("names a space twice")
    return names


# -- How a space's own value (BACKLOG_<NAME>_PROJECTS) meets the shared one (BACKLOG_PROJECTS):
# a space may only narrow what is shared. Each takes the shared value (None when unset) and
# the space's own (None when unset or empty: an empty own value inherits, never widens).

def own_only(shared, own):
    """Where the space's requests go and with which key: its own, never a shared one."""
    return own


def own_or_shared(shared, own):
    return shared if own is None else own


def either(shared, own):
    """Read-only wins: on when the shared or the space's own value is on."""
    return bool(shared) or bool(own)


def both_groups(shared, own):
    """Writable groups: those both allow."""
    return own if shared is None else shared if own is None else shared & own


def both_projects(shared, own):
    """Projects both list, at the lower of the two levels (OPS:read in either: read)."""
    if shared is None or own is None:
        return own if shared is None else shared
    return {k: min(shared[k], own[k], key=(READ, WRITE).index) for k in own if k in shared}


class Setting:
    """One row of SETTINGS_TABLE: every property of a setting in one place.

    scope: "server" (one value for the process), "shared" (one value, every space) or
    "space" (each space reads BACKLOG_<NAME>_<REST> too; `merge` joins the two). `verbatim`:
    read as typed (else full-width letters become ASCII, as a Japanese IME types them);
    `secret`: redacted everywhere, `safe`: the value while the text is not understood; `cli`:
    the command-line flag that sets it and the text the flag stands for (None: the flag
    takes a value); `form`: its field in the bundle's form, as (field, type, title,
    description, required); `required`: what to say when no row of its attribute is set;
    `nulab`: Nulab's server reads it as BACKLOG_ORG_<NAME>_<REST>, which names a space;
    `aliases`: other names read when it is unset. Rows that share an attribute are
    alternatives: the first one set wins. parse None: read by requests, listed for people."""

    def __init__(self, name, parse, default, help, scope="shared", merge=own_or_shared,
                 verbatim=False, secret=False, safe=None, cli=None, form=None, attribute=None,
                 required=None, nulab=False, aliases=()):
        self.name, self.parse, self.default, self.help = name, parse, default, help
        self.scope, self.merge, self.verbatim, self.secret = scope, merge, verbatim, secret
        self.safe = default if safe is None else safe
        self.cli, self.form, self.required, self.nulab = cli, form, required, nulab
        self.aliases = aliases
        self.attribute = attribute or name[len("BACKLOG_"):].lower()


SETTINGS_TABLE = (  # in the order they are read: a later parser may use an earlier value
    Setting("BACKLOG_SPACES", space_list, [], "names of several spaces, e.g. work,client (each "
            "then has BACKLOG_<NAME>_BASE_URL, _API_KEY, ...)", scope="server"),
    Setting("BACKLOG_DEFAULT_SPACE", choice(), "", "the space a call uses when it names none "
            "(default: the first)", scope="server", aliases=("BACKLOG_DEFAULT_ORG",)),
    Setting("BACKLOG_ALLOW_CUSTOM_HOST", flag, False,
            "1 allows an https host outside backlog.com, backlog.jp, backlogtool.com",
            scope="space"),
    Setting("BACKLOG_BASE_URL", base_url, "",
            "your space's URL, e.g. https://your-space.backlog.com", scope="space",
            merge=own_only, required="is not set: use your space's URL, e.g. "
                                     "https://your-space.backlog.com",
            form=("base_url", "string", "Backlog address",
                  "The address you open Backlog at, e.g. https://your-space.backlog.com",
                  True)),
    Setting("BACKLOG_DOMAIN", domain, "", "or the host alone, e.g. your-space.backlog.com",
            scope="space", merge=own_only, attribute="base_url", nulab=True),
    Setting("BACKLOG_API_KEY", api_key, "", "your personal API key (Personal Settings > API)",
            scope="space", merge=own_only, verbatim=True, secret=True, nulab=True,
            required="is not set: create a key in Backlog under Personal Settings > API and set "
                     "it in the server's env.",
            form=("api_key", "string", "API key",
                  "In Backlog, open your picture > Personal Settings > API, register a key and "
                  "paste it here. It is stored encrypted by your computer's keychain, not as "
                  "plain text.", True)),
    Setting("BACKLOG_PROJECTS", projects, None, "allow-list of project keys, e.g. DEMO,PROJ; "
            "KEY:read only reads one (default: every project the key sees)", scope="space",
            merge=both_projects,
            form=("projects", "string", "Projects (optional)",
                  "The keys of the projects the assistant may use, separated by commas, e.g. "
                  "DEMO,SUPPORT; add :read to a key to let it only read there (OPS:read). "
                  "Leave empty for every project you can see.", False)),
    Setting("BACKLOG_READ_ONLY", flag, False, "1 turns every write tool off (also --read-only)",
            scope="space", merge=either, safe=True, cli=("--read-only", "1"),
            form=("read_only", "boolean", "Read only",
                  "On: the assistant can read, but never add, change or delete anything in "
                  "Backlog.", False)),
    Setting("BACKLOG_WRITABLE", groups(WRITE_GROUPS), set(DEFAULT_WRITABLE),
            f"writable groups (default {','.join(DEFAULT_WRITABLE)}; also project)",
            scope="space", merge=both_groups, safe=set(),
            form=("writable", "string", "What the assistant may change (optional)",
                  f"Separated by commas, from: {', '.join(WRITE_GROUPS)}. Leave empty for "
                  f"all but {', '.join(g for g in WRITE_GROUPS if g not in DEFAULT_WRITABLE)}; "
                  "to allow no change at all, turn on Read only.", False)),
    Setting("BACKLOG_TOOLSETS", toolsets, set(CATEGORIES),
            "categories to list, or all (with the extra tools); also --toolsets",
            cli=("--toolsets", None),
            form=("toolsets", "string", "Kinds of tools (optional)",
                  f"Separated by commas, from: {', '.join(CATEGORIES)}; or all, which adds "
                  "rarely needed tools. Leave empty for the usual set.", False)),
    Setting("BACKLOG_PREFIX", prefix, "", "prefix for every tool name (default none)"),
    Setting("BACKLOG_OUTPUT", choice("lean", "full"), "lean", "lean (default) or full answers"),
    Setting("BACKLOG_TIMEOUT", timeout, (CONNECT_TIMEOUT, READ_TIMEOUT),
            f"seconds a request may take, retries included, or connect,total "
            f"(default {READ_TIMEOUT:g})"),
    Setting("BACKLOG_MAX_DOWNLOAD_BYTES", number(1, 1 << 30, integer=True), MAX_DOWNLOAD,
            f"download cap in bytes (default {MAX_DOWNLOAD})", attribute="max_download"),
    Setting("BACKLOG_MAX_ANSWER_BYTES", number(4000, 10_000_000, integer=True), MAX_ANSWER,
            f"the most one answer may hold, in bytes (default {MAX_ANSWER:,}, about 10,000 "
            "tokens); longer ones are cut and say how to get the rest", attribute="max_answer"),
    Setting("BACKLOG_DOWNLOAD_DIR", one_folder, [], "a folder where a file too large for one "
            "answer is saved, its path answered (default: none; for hosts that read files)",
            verbatim=True, attribute="download_dir"),
    Setting("BACKLOG_CONVERT", flag, True, "0 leaves texts as the model wrote them (a mismatch "
            "with the project's formatting rule is only said); default: converted"),
    Setting("BACKLOG_CONFIRM", choice("destructive", "writes", "off"), "destructive",
            "ask the person before what destroys (default), every write, or off; only "
            "where the client can ask"),
    Setting("BACKLOG_UPLOAD_DIRS", folders, [],
            f"folders ('{os.pathsep}'-separated) files may be uploaded from (default: none)",
            verbatim=True),
    Setting("BACKLOG_AUDIT_LOG", log_file, "", "file that gets one JSON line per write and per "
            "refusal (default: none)", verbatim=True),
    Setting("HTTPS_PROXY", None, "", "proxy for https (also NO_PROXY; as requests reads "
            "them); a plain-http address (a local tunnel) is never reached through a proxy, "
            "which would read the key", scope="server"),
    Setting("REQUESTS_CA_BUNDLE", None, "", "file of the certificate authorities to trust "
            "(e.g. a company's own)", scope="server"),
)
ROWS = {row.name: row for row in SETTINGS_TABLE}
HALF_WIDTH = {**{0xFF01 + i: 0x21 + i for i in range(94)},  # ！ to ～: ! to ~
              0x3000: " ", 0x3001: ",", 0x3002: "."}  # the ideographic space, 、 and 。


NULAB_SPACE = re.compile("BACKLOG_ORG_([A-Za-z0-9_]+?)_(?:%s)\\Z" % "|".join(
    row.name[len("BACKLOG_"):] for row in SETTINGS_TABLE if row.nulab))


def setting_text(row, env, variable=None):
    """The text of a setting as every reader sees it: half-width unless the row is verbatim,
    stripped; "" when unset, empty or not text. A row's aliases stand in when it is unset."""
    for name in [variable] if variable else (row.name,) + row.aliases:
        text = env.get(name)
        text = text if isinstance(text, str) else ""
        text = (text if row.verbatim else text.translate(HALF_WIDTH)).strip()
        if text:
            return text
    return ""


def spellings(row, name, nulab):
    """The variables that hold space `name`'s own value of a row: BACKLOG_<NAME>_<REST>, and
    in Nulab's form BACKLOG_ORG_<NAME>_<REST> too."""
    rest = row.name[len("BACKLOG_"):]
    return [f"BACKLOG_{name.upper()}_{rest}"] + ([f"BACKLOG_ORG_{name.upper()}_{rest}"]
                                                 if nulab else [])


class Settings:
    """One space's settings (or, name None, the only space's), read through SETTINGS_TABLE;
    `problems` lists what is wrong, one sentence each, in words for a person."""

    def __init__(self, name=None):
        self.name = name
        self.problems, self.secrets, self.explicit = [], [], set()

    def set(self, row, value, explicit):
        """A row's value, unless an earlier row of the same attribute was set (it wins)."""
        if row.attribute in self.explicit:
            return
        if explicit:
            self.explicit.add(row.attribute)
        setattr(self, row.attribute, row.default if value is None else value)

    def parse(self, row, text, where=None):
        """(value, understood?) of one text; a refusal is a problem named after `where`."""
        if row.secret and len(text) >= MIN_SECRET:
            self.secrets.append(text)  # redacted wherever it shows, taken or not
        try:
            return row.parse(text, self), True
        except ValueError as exc:
            self.problems.append(f"{where or row.name}: {exc}.")
            return row.safe, False

    def finish(self):
        if sys.version_info < (3, 9):
            self.problems.insert(0, "mcp-backlog-server needs Python 3.9 or newer (this is "
                                    f"{'.'.join(map(str, sys.version_info[:3]))}).")
        for row in SETTINGS_TABLE:
            if row.required and row.attribute not in self.explicit:
                variable = spellings(row, self.name, False)[0] if self.name else row.name
                where = f"space {self.name}: " if self.name else ""
                self.problems.append(f"{where}{variable} {row.required}")
        if self.read_only or self.problems:
            self.writable = set()  # until a problem is fixed, no write tool is offered
        # The rarely used tools (extra=True) come with a toolset that is named, or with all.
        self.extras = set(self.toolsets) if "toolsets" in self.explicit else set()
        return self

    def level(self, key):
        """READ or WRITE for an allowed project key, None for one outside the allow-list;
        WRITE for every project when there is no allow-list."""
        return WRITE if self.projects is None else self.projects.get(str(key).upper())

    def allowed(self):
        """The allow-list as written (DEMO, OPS:read), or None when there is none."""
        return None if self.projects is None else [
            key if level == WRITE else f"{key}:{level}" for key, level in self.projects.items()]

    def __repr__(self):
        return f"<Settings {self.base_url or 'unset'} key={'set' if self.api_key else 'unset'}>"


def read_settings(env, **flags):
    """Every setting read once, through one reader per row: ({space name: Settings}, default
    space name, notes). `flags` are the command line's, by attribute (read_only=True,
    toolsets="issue"); they win over the variables. A space's own value is parsed as the
    shared one is, then merged with it by its row's rule; a problem of a shared value is said
    once, a space's own under the variable that holds it."""
    env = dict(env)
    for row in SETTINGS_TABLE:
        if row.cli and flags.get(row.attribute):
            env[row.name] = row.cli[1] or flags[row.attribute]
    server = Settings()
    for row in SETTINGS_TABLE:
        if row.scope == "server" and row.parse is not None:
            text = setting_text(row, env)
            if text:
                server.explicit.add(row.attribute)
            setattr(server, row.attribute, server.parse(row, text)[0] if text else row.default)
    names, nulab = server.spaces, "spaces" not in server.explicit
    if not names and nulab:  # Nulab's form: BACKLOG_ORG_<NAME>_DOMAIN (or _API_KEY) names one
        names = sorted({m.group(1).lower() for k in env for m in [NULAB_SPACE.match(k)] if m})
        names = [n for n in names if SPACE_NAME.match(n)]
    nulab = nulab and bool(names)
    asked = server.default_space
    default = asked or (names[0] if names else None)
    if asked and default not in names:
        row = next(r for r in SETTINGS_TABLE if r.attribute == "default_space")
        server.problems.append(f"{row.name}: '{asked}' is not one of the spaces "
                               f"({', '.join(names) or 'none: BACKLOG_SPACES is not set'}).")
        default = names[0] if names else None
    misspelt, notes = unknown_settings(env, names, nulab)
    shared = Settings()  # the shared texts, each parsed once
    shared.problems = server.problems + misspelt
    values = {}
    for row in SETTINGS_TABLE:
        if row.scope != "server":
            text = setting_text(row, env)
            values[row.name] = shared.parse(row, text)[0] if text else None
            shared.set(row, values[row.name], bool(text))
    spaces = {}
    for name in names or [None]:
        s = Settings(name)
        s.problems, s.secrets = list(shared.problems), list(shared.secrets)
        for row in SETTINGS_TABLE:
            if row.scope == "server":
                continue
            value, explicit = values[row.name], bool(setting_text(row, env))
            if row.scope == "space" and name:
                variable = spellings(row, name, nulab)[0]
                own_text = next((t for t in (setting_text(row, env, v) for v in
                                             spellings(row, name, nulab)) if t), "")
                own = s.parse(row, own_text, f"space {name}: {variable}")[0] \
                    if own_text else None
                explicit = bool(own_text) or (explicit and row.merge is not own_only)
                if row.merge is both_projects and own is not None and value is not None \
                        and not set(own) & set(value):
                    s.problems.append(f"space {name}: {variable}: none of {', '.join(own)} is "
                                      f"in {row.name} ({', '.join(value)}).")
                value = row.merge(value, own)
            s.set(row, value, explicit)
        spaces[name] = s.finish()
    return spaces, default, notes


GUARDING = ("READ", "WRIT", "PROJECT", "CONFIRM", "ALLOW", "DENY", "DISABLE", "AUDIT", "ONLY",
            "SAFE", "LOCK")  # words of a name meant to limit the server


def unknown_settings(env, names, nulab):
    """BACKLOG_* variables the server does not read: a near miss of a known name is a problem
    (BACKLOG_READONLY), any other one a line on stderr."""
    known = {name for row in SETTINGS_TABLE for name in (row.name,) + row.aliases}
    for name in names:
        known |= {v for row in SETTINGS_TABLE if row.scope == "space"
                  for v in spellings(row, name, nulab)}
    if nulab:
        known |= {k for k in env if NULAB_SPACE.match(k)}
    import unicodedata
    problems, others = [], []
    for variable in sorted(k for k in env if k not in known and unicodedata.normalize(
            "NFKC", k).strip().upper().startswith("BACKLOG_")):
        typed = unicodedata.normalize("NFKC", variable).strip().upper()  # backlog_read_only
        near = min(known, key=lambda k: distance(typed, k))
        said = variable if typed == variable else f"'{clip(variable, 60)}'"
        if distance(typed, near) <= 2:
            problems.append(f"{said} is not a setting: did you mean {near}?")
        elif any(word in typed for word in GUARDING):  # never a limit silently not applied
            problems.append(f"{said} is not a setting; the ones that limit what "
                            "this server may do are BACKLOG_READ_ONLY, BACKLOG_WRITABLE, "
                            "BACKLOG_PROJECTS, BACKLOG_CONFIRM and BACKLOG_AUDIT_LOG (and a "
                            "space's own, for a space in BACKLOG_SPACES).")
        else:
            others.append(variable)
    if names:  # each space has its own: a shared one is not read
        others += [row.name for row in SETTINGS_TABLE if row.merge is own_only
                   and row.name in env]
    return problems, others


# == Spaces and the request being answered =====================================
# Every entry point (tools/call, prompts/get, resources, completions, the command line) binds
# the space a request runs in once, for the whole request (`within`); `here()` is that space,
# and `api` and `CACHE` are its client and cache. Nothing is copied into module globals, and
# a request answered while another waits (a ping during a confirmation) binds its own.

class Space:
    """One Backlog space: its settings, its client (one HTTP session) and its cache. Nothing
    of one space is ever used in another's call."""

    def __init__(self, name, settings_):
        self.name, self.settings = name, settings_
        self.api, self.cache = Backlog(self), Cache(self)
        self.allowed_ids = None  # {id: key} of BACKLOG_PROJECTS, resolved on first need


SPACES = {}          # name -> Space; one space: {None: Space}
DEFAULT_SPACE = None
SECRETS = []         # every space's secrets: the redactor hides them all
IGNORED = []         # BACKLOG_* variables the server does not read (said on stderr at start)
CONFIGURED = ({}, {})  # what configure() was last given: (env, flags)
BOUND = contextvars.ContextVar("space", default=None)  # the space of the request answered


def configure(env=None, **flags):
    """Read the settings from `env` (default os.environ) and the command line's `flags` (by
    attribute: read_only=True, toolsets="issue") into the spaces; returns the default
    space's Settings."""
    global DEFAULT_SPACE, SECRETS, IGNORED, CONFIGURED
    env = os.environ if env is None else env
    CONFIGURED = (env, flags)
    found, default, IGNORED = read_settings(env, **flags)
    for space in SPACES.values():
        space.api.reset()
    SPACES.clear()
    SPACES.update((name, Space(name, s)) for name, s in found.items())
    UNWRITTEN.clear()  # lines kept for the audit log of another configuration
    DEFAULT_SPACE = default
    SECRETS = sorted({x for space in SPACES.values() for x in space.settings.secrets})
    for t in TOOLS.values():
        t._definition = None  # the space parameter comes and goes with the spaces
    return SPACES[DEFAULT_SPACE].settings


def here():
    """The space the request being answered runs in (the default one outside a request)."""
    space = BOUND.get()
    if space is None:
        if not SPACES:
            configure()
        space = SPACES[DEFAULT_SPACE]
    return space


def space_named(name):
    """The Space of a name (None: the default one); a tool error for a name not configured."""
    if name is not None and name not in SPACES:
        raise ToolError(f"Unknown space {shown(name, 40)}.",
                        f"use one of {', '.join(n for n in SPACES if n)}.")
    return SPACES[DEFAULT_SPACE if name is None else name] if SPACES else here()


@contextlib.contextmanager
def within(space):
    """Run a block in `space` (a Space, a name, or None for the default one), then come back."""
    space = space if isinstance(space, Space) else space_named(space)
    token = BOUND.set(space)
    try:
        yield space
    finally:
        BOUND.reset(token)


class _Bound:
    """`api` and `CACHE`: the client and the cache of the space bound for this request."""

    def __init__(self, attribute):
        self.attribute = attribute

    def __getattr__(self, name):
        return getattr(getattr(here(), self.attribute), name)


api, CACHE = _Bound("api"), _Bound("cache")


NOTES = contextvars.ContextVar("notes", default=None)  # what the answer made says of itself


def note(text):
    """Say something of the answer being made (what was cut, removed, converted); the entry
    point adds it to the answer."""
    notes = NOTES.get()
    if notes is not None and text not in notes:
        notes.append(text)


@contextlib.contextmanager
def answering():
    """Collect the notes of one request."""
    token = NOTES.set([])
    try:
        yield NOTES.get()
    finally:
        NOTES.reset(token)


def several():
    return len(SPACES) > 1


def settings():
    return here().settings


# == Logs and secrets ==========================================================

def log(message):
    """One line to stderr, with the secrets redacted; stdout is the protocol's alone."""
    try:
        text = redact(f"mcp-backlog-server: {message}\n")
        sys.stderr.buffer.write(text.encode("utf-8", "replace"))
        sys.stderr.flush()
    except (OSError, ValueError, AttributeError):  # stderr closed, or not there at all
        pass


def redact(text):
    """The one redactor: every text that leaves the process passes here (results, errors,
    notes, logs, the command line's output). It hides the API key and a URL password in
    every spelling a URL or JSON gives them, whatever their length."""
    text = str(text)
    forms, encoded, _ = secret_forms()
    for form in forms:
        if form in text:
            text = text.replace(form, "***")
    return encoded.sub("***", text) if "%" in text else text


def redact_bytes(data):
    """The redactor for bytes (a body as it is read, base64 content): the same spellings,
    as UTF-8 and as UTF-16, each replaced by ***."""
    forms, _, encoded = secret_forms()
    charsets = ("utf-8", "utf-16-le", "utf-16-be") if b"\x00" in data else ("utf-8",)
    for form in forms:
        for charset in charsets:  # UTF-16 (of an ASCII key) only where a NUL byte is
            spelled = form.encode(charset, "replace")
            if spelled in data:
                data = data.replace(spelled, "***".encode(charset))
    return encoded.sub(b"***", data) if b"%" in data else data


def clip(text, size):
    """At most `size` characters of a text from outside (Backlog, a proxy, the model),
    redacted before it is cut: a key cut in half no longer matches the redactor."""
    text = visible(redact(text))
    return text if len(text) <= size else text[:size] + "…"


FORMS = {}  # the secrets' spellings, by the tuple of secrets


def secret_forms():
    """(the spellings of the secrets, longest first; a pattern of them percent-encoded, each
    character or not, in either case), made once for a set of secrets."""
    key = tuple(SECRETS)
    if key not in FORMS:
        from urllib.parse import quote, quote_plus
        forms = set()
        for secret in key:
            forms |= {secret, quote(secret, safe="", errors="replace"),
                      quote_plus(secret, errors="replace"),
                      json.dumps(secret, ensure_ascii=False)[1:-1]}
        forms = sorted(forms, key=len, reverse=True)

        def char(c):
            hexes = "".join(f"%{b:02X}" for b in c.encode("utf-8", "replace"))
            return f"(?:{re.escape(c)}|{'[+]|' if c == ' ' else ''}(?i:{re.escape(hexes)}))"
        encoded = "|".join("".join(map(char, secret)) for secret in
                           sorted(key, key=len, reverse=True))
        FORMS.clear()
        FORMS[key] = (forms, re.compile(encoded or "(?!)"),
                      re.compile(encoded.encode("utf-8", "replace") or b"(?!)"))
    return FORMS[key]


# == Errors ====================================================================

class RpcError(Exception):
    """A JSON-RPC error: the message itself is at fault, not the tool."""

    def __init__(self, code, message, data=None):
        super().__init__(message)
        self.code, self.message, self.data = code, message, data


class ToolError(Exception):
    """A tool failed: `what` failed, `next`, what to do about it (the model reads both in a
    result with isError true; --check and space_list_get read `what` alone), and whether the
    same call may succeed later (`retryable`: a timeout, a reset, a 429 or a 5xx)."""

    def __init__(self, what, next=None, retryable=False):
        super().__init__(what)
        self.what, self.next, self.retryable = what, next, retryable

    def __str__(self):  # bounded: it may list what Backlog has (fields, names)
        what = self.what if len(self.what) <= ERROR_SIZE else clip(self.what, ERROR_SIZE)
        return what + (f" Next: {self.next}" if self.next else "")


ERROR_SIZE = 2000  # characters of what failed, at most

class NotFound(ToolError):
    """Nothing by that identifier: it does not exist, or lies outside BACKLOG_PROJECTS (one
    wording for both, so that calls cannot map what exists elsewhere)."""


class Missing(ToolError):
    """Backlog has no `kind` (a project) by `value`; the pipeline words it as NotFound."""

    def __init__(self, kind, value):
        super().__init__(f"No {kind} {value}.")
        self.kind, self.value = kind, value


class Bug(ToolError):
    """Our own failure (a bug), said without -32603; the traceback is on stderr."""

    def __init__(self, what, kind):
        super().__init__(f"mcp-backlog-server failed on {what} (a bug: {kind.__name__}; its "
                         "log on stderr has the details).", "retry once; if it fails again, "
                         "the person who runs this server can report it with that log.")


class Refused(ToolError):
    """The settings forbid the call (a project that may only be read)."""


class OddAnswer(ToolError):
    """Backlog's answer lacks what the server reads in it."""

    def __init__(self, where=""):
        super().__init__(f"Backlog's answer{' to ' + where if where else ''} does not have the "
                         "documented shape.", "retry; if it recurs, check that BACKLOG_BASE_URL "
                         "is your space's URL.")


BACKLOG_CODES = {1: "InternalError", 2: "LicenceError", 3: "LicenceExpiredError",
                 4: "AccessDeniedError", 5: "UnauthorizedOperationError", 6: "NoResourceError",
                 7: "InvalidRequestError", 8: "SpaceOverCapacityError",
                 9: "ResourceOverflowError", 10: "TooLargeFileError", 11: "AuthenticationError",
                 12: "RequiredMFAError", 13: "TooManyRequestsError"}

NEXT_STEP = {
    401: "Check BACKLOG_API_KEY (run the server with --check); the key may be revoked.",
    403: "The API key's user lacks permission for this; ask a project or space admin.",
    404: "Check the id or key; list tools such as issue_list_get or project_list_get show "
         "valid ones.",
    429: "Backlog's rate limit was hit: wait a minute, then retry once.",
    500: "Backlog failed; retry later.",
}

# Where a model finds valid values for the parameter that Backlog refused.
LOOKUP = {"status": "project_status_list_get", "issue_type": "project_issue_type_list_get",
          "priority": "issue_priority_list_get", "resolution": "project_resolution_list_get",
          "category": "project_category_list_get", "milestone": "issue_milestone_list_get",
          "version": "issue_milestone_list_get", "assignee": "project_user_list_get",
          "notified_user": "project_user_list_get", "custom_field": "project_custom_field_list_get"}


class BacklogError(ToolError):
    """Backlog answered with an error status; the text carries its message and code."""

    def __init__(self, status, body, content_type="", args=()):
        self.status = status
        errors = body.get("errors") if isinstance(body, dict) else None
        self.backlog = isinstance(errors, list) and bool(errors)  # Backlog's own error body
        self.said = ""  # Backlog's messages
        if isinstance(errors, list) and errors:
            parts = []
            for error in errors[:10]:
                error = error if isinstance(error, dict) else {"message": error}
                code = error.get("code")
                name = BACKLOG_CODES.get(code, "") if isinstance(code, int) else ""
                label = f" (code {shown(code, 20)} {name})".replace(" )", ")") \
                    if code is not None else ""
                info = f" {shown(error['moreInfo'], 200).strip(chr(34))}" \
                    if error.get("moreInfo") else ""
                message = error.get("message", "")
                message = message if isinstance(message, str) else shown(message, 200)
                parts.append(f"{clip(message, 500)}{label}{info}".strip())
            detail = self.said = "; ".join(parts)
        else:
            snippet = clip(re.sub(r"<[^>]*>|\s+", " ", str(body or "")).strip(), 200)
            kind = content_type.split(";")[0] or "no content type"
            detail = f"a non-Backlog answer ({kind}): {snippet or 'empty body'}"
        step = NEXT_STEP.get(status) or NEXT_STEP[500] if status >= 500 else NEXT_STEP.get(status)
        if status == 400:
            tools = sorted({tool for name, tool in LOOKUP.items()
                            if any(arg.startswith(name) for arg in args)})
            step = ("Fix the parameter Backlog names" +
                    (f"; valid values: {', '.join(tools)}." if tools else "."))
        super().__init__(f"Backlog API error (HTTP {status}): {detail}.", step,
                         retryable=status == 429 or status >= 500)


# == Backlog client ============================================================

def segment(value):
    """One URL path segment from an argument: percent-encoded, never '.', '..' or empty."""
    from urllib.parse import quote
    text = str(value)
    if text in ("", ".", "..") or "\x00" in text:
        raise ToolError(f"'{text}' is not a valid identifier.")
    return quote(text, safe="")


SLASH = object()  # a path's trailing slash (the shared-file root is .../files/metadata/)


def encode(params, clear_empty=False):
    """Backlog's wire form: lists as key[]=v (repeated), booleans as true/false, None dropped.

    customField_* lists take indexed keys (see indexed). An empty list is dropped, or sent as
    key[]= (which clears the field) when clear_empty is set.
    """
    pairs = []
    for key, value in (params.items() if isinstance(params, dict) else params):
        if value is None:
            continue
        if isinstance(value, (list, tuple)) and key.startswith("customField_"):
            pairs.extend(indexed(key, value) or ([(key, "")] if clear_empty else []))
        elif isinstance(value, (list, tuple)):
            if not value and clear_empty:
                pairs.append((key + "[]", ""))
            pairs.extend((key + "[]", _scalar(item)) for item in value)
        else:
            pairs.append((key, _scalar(value)))
    return pairs


def indexed(key, values):
    """customField_{id}[0]=a&customField_{id}[1]=b, a single value included: Backlog applies
    no bracket-array syntax to custom fields; it silently ignores customField_{id}[]= in a
    search and refuses it in a form (backlog-js >= 0.14.2 and Nulab's MCP server send this)."""
    return [(f"{key}[{i}]", _scalar(value)) for i, value in enumerate(values)]


def _scalar(value):
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


class Answer:
    """A response read whole under one deadline: status, headers, decoded body bytes."""

    def __init__(self, status, headers, body):
        self.status, self.headers, self.body = status, headers, body

    @property
    def content_type(self):
        return self.headers.get("Content-Type") or ""


class Backlog:
    """The only place that knows Backlog's wire format and talks to it: one keep-alive
    session, one host check on the URL that requests prepares, one deadline per exchange,
    one reader of bodies (size cap after decoding), one strict JSON parser."""

    def __init__(self, space):
        self.space = space
        self._session = None
        self.rate = {}  # the rate limit the last answer reported (see limits)

    def reset(self):
        self.reset_connections()
        self.space.cache.clear()

    @property
    def session(self):
        if self._session is None:
            requests = requests_module()
            session = requests.Session()
            session.headers["User-Agent"] = f"mcp-backlog-server/{__version__}"
            session.headers["Accept"] = "application/json"
            session.headers["Accept-Encoding"] = "gzip, deflate"  # decoded by read_body
            # Every call goes to one host: read HTTPS_PROXY, NO_PROXY and the CA bundle once
            # here, not again on every request as requests does by default.
            session.trust_env = False
            base = self.space.settings.base_url  # through a proxy plain http would show the
            session.proxies = {} if base.startswith("http://") else \
                requests.utils.get_environ_proxies(base)  # key to it: only https goes
            session.verify = os.environ.get("REQUESTS_CA_BUNDLE") \
                or os.environ.get("CURL_CA_BUNDLE") or True
            for scheme in ("http://", "https://"):
                session.mount(scheme, watched_adapter())
            self._session = session
            try:
                self.check_host(self.prepare("GET", self.url("space"), [], [], None, None))
            except ToolError:
                self._session = None
                raise
        return self._session

    def check_host(self, prepared, full=False):
        """The host check, made with the parser that sends (urllib3's): the URL prepared must
        reach the configured scheme, host and port, and nothing else. Once the base URL has
        passed it, a URL that starts with it and its /api/v2/ path (one that we built, not a
        redirect's) has the same authority, a DNS name: no parse needed."""
        base = self.space.settings.base_url
        if not full and self.__dict__.get("_checked") == base \
                and prepared.url.startswith(base + "/api/v2/"):
            return
        from urllib3.util import parse_url
        got = parse_url(prepared.url)
        if (got.scheme, got.host, got.port, got.auth) == self.origin() \
                and prepared.url.startswith(base + "/api/v2/"):
            self._checked = base
            return
        raise ToolError("The request would not go to BACKLOG_BASE_URL's host; it was not "
                        "sent.", "check BACKLOG_BASE_URL.")

    def origin(self):
        """(scheme, host, port, None) of BACKLOG_BASE_URL, read strictly (what base_url()
        accepts: a DNS name or [::1], a port); None for anything else, which nothing reaches."""
        base = self.space.settings.base_url
        if self.__dict__.get("_origin", (None,))[0] != base:
            match = re.fullmatch(r"(https?)://([a-z0-9.-]+|\[::1\])(?::([0-9]{1,5}))?", base)
            self._origin = (base, match and (match.group(1), match.group(2),
                                             int(match.group(3)) if match.group(3) else None,
                                             None))
        return self._origin[1]

    def url(self, path):
        parts = [path] if isinstance(path, str) else path
        return f"{self.space.settings.base_url}/api/v2/" + "/".join(
            "" if p is SLASH else segment(p) for p in parts)

    def get(self, path, params=None):
        return self.call("GET", path, params)

    def post(self, path, data=None):
        return self.call("POST", path, data=data)

    def patch(self, path, data=None):
        return self.call("PATCH", path, data=data)

    def delete(self, path, data=None):
        return self.call("DELETE", path, data=data)

    def upload(self, path, name, data):
        """POST one file as multipart/form-data, in the field `file` that Backlog reads."""
        return self.call("POST", path, files={"file": (name, data)})

    def call(self, method, path, params=None, data=None, files=None):
        """One API call; the decoded JSON answer ({} for an empty write answer)."""
        form = encode(data or {}, clear_empty=(method == "PATCH"))
        answer = self.send(method, path, encode(params or {}), form, files=files)
        if not answer.body.strip():
            if method == "GET" and answer.status != 204:
                raise ToolError("Backlog sent an empty answer.",
                                "retry the call.")
            return {}
        if "json" not in answer.content_type.lower():
            raise ToolError(f"Backlog answered {method} with "
                            f"{clip(answer.content_type, 60) or 'no content type'}, not JSON.",
                            "check that BACKLOG_BASE_URL is your space's URL.")
        value = parse_backlog_json(answer.body)
        if value is INVALID:
            raise ToolError("Backlog's answer was cut off or is not valid JSON.",
                            "retry the call.")
        return value

    def prepare(self, method, url, query, form, files, accept):
        """The request as it is sent. A form (or no body) is built here, as requests would
        build it (urlencode, + for spaces); a file goes through requests' multipart code."""
        requests = requests_module()
        headers = {"Accept": accept} if accept else {}
        if files:
            return self.session.prepare_request(requests.Request(
                method, url, params=query or None, data=form or None, files=files,
                headers=headers))
        from urllib.parse import urlencode
        if method != "GET":
            # As backlog-js sends a request without parameters: an empty form, typed.
            headers["Content-Type"] = "application/x-www-form-urlencoded"
        prepared = requests.PreparedRequest()
        prepared.method, prepared.hooks = method, {"response": []}
        prepared.url = url + (("&" if "?" in url else "?") + urlencode(query) if query else "")
        prepared.headers = requests.structures.CaseInsensitiveDict(self.session.headers)
        prepared.headers.update(headers)
        prepared.prepare_body(urlencode(form) if form else None, None)
        return prepared

    def send(self, method, path, query=(), form=(), accept=None, files=None, cap=None,
             seconds=None):
        """Send one request and read its answer whole, within `seconds` in all (connect,
        status, headers, body), under `cap` bytes after decoding. A GET is retried on 429,
        502-504, a reset or a body cut off (never a write); a redirect is followed only to the
        same scheme, host and port, without the key."""
        s = self.space.settings
        if s.problems:
            raise ToolError("The server is not configured: " + "; ".join(s.problems))
        url = self.url(path)
        query = list(query) + [("apiKey", s.api_key)]
        names = [key.split("[")[0] for key, _ in list(query) + list(form)]
        snake = [re.sub(r"(?<!^)(?=[A-Z])", "_", n).lower().replace("_id", "") for n in names]
        seconds = seconds or s.timeout[1]
        end = time.monotonic() + seconds  # one deadline: retries, redirects and waits in it
        attempt = hops = stale = 0
        while True:
            prepared = self.prepare(method, url, query, form, files, accept)
            self.check_host(prepared)
            left = end - time.monotonic()
            if left <= 0:
                raise ToolError(f"Backlog did not answer within {seconds:g} s.",
                                "retry later, or raise BACKLOG_TIMEOUT.", retryable=True)
            status, answer = self.exchange(prepared, cap or MAX_JSON, left, seconds)
            if isinstance(status, int):
                self.limits(answer.headers)
            if status == "stale" and method == "GET" and stale < STALE_RETRIES:
                stale += 1  # as urllib3 does: at once, on a fresh connection, uncharged
                continue
            status = "reset" if status == "stale" else status
            if status in TRANSIENT and method == "GET" and attempt < len(RETRY_BACKOFF):
                time.sleep(min(RETRY_BACKOFF[attempt], max(0.0, end - time.monotonic())))
                attempt += 1
                continue
            if status == "reset":
                raise ToolError(f"Could not reach Backlog at {s.base_url}: {answer}.",
                                "check the network, a proxy (HTTPS_PROXY) and "
                                "BACKLOG_BASE_URL, then retry.")
            if status == "cut":
                raise ToolError(f"Backlog's answer broke off: {answer}.", "retry.",
                                retryable=True)
            if 300 <= status < 400:
                target = self.redirect(answer, method, prepared.url)
                if target is not None and hops < 3:
                    # Same origin: our key, and no other key the Location may carry.
                    url, query, hops = target, [("apiKey", s.api_key)], hops + 1
                    continue
                raise ToolError(f"Backlog answered {method} with a redirect (HTTP {status}) "
                                f"to {self.where(answer)}; it was not followed.",
                                "check "
                                "BACKLOG_BASE_URL (it must be the space's own https URL).")
            wait = _retry_wait(status, answer.headers, attempt) if method == "GET" else None
            if wait is not None and wait < end - time.monotonic():
                time.sleep(wait)
                attempt += 1
                continue
            if 200 <= status < 300:
                return answer
            if status < 400:
                raise ToolError(f"Backlog answered with HTTP {status}.",
                                "retry.")
            body = parse_backlog_json(answer.body) if "json" in answer.content_type.lower() \
                else INVALID
            if body is INVALID:
                body = clip(answer.body.decode("utf-8", "replace"), 4096)
            raise BacklogError(status, body, answer.content_type, snake)

    def limits(self, headers):
        """Keep what an answer says of the key's rate limit in its class (read, update,
        search, icon): {limit, remaining, reset (epoch seconds), retry (Retry-After)}."""
        found = {}
        for header, key in (("X-RateLimit-Limit", "limit"), ("X-RateLimit-Remaining",
                                                              "remaining"),
                            ("X-RateLimit-Reset", "reset"), ("Retry-After", "retry")):
            try:
                value = float(headers.get(header))
            except (TypeError, ValueError):
                continue
            if value == value and abs(value) < 1e12:  # no NaN, no infinity
                found[key] = value
        self.rate = found

    def exchange(self, prepared, cap, seconds, budget=None):
        """(status, Answer) of one exchange, or ("reset" | "cut", reason) when the connection
        failed before the answer's headers or in its body."""
        import http.client
        import urllib3
        requests = requests_module()
        s = self.space.settings
        stage = "reset"
        WATCHDOG.arm(seconds)
        try:
            # The adapter itself: Session.send would parse a redirect's Location (and fail on
            # a bad one) even with allow_redirects=False; send() decides on redirects.
            session = self.session
            response = session.get_adapter(prepared.url).send(
                prepared, stream=True, timeout=(min(s.timeout[0], seconds), seconds),
                verify=session.verify, proxies=session.proxies, cert=session.cert)
            stage = "cut"
            try:
                keep = 65536 if response.status_code >= 300 else None
                declared = response.headers.get("Content-Length", "")
                if keep is None and DIGITS.match(declared) and int(declared) > cap:
                    raise TooBig(cap, declared)
                # the key never enters: no window or cut of a text can split it past the
                # redactor of what leaves
                body = redact_bytes(read_body(response.raw, response.headers, cap, keep=keep))
                if WATCHDOG.fired:  # the socket was shut: what came is not the answer
                    raise TimeoutError
            except TooBig as exc:
                exc.headers = response.headers
                raise
            finally:
                response.close()
            return response.status_code, Answer(response.status_code, response.headers, body)
        except (requests.exceptions.RequestException, urllib3.exceptions.HTTPError,
                http.client.HTTPException, OSError) as exc:
            kind, reason = fault_of(exc)
            if WATCHDOG.fired or kind == "timeout":
                self.reset_connections()
                raise ToolError(f"Backlog did not answer within {budget or seconds:g} s.",
                                "retry later, or raise BACKLOG_TIMEOUT.",
                                retryable=True) from None
            if kind == "unreachable":
                raise ToolError(f"Could not reach Backlog at {s.base_url}: {reason}.",
                                "check the network, a proxy (HTTPS_PROXY) and "
                                "BACKLOG_BASE_URL, then retry.") from None
            if stage == "reset" and getattr(WATCHDOG.connection, "sent", 0) > 1:
                return "stale", reason  # a kept-alive connection the server had closed
            return stage, reason
        finally:
            WATCHDOG.disarm()

    def reset_connections(self):
        """Drop the pooled connections (one may be stuck), keep the caches."""
        if self._session is not None:
            self._session.close()
        self._session = None

    def redirect(self, answer, method, current):
        """The URL to follow: a GET's Location on the same scheme, host and port."""
        from urllib.parse import urljoin
        from urllib3.util import parse_url
        location = answer.headers.get("Location")
        if method != "GET" or not location:
            return None
        try:
            target = urljoin(current, location)
            got = parse_url(target)
        except ValueError:
            return None
        same = (got.scheme, got.host, got.port, got.auth) == self.origin()
        if not same or not target.startswith(self.space.settings.base_url + "/api/v2/"):
            return None
        from urllib.parse import parse_qsl, urlencode, urlsplit
        parts = urlsplit(target)
        query = [(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True)
                 if k.lower() != "apikey"]
        return parts._replace(query=urlencode(query), fragment="").geturl()

    def where(self, answer):
        from urllib.parse import urlsplit
        location = answer.headers.get("Location") or ""
        try:
            host = urlsplit(location).hostname
        except ValueError:
            host = None
        return f"host '{clip(host, 80)}'" if host else (
            f"'{clip(location.split('?')[0], 80)}'" if location else "nowhere (no Location)")


TRANSIENT = ("reset", "cut")
STALE_RETRIES = 3  # GETs sent again at once after a reused connection was found closed


def fault_of(exc):
    """(kind, reason) of a failed exchange, read from the exception's type and the ones it
    wraps (never from its text, which holds the URL): "timeout", "unreachable" (the host
    cannot be reached: retrying will not help) or "reset" (the connection broke)."""
    import http.client
    import socket
    import ssl
    requests = requests_module()
    import urllib3
    timeouts = (socket.timeout, TimeoutError, requests.exceptions.Timeout,
                urllib3.exceptions.TimeoutError)
    unreachable = ((ConnectionRefusedError, "connection refused"),
                   (socket.gaierror, "host name not found"),
                   (ssl.SSLCertVerificationError, "certificate not trusted "
                                                  "(CERTIFICATE_VERIFY_FAILED)"),
                   (ssl.SSLError, "TLS handshake failed"))
    resets = ((ConnectionResetError, "connection reset"), (BrokenPipeError, "connection reset"),
              (http.client.RemoteDisconnected, "connection closed by the server"),
              (http.client.IncompleteRead, "answer cut short"),
              (ConnectionAbortedError, "connection aborted"))
    chain, stack = [], [exc]
    while stack:
        e = stack.pop()
        if isinstance(e, BaseException) and all(e is not c for c in chain):
            chain.append(e)
            stack += [e.__cause__, e.__context__, getattr(e, "reason", None)] + list(e.args)
    for kind, reason in unreachable:
        if any(isinstance(e, kind) for e in chain):
            return "unreachable", reason
    # urllib3 derives its NewConnectionError from a timeout class: it is a failed connect
    if any(isinstance(e, urllib3.exceptions.NewConnectionError) for e in chain):
        return "unreachable", "could not connect"
    if any(isinstance(e, timeouts) for e in chain):
        return "timeout", "timed out"
    return "reset", next((reason for e in chain for kind, reason in resets
                          if isinstance(e, kind)), type(exc).__name__)


class Watchdog:
    """One deadline for a whole exchange. requests' timeouts bound each socket read, so a
    server that sends '100 Continue' or a header byte every second would hold a call for
    ever; at the deadline this thread shuts the socket of the connection in use, and the
    blocked read ends at once."""

    def __init__(self):
        self.lock = None
        self.deadline = self.connection = None
        self.fired = False
        self.wakes = None  # when the thread wakes by itself (None: only when told)

    def arm(self, seconds):
        import threading
        if self.lock is None:
            self.lock = threading.Condition()
            threading.Thread(target=self.run, name="deadline", daemon=True).start()
        with self.lock:
            self.deadline, self.fired = time.monotonic() + seconds, False
            if self.wakes is None or self.wakes > self.deadline:
                self.lock.notify()  # else it wakes before the deadline and looks again

    def disarm(self):
        if self.lock is not None:
            with self.lock:
                self.deadline = None

    def run(self):
        import socket
        while True:
            with self.lock:
                while self.deadline is None or self.deadline > time.monotonic():
                    self.wakes = self.deadline
                    self.lock.wait(None if self.deadline is None
                                   else self.deadline - time.monotonic())
                self.deadline, self.fired, self.wakes = None, True, None
                sock = getattr(self.connection, "sock", None)
            try:
                if sock is not None:
                    sock.shutdown(socket.SHUT_RDWR)
            except (OSError, ValueError):
                pass


WATCHDOG = Watchdog()


def watched_adapter():
    """requests' adapter whose connections tell the watchdog which socket is in use."""
    requests = requests_module()
    from urllib3 import connectionpool

    def watched(pool):
        class Connection(pool.ConnectionCls):
            sent = 0  # requests sent on this connection: more than one, it was reused

            def putrequest(self, *args, **kwargs):
                WATCHDOG.connection = self
                self.sent += 1
                return super().putrequest(*args, **kwargs)

            def connect(self):
                WATCHDOG.connection = self
                return super().connect()

        return type(pool.__name__, (pool,), {"ConnectionCls": Connection})

    pools = {"http": watched(connectionpool.HTTPConnectionPool),
             "https": watched(connectionpool.HTTPSConnectionPool)}

    class Adapter(requests.adapters.HTTPAdapter):
        def init_poolmanager(self, *args, **kwargs):
            super().init_poolmanager(*args, **kwargs)
            self.poolmanager.pool_classes_by_scheme = pools

        def proxy_manager_for(self, *args, **kwargs):
            manager = super().proxy_manager_for(*args, **kwargs)
            manager.pool_classes_by_scheme = pools
            return manager

    return Adapter()


MAX_JSON = 64 * 1024 * 1024
MAX_DEPTH = 64     # nesting of a Backlog answer; Backlog's own answers nest 6 deep at most
INVALID = object()  # what parse_backlog_json returns for a body that is not JSON
LONE = re.compile(r"\\u[dD][89a-fA-F][0-9a-fA-F]{2}")  # a surrogate escape, maybe unpaired
SURROGATE = re.compile("[\ud800-\udfff]")
ESCAPED = re.compile(r"\\(?:u00[2-7][0-9a-fA-F]|/)")  # printable ASCII escaped: no encoder's habit
PREFETCH = None  # the thread that imports requests once a client has connected


def parse_backlog_json(data):
    """Backlog's JSON, strictly: bytes that are not UTF-8 become U+FFFD (never surrogates),
    NaN, Infinity and numbers too large for a float become null, lone surrogate escapes
    become U+FFFD, and an answer nested deeper than MAX_DEPTH is refused (INVALID)."""
    text = bytes(data).decode("utf-8", "replace")
    try:
        value = json.loads(text, parse_constant=lambda _: None, parse_float=_finite)
    except (ValueError, RecursionError):
        return INVALID
    if text.count("[") + text.count("{") > MAX_DEPTH and too_deep(value):  # (before scrub)
        return INVALID
    if SECRETS and ESCAPED.search(text):  # a key spelled in escapes: redacted once decoded
        value = texts_mapped(value, redact)
    return scrub(value) if LONE.search(text) else value


def _finite(text):
    import math
    number = float(text)
    return number if math.isfinite(number) else None


def texts_mapped(value, fn):
    """The same JSON value with fn applied to every text in it (keys too)."""
    if isinstance(value, str):
        return fn(value)
    if isinstance(value, list):
        return [texts_mapped(v, fn) for v in value]
    if isinstance(value, dict):
        return {texts_mapped(k, fn): texts_mapped(v, fn) for k, v in value.items()}
    return value


def scrub(value):
    """The same value with every lone surrogate replaced by U+FFFD (in keys too)."""
    return texts_mapped(value, lambda text: SURROGATE.sub("\ufffd", text))


def too_deep(value, limit=MAX_DEPTH):
    stack = [(value, 0)] if isinstance(value, (dict, list)) else []
    while stack:
        item, depth = stack.pop()
        if depth > limit:
            return True
        children = item.values() if isinstance(item, dict) else item
        stack.extend((c, depth + 1) for c in children if isinstance(c, (dict, list)))
    return False


def prefetch():
    """Import requests in the background once a client has connected: a host sends its first
    tools/call seconds after the handshake, and that call then does not wait for the import."""
    global PREFETCH
    if PREFETCH is None and not settings().problems:
        import threading
        PREFETCH = threading.Thread(target=_import_requests, name="prefetch", daemon=True)
        PREFETCH.start()


def _import_requests():
    try:
        import requests  # noqa: F401
    except Exception:  # the first call imports it again and reports what is wrong
        pass


def requests_module():
    """requests, imported on the first call, so that start-up never pays for it. A call waits
    for the background import to end: Python 3.9 may hand a second importer the half-made
    module."""
    if PREFETCH is not None:
        PREFETCH.join()
    import requests
    return requests


PROGRESS_BYTES = 1 << 20  # a download reports its progress every MiB


class TooBig(ToolError):
    """An answer over its size cap; `headers` are the answer's, for the file's name."""

    def __init__(self, cap, size=None):
        super().__init__(f"Backlog's answer is larger than {cap} bytes.")
        self.cap, self.size, self.headers = cap, size or f"more than {cap}", {}


DIGITS = re.compile(r"[0-9]{1,18}\Z")  # ASCII digits only: int() also reads '²' and '١'


def read_body(raw, headers, cap, keep=None):
    """A response body, decoded (gzip or deflate, as Accept-Encoding allowed), refused past
    `cap` decoded bytes without ever holding more (a compression bomb stops at the cap), or
    cut at `keep` bytes. The watchdog bounds the time."""
    import zlib
    coding = (headers.get("Content-Encoding") or "identity").strip().lower()
    if coding in ("gzip", "x-gzip"):
        decoder = zlib.decompressobj(16 + zlib.MAX_WBITS)
    elif coding == "deflate":
        decoder = zlib.decompressobj(zlib.MAX_WBITS | 32)  # zlib or gzip header
    elif coding == "identity":
        decoder = None
    else:
        raise ToolError(f"Backlog answered with Content-Encoding '{clip(coding, 40)}', which was "
                        "not asked for.",
                        "check a proxy between here and Backlog.")
    read = getattr(raw, "read1", None) or raw.read
    limit = cap if keep is None else min(cap, keep)
    body = bytearray()  # grown in place: a large body is never held twice
    while True:
        chunk = read(65536, decode_content=False)
        if decoder is not None:
            try:
                chunk = decoder.decompress(chunk, limit + 1 - len(body)) if chunk \
                    else decoder.flush()
            except zlib.error:
                if coding != "deflate" or body:
                    raise ToolError("Backlog's compressed answer is corrupt.",
                                    "retry.") \
                        from None
                decoder = zlib.decompressobj(-zlib.MAX_WBITS)  # raw deflate, as IIS sends it
                try:
                    chunk = decoder.decompress(chunk, limit + 1)
                except zlib.error:
                    raise ToolError("Backlog's compressed answer is corrupt.",
                                    "retry.") \
                        from None
        if not chunk:
            return body
        body += chunk
        if PROGRESS.get() is not None and len(body) // PROGRESS_BYTES > (
                len(body) - len(chunk)) // PROGRESS_BYTES:
            declared = headers.get("Content-Length", "")
            Progress.step(f"{len(body):,} bytes", at=len(body),
                          total=int(declared) if DIGITS.match(declared) else None)
        if len(body) > limit:
            if keep is not None:
                return body[:keep]
            raise TooBig(cap)


def _retry_wait(status, headers, attempt):
    """Seconds to wait before retrying a GET, or None when it must not be retried."""
    import math
    if status == 429 and attempt == 0:
        wait = 1.0
        header = headers.get("Retry-After")
        reset = headers.get("X-RateLimit-Reset")
        try:
            if header:
                wait = float(header)
            elif reset:
                wait = float(reset) - time.time()
        except ValueError:
            pass
        if not math.isfinite(wait):
            return None
        return max(0.0, wait) if wait <= RATE_LIMIT_MAX_WAIT else None
    if status in (502, 503, 504) and attempt < len(RETRY_BACKOFF):
        return RETRY_BACKOFF[attempt]
    return None


class Cache:
    """A small dict with a time to live, for project keys, issue owners, field definitions."""

    def __init__(self, space, size=1000):
        self.space, self.size, self.data = space, size, {}

    def get(self, key, make, ttl=CACHE_TTL):
        """The value under `key`, made (and kept `ttl` seconds; None: for the session) when
        missing or stale."""
        hit = self.data.get(key)
        if hit and hit[0] > time.monotonic():
            return hit[1]
        value = make()
        if len(self.data) >= self.size:
            self.data.pop(next(iter(self.data)))
        self.data[key] = (float("inf") if ttl is None else time.monotonic() + ttl, value)
        return value

    def clear(self):
        self.data.clear()



# == Access control ============================================================
# BACKLOG_PROJECTS is held by construction. Every parameter that names something of a project
# declares its owner (P(..., owner="issue")); before a tool runs (before a confirmation is
# asked, before any request names it) the pipeline finds the project of each such value and
# refuses one outside the allow-list, or only readable, with the words it uses for one that
# does not exist. On the way out, `hold` drops the records of other projects from lists and
# reduces those embedded in an allowed record (a pull request's linked issue) to a marker.

OUTSIDE = "(outside BACKLOG_PROJECTS)"
STAR_URL = re.compile(  # a page that names its project's key: /view/DEMO-1, /wiki/DEMO/Home
    r"https?://[^/?#]+/(?:view|wiki|git|file|document)/([_A-Z0-9]{1,25})(?:[-/]|\Z)")


def restricted():
    return settings().projects is not None


def project_info(project_id_or_key):
    """{id, projectKey} of a project, fetched once and cached; Missing when there is none."""
    key = str(project_id_or_key).upper()

    def fetch():
        try:
            return checked(api.get(("projects", key)), {"id": int, "projectKey": str})
        except BacklogError as exc:
            if exc.status == 404 and exc.backlog:
                raise Missing("project", project_id_or_key) from None
            raise
    project = CACHE.get(("project", key), fetch)
    CACHE.get(("project", str(project["id"])), lambda: project)
    CACHE.get(("project", project["projectKey"]), lambda: project)
    return project


def checked(value, shape):
    """A Backlog answer that is an object with these keys of these types; else a tool error
    (and nothing odd is cached)."""
    if not isinstance(value, dict) or not all(isinstance(value.get(k), t) for k, t in
                                              shape.items()):
        raise OddAnswer()
    return value


def rows(value, shape):
    """A Backlog list of objects with these keys of these types; else OddAnswer."""
    if not isinstance(value, list):
        raise OddAnswer()
    return [checked(item, shape) for item in value]


def project_id(project_id_or_key):
    """The numeric id that Backlog's forms want, from a key or an id."""
    text = str(project_id_or_key)
    return int(text) if DIGITS.match(text) else project_info(text)["id"]


def allowed_ids():
    """{numeric id: key} of the allowed projects, resolved once for the space (a key that no
    project has is left out; --check names it)."""
    space = here()
    if space.allowed_ids is None:
        found = {}
        for key in settings().projects:
            try:
                found[project_info(key)["id"]] = key
            except Missing:
                pass
        space.allowed_ids = found
    return space.allowed_ids


def level_of(project):
    """READ, WRITE, or None (outside the allow-list) for a project given by key or id."""
    s = settings()
    if s.projects is None:
        return WRITE
    if isinstance(project, int) or DIGITS.match(str(project)):
        project = allowed_ids().get(int(project))
        if project is None:
            return None
    return s.level(project)


def record_project(item):
    """The project a record of Backlog's answers belongs to (an id or a key), or None: its
    projectId, its project, a project's own key, the issue of a watching, the page of a
    recently viewed wiki, the URL of a star."""
    if not isinstance(item, dict):
        return None
    found = item.get("projectId")
    if isinstance(found, int) and not isinstance(found, bool):
        return found
    project = item.get("project")
    if isinstance(project, dict):
        key = project.get("projectKey")
        return key if isinstance(key, str) else _int(project.get("id"))
    if isinstance(item.get("projectKey"), str):
        return item["projectKey"]
    for inner in ("issue", "page"):
        if isinstance(item.get(inner), dict) and record_project(item[inner]) is not None:
            return record_project(item[inner])
    url = item.get("url") if "presenter" in item else None
    match = STAR_URL.match(url) if isinstance(url, str) else None
    if match and not DIGITS.match(match.group(1)):  # a key, never taken for a project's id
        return match.group(1)
    return OUTSIDE if "presenter" in item else None


def _int(value):
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def shown_record(item):
    """May a record be shown here? Those of no known project may (users, priorities)."""
    project = record_project(item)
    return project is None or (project != OUTSIDE and level_of(project) is not None)


class Listing(list):
    """A list of items, knowing how many Backlog returned before the allow-list filter
    (fetched), how many match in all when that was counted (total), the last item Backlog
    returned (last, for the cursor) and, for a page made here, where it starts (start)."""

    fetched = total = last = None
    start = 0


def hold(value, tool_=None, args=None):
    """An answer as it may leave under BACKLOG_PROJECTS: a record of another project at the
    top is refused as not found, dropped from a list, and replaced by OUTSIDE inside an
    allowed record. A list keeps how many items Backlog returned (`fetched`)."""
    if not restricted():
        return value
    if isinstance(value, dict) and not shown_record(value):
        raise not_found(tool_, args or {})

    def walk(item):
        if isinstance(item, list):
            return [walk(i) for i in item if shown_record(i)]
        if isinstance(item, dict):
            return {k: walk(v) if shown_record(v) else OUTSIDE for k, v in item.items()}
        return item
    if isinstance(value, list):
        listing = relist(value, walk(value))
        listing.last = value[-1] if value else None  # the cursor, whatever was held back
        return listing
    return walk(value)


def held(items):
    """How many of a page of items may be shown (counting under the allow-list)."""
    return sum(1 for item in items if shown_record(item)) if restricted() else len(items)


# -- Owners: for each kind of identifier, the project of a value (a key or an id). A lookup
# that Backlog answers 404 is refused exactly as an identifier outside the allow-list.

OWNERS = {}


def owner(kind, label, lookup):
    """Register how the project of a `kind` is found; `label` names it for a person and
    `lookup` is the tool that lists valid ones."""
    def register(fn):
        OWNERS[kind] = (fn, label, lookup)
        return fn
    return register


def looked_up(kind, value, path, find):
    """The project of a value found by fetching it once per session (ids never move)."""
    return CACHE.get(("owner", kind, str(value).lower()), lambda: find(api.get(path)),
                     ttl=None)


@owner("project", "project", "project_list_get")
def _project_owner(value, args):
    return str(value).upper()


@owner("issue", "issue", "issue_list_get")
def _issue_owner(value, args):
    text = str(value)
    if not DIGITS.match(text):
        return text.rsplit("-", 1)[0].upper()  # DEMO-3 is an issue of DEMO: no request
    return looked_up("issue", text, ("issues", text), lambda i: checked(i, {"projectId": int})[
        "projectId"])


@owner("wiki", "wiki page", "wiki_list_get")
def _wiki_owner(value, args):
    return looked_up("wiki", value, ("wikis", value),
                     lambda w: checked(w, {"projectId": int})["projectId"])


@owner("document", "document", "document_list_get")
def _document_owner(value, args):
    return looked_up("document", value, ("documents", str(value).lower()),
                     lambda d: checked(d, {"projectId": int})["projectId"])


@owner("watching", "watching", "user_watching_list_get")
def _watching_owner(value, args):
    return looked_up("watching", value, ("watchings", value), lambda w: checked(
        checked(w, {"issue": dict})["issue"], {"projectId": int})["projectId"])


@owner("repo", "repository", "git_repository_list_get")
def _repo_owner(value, args):
    project = args["project_id_or_key"]
    return looked_up("repo", f"{project}/{value}", ("projects", project, "git", "repositories",
                                                     value),
                     lambda r: checked(r, {"projectId": int})["projectId"])


@owner("comment", "comment", "issue_comment_list_get")
def _comment_owner(value, args):
    issue = args.get("issue_id_or_key")
    if issue is None:
        raise ToolError("Under BACKLOG_PROJECTS a comment is starred with its issue_id_or_key.",
                        "call again with the comment's issue_id_or_key.")
    api.get(("issues", issue, "comments", value))  # the comment must be this issue's
    return _issue_owner(issue, args)


@owner("star", "star", "user_star_list_get")
def _star_owner(value, args):
    me = checked(api.get(("users", "myself")), {"id": int})["id"]
    stars = api.get(("users", me, "stars"), {"count": 100})
    star = next((s for s in stars if isinstance(s, dict) and s.get("id") == value), None)
    return record_project(star) if star is not None else OUTSIDE


@owner("notification", "notification", "notification_list_get")
def _notification_owner(value, args):
    max_id = None
    for _ in range(10):
        items = api.get("notifications", {"count": 100, "maxId": max_id})
        found = next((n for n in items if isinstance(n, dict) and n.get("id") == value), None)
        if found is not None:
            return record_project(found) or OUTSIDE
        if len(items) < 100:
            break
        max_id = checked(items[-1], {"id": int})["id"]  # exclusive, as page_note tells
    return OUTSIDE


@owner("unscoped", "pull request", "git_pr_list_get")
def _unscoped_owner(value, args):
    raise ToolError("Under BACKLOG_PROJECTS pull requests and their comments cannot be starred "
                    "here (Backlog does not say their project).",
                    "star an issue, a comment or a wiki page instead.")


def identifiers(tool_, args, only=None):
    """'issue DEMO-1, comment 5': the identifiers a call names, in words for a person; `only`:
    the one (kind, value) that is meant (a value of a list)."""
    if only is not None:
        return f"{OWNERS[only[0]][1] if only[0] in OWNERS else only[0]} {clip(only[1], 40)}"
    parts = []
    for name, param in tool_.params.items():
        value = args.get(name)
        if value is not None and not isinstance(value, list) and (param.owner or param.ident):
            parts.append(f"{OWNERS[param.owner][1] if param.owner else param.ident} "
                         f"{clip(value, 40)}")
    return " or ".join(filter(None, [", ".join(parts[:-1]), parts[-1]])) if parts else ""


def not_found(tool_, args, only=None, said=None):
    """One wording for an identifier that does not exist and one outside the allow-list."""
    if tool_ is None:
        return NotFound("Not found among the projects this server may use.")
    lookups = sorted({OWNERS[p.owner][2] for n, p in tool_.params.items()
                      if p.owner and args.get(n) is not None})
    where = f"among the projects this server may use ({', '.join(settings().allowed())})" \
        if restricted() else "in this space" + (f" (Backlog: {clip(said, 120)})" if said else "")
    named = identifiers(tool_, args, only)
    return NotFound(f"No {named} {where}." if named else f"Nothing found for {tool_.name} {where}.",
                    "check the identifier" + (f"; {', '.join(lookups)} lists valid ones."
                                              if lookups else "."))


def check_access(tool_, args):
    """Under BACKLOG_PROJECTS: the project of every owned identifier of a call, each held to
    the allow-list (and, for a write, to projects it may write), before anything else."""
    if not restricted():
        return
    for name, param in tool_.params.items():
        value = args.get(name)
        if param.owner is None or value is None:
            continue
        for one in value if isinstance(value, list) else [value]:
            only = (param.owner, one)
            try:
                project = OWNERS[param.owner][0](one, args)
            except (Missing, BacklogError) as exc:
                if getattr(exc, "status", 404) == 404 and getattr(exc, "backlog", True):
                    raise not_found(tool_, args, only) from None
                raise
            level = None if project == OUTSIDE else level_of(project)
            if level is None:
                raise not_found(tool_, args, only)
            if tool_.write and level == READ:
                key = project if not DIGITS.match(str(project)) else allowed_ids()[int(project)]
                raise Refused(f"Project {key} may only be read here (BACKLOG_PROJECTS lists "
                              f"it as {key}:read): {tool_.name} was not run.",
                              "ask the person who configures this server, or work in a "
                              "project you may change.")


# == Pasted addresses ==========================================================
# People paste links, not ids: wherever a tool takes an issue, a comment, a wiki page, a pull
# request, a document, a shared file or a project, it takes the address of it in Backlog too.
# The address's host picks the space (an unknown host is refused, and no key goes there);
# what the address names is filled in for the parameters it fills (a comment's address gives
# the issue and the comment_id; a pull request's the project, the repository and the number).

WEB_PATHS = [  # (pattern of the path in Backlog's web app, what it names)
    (r"view/(?P<project>[_A-Z0-9]{1,25})-(?P<number>[1-9][0-9]{0,9})", "issue"),
    (r"(?:alias/)?wiki/(?P<wiki>[1-9][0-9]{0,17})", "wiki"),
    (r"wiki/(?P<project>[_A-Z0-9]{1,25})/(?P<name>.+)", "wiki name"),
    (r"git/(?P<project>[_A-Z0-9]{1,25})/(?P<repo>[A-Za-z0-9][A-Za-z0-9_.-]{0,99}?)"
     r"(?:\.git)?(?:/pullRequests/(?P<pr>[1-9][0-9]{0,9}))?(?:/.*)?", "repo"),
    (r"document/(?:(?P<project>[_A-Z0-9]{1,25})/)?(?P<document>[0-9a-fA-F]{32})", "document"),
    (r"file/(?P<project>[_A-Z0-9]{1,25})/(?P<path>.+)", "file"),
    (r"projects/(?P<project>[_A-Z0-9]{1,25})(?:/.*)?", "project"),
]
WEB = re.compile(r"https?://([^/?#\s]+)/([^\s]*)\Z", re.I)


def host_of(space):
    from urllib.parse import urlsplit
    return urlsplit(space.settings.base_url).netloc if space.settings.base_url else ""


def url_space(text):
    """The space whose host a pasted URL names (None when the text is no URL); a tool error,
    and no request, for a host that no space has."""
    match = re.match(r"https?://([^/?#]+)", text.strip(), re.I)
    if not match:
        return None
    host = match.group(1).lower()
    for space in SPACES.values():
        if host_of(space) and host == host_of(space):
            return space
    raise ToolError(f"{clip(host, 80)} is not the host of a space this server uses "
                    f"({', '.join(host_of(s) for s in SPACES.values() if host_of(s))}).",
                    "paste a URL of one of them.")


def web_address(text):
    """(space, {name: value}) of the address of something in a configured space's web app,
    or None when the text is no address; a tool error, with nothing sent, for a host that no
    space has or a path that names nothing known."""
    from urllib.parse import unquote_plus
    match = WEB.match(text.strip()) if isinstance(text, str) else None
    if not match:
        return None
    space = url_space(text)
    path, _, fragment = match.group(2).partition("#")
    path = path.partition("?")[0].rstrip("/")
    for pattern, kind in WEB_PATHS:
        found = re.fullmatch(pattern, path, re.I)
        if found:
            parts = {k: v for k, v in found.groupdict().items() if v}
            parts.update({k: unquote_plus(parts[k]) for k in ("name", "path") if k in parts})
            if "project" in parts:
                parts["project"] = parts["project"].upper()
            comment = re.fullmatch(r"comment-([1-9][0-9]{0,17})", fragment)
            if kind == "issue" and comment:
                parts["comment"] = comment.group(1)
            return space, dict(parts, kind=kind)
    raise ToolError(f"{clip(text, 120)} is not the address of an issue, comment, wiki page, "
                    "pull request, document, shared file or project.",
                    "paste the page's address, or give the key or id.")


ADDRESSED = {"project", "issue", "comment", "wiki", "repo", "pull request", "document",
             "shared file"}  # what a parameter may name that has an address


def pasted(tool_, arguments):
    """[(name, param, value)] of the arguments given as addresses, in parameters that name
    something with one (a text that is only a URL stays a text)."""
    found = []
    for name, value in arguments.items():
        param = tool_.params.get(tool_.named(name))
        if param is None or (param.owner or param.ident) not in ADDRESSED:
            continue
        for one in value if isinstance(value, list) else [value]:
            if isinstance(one, str) and WEB.match(one.strip()):
                found.append((name, param, one))
    return found


def addresses_space(tool_, arguments):
    """The name of the space the pasted addresses of a call name (None when there is none);
    they must all name one. An unknown host is a tool error, and nothing is sent."""
    spaces = {url_space(value).name for _, _, value in pasted(tool_, arguments)}
    if len(spaces) > 1:
        raise ToolError("The addresses given are of different spaces.", "give one at a time.")
    return spaces.pop() if spaces else None


def expand_addresses(tool_, arguments):
    """The arguments with each pasted address replaced by what it names, filling the other
    parameters it gives (a comment's issue, a pull request's project and repository) where
    they were not given. Lookups (a wiki page by name, a shared file by path) are made only
    in projects this server may read."""
    named = addresses_space(tool_, arguments)
    if named is not None and named != here().name:
        raise ToolError(f"That address is of space '{named}', not '{here().name}'.",
                        f"call again with space '{named}'.")
    out = dict(arguments)
    for name, param, value in pasted(tool_, arguments):
        parts = web_address(value)[1]
        project = parts.get("project")
        if project and level_of(project) is None:
            raise not_found(tool_, {}, ("project", project))
        try:
            given = addressed(param, parts, tool_, project)
        except Missing as exc:
            raise not_found(tool_, {}, (exc.kind, exc.value)) from None
        if isinstance(out[name], list):
            out[name] = [given if item == value else item for item in out[name]]
        else:
            out[name] = given
        fill = {"project_id_or_key": project, "repo_id_or_name": parts.get("repo"),
                "pr_number": parts.get("pr") and int(parts["pr"]),
                "issue_id_or_key": parts.get("number") and f"{project}-{parts['number']}",
                "comment_id": parts.get("comment") and int(parts["comment"])}
        given_names = {tool_.named(n) for n in arguments}
        out.update({k: v for k, v in fill.items() if v is not None and k in tool_.params
                    and k not in given_names and k != name})
    return out


def addressed(param, parts, tool_, project):
    """What an address gives a parameter of this kind."""
    kind, issue = parts["kind"], f"{project}-{parts.get('number')}"
    wanted = param.owner or param.ident
    if wanted == "project" and project:
        return project
    if wanted == "issue" and kind == "issue":
        if param.type == "string":
            return issue
        try:
            return checked(api.get(("issues", issue)), {"id": int})["id"]
        except BacklogError as exc:
            if exc.status == 404 and exc.backlog:
                raise Missing("issue", issue) from None
            raise
    if wanted == "comment" and parts.get("comment"):
        return int(parts["comment"])
    if wanted == "wiki" and kind == "wiki":
        return int(parts["wiki"])
    if wanted == "wiki" and kind == "wiki name":
        pages = rows(api.get("wikis", {"projectIdOrKey": project, "keyword": parts["name"]}), {})
        found = [p["id"] for p in pages if p.get("name") == parts["name"]]
        if len(found) != 1:
            raise Missing("wiki page", f"{project}/{parts['name']}")
        return found[0]
    if wanted == "repo" and parts.get("repo"):
        return parts["repo"]
    if wanted == "pull request" and parts.get("pr"):
        return int(parts["pr"])
    if wanted == "document" and parts.get("document"):
        return parts["document"].lower()
    if wanted == "shared file" and kind == "file":
        folder, _, filename = parts["path"].rstrip("/").rpartition("/")
        listed_ = rows(api.get(("projects", project, "files", "metadata")
                               + (directory(folder) or (SLASH,)), {"count": 100}), {})
        found = [f["id"] for f in listed_ if f.get("name") == filename and isinstance(
            f.get("id"), int)]
        if len(found) != 1:
            raise Missing("shared file", f"{project}/{parts['path']}")
        return found[0]
    raise ToolError(f"That address names a {kind}, not a {wanted}.",
                    f"give the {wanted} itself.")


def resource_of_address(text):
    """backlog://HOST/... for a pasted address of what a resource can show, else None. A wiki
    page by name and a shared file by path are looked up (in an allowed project only)."""
    found = web_address(text)
    if found is None:
        return None
    space, parts = found
    project, kind = parts.get("project"), parts["kind"]
    with within(space.name):
        if project and level_of(project) is None:
            raise Missing("project", project)
        if kind in ("wiki name", "file"):
            parts = dict(parts, id=addressed(WikiId if kind == "wiki name" else SharedFileId,
                                             parts, None, project))
    paths = {"issue": f"view/{project}-{parts.get('number')}",
             "wiki": f"wiki/{parts.get('wiki')}", "wiki name": f"wiki/{parts.get('id')}",
             "document": f"document/{parts.get('document')}",
             "file": f"file/{project}/{parts.get('id')}",
             "project": f"projects/{project}",
             "repo": f"git/{project}/{parts.get('repo')}/pullRequests/{parts.get('pr')}"
             if parts.get("pr") else None}
    path = paths.get(kind)
    return f"backlog://{host_of(space)}/{path}" if path else None


# == Untrusted text ============================================================
# Text that anyone typed into Backlog reaches the model through every channel, so on its way
# out (strip_hidden in run_admitted, for every entry point) it loses what no reader of Backlog
# can see, and that can only hide instructions: zero-width characters (but a joiner inside an emoji
# sequence), direction controls, Unicode tag characters (but a flag's tag sequence), control
# characters, and HTML comments outside code. Visible text is never touched (angle brackets,
# code, notation stay as typed), and an answer that lost something says what, so that a
# model writing the text back knows.

EMOJI = "\u2300-\u23ff\u2600-\u27bf\u2b00-\u2bff\U0001f000-\U0001faff"
INVISIBLE = ("[\u200b-\u200f\u2060-\u2064\ufeff\u180e\u034f\u115f\u1160\u3164\uffa0\u00ad"
             "\u061c\u202a-\u202e\u2066-\u2069"                    # direction controls
             "\U000e0000-\U000e007f"                                  # tags
             "\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")                  # control characters
HIDDEN = re.compile(
    "(?P<keep>\U0001f3f4[\U000e0020-\U000e007e]{1,12}\U000e007f"  # a subdivision flag
    f"|(?<=[{EMOJI}\ufe0f])\u200d(?=[{EMOJI}]))|" + INVISIBLE)    # 👩‍💻, 🏳️‍🌈
HIDDEN_CHAR = re.compile(INVISIBLE)  # any of them: a quick first look
COMMENT = re.compile(r"<!--.*?-->", re.S)
CODE = re.compile(r"(?P<open>(?:^|\n)(?P<fence>`{3,}|~{3,})[^\n]*\n)"    # a fence line, then
                  r"(?P<code>.*?)(?:\n(?P=fence)[^\S\n]*(?=\n|\Z)|\Z)"       # the code
                  r"|(?<!`)(?P<tick>`+)(?!`)[^\n]+?(?<!`)(?P=tick)(?!`)"      # inline code
                  r"|\{code(?::[^}]*)?\}.*?\{/code\}", re.S)                 # notation code


def visible(text):
    """A text without the characters no reader sees."""
    return HIDDEN.sub(lambda m: m.group("keep") or "", text)


def stripped(text, found):
    """`text` as it may be shown, counting in `found` what was taken out of it."""
    if "<!--" in text:
        parts, last = [], 0
        for code in CODE.finditer(text):  # comments inside code are visible: kept
            start = code.start("code") if code.group("open") else code.start()
            parts += [_uncomment(text[last:start], found), text[start:code.end()]]
            last = code.end()
        text = "".join(parts + [_uncomment(text[last:], found)])
    out = visible(text)
    found["characters"] = found.get("characters", 0) + len(text) - len(out)
    return out


ESCAPED_CONTROL = re.compile(r"\\u00[01][0-9a-fA-F]|\\u007[fF]|\\[bf]")


def may_hide(text):
    """Could a JSON value, dumped as `text`, hold something `stripped` removes? An answer with
    nothing to take out (most) is looked at once, whole, in C."""
    return "<!--" in text or bool(HIDDEN_CHAR.search(text)) \
        or bool(ESCAPED_CONTROL.search(text))


def _uncomment(text, found):
    out = COMMENT.sub("", text)
    found["comments"] = found.get("comments", 0) + len(COMMENT.findall(text))
    return out


def strip_hidden(value, found=None):
    """A Backlog answer (any JSON value) with `stripped` strings, keys included; a note says
    what was taken out."""
    top = found is None
    found = {} if top else found
    if isinstance(value, str):
        value = stripped(value, found) if HIDDEN.search(value) or "<!--" in value else value
    elif isinstance(value, list):
        value = relist(value, [strip_hidden(v, found) for v in value]) \
            if isinstance(value, Listing) else [strip_hidden(v, found) for v in value]
    elif isinstance(value, dict):
        value = {strip_hidden(k, found): strip_hidden(v, found) for k, v in value.items()}
    if top and any(found.values()):
        parts = [f"{found[k]} {what}{'s' if found[k] != 1 else ''}" for k, what in
                 (("comments", "HTML comment"), ("characters", "invisible character"))
                 if found.get(k)]
        note(f"Hidden text removed: {' and '.join(parts)} (text no reader of Backlog sees); "
             "a text written back from this answer will not have it.")
    return value


def fenced(text):
    """Backlog text inside a Markdown page of ours: a fence longer than any it holds, so it
    cannot close the fence, add a heading or forge a line of ours."""
    text = str(text)
    longest = max((len(m) for m in re.findall(r"`{3,}", text)), default=2)
    fence = "`" * (longest + 1)
    return f"{fence}text\n{text}\n{fence}"


def one_line(text, size=200):
    """A short Backlog text (a summary, a name) on one line of ours."""
    return clip(re.sub(r"\s+", " ", str(text or "")).strip(), size)


# == Tool registry =============================================================

class P:
    """A tool parameter: JSON type, one-line description, constraints, and how to check it."""

    def __init__(self, type, doc, items=None, enum=None, minimum=None, maximum=None,
                 pattern=None, check=None, alias=None, owner=None, ident=None, user=False,
                 text=False):
        self.type, self.doc, self.items, self.enum = type, doc, items, enum
        self.minimum, self.maximum, self.pattern = minimum, maximum, pattern
        self.check, self.alias = check, alias
        self.owner = owner  # a kind of OWNERS: the pipeline holds its project to the allow-list
        self.ident = ident  # what it names under its owner (comment, attachment), for messages
        self.user = user    # names a user: an id, a userId or a name, made an id before it runs
        self.text = text    # a text Backlog formats: written in the project's rule

    def like(self, **changes):
        """The same parameter with some properties changed."""
        new = P.__new__(P)
        new.__dict__.update(self.__dict__, **changes)
        return new

    def schema(self):
        """The JSON Schema, lean: ranges are checked here and told in the description.

        Every array names one item type (Gemini refuses an array without `items`, and a union
        type inside it): ids-or-names are advertised as strings, and integers are taken too.
        """
        schema = {"type": self.type, "description": self.doc}
        if self.type == "object":  # keys of its own choosing (Codex reads none without this)
            schema["additionalProperties"] = True
        if self.items:
            kinds = self.items if isinstance(self.items, list) else [self.items]
            schema["items"] = {"type": "string" if "string" in kinds else kinds[0]}
            if schema["items"]["type"] == "object":
                schema["items"]["additionalProperties"] = True
        if self.enum:
            (schema["items"] if self.items else schema)["enum"] = self.enum
        return schema

    def convert(self, name, value):
        if self.type == "array":
            if isinstance(value, (str, int)) and not isinstance(value, bool):
                value = [value]
            if not isinstance(value, list):
                raise ToolError(f"'{name}' must be a list of {_types(self.items)}.")
            if len(value) > MAX_ITEMS:
                raise ToolError(f"'{name}' takes at most {MAX_ITEMS} items, not {len(value)}.",
                                "split the call.")
            return [self._scalar(f"{name}[]", self.items, item) for item in value]
        return self._scalar(name, self.type, value)

    def _scalar(self, name, kind, value):
        kinds = kind if isinstance(kind, list) else [kind]
        if kinds == ["string"] and isinstance(value, int) and not isinstance(value, bool) \
                and 0 <= value <= MAX_INT:
            value = str(value)  # "issue_id_or_key": 42, as a model sends an id
        if "integer" in kinds and isinstance(value, str) \
                and re.match(r"-?[0-9]{1,18}\Z", value.strip()):
            value = int(value.strip())
        if isinstance(value, float) and "integer" in kinds and value.is_integer() \
                and "number" not in kinds:
            value = int(value)
        valid = {"string": isinstance(value, str),
                 "integer": isinstance(value, int) and not isinstance(value, bool)
                 and -MAX_INT <= value <= MAX_INT,
                 "number": isinstance(value, (int, float)) and not isinstance(value, bool)
                 and -MAX_INT <= value <= MAX_INT,  # NaN and Infinity fail this too
                 "boolean": isinstance(value, bool),
                 "object": isinstance(value, dict)}
        if not any(valid.get(k) for k in kinds):
            raise ToolError(f"'{name}' must be {_types(kind)}, not {shown(value)}.")
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            if self.minimum is not None and value < self.minimum:
                raise ToolError(f"'{name}' must be at least {self.minimum}.")
            if self.maximum is not None and value > self.maximum:
                raise ToolError(f"'{name}' must be at most {self.maximum}.")
        if isinstance(value, str):
            if self.enum and value not in self.enum:
                lowered = value.lower()
                if lowered in self.enum:
                    return lowered
                raise ToolError(f"'{name}' must be one of {', '.join(map(str, self.enum))}.")
            if self.pattern and not re.match(self.pattern, value):
                raise ToolError(f"'{name}' {self.check or 'is not valid'}: "
                                f"{clip(repr(value), 80)}.")
            if len(value) > 1_000_000:
                raise ToolError(f"'{name}' is longer than 1,000,000 characters.")
        return value


MAX_ITEMS = 100         # items of an array argument (Backlog's pages hold 100)
MAX_INT = 2 ** 63 - 1   # Backlog's ids are Java longs


def shown(value, size=60):
    """A short, always printable view of an argument the model sent."""
    try:
        text = json.dumps(value, ensure_ascii=False)
    except (ValueError, TypeError, RecursionError):
        text = type(value).__name__
    return clip(text, size)


def _types(kind):
    names = {"string": "a string", "integer": "an integer", "number": "a number",
             "boolean": "true or false", "object": "a JSON object"}
    return " or ".join(names.get(k, k) for k in (kind if isinstance(kind, list) else [kind]))


CATEGORY_NOTES = {  # said in the description of each tool of the category
    "document": "Documents can't be edited via API."}


class Tool:
    """A registered tool: the function, its parameters, its group and its annotations."""

    def __init__(self, fn, title, write, destructive, idempotent, requires=None, pages=None,
                 texts=False, whole=None, cursor="id", file=False):
        names, group = signature(fn)
        defaults = fn.__defaults__ or ()
        self.fn, self.name, self.title, self.write = fn, fn.__name__, title, write
        self.requires = requires  # a setting (its attribute): the tool is off until it is set
        self.category = self.name.split("_")[0]
        self.description = " ".join((fn.__doc__ or "").split() + [
            CATEGORY_NOTES.get(self.category, "")]).strip()
        self.defaults = dict(dict.fromkeys(group),
                             **dict(zip(names[len(names) - len(defaults):], defaults)))
        own = {name: fn.__annotations__[name] for name in names}  # required ones first
        self.params = dict({n: p for n, p in own.items() if n not in self.defaults}, **group,
                           **{n: p for n, p in own.items() if n in self.defaults})
        # What the pipeline does with the answer, and the parameters that steer it: `pages`,
        # a list Backlog gives whole, paged here (and found by keyword in these fields);
        # `texts`, long texts read in windows (text_offset); `whole`, the tool that reads one
        # item whole when a list cuts its texts; `cursor`, the field an id-paged list goes on
        # from.
        self.pages, self.texts, self.whole, self.cursor = pages, texts, whole, cursor
        added = {}
        if pages is not None:
            added = dict({"keyword": LocalKeyword} if pages else {}, offset=Offset,
                         count=PageOf100)
            self.defaults.update(offset=0, count=100)
        if texts:
            added["text_offset"] = TextOffset
        if file:  # a download: a text file is read in windows
            added["offset"] = ByteOffset
        # Unlisted (the tool list stays small): an answer with no way to page (a project's
        # custom fields, an issue's attachments) that is cut says "call again with offset=N".
        self.unlisted = {"offset"} if not ({"offset", "max_id", "min_id"} & (
            set(self.params) | set(added)) or write) else set()
        if self.unlisted:
            added["offset"] = Offset
        self.params.update(added)
        self.steering = set(added) | {"fields"}  # read by the pipeline, not by fn
        self.required = [n for n in names if n not in self.defaults]
        self.aliases = {p.alias: n for n, p in self.params.items() if p.alias}
        # destructive: True, or a test of the arguments that tells when a call destroys (a
        # clear, a replaced text); either way MCP's destructiveHint: it may destroy.
        self.destroys = destructive if callable(destructive) else lambda args: destructive
        self.annotations = {"readOnlyHint": write is None,
                            "destructiveHint": bool(destructive),
                            "idempotentHint": write is None or idempotent, "openWorldHint": True}
        self._definition = None

    def definition(self, prefix=""):
        if self._definition is None:
            schema = {"type": "object",
                      "properties": {n: p.schema() for n, p in self.params.items()
                                     if n not in self.unlisted}}
            if several() and self.name != "space_list_get":
                schema["properties"]["space"] = {
                    "type": "string", "enum": [n for n in SPACES],
                    "description": f"Backlog space (default {DEFAULT_SPACE})"}
            if self.required:
                schema["required"] = self.required
            self._definition = {"title": self.title, "description": self.description,
                                "inputSchema": schema,
                                "annotations": self.annotations}
            if self.name in ALWAYS_LOAD:
                self._definition["_meta"] = {"anthropic/alwaysLoad": True}
        return dict(name=prefix + self.name, **self._definition)

    def disabled_because(self, listed=True):
        """Why the tool is off in this space, or None. `listed` False: as the server itself
        runs it (for a prompt, a resource, a completion), where an extra tool, left out of the
        list only to save the model's context, is on."""
        if self.category not in settings().toolsets:
            return f"toolset '{self.category}' is off (BACKLOG_TOOLSETS)"
        if listed and self.extra and self.category not in settings().extras:
            return (f"a rarely used tool, off by default: BACKLOG_TOOLSETS=all (or naming "
                    f"'{self.category}') turns it on")
        if self.write and settings().problems:
            return "writes are off until the configuration problems are fixed (see --check)"
        if self.write and self.write not in settings().writable:
            return f"group '{self.write}' is not writable (BACKLOG_WRITABLE / read-only)"
        if self.requires and not getattr(settings(), self.requires):
            return f"{next(r.name for r in SETTINGS_TABLE if r.attribute == self.requires)} " \
                   "is not set"
        if self.name == "space_list_get" and not several():
            return "only with several spaces (BACKLOG_SPACES)"
        return None

    def named(self, key):
        """The parameter an argument's name means: ours, an alias, or the same said as other
        servers say it (Nulab's camelCase issueKey, projectId, repoName, number, a singular
        for a list, `id` for the one id the tool needs); None when it means none."""
        if not isinstance(key, str):
            return None
        snake = re.sub(r"(?<=[a-z0-9])([A-Z])", r"_\1", key).lower()
        ids = [n for n in self.required if n.endswith("_id")]
        for name in (key, self.aliases.get(key), snake, *SAME_AS.get(snake, ()), snake + "s",
                     snake[:-1], *(ids if snake == "id" and len(ids) == 1 else ())):
            if name in self.params:
                return name
        return None

    def bind(self, arguments):
        """Check the arguments against the schema; returns the keyword arguments for fn."""
        args = {}
        for key, value in arguments.items():
            name = self.named(key)
            if name is None:
                raise ToolError(f"Unknown parameter '{key}' for {self.name}. Valid parameters: "
                                f"{', '.join(self.params) or 'none'}.")
            if name != key and name in arguments:
                continue  # our own name for it, given too, is the one taken
            if name != key and self.params[name].type != "array" and isinstance(value, list) \
                    and len(value) == 1:
                value = value[0]  # Nulab's projectId: [DEMO] where one project is taken
            if value is not None:
                args[name] = self.params[name].convert(key, value)
        missing = [name for name in self.required if name not in args]
        if missing:
            raise ToolError(f"Missing required parameter(s) for {self.name}: {', '.join(missing)}.")
        return args


TOOLS = {}
SAME_AS = {  # an argument's name in other servers' words -> ours, in the order tried
    "issue_id": ("issue_id_or_key",), "issue_key": ("issue_id_or_key", "issue_id"),
    "project_id": ("project_id_or_key", "project_ids"),
    "project_key": ("project_id_or_key", "project_ids"),
    "project_id_or_key": ("project_ids",), "project_ids": ("project_id_or_key",),
    "repo_id": ("repo_id_or_name",), "repo_name": ("repo_id_or_name",),
    "number": ("pr_number",), "watch_id": ("watching_id",)}


def signature(fn):
    """(positional parameter names, shared group) of a tool function: its **kwargs may be
    annotated with a dict of optional parameters that several tools share."""
    code = fn.__code__
    names = code.co_varnames[:code.co_argcount]
    group = {}
    if code.co_flags & 0x08:  # CO_VARKEYWORDS
        group = fn.__annotations__.get(code.co_varnames[code.co_argcount + code.co_kwonlyargcount])
        if not isinstance(group, dict) or not all(isinstance(p, P) for p in group.values()):
            raise TypeError(f"tool {fn.__name__}: **kwargs needs a dict of P as annotation")
    return names, group


def overwrites(*names):
    """The `destructive` test of an update: it destroys when it replaces one of these (a
    text, the key, the fields in `clear`) or empties any field, as a PATCH sends "" and []
    ("clear this"; see encode)."""
    return lambda args: any(args.get(n) not in (None, []) for n in names) \
        or bool(emptied(args))


def emptied(args):
    """The fields these update arguments clear: those given "" or [] (but the ones whose
    empty value clears nothing: the users to notify, a comment, a summary...) and the
    custom fields given no value."""
    kept = {n for n, f in ISSUE_FIELDS.items() if f.clear is None} | {"clear"}
    custom = args.get("custom_fields")
    return [n for n, v in args.items() if n not in kept and (v == "" or v == [])] + [
        f"custom field {quoted(n, 40)}" for n, v in (
            custom.items() if isinstance(custom, dict) else ()) if v in (None, "", [], {})]


def tool(title, write=None, destructive=False, idempotent=False, requires=None, extra=False,
         asks=None, **answer):
    """Register a tool: its signature is its schema, its docstring its description. An extra
    tool is left out of the default set (every tool costs context in every conversation).
    `asks(args)`: the question before it runs, where the generic one would say too little.
    `answer`: how the pipeline bounds its answer (pages, texts, whole, cursor: see Tool)."""
    def register(fn):
        missing = [n for n in signature(fn)[0] if not isinstance(fn.__annotations__.get(n), P)]
        if missing or fn.__name__ in TOOLS or not fn.__doc__:
            raise TypeError(f"tool {fn.__name__}: parameters need P annotations and a docstring")
        if write is not None and write not in WRITE_GROUPS:
            raise TypeError(f"tool {fn.__name__}: unknown write group {write!r}")
        TOOLS[fn.__name__] = Tool(fn, title, write, destructive, idempotent, requires, **answer)
        TOOLS[fn.__name__].extra, TOOLS[fn.__name__].asks = extra, asks
        return fn
    return register


def enabled_tools():
    """The tools to list: with several spaces, those on in any of them."""
    found = {}
    for name in SPACES or [None]:
        with within(name):
            found.update((n, t) for n, t in TOOLS.items() if t.disabled_because() is None)
    return {n: TOOLS[n] for n in TOOLS if n in found}


# Shared parameters: one wording each.
ID = P("integer", "Numeric id", minimum=0)
ISSUE_KEY_RE = r"(?:[_A-Za-z0-9]{1,25}-[1-9][0-9]{0,9}|[1-9][0-9]{0,17})\Z"
ProjectIdOrKey = P("string", "Project key or id",
                   pattern=r"(?:[_A-Za-z0-9]{1,25}|[1-9][0-9]{0,17})\Z",
                   check="is not a project key like DEMO or a numeric id", owner="project")
OptProject = ProjectIdOrKey.like()
IssueIdOrKey = P("string", "Key (DEMO-42) or id", pattern=ISSUE_KEY_RE,
                 check="is not an issue key like DEMO-42 or a numeric id", owner="issue")
IssueArg = IssueIdOrKey.like(alias="issue_key")
IssueId = P("integer", "Issue id", minimum=1, owner="issue")
IssueIds = P("array", "Issue ids", items="integer", owner="issue")
RepoIdOrName = P("string", "Name or id",
                 pattern=r"(?:[A-Za-z0-9][A-Za-z0-9_.-]{0,99})\Z",
                 check="is not a repository name or id", owner="repo")
PrNumber = P("integer", "PR number", minimum=1, ident="pull request")
DocumentId = P("string", "Document id (32 hex)", pattern=r"[0-9a-fA-F]{32}\Z",
               check="is not a 32-character document id", owner="document")
AttachmentId = P("integer", "Attachment id", minimum=1, ident="attachment")
SharedFileId = P("integer", "Shared file id", minimum=1, ident="shared file")
SharedFileIds = P("array", "Shared file ids (file_shared_list_get)", items="integer",
                  ident="shared file")
WikiId = P("integer", "Wiki page id", minimum=1, owner="wiki")
CommentId = P("integer", "Comment id", minimum=1, ident="comment")
UserId = P("string", "User: id, userId or name", ident="user", user=True)
WatchingId = P("integer", "Watching id", minimum=1, owner="watching")
Format = P("string", "Default: detected", enum=["image", "text", "raw"])
Count = P("integer", "Page size, max 100", minimum=1, maximum=100)
PageOf100 = P("integer", "Page size, max 100", minimum=1, maximum=100)
LocalKeyword = P("string", "Filter by name, id or mail")
PEOPLE = ("name", "userId", "mailAddress")  # what a keyword finds a user by
ByteOffset = P("integer", "Read a long text file from this byte", minimum=0)
TextOffset = P("integer", "Read long texts from this character", minimum=0)
Offset = P("integer", "Items to skip", minimum=0)
Order = P("string", "Default desc", enum=["asc", "desc"])
MinId = P("integer", "Only ids above", minimum=0)   # Backlog's bounds are exclusive
MaxId = P("integer", "Only ids below", minimum=0)
Fields = P("array", "Fields to keep", items=["string"])
Ids = P("array", "Ids", items="integer")
NamesOrIds = P("array", "Ids or names", items=["integer", "string"])
UserIds = P("array", "Users to notify (id, userId or name)", items="string", user=True)
Users = P("array", "Users: ids, userIds or names", items="string", user=True)
Assignee = P("string", "Assignee user id or userId (project_user_list_get)")
AttachmentIds = P("array", "Ids from issue_attachment_upload", items="integer")
DATE = r"\d{4}-\d{2}-\d{2}\Z"
Date = P("string", "yyyy-MM-dd", pattern=DATE, check="is not a date like 2025-06-30")
Text = P("string", "Text")
Summary = P("string", "Title")
TEXT_RULE = "in the project's format, Markdown or Backlog's: converted"
Description = P("string", f"Body ({TEXT_RULE})", text=True)
Content = P("string", f"Text ({TEXT_RULE})", text=True)
MilestoneText = P("string", "Description")
Hours = P("number", "Hours", minimum=0)
Bool = P("boolean", "true or false")
CustomFields = P("object", "{field name or id: value}")
Keyword = P("string", "Search text")
ActivityTypes = P("array", "Activity type ids", items="integer")


# == Results ===================================================================

DECORATION = {"nulabAccount", "iconUrl", "keyword", "displayOrder", "color"}  # never needed
BY_NAME = {"status", "issueType", "priority", "resolution", "category", "milestone",
           "versions"}                                   # nested: their names are the handle
FILE_KEYS = ("id", "name", "size")                      # an attachment or shared file, nested
NESTED = {"issueKey": ("issueKey", "summary", "status"),  # a record inside another: its handle
          "userId": ("userId", "name"),
          "projectKey": ("projectKey", "name"),
          "presenter": ("id", "presenter"),               # a star: who gave it
          "number": ("number", "summary", "status"),      # a pull request
          "changeLog": ("id", "content")}                 # a comment (it has a change log)
DERIVED = {"keyId", "projectId"}  # an issue's: its issueKey holds both
DATE_ONLY = {"startDate", "dueDate", "releaseDueDate"}          # always T00:00:00Z


def issue_view(issue):
    """An issue with customFields as an object keyed by field name (as the reference shows it)."""
    if isinstance(issue, list):
        return Listing(issue_view(i) for i in issue)
    if isinstance(issue, dict) and isinstance(issue.get("customFields"), list):
        fields = {}
        for field in rows(issue["customFields"], {}):
            kind = field.get("fieldTypeId")
            value = field.get("value")
            if kind == 4 and isinstance(value, str) and value.endswith("T00:00:00Z"):
                value = value[:10]  # a date field: yyyy-MM-dd, as every other date
            view = {"id": field.get("id"), "fieldTypeId": FIELD_TYPES.get(kind, kind)
                    if isinstance(kind, int) else kind,
                    "value": value}
            if "otherValue" in field:
                view["otherValue"] = field["otherValue"]
            name = str(field.get("name", field.get("id")))
            fields[name if name not in fields else f"{name} (id {field.get('id')})"] = view
        issue = dict(issue, customFields=fields)
    return issue


def lean(value, depth=0, key=None):
    """What a model needs of an answer (the top records whole, what they hold by its handle):
    no nulls, empties or decoration; a record nested in another reduced to the fields a next
    call takes (an issue to issueKey, summary, status; a user to userId and name); statuses,
    types, priorities, categories and milestones by name; files by id, name and size; no
    projectId below the top; custom fields as {name: value}, as issue_add takes them."""
    if isinstance(value, list):
        return [lean(v, depth, key) for v in value]
    if not isinstance(value, dict):
        return value
    if depth:
        if key in BY_NAME and isinstance(value.get("name"), str):
            return value["name"]
        if key in ("attachments", "sharedFiles"):
            return {k: value[k] for k in FILE_KEYS if value.get(k) is not None}
        handle = next((NESTED[k] for k in NESTED if k in value), None)
        if handle is not None:
            return {k: lean(value[k], depth + 1, k) for k in handle
                    if value.get(k) not in (None, "")}
    out = {}
    issue = "issueKey" in value
    for name, item in value.items():
        if item is None or item == "" or item == [] or item == {} or name in DECORATION \
                or (depth and name == "projectId") or (issue and name in DERIVED):
            continue
        if name in DATE_ONLY and isinstance(item, str) and item.endswith("T00:00:00Z"):
            item = item[:10]
        if name == "customFields" and isinstance(item, dict):
            item = {k: field_shown(f) for k, f in item.items() if field_shown(f) is not None}
            if not item:
                continue
        out[name] = lean(item, depth + 1, name)
    return out


def field_shown(field):
    """A custom field's value as issue_add and issue_update take it, or None when unset:
    text, number or date; an item's name, or a list of names; with {"items", "other"} when
    an 'other' text is set."""
    if not isinstance(field, dict):
        return field
    value = field.get("value")
    names = [v.get("name") if isinstance(v, dict) else v for v in value] \
        if isinstance(value, list) else value.get("name") if isinstance(value, dict) else value
    other = field.get("otherValue")
    if other:
        return {"items": names if isinstance(names, list) else [names] if names else [],
                "other": other}
    return None if names in (None, "", []) else names


def select(items, fields):
    """Keep the named top-level fields of each item; unknown names are an error."""
    known = set()
    for item in items:
        if isinstance(item, dict):
            known.update(item)
    unknown = [f for f in fields if f not in known]
    if items and unknown:
        raise ToolError(f"Unknown field(s) {', '.join(unknown)}. Valid fields: "
                        f"{', '.join(sorted(known))}.")
    return [{k: item[k] for k in fields if k in item} if isinstance(item, dict) else item
            for item in items]


# -- Answers of any size: every answer leaves within BACKLOG_MAX_ANSWER_BYTES, and one that
# was cut says where the rest is. Lists Backlog gives whole are paged here; a long text is
# read in windows in a details answer and cut in a list item; a page that does not fit is
# cut at an item and the next call named.

TEXT_WINDOW = 20000  # characters of one long text in a details answer
LIST_TEXT = 1000     # characters of one text in a list item
NOTE_ROOM = 800      # bytes left for the notes when an answer is cut to the budget


def bounded(value, tool_, steer, size):
    """A tool's answer shaped by the pipeline's parameters: paged here when Backlog gives the
    list whole, its long texts windowed (details) or cut (lists), its fields selected. `size`:
    the length of its JSON (no text in it is longer)."""
    if (tool_.pages is not None or tool_.unlisted) and isinstance(value, list):
        value = paged(value, tool_, steer)
    if isinstance(value, list) and size > LIST_TEXT:
        value = relist(value, [clipped(item, LIST_TEXT, tool_) for item in value])
    elif isinstance(value, dict) and size > TEXT_WINDOW:
        value = windowed(value, steer.get("text_offset") or 0, tool_)
    fields = steer.get("fields")
    if fields is not None and isinstance(value, list):
        value = relist(value, select(value, fields))
    return value


def relist(old, items):
    """`items` as a Listing that keeps what `old` knew of the page."""
    new = Listing(items)
    new.__dict__.update(getattr(old, "__dict__", {}))
    if getattr(old, "fetched", None) is None:
        new.fetched = len(old)
    return new


def paged(items, tool_, steer):
    """A page of a list Backlog gives whole, found by keyword in the tool's fields."""
    keyword = normalize(steer.get("keyword") or "")
    if keyword:
        items = [i for i in items if isinstance(i, dict) and any(
            keyword in normalize(i.get(field) or "") for field in tool_.pages)]
    offset = steer.get("offset") or 0
    count = steer.get("count") or (100 if tool_.pages is not None else len(items))
    page = Listing(items[offset:offset + count])
    page.start = offset
    if tool_.pages is not None:
        page.total = len(items)
    else:  # unlisted paging: counted, not said
        page.whole = len(items)
    page.fetched = len(page)
    return page


def clipped(value, size, tool_):
    """A list item with every text over `size` characters cut there, said once."""
    if isinstance(value, str):
        if len(value) <= size:
            return value
        note(f"Texts over {size:,} characters in this list are cut there"
             + (f"; {tool_.whole} reads one whole." if tool_.whole else "."))
        return value[:size] + "…"
    if isinstance(value, list):
        return [clipped(v, size, tool_) for v in value]
    if isinstance(value, dict):
        return {k: clipped(v, size, tool_) for k, v in value.items()}
    return value


def windowed(value, offset, tool_, path=""):
    """A details answer with each text over TEXT_WINDOW characters shown from `offset`, for
    TEXT_WINDOW characters; a note says which characters and how to read on."""
    if isinstance(value, str):
        if len(value) <= TEXT_WINDOW:
            return value
        start = min(offset, len(value))
        end = min(start + TEXT_WINDOW, len(value))
        on = f"; call again with text_offset={end} for the next part" \
            if end < len(value) and tool_.texts else ""
        note(f"{clip(path, 60) or 'The text'}: characters {start:,} to {end:,} of "
             f"{len(value):,}{on}.")
        return value[start:end]
    if isinstance(value, list):
        return [windowed(v, offset, tool_, path) for v in value]
    if isinstance(value, dict):
        return {k: windowed(v, offset, tool_, k) for k, v in value.items()}
    return value


def fit(value, budget=None):
    """(JSON of the value within the answer budget, items kept of a list or None). A list keeps the
    items that fit; an object has its longest texts, then its longest lists, halved until it
    fits; each cut is said. Sizes are counted as the client reads them (escaped once more
    inside the result's text)."""
    budget = (budget or settings().max_answer) - NOTE_ROOM
    text = dumps(value)
    if len(text) * 2 <= budget or wire_size(text) <= budget:
        return text, None
    if isinstance(value, list):
        total, kept = 2, 0
        for item in value:
            total += wire_size(dumps(item)) + 1
            if total > budget:
                break
            kept += 1
        if kept == 0 and value:  # the first item alone is too big: it comes cut, not skipped
            first, _ = fit(value[0], budget + NOTE_ROOM - 2)
            return f"[{first}]", 1
        return dumps(value[:kept]), kept
    for _ in range(64):  # each round halves the largest text or list: a few rounds suffice
        found = largest(value)
        if found is None:
            break
        holder, key, part = found
        holder[key] = part[:len(part) // 2] + ("…" if isinstance(part, str) else [])
        what = f"{len(part):,} items" if isinstance(part, list) else "characters"
        note(f"{key if isinstance(key, str) else 'A part'}: {len(holder[key]):,} of {len(part):,} "
             f"{what.split()[-1]} shown, to fit one answer (BACKLOG_MAX_ANSWER_BYTES="
             f"{settings().max_answer:,}); ask for less to see the rest.")
        size = wire_size(dumps(value))
        if size <= budget:
            break
    if size > budget:
        value = {"note": "This answer does not fit in one; ask for less (fields, count)."}
    return dumps(value), None


def wire_size(text):
    """The bytes a JSON text takes once it is itself a string of the answer's JSON."""
    return len(text.encode()) + text.count('"') + text.count("\\")


def largest(value):
    """(holder, key, part) of the longest text or list inside a JSON value (measured once, in
    characters), or None."""
    best, best_size = None, 1

    def size(item, holder=None, key=None):
        nonlocal best, best_size
        if isinstance(item, str):
            n = len(item) + 2
        elif isinstance(item, list):
            n = 2 + sum(size(v, item, i) + 1 for i, v in enumerate(item))
        elif isinstance(item, dict):
            n = 2 + sum(len(str(k)) + 4 + size(v, item, k) for k, v in item.items())
        else:
            n = len(str(item))
        if holder is not None and isinstance(item, (str, list)) and len(item) > 1 \
                and n > best_size:
            best, best_size = (holder, key, item), n
        return n
    size(value)
    return best


def page_note(tool_, args, items, kept=None):
    """How many items came back, how many were left out and why, and the call for more."""
    shown = len(items) if kept is None else kept
    on_page = len(items)
    fetched = getattr(items, "fetched", None) or on_page
    total = getattr(items, "total", None)
    said = f"{shown} item{'s' if shown != 1 else ''}"
    if total is not None:
        said += f" of {total:,} matching"
    if kept is not None and kept < on_page:
        said += (f" ({on_page - kept} more on this page did not fit in one answer, "
                 f"BACKLOG_MAX_ANSWER_BYTES={settings().max_answer:,})")
    if fetched > on_page:
        said += f" ({fetched - on_page} of the {fetched} fetched are outside BACKLOG_PROJECTS)"
    more, sure = next_call(tool_, args, items, shown, fetched)
    return said + (f"; {'more' if sure else 'more may exist'}: call again with {more}."
                   if more else ".")


def next_call(tool_, args, items, shown, fetched):
    """(the arguments that get the next items, whether more are sure to exist), or (None,
    False) when none do."""
    count = args.get("count", tool_.defaults.get("count"))
    offset = args.get("offset", tool_.defaults.get("offset")) or 0
    cut = shown < len(items)
    if tool_.pages is not None or tool_.unlisted:
        nxt = getattr(items, "start", 0) + shown
        return (f"offset={nxt}", True) if nxt < (getattr(items, "total", None) or getattr(
            items, "whole", 0) or 0) else (None, False)
    if "offset" in tool_.params and count:
        if cut:
            return f"offset={offset + shown}, count={max(shown, 1)}", True
        return (f"offset={offset + count}", False) if fetched >= count else (None, False)
    if "max_id" in tool_.params and count and (cut or fetched >= count):
        last = items[shown - 1] if cut and shown else getattr(items, "last", None) or (
            items[-1] if items else None)
        bound = "min_id" if args.get("order") == "asc" else "max_id"
        value = last.get(tool_.cursor) if isinstance(last, dict) else None
        return (f"{bound}={value}", cut) if value is not None else (None, False)
    return None, False


def dumps(value, pretty=False):
    if pretty:
        return json.dumps(value, ensure_ascii=False, indent=2)
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


class Download:
    """A downloaded file: its name, type and bytes, and the format the model gets it in; a
    text file too long for one answer is read in windows, and with BACKLOG_DOWNLOAD_DIR a
    file too large for one answer is saved there and its path answered."""

    def __init__(self, filename, content_type, data, fmt):
        self.filename, self.content_type, self.data, self.format = filename, content_type, data, fmt
        self.raw = data  # as it came: what a saved file holds
        if fmt == "text":  # read as UTF-8 text, redacted once decoded: windows split no key
            self.data = redact(decode_text(data, content_type)).encode("utf-8")
            self.content_type = re.sub(r";\s*charset=[^;]*", "", content_type or "text/plain",
                                       flags=re.I) + "; charset=utf-8"
        self.window = (0, len(self.data))
        self.saved = None

    def bounded(self, offset):
        budget = settings().max_answer - NOTE_ROOM
        size = len(self.data) if self.format == "text" else len(self.data) * 4 // 3
        if size <= budget:
            return self
        if settings().download_dir:
            self.saved = save_download(self.filename, self.raw)
        if self.format == "text":
            start = utf8_start(self.data, min(offset, len(self.data)))
            end = utf8_start(self.data, min(start + budget // 2, len(self.data)))  # ~2x escaped
            self.window = (start, end)
            note(f"Bytes {start:,} to {end:,} of {len(self.data):,}"
                 + (f"; call again with offset={end} for the next part." if end < len(
                     self.data) else "."))
        if self.saved:
            note(f"The whole file ({len(self.raw):,} bytes) is saved at {self.saved}.")
        return self

    def content(self):
        import base64
        if self.saved and self.format != "text":
            return [{"type": "text", "text": dumps({
                "filename": self.filename, "content_type": self.content_type,
                "size": len(self.data), "saved": self.saved})}]
        data = redact_bytes(self.data)  # base64 would hide a key from the redactor of text
        if self.format == "image":
            return [{"type": "image", "data": base64.b64encode(data).decode(),
                     "mimeType": self.content_type.split(";")[0].strip()}]
        if self.format == "text":
            start, end = self.window
            return [{"type": "text", "text": decode_text(self.data[start:end],
                                                         self.content_type)}]
        return [{"type": "text", "text": dumps({
            "filename": self.filename, "content_type": self.content_type, "size": len(self.data),
            "content": base64.b64encode(data).decode()})}]


def utf8_start(data, at):
    """`at`, moved back to the start of the UTF-8 character it falls in."""
    while 0 < at < len(data) and data[at] & 0xC0 == 0x80:
        at -= 1
    return at


def save_download(filename, data):
    """Save a file in BACKLOG_DOWNLOAD_DIR under its own name (made safe: a base name only,
    never a link followed, never one overwritten); its path."""
    folder = settings().download_dir[0]
    base = re.sub(r"[^\w.\-() ]+", "_", os.path.basename(filename.replace("\\", "/")))
    base = base.lstrip(".") or "download"
    stem, dot, ext = base.rpartition(".") if "." in base else (base, "", "")
    ext = ext[:20]
    while len(f"{stem}-999{dot}{ext}".encode("utf-8")) > 240:  # a name: at most 255 bytes
        stem = stem[:-1]
    base = f"{stem or 'download'}{dot}{ext}"
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0) \
        | getattr(os, "O_BINARY", 0)
    for n in range(1000):
        name = base if n == 0 else f"{stem}-{n}{dot}{ext}"
        path = os.path.join(folder, name)
        try:
            fd = os.open(path, flags, 0o600)
        except FileExistsError:
            continue
        except OSError as exc:
            raise ToolError(f"Cannot save the file in BACKLOG_DOWNLOAD_DIR ({exc.strerror}).",
                            "check the folder, or read the file in parts (offset).") from None
        with os.fdopen(fd, "wb") as fh:
            fh.write(redact_bytes(data))
        return path
    raise ToolError("BACKLOG_DOWNLOAD_DIR holds 1,000 files of this name.",
                    "empty the folder, or read the file in parts (offset).")


# == The pipeline ==============================================================
# Every entry point runs a tool through these steps, in this order (see the module's tour):
# find_tool, admit, render, the confirmation, run_admitted, result_of. A guarantee lives in
# one step, so a new tool or a new entry point inherits it.

# Names people know: Nulab's server's tool names (v0.15.1), taken in tools/call and by `call`
# but not listed (the list would grow in every conversation), so that prompts and habits
# written for it keep working. Their camelCase arguments are understood by Tool.named.
NULAB_NAMES = dict(
    get_issue="issue_details_get", get_issues="issue_list_get", count_issues="issue_count_get",
    add_issue="issue_add", update_issue="issue_update", delete_issue="issue_delete",
    get_issue_comments="issue_comment_list_get", add_issue_comment="issue_comment_add",
    update_issue_comment="issue_comment_update", delete_issue_comment="issue_comment_delete",
    get_issue_attachments="issue_attachment_list_get",
    get_issue_attachment="issue_attachment_download",
    delete_issue_attachment="issue_attachment_delete",
    get_related_issues="issue_related_list_get", add_related_issue="issue_related_add",
    remove_related_issue="issue_related_delete", get_priorities="issue_priority_list_get",
    get_resolutions="project_resolution_list_get", get_issue_types="project_issue_type_list_get",
    get_categories="project_category_list_get", get_custom_fields="project_custom_field_list_get",
    get_version_milestone_list="issue_milestone_list_get",
    add_version_milestone="project_version_add",
    update_version_milestone="project_version_update", delete_version="project_version_delete",
    get_project="project_details_get", get_project_list="project_list_get",
    get_project_users="project_user_list_get", add_project="project_add",
    update_project="project_update", delete_project="project_delete",
    get_space="space_details_get", get_space_activities="space_activity_list_get",
    get_users="user_list_get", get_myself="user_myself_get",
    get_user_recent_updates="user_activity_list_get", get_user_stars_count="user_star_count_get",
    get_watching_list_items="user_watching_list_get",
    get_watching_list_count="user_watching_count_get", add_watching="issue_watching_add",
    update_watching="issue_watching_update", delete_watching="issue_watching_delete",
    mark_watching_as_read="issue_watching_mark_read", get_notifications="notification_list_get",
    count_notifications="notification_count_get",
    reset_unread_notification_count="notification_count_reset",
    mark_notification_as_read="notification_mark_read", get_wiki_pages="wiki_list_get",
    get_wikis_count="wiki_count_get", get_wiki="wiki_details_get", add_wiki="wiki_add",
    update_wiki="wiki_update", get_git_repositories="git_repository_list_get",
    get_git_repository="git_repository_details_get", get_pull_requests="git_pr_list_get",
    get_pull_requests_count="git_pr_count_get", get_pull_request="git_pr_details_get",
    add_pull_request="git_pr_add", update_pull_request="git_pr_update",
    get_pull_request_comments="git_pr_comment_list_get",
    add_pull_request_comment="git_pr_comment_add",
    update_pull_request_comment="git_pr_comment_update",
    get_pull_request_attachments="git_pr_attachment_list_get",
    get_pull_request_attachment="git_pr_attachment_download",
    get_documents="document_list_get", get_document_tree="document_tree_get",
    get_document="document_details_get", addDocument="document_add", add_document="document_add",
    delete_document="document_delete", get_document_comments="document_comment_list_get")


def tool_named(name):
    """The tool behind an exposed name: ours with the prefix, or Nulab's; None if none."""
    prefix = settings().prefix
    bare = name[len(prefix):] if name.startswith(prefix) else None
    return TOOLS.get(bare) if bare in TOOLS else TOOLS.get(NULAB_NAMES.get(name) or "")


def find_tool(name):
    """The enabled tool behind an exposed (prefixed) name; unknown or disabled is -32602."""
    tool_ = tool_named(name)
    if tool_ is None:
        raise RpcError(-32602, f"Unknown tool: {clip(name, 80)}. Call tools/list to see the "
                               "available tools.")
    why = tool_.disabled_because()
    if why:
        raise RpcError(-32602, f"Tool {name} is off: {why}. It is not in tools/list; the "
                               "person who configures this server can turn it on.")
    return tool_


def admit(tool_, arguments):
    """The pipeline's first steps, the same for every entry point: the arguments checked
    against the schema, then every identifier held to the allow-list (nothing has been asked
    or sent yet). Returns the checked arguments; raises ToolError."""
    if too_deep(arguments, 32):
        raise ToolError("The arguments are nested too deep to be a tool's arguments.")
    with guarded(tool_.name):
        arguments = expand_addresses(tool_, arguments)  # pasted links made ids
    args = tool_.bind(scrub(arguments))  # no lone surrogate reaches a URL or a form
    with guarded(tool_.name):
        check_access(tool_, args)
        for name, param in tool_.params.items():  # userIds and names of users made ids
            if param.user and args.get(name) is not None:
                values = args[name] if isinstance(args[name], list) else [args[name]]
                ids = resolve(values, lambda: listed("users"), "User", "user_list_get",
                              key="userId")
                args[name] = ids if isinstance(args[name], list) else ids[0]
    return args


def run_admitted(tool_, args):
    """Run a tool whose arguments were admitted; its answer held to the allow-list and cut to
    the asked-for fields. Backlog's 'not found' is said as for an identifier outside the
    allow-list."""
    args = dict(args)
    steer = {name: args.pop(name) for name in tool_.steering if name in args}
    with guarded(tool_.name):
        try:
            value = tool_.fn(**args)
        except Missing as exc:
            raise not_found(tool_, args, (exc.kind, exc.value)) from None
        except BacklogError as exc:
            off = feature_off(tool_, args)
            if off is not None:
                raise off from None
            if exc.status == 404 and exc.backlog:
                raise not_found(tool_, args, said=exc.said) from None
            raise
        value = hold(value, tool_, args)
        if tool_.texts and isinstance(value, dict):
            tell_rule(tool_, value)
        if isinstance(value, Download):
            return value.bounded(steer.get("offset") or 0)
        text = json.dumps(value, ensure_ascii=False)  # looked at once, whole, for the rest
        if may_hide(text):
            value = strip_hidden(value)
        return bounded(value, tool_, steer, len(text))


NO_WIKI = "a project's wiki can be turned off, and spaces made since 2026-07-14 have none"
FEATURES = {  # a category of tools: (the project's setting that turns it on, its name, why)
    "wiki": ("useWiki", "wiki", NO_WIKI),
    "git": ("useGit", "Git", "it is turned off in the project's settings"),
    "file": ("useFileSharing", "file sharing", "it is turned off in the project's settings")}


def feature_off(tool_, args):
    """After Backlog refused a call: the plain error when the project it names has the
    tool's feature turned off (no wiki, no Git), else None."""
    feature, project = FEATURES.get(tool_.category), args.get("project_id_or_key")
    if feature is None or project is None:
        return None
    try:
        info = project_info(project)
    except (ToolError, BacklogError):
        return None
    if info.get(feature[0]) is not False:
        return None
    return ToolError(f"Project {info['projectKey']} has no {feature[1]} ({feature[2]}).",
                     "use the documents (document_list_get)." if feature[1] == "wiki"
                     else "ask a project administrator to turn it on.")


def run_tool(tool_, arguments):
    """A tool run as every entry point but tools/call runs one (prompts, resources,
    completions, the command line): admitted, then run. Returns (args, value). A tool that
    is off in the space (BACKLOG_TOOLSETS, groups) is off here too."""
    why = tool_.disabled_because(listed=False)
    if why:
        raise ToolError(f"{tool_.name} is off: {why}.")
    args = admit(tool_, arguments)
    preview_unless(False, tool_, args)
    return args, run_admitted(tool_, args)


def preview_unless(can_ask, tool_, args):
    """A tool that can preview (dry_run) only previews, unless told, where no one can be
    asked before it writes."""
    if "dry_run" in tool_.params and args.get("dry_run") is None:
        args["dry_run"] = not can_ask


def shaped(value):
    """An answer as BACKLOG_OUTPUT asks: lean (default) or Backlog's full JSON."""
    return value if settings().output == "full" else lean(value)


class guarded:
    """Around the code of an entry point (a tool, a prompt, a resource, a completion): an
    exception that is no ToolError (a Backlog answer whose shape was checked raises one) is
    our bug. Its traceback goes to stderr; the model reads a tool error that says so, never
    -32603."""

    def __init__(self, what):
        self.what = what

    def __enter__(self):
        return self

    def __exit__(self, kind, exc, tb):
        if kind is None or not issubclass(kind, Exception) \
                or issubclass(kind, (ToolError, RpcError)):
            return False
        import traceback
        log(f"bug in {self.what}:\n" + "".join(traceback.format_exception(kind, exc, tb)))
        raise Bug(self.what, kind) from None


def call_tool(name, arguments, confirm=None):
    """tools/call, the pipeline in order: the space, bound once for the whole call; the tool
    (off ones are -32602); the arguments, checked; every identifier, held to the allow-list;
    the person's yes (`confirm(tool, args)`, where the client can ask: None to go ahead, or
    the result to answer instead); the run; the answer, through result_of. Writes and
    refusals go to the audit log."""
    if not isinstance(arguments, dict):
        raise RpcError(-32602, "tools/call 'arguments' must be an object.")
    arguments = dict(arguments)
    space = None
    if several():  # Nulab's server calls it organization
        space, org = arguments.pop("space", None), arguments.pop("organization", None)
        if space is not None and org is not None and space != org:
            find_tool(name)
            return {"content": [{"type": "text", "text": "space and organization name two "
                                 "spaces. Next: give space alone."}], "isError": True}
        space = org if space is None else space
    if space is not None and (not isinstance(space, str) or space not in SPACES):
        find_tool(name)
        return {"content": [{"type": "text", "text": f"Unknown space '{clip(space, 40)}'. "
                             f"Next: use one of {', '.join(SPACES)}."}], "isError": True}
    with within(space):
        tool_ = find_tool(name)
        try:  # a pasted address names its space by its host
            named = addresses_space(tool_, arguments)
        except ToolError as exc:
            return failure(exc)
    with within(space or named):
        tool_ = find_tool(name)  # as the space of the address has it
        try:
            args, value = run_call(tool_, arguments, confirm)
        except ToolError as exc:
            return failure(exc)
        return value if args is None else result_of(tool_, args, value)


def run_call(tool_, arguments, confirm=None):
    """The steps of one call in its space, for tools/call and the command line: admitted (a
    bad or forbidden call is refused unasked), the audit log ready for a write, its texts in
    the project's format, the person asked where they can be, run. Writes and refusals are
    audited. Returns (args, value), or (None, the answer instead of running); raises
    ToolError."""
    answer = None
    try:
        args = admit(tool_, arguments)
        preview_unless(confirm is not None and settings().confirm != "off", tool_, args)
        if tool_.write:
            audit_ready()
            with guarded(tool_.name):
                render(tool_, args)
        if confirm is not None and needs_confirmation(tool_, args):
            answer, instead = confirm(tool_, args)
            if instead is not None:
                audit(tool_, args, "not run", answer)
                return None, instead
        value = run_admitted(tool_, args)
    except ToolError as exc:
        outcome = "refused" if isinstance(exc, (NotFound, Refused)) else "failed"
        audit(tool_, locals().get("args", arguments), outcome, answer, exc)
        raise
    audit(tool_, args, "done", answer)
    return args, value


def failure(exc):
    """A tool error as the model reads it: in which space (with several), what failed, what
    to do next."""
    where = f"In space '{here().name}': " if several() else ""
    return {"content": [{"type": "text", "text": where + redact(exc)}], "isError": True}


def result_of(tool_, args, value):
    """The one exit of a tool's answer: its content (a file, a sentence, or the JSON as
    BACKLOG_OUTPUT asks), how many items came and how to get more, and the notes."""
    if isinstance(value, Download):
        content = value.content()
    elif isinstance(value, str):
        content = [{"type": "text", "text": value}]
    else:
        answer, kept = fit(shaped(value))
        content = [{"type": "text", "text": answer}]
        if isinstance(value, list):
            content.append({"type": "text", "text": page_note(tool_, args, value, kept)})
    notes = NOTES.get() or []
    if notes:
        content.append({"type": "text", "text": in_room(notes)})
    return {"content": content, "isError": False}


def in_room(notes, room=NOTE_ROOM // 2):
    """Notes said as one text of at most `room` bytes (they may name many of Backlog's
    fields): those that say how to read on first, the rest cut with '…'."""
    text = " ".join(sorted(notes, key=lambda n: "call " not in n))
    data = text.encode("utf-8", "surrogatepass")
    return text if len(data) <= room else \
        data[:room - 3].decode("utf-8", "ignore") + "…"


# == Text formatting ===========================================================
# Each project writes its texts in Markdown or in Backlog notation (textFormattingRule), and
# Backlog never converts: Markdown in a notation project shows as literal **, ## and ```. So a
# text a model writes (by habit in Markdown) is converted to the project's rule, but only
# what cannot be read the other way (the constructs below), never inside code, never twice;
# the answer says what was converted. Documents are always Markdown. Sources: Nulab's help
# pages on both rules and the backlog-notation skill of Nulab's CLI (bee), as summed up in
# shared/backlog-api, §8; what they do not settle is left alone.

MD_FENCE = re.compile(r"^([ \t]*(?:>[ \t]?)*)(`{3,}|~{3,})[ \t]*([^`\n]*?)[ \t]*$")  # any
# info string (```python title="app.py", ```ruby:app.rb); indented (a list item) or quoted
MD_HEADING = re.compile(r"^(#{1,6})[ \t]+(\S.*?)(?:[ \t]+#+)?[ \t]*$")  # "C#" is a word
MD_SEPARATOR = re.compile(r"^[ \t]*\|?[ \t]*:?-{3,}:?[ \t]*(\|[ \t]*:?-{3,}:?[ \t]*)+\|?[ \t]*$")
EDGE = r"[^\s*'~%,]"  # a converted span's first and last: no markup of either syntax
OUTSIDE_WORD = r"(?<![*A-Za-z0-9/])"  # x**2, src/**/x: no emphasis glued to ASCII or a path
OUTSIDE_WORD_AFTER = r"(?![*A-Za-z0-9/])"
MD_INLINE = [  # (what, pattern, notation), in this order, outside inline code
    ("image", re.compile(r"!\[([^\]\n]*)\]\(([^()\s]+)\)"), r"#image(\2)"),
    ("link", re.compile(r"(?<!!)\[([^\]\n]+)\]\(((?:https?|ftp)://(?:[^()\s]|\([^()\s]*\))+)\)"),
     r"[[\1>\2]]"),  # a URL may hold one level of (): api_(v2)
    ("link", re.compile(r"<((?:https?|ftp)://[^>\s]+)>"), r"\1"),  # notation links bare URLs
    # **x** is bold next to letters too (CommonMark; so in Japanese, **太字**です); __x__ is
    # left alone: __init__.py is more often a name than bold
    ("bold", re.compile(r"%s\*\*(?=%s)([^*\n]+?)(?<=%s)\*\*%s" % (
        OUTSIDE_WORD, EDGE, EDGE, OUTSIDE_WORD_AFTER)), r"''\1''"),
    ("strike", re.compile(r"(?<!~)~~(?=%s)([^~\n]+?)(?<=%s)~~(?!~)" % (EDGE, EDGE)),
     r"%%\1%%"),
]
MD_CODE_SPAN = re.compile(r"(?<!`)(`+)(?!`)(.+?)(?<!`)\1(?!`)")
NT_CODE = re.compile(r"^\{code(?::([\w+#.-]+))?\}[ \t]*$")
NT_CODE_END = re.compile(r"^\{/code\}[ \t]*$")
NT_HEADING = re.compile(r"^(\*{2,6})[ \t]+(\S.*)$")  # one * is also a Markdown bullet: kept
NT_TABLE_HEAD = re.compile(r"^(\|.*\|)h[ \t]*$")
NT_INLINE = [  # (what, pattern, Markdown), in this order, outside {code}
    ("code", re.compile(r"\{code(?::[\w+#.-]+)?\}([^\n{}`\ue000]+?)\{/code\}"), r"`\1`"),
    ("bold italic", re.compile(r"'{5}(?=%s)([^'\n]+?)(?<=%s)'{5}" % (EDGE, EDGE)),
     r"***\1***"),
    ("italic", re.compile(r"(?<!')'''(?=%s)([^'\n]+?)(?<=%s)'''(?!')" % (EDGE, EDGE)),
     r"*\1*"),
    ("bold", re.compile(r"(?<!')''(?=%s)([^'\n]+?)(?<=%s)''(?!')" % (EDGE, EDGE)),
     r"**\1**"),
    ("strike", re.compile(r"%%%%(?=%s)([^%%\n]+?)(?<=%s)%%%%" % (EDGE, EDGE)), r"~~\1~~"),
    ("link", re.compile(r"\[\[([^\]>\n]+?)>((?:https?|ftp)://[^\]\s]+)\]\]"), r"[\1](\2)"),
    ("link", re.compile(r"\[\[([^\]:\n]+?):((?:https?|ftp)://[^\]\s]+)\]\]"), r"[\1](\2)"),
    ("link", re.compile(r"\[\[((?:https?|ftp)://[^\]\s]+)\]\]"), r"<\1>"),
    ("image", re.compile(r"#(?:image|thumbnail)\(([^()\s]+)\)"), r"![](\1)"),
    ("colour", re.compile(r"&color\([^)\n]*\)[ \t]*\{[ \t]*([^}\n]*?[^}\s])[ \t]*\}"), r"\1"),
]
RULES = {"markdown": "Markdown", "backlog": "Backlog notation"}
MD_STARTS = (MD_FENCE, MD_HEADING, MD_SEPARATOR, NT_CODE, NT_CODE_END)  # what a line can be
NT_STARTS = (NT_CODE, NT_CODE_END, NT_HEADING, NT_TABLE_HEAD, MD_FENCE)


def to_notation(text):
    """(text in Backlog notation, what was converted) of Markdown: fenced code to {code},
    # headings to *, **bold** to ''bold'', ~~x~~ to %%x%%, [label](url) to [[label>url]],
    <url> to url, ![](url) to #image(url), a table's header row to |a|b|h, and inline code
    to ''bold'' (notation has no inline code). Code stays as it is: a fence indented past a
    list's, quoted, or holding {/code} (which would end {code}) stays a fence."""
    lines, out, done, code, i = text.split("\n"), [], [], False, 0
    while i < len(lines):
        line = lines[i]
        if code or NT_CODE.match(line):  # notation code already: as it is
            out.append(line)
            code = not NT_CODE_END.match(line)
            i += 1
            continue
        opened = MD_FENCE.match(line)
        if opened:
            end = fence_end(lines, i, opened.group(2))
            block = lines[i + 1:end]
            if ">" in opened.group(1) or len(opened.group(1).expandtabs()) > 3 \
                    or any(NT_CODE_END.match(b) for b in block):
                out += lines[i:end + 1]
            else:
                lang = re.match(r"[\w+#.-]+", opened.group(3))
                out += ["{code:%s}" % lang.group(0) if lang else "{code}"] + block + ["{/code}"]
                done.append("fenced code → {code}")
            i = end + 1  # a fence never closed is code to the end, as Markdown reads it
            continue
        heading = MD_HEADING.match(line)
        if heading:
            out.append("*" * min(len(heading.group(1)), 4) + " " + _spans(
                heading.group(2), MD_INLINE, done, _code_as_bold))
            done.append("# headings → *")
        elif MD_SEPARATOR.match(line) and out and out[-1].strip().startswith("|"):
            out[-1] = "|" + cells_of(out[-1]) + "|h"
            done.append("table header → |…|h")
        else:
            out.append(_spans(line, MD_INLINE, done, _code_as_bold, MD_STARTS))
        i += 1
    return "\n".join(out), done


def fence_end(lines, i, fence):
    """The index of the line that closes the Markdown fence opened at line i (len(lines)
    when none does)."""
    close = re.compile(r"[ \t]*(?:>[ \t]?)*%s{%d,}[ \t]*\Z" % (re.escape(fence[0]), len(fence)))
    return next((j for j in range(i + 1, len(lines)) if close.match(lines[j])), len(lines))


def cells_of(row):
    """A table row's cells between its outer pipes, empty ones kept (||Mon| has three)."""
    row = row.strip()
    return row[1 if row.startswith("|") else 0:-1 if row.endswith("|") and len(row) > 1
               else None]


def _spans(line, table, done, code=None, starts=()):
    """A line's inline constructs converted by `table`, whole but for its code spans, which
    `code(span, done)` makes something else (None: they stay as they are). A line that the
    conversion would leave convertible again, or starting another line construct (`starts`:
    a heading, a code block), stays as it was: converting twice never changes a text."""
    out, mine = _converted_line(line, table, code)
    if out != line and (any(start.match(out) for start in starts)
                        or _converted_line(out, table, code)[0] != out):
        return line
    done += mine
    return out


def _converted_line(line, table, code):
    if HELD in line:
        return line, []
    spans, done = [], []

    def hold(span):
        spans.append(span)
        return f"{HELD}{len(spans) - 1}\ue001"

    def give_back(found):
        span = spans[int(found.group(1))]
        return span.group(0) if code is None else code(span, done)
    if table is MD_INLINE:  # **`x`**: bold, not bold around bold; {code}x{/code} held too
        line = BOLD_CODE.sub(lambda m: m.group(0) if re.search(
            r"[*'~%\[\]|#`&{}<>]", m.group(2)) else f"**{m.group(2)}**", line)
    masked = _inline((MD_MASK if table is MD_INLINE else MD_CODE_SPAN).sub(hold, line), table,
                     done)
    return re.sub(HELD + r"(\d+)\ue001", give_back, masked), done


BOLD_CODE = re.compile(r"\*\*(`+)([^`\n]+?)\1\*\*")
MD_MASK = re.compile(r"(?P<nt>\{code(?::[\w+#.-]+)?\}.*?\{/code\})"  # notation code, on a line
                     r"|(?<!`)(`+)(?!`)(.+?)(?<!`)\2(?!`)")
URL_TOKEN = r"(?:https?|ftp)://[^\s<>\[\]]+"
EMPHASIS = ("bold", "strike", "italic", "bold italic")  # never applied inside a URL


HELD = "\ue000"  # a code span's place while the rest of its line is converted


def _code_as_bold(span, done):
    """Inline code in notation, which has none: ''bold'', the closest; code that holds
    markup of either syntax stays as typed (made bold, it would read as that markup)."""
    body = span.group(span.re.groups)  # the span's text (the last group of its pattern)
    if (span.re is MD_MASK and span.group("nt")) or re.search(r"[*'~%\[\]|#`&{}<>]", body):
        return span.group(0)
    done.append("`code` → ''bold'' (notation has no inline code)")
    return "''" + body.strip() + "''"


def _inline(text, table, done):
    for what, pattern, replacement in table:
        if what in EMPHASIS and "://" in text:  # https://x.com/a**b**c stays a URL
            parts, n = re.split(f"({URL_TOKEN})", text), 0
            for k in range(0, len(parts), 2):
                parts[k], found = pattern.subn(replacement, parts[k])
                n += found
            text = "".join(parts)
        else:
            text, n = pattern.subn(replacement, text)
        if n:
            done.append(what)
    return text


def to_markdown(text):
    """(text in Markdown, what was converted) of Backlog notation: {code} to fences, ** and
    deeper headings to #, ''bold'' to **bold**, '''italic''' to *italic*, %%x%% to ~~x~~,
    [[label>url]] to [label](url), #image() to ![](), &br; to a line break, a |a|b|h header
    row to a Markdown table head; &color() keeps its text. Code stays as it is (a fence longer
    than any run of backticks it holds)."""
    out, done = [], []
    lines = text.split("\n")[::-1]
    while lines:
        line = lines.pop()
        at = line_break_at(line)
        if at is not None and not NT_CODE.match(line) and not MD_FENCE.match(line):
            lines.append(line[at + len("&br;"):])  # the rest is a line of its own
            line = line[:at] + "  "
            done.append("&br; → line break")
        fenced_ = MD_FENCE.match(line)
        if fenced_:  # a Markdown fence already: as it is, to its end
            end = fence_end(lines[::-1], -1, fenced_.group(2))
            out += [line] + [lines.pop() for _ in range(min(end + 1, len(lines)))]
            continue
        opened = NT_CODE.match(line)
        if opened:
            block = []
            while lines and not NT_CODE_END.match(lines[-1]):
                block.append(lines.pop())
            if lines:
                lines.pop()  # {/code}; one never closed is closed here, as Backlog shows it
            longest = max((len(m) for b in block for m in re.findall(r"`{3,}", b)), default=2)
            fence = "`" * (longest + 1)
            out += [fence + (opened.group(1) or "")] + block + [fence]
            done.append("{code} → fenced code")
            continue
        heading = NT_HEADING.match(line)
        if heading:
            out.append("#" * len(heading.group(1)) + " " + _spans(heading.group(2), NT_INLINE,
                                                                   done))
            done.append("** headings → ##")
            continue
        head = NT_TABLE_HEAD.match(line)
        if head:
            cells = cells_of(head.group(1)).split("|")
            out += [_spans(head.group(1), NT_INLINE, done, None, NT_STARTS),
                    "|" + "|".join("---" for _ in cells) + "|"]
            done.append("table header |…|h → |---|")
            continue
        out.append(_spans(line, NT_INLINE, done, None, NT_STARTS))  # `code` stays as it is
    return "\n".join(out), done


def line_break_at(line):
    """Where the first &br; outside inline code is in a line, or None."""
    if "&br;" not in line or HELD in line:
        return None
    spans = [m.span() for m in MD_CODE_SPAN.finditer(line)]
    return next((m.start() for m in re.finditer("&br;", line)
                 if not any(a <= m.start() < b for a, b in spans)), None)


def render(tool_, args):
    """The texts of a write as the project shows them: literal \\n sequences made line
    breaks, Markdown and notation converted to the project's rule (or, with BACKLOG_CONVERT
    off, a mismatch said), members mentioned by @userId or @name; the notes say what."""
    texts = [n for n, p in tool_.params.items() if p.text and isinstance(args.get(n), str)]
    if not texts:
        return
    try:
        project, rule = text_rule(tool_, args)
    except ToolError:  # the project cannot be read: the text goes as it was written
        note("The project's text format could not be read: the text is sent as written.")
        return
    for name in texts:
        text = repaired(args[name])
        converted, done = (to_notation if rule == "backlog" else to_markdown)(text)
        if done and settings().convert:
            text = converted
            note(f"{name}: converted to {RULES[rule]}, as {project} writes it: "
                 f"{', '.join(dict.fromkeys(done))}.")
        elif done:
            note(f"{name} looks written in the other syntax ({', '.join(dict.fromkeys(done))})"
                 f" and will show as written; in {RULES[rule]} it reads: "
                 + (converted if len(converted) <= 4000 else "(too long to repeat here)"))
        args[name] = mentioned(text, project) if "@" in text else text
    note(f"Text formatting of {project}: {RULES[rule]}.")


def tell_rule(tool_, record):
    """Say once, in an answer that carries a text, which format its project writes in, so
    that a model editing the text keeps it."""
    if tool_.category == "document":
        note("Documents are written in Markdown.")
        return
    project = record.get("projectId") or (record.get("issueKey") or "").rsplit("-", 1)[0]
    try:
        key, rule = rule_of(project) if project else (None, None)
    except ToolError:
        return
    if key:
        note(f"{key} writes texts in {RULES[rule]}; keep it when you edit them.")


def repaired(text):
    """A text sent with literal \\n sequences for its line breaks (and none of its own), with
    line breaks: only where every backslash is one of them, no code is quoted, and they shape
    paragraphs, lists or headings (a path like C:\\new or a "a\\nb" in code stays)."""
    plain = text.replace("\\r\\n", "\\n")
    if "\n" in plain or "`" in plain or len(re.findall(r"\\", plain)) != len(
            re.findall(r"\\n", plain)) or not re.search(
                r"\\n(?:\\n|[ \t]*(?:[-*+#>|]|\d+\.) )", plain):
        return text
    note("Literal \\n sequences in the text were made line breaks.")
    return plain.replace("\\n", "\n")


def text_rule(tool_, args):
    """(project key, its textFormattingRule) of the project a call writes in; documents are
    always Markdown."""
    if tool_.category == "document":
        return str(args.get("project_id_or_key") or "the document"), "markdown"
    for name in ("project_id_or_key", "issue_id_or_key", "wiki_id"):
        param = tool_.params.get(name)
        if param is not None and args.get(name) is not None:
            return rule_of(OWNERS[param.owner][0](args[name], args))
    return "the project", "markdown"


def rule_of(project):
    """(key, textFormattingRule) of a project (by key or id), read once and kept."""
    found = project_info(project)
    rule = found.get("textFormattingRule")
    return found["projectKey"], rule if rule in RULES else "markdown"


MENTION = re.compile(r"(?<![\w@.])@(?=\S)")


def mentioned(text, project):
    """@userId or @name of exactly one member of the project as Backlog's mention, <@U{id}>;
    anything else (a mail address, an unknown or shared name) as written."""
    members = [m for m in listed("users", project) if isinstance(m.get("id"), int)]
    out, last, named = [], 0, []
    kept = [m.span() for m in re.finditer(f"{CODE.pattern}|{URL_TOKEN}", text, re.S)]
    for at in MENTION.finditer(text):
        if any(a <= at.start() < b for a, b in kept):  # in code or a URL: as written
            continue
        rest = text[at.end():].casefold()
        found = {}
        for member in members:
            for handle in (member.get("userId"), member.get("name")):
                if isinstance(handle, str) and handle and rest.startswith(handle.casefold()) \
                        and not re.match(r"[\w@]", rest[len(handle):len(handle) + 1]):
                    found.setdefault(len(handle), set()).add(member["id"])
        if not found or len(set().union(*found.values())) != 1:  # @ken Ito: ken, or Ken Ito?
            continue
        size, (user,) = max(found), found[max(found)]
        out += [text[last:at.start()], f"<@U{user}>"]
        last = at.end() + size
        named.append(text[at.end():last])
    if named:
        note(f"Mentioned: {', '.join(dict.fromkeys(named))}.")
    return "".join(out + [text[last:]])


# == Confirmation ==============================================================
# Before a call destroys (a delete, an unlink, a clear, a replaced text, a key change; with
# BACKLOG_CONFIRM=writes, before every write) the person is asked, where the client can ask:
# through elicitation/create in the legacy era (2025-06-18, 2025-11-25), and through the
# 2026-07-28 era's input-required result, which the client answers by calling again with
# inputResponses and the requestState it was handed. The question is built after every
# refusal check, so it never shows what the call may not, and it names the space.

CONFIRM_WAIT = 600.0  # seconds a question stays open (legacy) or answerable (2026-07-28)
CONFIRM_SCHEMA = {"type": "object", "properties": {"confirm": {
    "type": "boolean", "title": "Go ahead", "description": "Yes: run it. No: change nothing."}},
    "required": ["confirm"]}
SUBJECTS = {"issue": ("issues", "summary"), "wiki": ("wikis", "name"),
            "document": ("documents", "title"), "project": ("projects", "name")}


def needs_confirmation(tool_, args):
    mode = settings().confirm
    batch = tool_.asks is not None and not args.get("dry_run")  # a batch asks once, always
    return tool_.write is not None and mode != "off" and (
        mode == "writes" or tool_.destroys(args) or batch)


def question(tool_, args):
    """What the person is asked: the space (with several), the tool's title, what it acts on
    (with the name Backlog gives it), what the arguments destroy, and that it is final."""
    if tool_.asks is not None:
        where = f"In space '{here().name}': " if several() else ""
        return f"{where}{tool_.asks(args)}" + (" This cannot be undone." if tool_.destroys(args)
                                               else "")
    named, subject = [], None  # the first target Backlog names, its name beside it
    for name, param in tool_.params.items():
        value = args.get(name)
        if value is None or not (param.owner or param.ident) or isinstance(value, list):
            continue
        named.append(f"{OWNERS[param.owner][1] if param.owner else param.ident} {value}")
        if subject is None and param.owner in SUBJECTS:
            path, field = SUBJECTS[param.owner]
            subject = ""
            try:
                found = api.get((path, str(value).lower() if param.owner == "document"
                                 else value))
                if isinstance(found, dict) and isinstance(found.get(field), str):
                    named[-1] += f" {quoted(found.get(field), 80)}"
            except ToolError:
                pass
    lost = [f"clears {', '.join((args.get('clear') or []) + emptied(args))}"] \
        if args.get("clear") or emptied(args) else []
    lost += [f"replaces its {name} ({len(args[name]):,} characters written)"
             for name in ("description", "content", "note") if isinstance(args.get(name), str)
             and tool_.destroys({name: args[name]})]
    lost += [f"changes the key to {args['key']}"] if tool_.name == "project_update" \
        and args.get("key") else []
    where = f"In space '{here().name}': " if several() else ""
    final = " This cannot be undone." if tool_.destroys(args) else ""
    return (f"{where}{tool_.title}: {', '.join(named) or 'no target'}"
            f"{'; ' + '; '.join(lost) if lost else ''}?{final}")


def quoted(text, size=80):
    """A name or text from Backlog inside a sentence of ours: one line, no invisible or
    direction-changing characters, cut to `size`, in quotation marks."""
    text = re.sub(r"\s+", " ", visible(str(text))).strip()
    return "“" + clip(text.replace("“", '"').replace("”", '"'), size) + "”"  # cannot close


def elicitation(tool_, args):
    """The elicitation/create params that ask about a call."""
    message = clip(re.sub(r"\s+", " ", question(tool_, args)), QUESTION_SIZE)  # one line
    return {"mode": "form", "message": message, "requestedSchema": CONFIRM_SCHEMA}


QUESTION_SIZE = 1000  # characters of a question at most


def answered(result, tool_):
    """(answer, None to go ahead or the result to give instead) from an ElicitResult."""
    if not isinstance(result, dict):
        return "no answer", said("Nothing was changed: the client could not ask the user.")
    content = result.get("content") if isinstance(result.get("content"), dict) else {}
    action = result.get("action")
    if action == "accept" and content.get("confirm") is True:
        return "accepted", None
    answer = {"accept": "declined", "decline": "declined", "cancel": "cancelled"}.get(
        action, "no answer")
    return answer, said(f"Nothing was changed: the user did not confirm {tool_.name} "
                        f"({answer}).")


def said(text):
    return {"content": [{"type": "text", "text": text}], "isError": False}


# -- The 2026-07-28 era: the call is answered "input required"; the client calls again with
# the answer and the requestState, which binds the answer to this very call (tool, space,
# arguments), expires, and is taken once. It is signed with a key of this process.

STATE_KEY = []  # the signing key, made on first use
TAKEN = set()   # nonces of requestStates already answered


def state_mac(data):
    import hashlib
    import hmac
    if not STATE_KEY:
        STATE_KEY.append(os.urandom(32))
    return hmac.new(STATE_KEY[0], data.encode(), hashlib.sha256).hexdigest()


def call_digest(tool_, args):
    import hashlib
    return hashlib.sha256(json.dumps([here().name, tool_.name, args], sort_keys=True,
                                     ensure_ascii=False, default=str).encode(
        "utf-8", "surrogatepass")).hexdigest()


def request_state(tool_, args):
    import base64
    payload = {"call": call_digest(tool_, args), "until": time.time() + CONFIRM_WAIT,
               "nonce": base64.urlsafe_b64encode(os.urandom(12)).decode(),
               "asked": plan_digest(tool_)}  # a batch: the items the question showed
    data = base64.urlsafe_b64encode(json.dumps(payload).encode()).decode()
    return f"{data}.{state_mac(data)}"


def input_required(tool_, args, before=""):
    """The result that asks the person, in the 2026-07-28 era (the question first: a batch's
    state is bound to the plan it shows)."""
    params = elicitation(tool_, args)
    params["message"] = before + params["message"]
    return {"resultType": "input_required",
            "inputRequests": {"confirm": {"method": "elicitation/create", "params": params}},
            "requestState": request_state(tool_, args)}


def confirm_modern(params):
    """confirm() of one 2026-07-28 tools/call: ask, or read the answer the retry carries."""
    def confirm(tool_, args):
        import base64
        import hmac
        state, responses = params.get("requestState"), params.get("inputResponses")
        if state is None:
            return "asked", input_required(tool_, args)
        data, _, mac = state.partition(".") if isinstance(state, str) else ("", "", "")
        try:
            payload = json.loads(base64.urlsafe_b64decode(data.encode()))
            valid = hmac.compare_digest(mac, state_mac(data)) and isinstance(payload, dict)
        except (ValueError, TypeError, UnicodeError):
            valid = False
        if not valid or payload.get("call") != call_digest(tool_, args):
            raise RpcError(-32602, "requestState is not one this server gave for this call; "
                                   "call again without it.")
        if payload.get("nonce") in TAKEN:
            raise RpcError(-32602, "This confirmation was already used; call again without "
                                   "requestState to be asked again.")
        answer = responses.get("confirm") if isinstance(responses, dict) else None
        if not isinstance(answer, dict) or not isinstance(payload.get("until"), (int, float)) \
                or payload["until"] < time.time():
            return "asked", input_required(tool_, args)  # no answer yet, or too late: again
        if tool_.asks is not None:  # the batch as it is now, against what was asked
            tool_.asks(args)
            if plan_digest(tool_) != payload.get("asked"):
                TAKEN.add(payload["nonce"])
                return "asked", input_required(tool_, args, "The batch changed since you "
                                                            "were asked. ")
        TAKEN.add(payload["nonce"])
        return answered(answer, tool_)
    return confirm


# == Audit log =================================================================
# BACKLOG_AUDIT_LOG=path: one JSON line per write and per refusal, appended and flushed at
# once: when, in which space, which tool on what (identifiers only: never a text written,
# never the key), the outcome and the person's answer to a confirmation. Writes are refused
# while the file cannot be appended to.

UNWRITTEN = []  # audit lines not appended yet (a full disk): appended before the next write


def audit_ready():
    """Before a write: the lines not yet appended are, or the write is refused."""
    path = settings().audit_log
    if path:
        try:
            append(path, "".join(UNWRITTEN))
        except OSError as exc:
            raise Refused(f"The audit log {path} cannot be written ({exc.strerror}): writes "
                          "are refused until it can.", "ask the person who configures this "
                          "server to check BACKLOG_AUDIT_LOG.") from None
        UNWRITTEN.clear()


def append(path, text):
    """Append whole lines to a regular file (never through a symlink, never waiting on a
    pipe), or nothing of them: a short write is taken back. Raises OSError."""
    import errno
    import stat
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0)
                 | getattr(os, "O_NONBLOCK", 0), 0o600)
    try:
        size = os.fstat(fd)
        if not stat.S_ISREG(size.st_mode):
            raise OSError(errno.EINVAL, "not a regular file")
        data = text.encode("utf-8", "replace")
        if data and os.write(fd, data) != len(data):
            os.ftruncate(fd, size.st_size)
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    finally:
        os.close(fd)


def audit(tool_, args, outcome, answer=None, error=None):
    """One line for a write (done, failed, not run) or a refusal of any call."""
    path = settings().audit_log
    if not path or (tool_.write is None and outcome not in ("refused",)):
        return
    import datetime
    args = args if isinstance(args, dict) else {}
    line = {"time": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "space": here().name, "tool": tool_.name,
            "target": {n: v if isinstance(v, int) else clip(str(v), 200)
                       for n, v in args.items() if n in tool_.params and (
                           tool_.params[n].owner or tool_.params[n].ident) and v is not None},
            "outcome": outcome}
    if answer is not None:
        line["confirmation"] = answer
    if error is not None:
        line["error"] = type(error).__name__ + (f" HTTP {error.status}"
                                                if isinstance(error, BacklogError) else "")
    text = redact(json.dumps(line, separators=(",", ":"))) + "\n"  # ASCII: one line always
    try:
        append(path, "".join(UNWRITTEN) + text)
        UNWRITTEN.clear()
    except OSError as exc:
        UNWRITTEN.append(text)
        log(f"audit log {path} not written ({exc.strerror}): kept until it can be; writes "
            "are refused until then")


# == Downloads =================================================================

TEXT_TYPES = ("application/json", "application/xml", "application/javascript",
              "application/x-sh", "application/x-httpd-php", "application/yaml",
              "application/x-yaml", "application/csv", "application/sql")


def parse_disposition(header, fallback):
    """The filename of a Content-Disposition header (RFC 5987 filename* first), Backlog
    text like any other: without what no reader sees, on one line."""
    name = _disposition(header, fallback)
    return re.sub(r"\s+", " ", stripped(str(name), {})).strip() or fallback


def _disposition(header, fallback):
    from urllib.parse import unquote
    match = re.search(r"filename\*\s*=\s*([\w-]+)'[^']*'([^;]+)", header or "", re.I)
    if match:
        charset = text_codec(match.group(1)) or "utf-8"
        return scrub(unquote(match.group(2).strip().strip('"'), encoding=charset,
                             errors="replace"))
    match = re.search(r'filename\s*=\s*"([^"]*)"|filename\s*=\s*([^;]+)', header or "", re.I)
    if match:
        return (match.group(1) if match.group(1) is not None else match.group(2)).strip()
    return fallback


def text_codec(name):
    """The codec of a declared charset, or None: only text encodings that cannot make lone
    surrogates (not utf-7, unicode_escape, punycode, idna or the bytes-to-bytes codecs)."""
    import codecs
    try:
        info = codecs.lookup(name)
    except (LookupError, TypeError, ValueError):
        return None
    unsafe = ("utf-7", "unicode-escape", "raw-unicode-escape", "punycode", "idna", "mbcs",
              "oem", "undefined", "palmos")
    if not getattr(info, "_is_text_encoding", True) or info.name.replace("_", "-") in unsafe:
        return None
    return info.name


def charset_of(content_type):
    match = re.search(r"charset\s*=\s*\"?([\w.:-]+)", content_type or "", re.I)
    return text_codec(match.group(1)) if match else None


def decode_text(data, content_type):
    """Text of a download in its declared charset (or UTF-8), never with lone surrogates."""
    charset = charset_of(content_type) or "utf-8"
    try:
        text = data.decode(charset)
    except UnicodeDecodeError:
        text = data.decode("utf-8", errors="replace")
    return scrub(text).lstrip("\ufeff")


def looks_like_text(data, content_type):
    """Text when the type says so, or when the bytes are UTF-8 without binary control bytes."""
    base = (content_type or "").split(";")[0].strip().lower()
    charset = charset_of(content_type)
    if base.startswith("text/") or base in TEXT_TYPES or base.endswith(("+json", "+xml")):
        return _decodes(data, charset)
    if charset and charset not in ("utf-8", "utf8"):
        return _decodes(data, charset) and not BINARY.search(data)
    return _decodes(data, "utf-8") and not BINARY.search(data)


BINARY = re.compile(rb"[\x00-\x08\x0e-\x1a\x1c-\x1f\x7f]")


def _decodes(data, charset):
    try:
        data.decode(charset or "utf-8")
        return True
    except UnicodeDecodeError:
        return False


def download(path, fmt=None, fallback="downloaded_file"):
    """Fetch a file under the size cap and choose how the model receives it."""
    s = settings()
    try:
        answer = api.send("GET", path, accept="*/*", cap=s.max_download,
                          seconds=4 * s.timeout[1])
    except TooBig as big:
        name = parse_disposition(big.headers.get("Content-Disposition"), fallback)
        raise ToolError(f"File '{name}' is {big.size} bytes, over the download limit of "
                        f"{s.max_download} bytes (BACKLOG_MAX_DOWNLOAD_BYTES).",
                        "open it "
                        "in Backlog, or raise the limit.") from None
    ctype = answer.content_type or "application/octet-stream"
    name = parse_disposition(answer.headers.get("Content-Disposition"), fallback)
    data = bytes(answer.body)
    base = ctype.split(";")[0].strip().lower()
    if fmt == "image" and not base.startswith("image/"):
        raise ToolError(f"File '{name}' is not an image (content type {ctype}).",
                        "call again with format 'text' or 'raw'.")
    if fmt == "text" and not looks_like_text(data, ctype) \
            and not _decodes(data, charset_of(ctype)):
        raise ToolError(f"File '{name}' is not text in UTF-8 or its declared charset.",
                        "call again with format 'raw'.")
    if fmt is None:
        fmt = "image" if base.startswith("image/") else \
            "text" if looks_like_text(data, ctype) else "raw"
    return Download(name, ctype, data, fmt)


# == Custom fields and names ===================================================

class Kind:
    """A kind of custom field (Backlog's typeId): its name in answers, how a value is written
    (text, number, date, or items of its list: one or several), and how an issue search
    filters by it (text, a {min, max} range, or items)."""

    def __init__(self, name, value, several=False):
        self.name, self.value, self.several = name, value, several

    @property
    def filter(self):
        return {"text": "text", "number": "range", "date": "range"}.get(self.value, "items")


FIELD_KINDS = {1: Kind("text", "text"), 2: Kind("textarea", "text"),
               3: Kind("number", "number"), 4: Kind("date", "date"),
               5: Kind("single_list", "items"), 6: Kind("multiple_list", "items", several=True),
               7: Kind("checkbox", "items", several=True), 8: Kind("radio", "items")}
FIELD_TYPES = {type_id: kind.name for type_id, kind in FIELD_KINDS.items()}


def field_definitions(project):
    return CACHE.get(("fields", str(project)), lambda: rows(
        api.get(("projects", str(project), "customFields")), {"id": int, "name": str}))


def find_field(project, key):
    """A project's custom field definition by id or name (ignoring case)."""
    definitions = field_definitions(project)
    for field in definitions:
        if str(key) == str(field["id"]) or str(key).casefold() == field["name"].casefold():
            return field
    raise ToolError(f"Unknown custom field '{key}'. Fields of this project: "
                    f"{', '.join(quoted(f['name'], 40) for f in definitions) or 'none'}.",
                    "project_custom_field_list_get shows them.")


def custom_field_params(project, values):
    """Form pairs customField_{id}=... for values keyed by field name or id."""
    pairs = []
    for key, value in values.items():
        pairs.extend(field_value(find_field(project, key), value))
    return pairs


def field_value(field, value):
    """One custom field value as Backlog's form pairs, as its kind (FIELD_KINDS) takes it."""
    key, kind = f"customField_{field['id']}", FIELD_KINDS.get(_int(field.get("typeId")))
    if value is None:
        return [(key, "")]
    if kind is None:
        raise ToolError(f"Custom field {quoted(field['name'], 60)} has an unknown type "
                        f"{field.get('typeId')}.")
    return FIELD_WRITERS[kind.value](field, key, kind, value)


def _text_value(field, key, kind, value):
    if not isinstance(value, (str, int, float)) or isinstance(value, bool):
        raise ToolError(f"Custom field {quoted(field['name'], 60)} expects text.")
    return [(key, str(value))]


def _number_value(field, key, kind, value):
    if isinstance(value, str):
        try:
            value = float(value)
        except ValueError:
            pass
    if not isinstance(value, (int, float)) or isinstance(value, bool) or value != value:
        raise ToolError(f"Custom field {quoted(field['name'], 60)} expects a number.")
    return [(key, _number_text(value))]


def _date_value(field, key, kind, value):
    if not isinstance(value, str) or not re.match(r"\d{4}-\d{2}-\d{2}(?:[T ].*)?\Z", value):
        raise ToolError(f"Custom field {quoted(field['name'], 60)} expects a date like "
                        "2025-06-30.")
    return [(key, value[:10])]


def _items_value(field, key, kind, value):
    """Items of the field's list by name or id (one, or several), and 'other' text."""
    name, other = field["name"], None
    if isinstance(value, dict):
        other = value.get("other")
        if other is not None and not isinstance(other, str):
            raise ToolError(f"Custom field {quoted(name, 60)}: 'other' must be text.")
        value = value.get("items", value.get("name", value.get("id")))
    if isinstance(value, list) and not kind.several:
        raise ToolError(f"Custom field {quoted(name, 60)} takes one item, not a list.")
    ids = [item_id(field, item) for item in (value if isinstance(value, list) else [value])
           if item is not None]
    pairs = (indexed(key, ids) if kind.several else [(key, str(i)) for i in ids]) \
        or [(key, "")]
    return pairs + ([(f"{key}_otherValue", other)] if other is not None else [])


FIELD_WRITERS = {"text": _text_value, "number": _number_value, "date": _date_value,
                 "items": _items_value}


def _number_text(value):
    if isinstance(value, int) or float(value).is_integer():
        return str(int(value))
    text = repr(float(value))
    if "e" in text:
        from decimal import Decimal
        text = format(Decimal(text), "f")
    return text


def item_id(field, item):
    options = rows(field.get("items") or [], {"id": int, "name": str})
    for option in options:
        if item == option["id"] or (isinstance(item, str) and (
                item.strip().casefold() == option["name"].casefold() or item == str(option["id"]))):
            return option["id"]
    raise ToolError(f"Custom field {quoted(field['name'], 60)}: no item {shown(item)}. Items: "
                    f"{', '.join(quoted(o['name'], 40) for o in options) or 'none'}.")


def normalize(name):
    return re.sub(r"[ \u3000]", "", str(name)).casefold()


def distance(a, b):
    """Levenshtein distance, for 'did you mean' suggestions."""
    row = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        prev, row[0] = row[0], i
        for j, cb in enumerate(b, 1):
            prev, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, prev + (ca != cb))
    return row[-1]


def resolve(values, choices, label, lookup, key="name"):
    """Ids from a list of ids or names; a name must match one choice (ignoring case, spaces)."""
    if values is None:
        return None
    ids = []
    for value in values:
        if isinstance(value, int):
            ids.append(value)
            continue
        if DIGITS.match(value):
            ids.append(int(value))
            continue
        found = [c for c in choices() if normalize(value) in
                 (normalize(c.get(key) or ""), normalize(c.get("name") or ""))]
        if len(found) != 1:
            known = [str(c.get(key) or c.get("name")) for c in choices()]
            near = known if len(known) <= 10 else sorted(
                known, key=lambda k: distance(normalize(value), normalize(k)))[:10]
            more = f" ({len(known)} in all)" if len(known) > len(near) else ""
            why = "is ambiguous" if found else "is unknown"
            raise ToolError(f"{label} {quoted(value, 60)} {why}. "
                            f"{'Nearest' if more else 'Known'}: "
                            f"{', '.join(quoted(k, 40) for k in near)}{more}.",
                            f"pass ids (see {lookup}).")
        ids.append(found[0]["id"])
    return ids


def find_milestone(project, milestone_name):
    milestones = rows(api.get(("projects", project, "versions")),
                      {"id": int, "name": str, "projectId": int})
    wanted = normalize(milestone_name)
    for milestone in milestones:
        if normalize(milestone["name"]) == wanted:
            return milestone
    near = sorted((distance(wanted, normalize(m["name"])), m["name"]) for m in milestones)
    hint = [name for d, name in near if d <= 2]
    raise ToolError(f"Milestone {quoted(milestone_name, 60)} not found in project {project}." +
                    (f" Did you mean: {', '.join(quoted(h, 40) for h in hint)}?" if hint
                     else ""), "issue_milestone_list_get lists the milestones.")


# == Tools: documents ==========================================================

@tool("Get document", texts=True)
def document_details_get(document_id: DocumentId,
                         json: P("boolean", "Also the ProseMirror JSON of the content") = False):
    """Get a document: title, Markdown content ('plain'), metadata."""
    doc = checked(api.get(("documents", document_id.lower())), {})
    return doc if json else {k: v for k, v in doc.items() if k != "json"}


@tool("List documents", whole="document_details_get")
def document_list_get(project_id_or_key: ProjectIdOrKey, keyword: Keyword = None,
                      sort: P("string", "Sort key", enum=["created", "updated"]) = None,
                      order: Order = None, offset: Offset = 0, count: Count = 20,
                      fields: Fields = None):
    """List a project's documents, newest first, by keyword."""
    return api.get("documents", {"projectId": [project_id(project_id_or_key)],
                                 "keyword": keyword, "sort": sort, "order": order,
                                 "offset": offset, "count": count})


@tool("Get document tree")
def document_tree_get(project_id_or_key: ProjectIdOrKey,
                      include_trash: P("boolean", "Also return the trash tree") = False,
                      parent_id: DocumentId.like(doc="Start at this document") = None,
                      depth: P("integer", "Levels shown (default 2, max 20)", minimum=1,
                               maximum=20) = 2):
    """Get a project's document tree, some levels at a time."""
    tree = checked(api.get(("documents", "tree"), {"projectIdOrKey": project_id_or_key}), {})
    roots = {"activeTree": tree.get("activeTree"), "trashTree": tree.get("trashTree")} \
        if include_trash else {"activeTree": tree.get("activeTree", tree)}
    if parent_id is not None:
        found = next((n for root in roots.values() for n in nodes(root)
                      if str(n.get("id")).lower() == parent_id.lower()), None)
        if found is None:
            raise Missing("document", parent_id)
        roots = {"subtree": found}
    trimmed = {k: pruned(v, depth) for k, v in roots.items()}
    return trimmed if include_trash or parent_id else trimmed["activeTree"]


TREE_WIDTH = 100  # documents shown under one node of the tree


def nodes(node):
    """The nodes of a document tree, depth first."""
    stack = [node]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            yield item
            stack += children_of(item)


def children_of(node):
    """The child documents of a tree node (whatever else Backlog put there, none)."""
    children = node.get("children")
    return [c for c in children if isinstance(c, dict)] if isinstance(children, list) else []


def pruned(node, depth):
    """A tree node down to `depth` levels; below, how many documents there are and the call
    that shows them."""
    if not isinstance(node, dict):
        return node
    children = children_of(node)
    if depth <= 0 and children:
        below = sum(1 for c in children for _ in nodes(c))
        note("Deeper documents are counted, not shown: call again with parent_id (and depth).")
        return dict({k: v for k, v in node.items() if k != "children"}, more=below)
    shown_ = dict(node, children=[pruned(c, depth - 1) for c in children[:TREE_WIDTH]])
    if len(children) > TREE_WIDTH:
        shown_["moreChildren"] = len(children) - TREE_WIDTH
        note(f"A folder shows its first {TREE_WIDTH} documents; the rest are counted "
             "(moreChildren): call again with parent_id of a document to see below it.")
    return shown_


@tool("Download document attachment", file=True)
def document_attachment_download(document_id: DocumentId, attachment_id: AttachmentId,
                                 format: Format = None):
    """Download a document attachment as image, text or base64."""
    return download(("documents", document_id.lower(), "attachments", attachment_id), format)


@tool("Add document", write="document")
def document_add(project_id_or_key: ProjectIdOrKey.like(alias="project_id"),
                 title: P("string", "Title") = None,
                 content: Content.like(doc="Body in Markdown (documents are always Markdown)")
                 = None,
                 emoji: P("string", "Emoji shown with the title") = None,
                 parent_id: DocumentId.like(doc="Parent document id") = None,
                 add_last: P("boolean", "Place it last among its siblings") = None):
    """Add a document to a project, optionally under a parent."""
    return api.post("documents", {"projectId": project_id(project_id_or_key), "title": title,
                                  "content": content, "emoji": emoji,
                                  "parentId": parent_id and parent_id.lower(),
                                  "addLast": add_last})


@tool("Delete document", write="document", destructive=True, idempotent=True)
def document_delete(document_id: DocumentId):
    """Delete a document (admins, project admins); returns it."""
    return api.delete(("documents", document_id.lower()))


@tool("List document comments", pages=())
def document_comment_list_get(document_id: DocumentId,
                              json: P("boolean", "Also the ProseMirror JSON of each") = False):
    """List a document's comments with their replies, as text."""
    found = rows(api.get(("documents", document_id.lower(), "comments")), {})
    return found if json else [dict(without_json(c), replies=[
        without_json(r) for r in c.get("replies") or [] if isinstance(r, dict)])
        if "replies" in c else without_json(c) for c in found]


def without_json(comment):
    """A document comment without `content`, its ProseMirror JSON (`plain` is its text)."""
    return {k: v for k, v in comment.items() if k != "content" or "plain" not in comment}


@tool("Count documents", extra=True)
def document_count_get(project_id_or_key: ProjectIdOrKey):
    """Count a project's documents."""
    return api.get(("documents", "count"), {"projectIdOrKey": project_id_or_key})


TagNames = P("array", "Tag names", items="string")


@tool("Add document tags", write="document", idempotent=True, extra=True)
def document_tag_add(document_id: DocumentId, tag_names: TagNames):
    """Tag a document (new names make new tags)."""
    return api.post(("documents", document_id.lower(), "tags"), {"tagNames": tag_names})


@tool("Delete document tags", write="document", destructive=True, idempotent=True,
      extra=True)
def document_tag_delete(document_id: DocumentId, tag_names: TagNames):
    """Remove tags from a document."""
    api.delete(("documents", document_id.lower(), "tags"), {"tagNames": tag_names})
    return f"Removed the tags {', '.join(map(quoted, tag_names))} from document {document_id}."


# == Tools: git ================================================================

def repo_path(project_id_or_key, repo, *rest):
    return ("projects", project_id_or_key, "git", "repositories", repo) + rest


PR_STATUSES = [{"id": 1, "name": "Open"}, {"id": 2, "name": "Closed"},
               {"id": 3, "name": "Merged"}]  # Backlog's fixed pull request statuses


def pr_filters(status_ids, assignee_ids, issue_ids, created_user_ids):
    return {"statusId": resolve(status_ids, lambda: PR_STATUSES, "Status", "git_pr_list_get"),
            "assigneeId": assignee_ids, "issueId": issue_ids, "createdUserId": created_user_ids}


PrStatus = P("array", "Open, Closed, Merged (or 1, 2, 3)", items=["integer", "string"])


@tool("List Git repositories", pages=("name",))
def git_repository_list_get(project_id_or_key: ProjectIdOrKey, fields: Fields = None):
    """List a project's Git repositories."""
    return api.get(("projects", project_id_or_key, "git", "repositories"))


@tool("Get Git repository")
def git_repository_details_get(project_id_or_key: ProjectIdOrKey, repo_id_or_name: RepoIdOrName):
    """Get a Git repository: URLs, description, last push."""
    return api.get(repo_path(project_id_or_key, repo_id_or_name))


@tool("List pull requests", whole="git_pr_details_get")
def git_pr_list_get(project_id_or_key: ProjectIdOrKey, repo_id_or_name: RepoIdOrName,
                    status_ids: PrStatus = None, assignee_ids: Users = None,
                    issue_ids: IssueIds = None, created_user_ids: Users = None, offset: Offset = 0,
                    count: Count = 20,
                    fields: Fields = None):
    """List a repository's pull requests, newest first, with optional filters."""
    return api.get(repo_path(project_id_or_key, repo_id_or_name, "pullRequests"),
                   dict(pr_filters(status_ids, assignee_ids, issue_ids, created_user_ids),
                        offset=offset, count=count))


@tool("Count pull requests", extra=True)
def git_pr_count_get(project_id_or_key: ProjectIdOrKey, repo_id_or_name: RepoIdOrName,
                     status_ids: PrStatus = None, assignee_ids: Users = None,
                     issue_ids: IssueIds = None, created_user_ids: Users = None):
    """Count a repository's pull requests matching the filters."""
    return api.get(repo_path(project_id_or_key, repo_id_or_name, "pullRequests", "count"),
                   pr_filters(status_ids, assignee_ids, issue_ids, created_user_ids))


@tool("Get pull request", texts=True)
def git_pr_details_get(project_id_or_key: ProjectIdOrKey, repo_id_or_name: RepoIdOrName,
                       pr_number: PrNumber):
    """Get a pull request: branches, status, assignee, linked issue."""
    return api.get(repo_path(project_id_or_key, repo_id_or_name, "pullRequests", pr_number))


@tool("List pull request attachments", extra=True)
def git_pr_attachment_list_get(project_id_or_key: ProjectIdOrKey, repo_id_or_name: RepoIdOrName,
                               pr_number: PrNumber):
    """List a pull request's attachments."""
    return api.get(repo_path(project_id_or_key, repo_id_or_name, "pullRequests", pr_number,
                             "attachments"))


@tool("Download pull request attachment", file=True, extra=True)
def git_pr_attachment_download(project_id_or_key: ProjectIdOrKey, repo_id_or_name: RepoIdOrName,
                               pr_number: PrNumber, attachment_id: AttachmentId,
                               format: Format = None):
    """Download a pull request attachment as image, text or base64."""
    return download(repo_path(project_id_or_key, repo_id_or_name, "pullRequests", pr_number,
                              "attachments", attachment_id), format)


@tool("List pull request comments")
def git_pr_comment_list_get(project_id_or_key: ProjectIdOrKey, repo_id_or_name: RepoIdOrName,
                            pr_number: PrNumber, min_id: MinId = None, max_id: MaxId = None,
                            count: Count = 20, order: Order = None, fields: Fields = None):
    """List a pull request's comments (newest first unless order is asc)."""
    return api.get(repo_path(project_id_or_key, repo_id_or_name, "pullRequests", pr_number,
                             "comments"),
                   {"minId": min_id, "maxId": max_id, "count": count, "order": order})


@tool("Count pull request comments", extra=True)
def git_pr_comment_count_get(project_id_or_key: ProjectIdOrKey, repo_id_or_name: RepoIdOrName,
                             pr_number: PrNumber):
    """Count a pull request's comments."""
    return api.get(repo_path(project_id_or_key, repo_id_or_name, "pullRequests", pr_number,
                             "comments", "count"))


@tool("Add pull request", write="git")
def git_pr_add(project_id_or_key: ProjectIdOrKey, repo_id_or_name: RepoIdOrName,
               summary: Summary, description: Description,
               base: P("string", "Branch to merge into"), branch: P("string", "Branch to merge"),
               issue_id: IssueId.like(doc="Linked issue id") = None,
               assignee_id: UserId.like(doc="Assignee: id, userId or name", ident=None) = None,
               notified_user_ids: UserIds = None,
               attachment_ids: AttachmentIds = None):
    """Open a pull request from branch into base."""
    return api.post(repo_path(project_id_or_key, repo_id_or_name, "pullRequests"),
                    {"summary": summary, "description": description, "base": base,
                     "branch": branch, "issueId": issue_id, "assigneeId": assignee_id,
                     "notifiedUserId": notified_user_ids, "attachmentId": attachment_ids})


@tool("Update pull request", write="git", idempotent=True,
      destructive=overwrites("description"))
def git_pr_update(project_id_or_key: ProjectIdOrKey, repo_id_or_name: RepoIdOrName,
                  pr_number: PrNumber, summary: Summary = None, description: Description = None,
                  issue_id: IssueId.like(doc="Linked issue id") = None,
                  assignee_id: Assignee = None, notified_user_ids: UserIds = None,
                  comment: Content.like(doc="Comment to add with the change") = None,
                  attachment_ids: AttachmentIds = None):
    """Update a pull request's summary, description, linked issue or assignee."""
    if assignee_id is not None:
        assignee_id = names_to_ids({"assignee_id": assignee_id},
                                   lambda: project_id(project_id_or_key))["assignee_id"]
    form = {"summary": summary, "description": description, "issueId": issue_id,
            "assigneeId": assignee_id, "notifiedUserId": notified_user_ids or None,
            "comment": comment, "attachmentId": attachment_ids or None}
    if all(v is None for v in form.values()):
        raise ToolError("Nothing to update: give summary, description, issue_id, assignee_id "
                        "or comment.")
    return api.patch(repo_path(project_id_or_key, repo_id_or_name, "pullRequests", pr_number),
                     form)


@tool("Add pull request comment", write="git")
def git_pr_comment_add(project_id_or_key: ProjectIdOrKey, repo_id_or_name: RepoIdOrName,
                       pr_number: PrNumber, content: Content, notified_user_ids: UserIds = None):
    """Add a comment to a pull request."""
    return api.post(repo_path(project_id_or_key, repo_id_or_name, "pullRequests", pr_number,
                              "comments"),
                    {"content": content, "notifiedUserId": notified_user_ids})


@tool("Update pull request comment", write="git", idempotent=True, destructive=True)
def git_pr_comment_update(project_id_or_key: ProjectIdOrKey, repo_id_or_name: RepoIdOrName,
                          pr_number: PrNumber, comment_id: CommentId, content: Content):
    """Replace the text of a pull request comment."""
    return api.patch(repo_path(project_id_or_key, repo_id_or_name, "pullRequests", pr_number,
                               "comments", comment_id), {"content": content})


# == Tools: issues =============================================================

def issue_path(issue_id_or_key, *rest):
    return ("issues", issue_id_or_key) + rest


def listed(what, project=None):
    """A project's statuses, issue types, categories, versions or users (or, project None,
    the space's priorities or resolutions), fetched once and cached."""
    path = ("projects", str(project), what) if project is not None else what
    return CACHE.get((what, str(project)), lambda: rows(api.get(path), {"id": int}))


class Field:
    """A field of an issue that issue_add and issue_update take (and issue_bulk_update sets):
    its parameter; Backlog's form key; whether adding takes it (updating takes all); what
    sent empties it (None: it cannot be cleared); the list a name of it is looked up in:
    (list, label, lookup tool, name key, per project); and, for a bulk update's preview, the
    issue's own field that holds it and a short label."""

    def __init__(self, param, form, add=True, clear=None, names=None, holds=None, label=None):
        self.param, self.form, self.add, self.clear = param, form, add, clear
        self.names, self.holds, self.label = names, holds, label


ParentIssue = IssueId.like(doc="Parent issue id")
NameOrId = P("array", "", items=["integer", "string"])
STATUSES = ("statuses", "Status", "project_status_list_get", "name", True)
ISSUE_FIELDS = {  # in the order the tools list them
    "summary": Field(Summary, "summary", add=False),  # issue_add requires it: its signature
    "description": Field(Description, "description", clear=""),
    "status_id": Field(P("string", "Status name or id (project_status_list_get)"), "statusId",
                       add=False, names=STATUSES, holds="status", label="status"),
    "resolution_id": Field(P("string", "Resolution name or id"), "resolutionId", add=False,
                           clear="", names=("resolutions", "Resolution",
                                            "project_resolution_list_get", "name", False),
                           holds="resolution", label="resolution"),
    "assignee_id": Field(Assignee, "assigneeId", clear="",
                         names=("users", "User", "project_user_list_get", "userId", True),
                         holds="assignee", label="assignee"),
    "priority_id": Field(P("string", "Priority name or id"), "priorityId", add=False,
                         names=("priorities", "Priority", "issue_priority_list_get", "name",
                                False), holds="priority", label="priority"),
    "issue_type_id": Field(P("string", "Issue type name or id"), "issueTypeId", add=False,
                           names=("issueTypes", "Issue type", "project_issue_type_list_get",
                                  "name", True), holds="issueType", label="type"),
    "start_date": Field(Date, "startDate", clear="", holds="startDate", label="start date"),
    "due_date": Field(Date, "dueDate", clear="", holds="dueDate", label="due date"),
    "estimated_hours": Field(Hours, "estimatedHours", clear="", holds="estimatedHours",
                             label="estimate"),
    "actual_hours": Field(Hours, "actualHours", clear="", holds="actualHours",
                          label="actual hours"),
    "category_ids": Field(NameOrId.like(doc="Category names or ids (project_category_list_get)"),
                          "categoryId", clear=[], holds="category", label="category",
                          names=("categories", "Category", "project_category_list_get", "name",
                                 True)),
    "milestone_ids": Field(NameOrId.like(doc="Milestone names or ids (issue_milestone_list_get)"),
                           "milestoneId", clear=[], holds="milestone",
                           names=("versions", "Milestone", "issue_milestone_list_get", "name",
                                  True),
                           label="milestone"),
    "version_ids": Field(NameOrId.like(
        doc="Affected version names or ids (same list as milestones)"), "versionId", clear=[],
        names=("versions", "Version", "issue_milestone_list_get", "name", True),
        holds="versions", label="version"),
    "parent_issue_id": Field(ParentIssue, "parentIssueId", clear="", holds="parentIssueId",
                             label="parent"),
    "custom_fields": Field(CustomFields, None, holds="customFields", label="custom field"),
    "comment": Field(Content.like(doc="Comment to add with the change"), "comment", add=False),
    "notified_user_ids": Field(UserIds, "notifiedUserId"),  # [] sent would notify no one
    "attachment_ids": Field(AttachmentIds, "attachmentId"),
}
NAMED = {n: f.names for n, f in ISSUE_FIELDS.items() if f.names}  # names made ids
CLEARABLE = {n: f.clear == [] for n, f in ISSUE_FIELDS.items() if f.clear is not None}
ADD_FIELDS = {n: f.param for n, f in ISSUE_FIELDS.items() if f.add}
UPDATE_FIELDS = dict({n: f.param for n, f in ISSUE_FIELDS.items()}, clear=P(
    "array", "Fields to empty, e.g. assignee_id to unassign; a custom field: custom_fields "
             "{name: null}", items="string", enum=list(CLEARABLE)))


def names_to_ids(a, project):
    """The form arguments of NAMED with names replaced by ids (`project` gives the per-project
    lists; a callable is called only when a name needs it)."""
    for field, (what, label, lookup, key, per_project) in NAMED.items():
        value = a.get(field)
        if value in (None, "", []):
            continue
        values = value if isinstance(value, list) else [value]
        if all(isinstance(v, int) or DIGITS.match(str(v)) for v in values):
            ids = [int(v) for v in values]
        else:
            owner = (project() if callable(project) else project) if per_project else None
            ids = resolve(values, lambda: listed(what, owner), label, lookup, key=key)
        a[field] = ids if isinstance(value, list) else ids[0]
    return a


def issue_filters(a):
    """Backlog's issue-list filters from our snake_case arguments, names resolved to ids."""
    projects = [project_id(p) for p in a.get("project_ids") or []]
    if restricted() and not projects:
        projects = sorted(allowed_ids())
    one = str(projects[0]) if len(projects) == 1 else None

    def per_project(what, lookup):
        def choices():
            if one is None:
                raise ToolError(f"Names in {what} need exactly one project in project_ids.",
                                f"pass ids (see {lookup}).")
            return listed(what, one)
        return choices

    def space(what):
        return lambda: listed(what)

    filters = {
        "projectId": projects or None,
        "issueTypeId": resolve(a.get("issue_type_ids"), per_project(
            "issueTypes", "project_issue_type_list_get"), "Issue type",
            "project_issue_type_list_get"),
        "categoryId": resolve(a.get("category_ids"), per_project(
            "categories", "project_category_list_get"), "Category", "project_category_list_get"),
        "versionId": resolve(a.get("version_ids"), per_project(
            "versions", "issue_milestone_list_get"), "Version", "issue_milestone_list_get"),
        "milestoneId": resolve(a.get("milestone_ids"), per_project(
            "versions", "issue_milestone_list_get"), "Milestone", "issue_milestone_list_get"),
        "statusId": resolve(a.get("status_ids"), per_project(
            "statuses", "project_status_list_get"), "Status", "project_status_list_get"),
        "priorityId": resolve(a.get("priority_ids"), space("priorities"), "Priority",
                              "issue_priority_list_get"),
        "assigneeId": a.get("assignee_ids"),
        "createdUserId": a.get("created_user_ids"),
        "resolutionId": resolve(a.get("resolution_ids"), space("resolutions"), "Resolution",
                                "project_resolution_list_get"),
        "parentIssueId": a.get("parent_issue_ids"),
        "id": a.get("ids"),
        "parentChild": a.get("parent_child"),
        "keyword": a.get("keyword"),
        "attachment": a.get("attachment"),
        "sharedFile": a.get("shared_file"),
        "hasDueDate": a.get("has_due_date"),
    }
    for name in ("created", "updated", "start_date", "due_date"):
        camel = re.sub(r"_(\w)", lambda m: m.group(1).upper(), name)
        filters[camel + "Since"] = a.get(name + "_since")
        filters[camel + "Until"] = a.get(name + "_until")
    pairs = encode(filters)
    if a.get("custom_fields"):
        if one is None:
            raise ToolError("custom_fields filters need exactly one project in project_ids.")
        pairs += custom_field_filters(one, a["custom_fields"])
    return pairs


def custom_field_filters(project, values):
    """Issue-list filters: text keyword, {min,max} for numbers and dates, items for lists."""
    pairs = []
    for key, value in values.items():
        field = find_field(project, key)
        name = f"customField_{field['id']}"
        kind = FIELD_KINDS.get(_int(field.get("typeId")))
        if kind is not None and kind.filter == "range":
            if not isinstance(value, dict) or not set(value) <= {"min", "max"}:
                raise ToolError(f"Filter on {quoted(field['name'], 60)} takes "
                                '{"min": .., "max": ..}.')
            pairs += [(f"{name}_{k}", str(v)) for k, v in value.items() if v is not None]
        elif kind is not None and kind.filter == "text":
            pairs.append((name, str(value)))
        else:
            items = value if isinstance(value, list) else [value]
            pairs += indexed(name, [item_id(field, item) for item in items])
    return pairs


IssueSort = P("string", "Sort by", enum=[
    "issueType", "category", "version", "milestone", "summary", "status", "priority",
    "attachment", "sharedFile", "created", "createdUser", "updated", "updatedUser", "assignee",
    "startDate", "dueDate", "estimatedHours", "actualHours", "childIssue"])
ParentChild = P("integer", "0 all, 1 not child, 2 child, 3 neither, 4 parent", minimum=0,
                maximum=4)
FieldFilters = P("object", '{field: text, items or {"min","max"}}')


ISSUE_FILTERS = {  # issue_list_get and issue_count_get; each optional
    "project_ids": P("array", "Project keys or ids", items=["integer", "string"],
                     owner="project"),
    "issue_type_ids": NamesOrIds, "category_ids": NamesOrIds, "version_ids": NamesOrIds,
    "milestone_ids": NamesOrIds, "status_ids": NamesOrIds, "priority_ids": NamesOrIds,
    "assignee_ids": Users, "created_user_ids": Users, "resolution_ids": NamesOrIds,
    "parent_issue_ids": IssueIds, "ids": IssueIds, "parent_child": ParentChild,
    "keyword": Keyword,
    "attachment": P("boolean", "Only issues with attachments"),
    "shared_file": P("boolean", "Only issues with shared files"),
    "has_due_date": P("boolean", "Only issues with a due date"),
    "created_since": Date, "created_until": Date, "updated_since": Date, "updated_until": Date,
    "start_date_since": Date, "start_date_until": Date, "due_date_since": Date,
    "due_date_until": Date, "custom_fields": FieldFilters,
}


@tool("Search issues", whole="issue_details_get")
def issue_list_get(sort: IssueSort = None, order: Order = None, offset: Offset = 0,
                   count: Count = 20, fields: Fields = None,
                   total: P("boolean", "Also count every match") = None,
                   **filters: ISSUE_FILTERS):
    """Search issues with any of Backlog's filters; names work where one project is given."""
    query = issue_filters(filters)
    issues = issue_view(api.get("issues", query + encode(
        {"sort": sort, "order": order, "offset": offset, "count": count})))
    if total and isinstance(issues, list):
        issues.total = checked(api.get(("issues", "count"), query), {"count": int})["count"]
    return issues


@tool("Count issues", extra=True)
def issue_count_get(**filters: ISSUE_FILTERS):
    """Count issues matching the same filters as issue_list_get."""
    return api.get(("issues", "count"), issue_filters(filters))


@tool("Get issue", texts=True)
def issue_details_get(issue_id_or_key: IssueArg,
                      child_summary: P("boolean", "Add childIssueSummary {total, closed}")
                      = None):
    """Get an issue: status, assignee, dates, custom fields, attachments."""
    return issue_view(api.get(("issues", issue_id_or_key),
                              {"expand": ["childIssueSummary"] if child_summary else None}))


@tool("List milestones", pages=("name",))
def issue_milestone_list_get(project_id_or_key: ProjectIdOrKey,
                             archived: P("boolean", "Also the archived ones") = False):
    """List a project's milestones (versions) with their dates; archived ones when asked."""
    items = rows(api.get(("projects", project_id_or_key, "versions")), {})
    return items if archived else [m for m in items if not m.get("archived")]


@tool("List issues of a milestone", whole="issue_details_get")
def issue_list_by_milestone_get(project_id_or_key: ProjectIdOrKey,
                                milestone_name: P("string", "Name; case and spaces ignored"),
                                status_ids: Ids = None, offset: Offset = 0,
                                count: P("integer", "Page size 1-100", minimum=1,
                                         maximum=100) = 100,
                                fields: Fields = None):
    """List the issues of a milestone, found by name."""
    milestone = find_milestone(project_id_or_key, milestone_name)
    return issue_view(api.get("issues", {"projectId": [milestone["projectId"]],
                                         "milestoneId": [milestone["id"]],
                                         "statusId": status_ids, "offset": offset,
                                         "count": count}))


@tool("List issue comments", whole="issue_comment_details_get")
def issue_comment_list_get(issue_id_or_key: IssueIdOrKey, min_id: MinId = None,
                           max_id: MaxId = None, count: Count = 20, order: Order = None,
                           fields: Fields = None):
    """List an issue's comments (newest first unless order is asc)."""
    return api.get(issue_path(issue_id_or_key, "comments"),
                   {"minId": min_id, "maxId": max_id, "count": count, "order": order})


@tool("Get issue comment", texts=True)
def issue_comment_details_get(issue_id_or_key: IssueIdOrKey, comment_id: CommentId):
    """Get one comment of an issue, with its change log."""
    return api.get(issue_path(issue_id_or_key, "comments", comment_id))


@tool("Count issue comments", extra=True)
def issue_comment_count_get(issue_id_or_key: IssueIdOrKey):
    """Count an issue's comments."""
    return api.get(issue_path(issue_id_or_key, "comments", "count"))


@tool("List comment notifications", extra=True)
def issue_comment_notification_list_get(issue_id_or_key: IssueIdOrKey, comment_id: CommentId):
    """List who was notified of an issue comment."""
    return api.get(issue_path(issue_id_or_key, "comments", comment_id, "notifications"))


@tool("List issue attachments")
def issue_attachment_list_get(issue_id_or_key: IssueIdOrKey):
    """List an issue's attachments: ids, names, sizes."""
    return api.get(issue_path(issue_id_or_key, "attachments"))


@tool("Download issue attachment", file=True)
def issue_attachment_download(issue_id_or_key: IssueIdOrKey, attachment_id: AttachmentId,
                              format: Format = None):
    """Download an issue attachment as image, text or base64."""
    return download(issue_path(issue_id_or_key, "attachments", attachment_id), format)


def open_beneath(real, roots, flags):
    """A descriptor of `real`, a path under one of `roots`: where the system opens relative to
    a folder's descriptor, each folder on the way is opened without following a symlink, so
    a folder swapped for one at any moment cannot lead outside; elsewhere the path itself
    (open_upload then compares the file opened with the one the path names)."""
    root = next(r for r in roots if os.path.commonpath([real, r]) == r)
    parts = [p for p in os.path.relpath(real, root).split(os.sep) if p not in ("", ".")]
    if os.open not in os.supports_dir_fd or not parts:
        return os.open(real, flags)
    folder = os.open(root, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        for part in parts[:-1]:
            inner = os.open(part, os.O_RDONLY | os.O_NOFOLLOW | getattr(os, "O_DIRECTORY", 0),
                            dir_fd=folder)
            os.close(folder)
            folder = inner
        return os.open(parts[-1], flags, dir_fd=folder)
    finally:
        os.close(folder)


def open_upload(file_path):
    """The bytes and the name of a file the model may upload. The file is opened without
    following a last symlink and without blocking (a FIFO cannot hang the server), then
    accepted only if the descriptor is a regular file and is the very file that its real
    path, under one of BACKLOG_UPLOAD_DIRS, names now: a folder swapped for a symlink between
    the check and the open is caught. Every refusal has the same words, so that calls cannot
    map what lies outside the folders."""
    import stat
    roots = settings().upload_dirs
    refused = ToolError(f"Cannot upload '{clip(file_path, 200)}': not a readable file under "
                        f"BACKLOG_UPLOAD_DIRS ({os.pathsep.join(roots)}).",
                        f"give a path "
                        "inside one of those folders (relative paths start in the first).")

    def inside(path):
        real = os.path.realpath(path)
        return real if any(os.path.commonpath([real, root]) == root for root in roots) \
            else None

    flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0) \
        | getattr(os, "O_BINARY", 0)
    try:
        path = os.path.join(roots[0], os.path.expanduser(file_path))
        real = inside(path)
        if real is None:
            raise refused
        fd = open_beneath(real, roots, flags)
    except (ValueError, OSError):  # a NUL byte, another drive, a link, no permission, gone
        raise refused from None
    try:
        opened, now = os.fstat(fd), os.stat(inside(path) or "\0")
        if not stat.S_ISREG(opened.st_mode) \
                or (opened.st_dev, opened.st_ino) != (now.st_dev, now.st_ino):
            raise refused
        if opened.st_size > MAX_UPLOAD:
            raise ToolError(f"'{clip(file_path, 200)}' is {opened.st_size} bytes, over the upload "
                            f"limit of {MAX_UPLOAD}.")
        with os.fdopen(os.dup(fd), "rb") as fh:
            data = fh.read(MAX_UPLOAD + 1)
    except (ValueError, OSError):
        raise refused from None
    finally:
        os.close(fd)
    if len(data) > MAX_UPLOAD:
        raise ToolError(f"'{clip(file_path, 200)}' is over the upload limit of {MAX_UPLOAD} bytes.")
    return data, os.path.basename(file_path.replace("\\", "/").rstrip("/")) or "file"


@tool("Upload attachment", write="issue", requires="upload_dirs")
def issue_attachment_upload(file_path: P("string", "Path of a local file under "
                                                   "BACKLOG_UPLOAD_DIRS")):
    """Upload a local file; pass its id in attachment_ids of issue_add/update/comment_add."""
    data, name = open_upload(file_path)
    return api.upload(("space", "attachment"), name, data)


@tool("Delete issue attachment", write="issue", destructive=True, idempotent=True)
def issue_attachment_delete(issue_id_or_key: IssueIdOrKey, attachment_id: AttachmentId):
    """Delete an attachment from an issue; returns it."""
    return api.delete(issue_path(issue_id_or_key, "attachments", attachment_id))


@tool("List issue shared files")
def issue_shared_file_list_get(issue_id_or_key: IssueIdOrKey):
    """List the shared files linked to an issue."""
    return api.get(issue_path(issue_id_or_key, "sharedFiles"))


@tool("Link shared files to issue", write="issue", idempotent=True, extra=True)
def issue_shared_file_link(issue_id_or_key: IssueIdOrKey, file_ids: SharedFileIds):
    """Link shared files of the issue's project to the issue."""
    return api.post(issue_path(issue_id_or_key, "sharedFiles"), {"fileId": file_ids})


@tool("Unlink shared file from issue", write="issue", destructive=True, idempotent=True,
      extra=True)
def issue_shared_file_unlink(issue_id_or_key: IssueIdOrKey, shared_file_id: SharedFileId):
    """Unlink a shared file from an issue (the file stays)."""
    return api.delete(issue_path(issue_id_or_key, "sharedFiles", shared_file_id))


@tool("List issue participants", pages=PEOPLE, extra=True)
def issue_participant_list_get(issue_id_or_key: IssueIdOrKey):
    """List the users who took part in an issue."""
    return api.get(issue_path(issue_id_or_key, "participants"))


@tool("List priorities")
def issue_priority_list_get():
    """List the space's issue priorities (High, Normal, Low) with ids."""
    return api.get("priorities")


@tool("List related issues", whole="issue_details_get")
def issue_related_list_get(issue_id_or_key: IssueIdOrKey):
    """List the issues related to an issue."""
    return issue_view(api.get(issue_path(issue_id_or_key, "relatedIssues")))


def issue_form(a, project):
    """The add/update form from our arguments: omitted stays unchanged, empty clears; a list
    that cannot be cleared (the users to notify, the attachments) is not sent empty."""
    pairs = []
    for name, field in ISSUE_FIELDS.items():
        value = a.get(name)
        if field.clear is None and isinstance(value, list) and not value:
            value = None
        if field.form and value is not None:
            pairs.append((field.form, value))
    if a.get("custom_fields"):
        pairs += custom_field_params(project, a["custom_fields"])
    return pairs


@tool("Add issue", write="issue")
def issue_add(project_id_or_key: ProjectIdOrKey, summary: Summary,
              issue_type_id: P("string", "Issue type name or id (project_issue_type_list_get)"),
              priority_id: P("string", "Priority name or id; default Normal") = None,
              **fields: ADD_FIELDS):
    """Create an issue in a project, with custom fields by name."""
    a = dict(fields, summary=summary, issue_type_id=issue_type_id, priority_id=priority_id)
    project = project_id(project_id_or_key)
    if priority_id is None:
        a["priority_id"] = next((p["id"] for p in listed("priorities")
                                 if p.get("name") in ("Normal", "中")), 3)
    pairs = [("projectId", project)] + issue_form(names_to_ids(a, project), project)
    return issue_view(api.post("issues", pairs))


@tool("Update issue", write="issue", idempotent=True,
      destructive=overwrites("description", "clear"))
def issue_update(issue_id_or_key: IssueIdOrKey, **fields: UPDATE_FIELDS):
    """Update an issue; omitted fields stay, an empty list clears that field."""
    a = dict(fields)
    for name in fields.get("clear") or ():
        if a.get(name) not in (None, []):
            raise ToolError(f"'{name}' is both set and in clear: give one of them.")
        a[name] = ISSUE_FIELDS[name].clear  # Backlog empties a field sent empty
    if all(v is None for k, v in a.items() if k not in ("notified_user_ids", "clear")):
        raise ToolError("Nothing to update: give at least one field such as summary, status_id "
                        "or custom_fields.")
    issue = None

    def project():  # the issue's project, fetched only when a name or custom field needs it
        nonlocal issue
        issue = issue or checked(api.get(("issues", issue_id_or_key)), {"projectId": int})
        return issue["projectId"]
    form = issue_form(names_to_ids(a, project), project() if a.get("custom_fields") else None)
    return issue_view(api.patch(("issues", issue_id_or_key), form))


@tool("Delete issue", write="issue", destructive=True, idempotent=True)
def issue_delete(issue_id_or_key: IssueIdOrKey):
    """Delete an issue and its comments for good; returns the deleted issue."""
    return issue_view(api.delete(issue_path(issue_id_or_key)))


@tool("Add issue comment", write="issue")
def issue_comment_add(issue_id_or_key: IssueIdOrKey, content: Content,
                      notified_user_ids: UserIds = None, attachment_ids: AttachmentIds = None):
    """Add a comment to an issue."""
    return api.post(issue_path(issue_id_or_key, "comments"),
                    {"content": content, "notifiedUserId": notified_user_ids,
                     "attachmentId": attachment_ids})


@tool("Update issue comment", write="issue", idempotent=True, destructive=True)
def issue_comment_update(issue_id_or_key: IssueIdOrKey, comment_id: CommentId, content: Content):
    """Replace the text of an issue comment (only its author may)."""
    return api.patch(issue_path(issue_id_or_key, "comments", comment_id), {"content": content})


@tool("Delete issue comment", write="issue", destructive=True, idempotent=True)
def issue_comment_delete(issue_id_or_key: IssueIdOrKey, comment_id: CommentId):
    """Delete an issue comment (its author only); returns it."""
    return api.delete(issue_path(issue_id_or_key, "comments", comment_id))


@tool("Notify about comment", write="issue", extra=True)
def issue_comment_notify(issue_id_or_key: IssueIdOrKey, comment_id: CommentId,
                         notified_user_ids: P("array", "Users to notify", items="integer")):
    """Notify users of an existing comment (only its author may)."""
    return api.post(issue_path(issue_id_or_key, "comments", comment_id, "notifications"),
                    {"notifiedUserId": notified_user_ids})


@tool("Relate issues", write="issue", idempotent=True)
def issue_related_add(issue_id_or_key: IssueIdOrKey,
                      target_issue_id: IssueId.like(doc="Id of the issue to relate")):
    """Mark another issue as related to this one."""
    return api.post(("issues", issue_id_or_key, "relatedIssues"),
                    {"targetIssueId": target_issue_id})


@tool("Unrelate issues", write="issue", destructive=True, idempotent=True)
def issue_related_delete(issue_id_or_key: IssueIdOrKey,
                         related_issue_id: IssueId.like(doc="Id of the related issue")):
    """Remove the relation between two issues."""
    return api.delete(("issues", issue_id_or_key, "relatedIssues", related_issue_id))


Note = P("string", "Note")


@tool("Watch issue", write="issue")
def issue_watching_add(issue_id_or_key: IssueIdOrKey, note: Note = None):
    """Start watching an issue."""
    return api.post("watchings", {"issueIdOrKey": issue_id_or_key, "note": note})


@tool("Get watching", extra=True)
def issue_watching_details_get(watching_id: WatchingId):
    """Get a watching: its issue, note and read state."""
    return api.get(("watchings", watching_id))


@tool("Update watching", write="issue", idempotent=True, destructive=True, extra=True)
def issue_watching_update(watching_id: WatchingId, note: Note):
    """Change the note of a watching."""
    return api.patch(("watchings", watching_id), {"note": note})


@tool("Stop watching", write="issue", destructive=True, idempotent=True)
def issue_watching_delete(watching_id: WatchingId):
    """Stop watching: delete a watching."""
    return api.delete(("watchings", watching_id))


@tool("Mark watching read", write="issue", idempotent=True, extra=True)
def issue_watching_mark_read(watching_id: WatchingId):
    """Mark a watched issue as read."""
    api.post(("watchings", watching_id, "markAsRead"))
    return f"Watching {watching_id} marked as read."


# == Bulk changes ==============================================================
# Many issues changed or made in one call, as a project manager asks for them ("move every open
# bug of Sprint 12 to Sprint 13"): one preview (dry_run), one question for the whole batch,
# then one request at a time, paced within Backlog's rate limits, and a receipt per item with
# the call that retries what is left. Every item goes through the pipeline of a single call
# (run_tool: the allow-list, the arguments, the names; render: the project's text format), so
# an item the settings forbid is refused on its own and the batch goes on. Items already as
# asked are skipped: the same call run again changes nothing more.

BULK_MAX = 100        # items in one call
BULK_GAP = 1.0        # seconds between two writes (Nulab: one request at a time, >= 1 s apart)
BULK_MAX_WAIT = 65.0  # seconds waited for the rate limit to reset (Backlog's is per minute)
BULK_FIELDS = {n: (f.holds, f.label) for n, f in ISSUE_FIELDS.items() if f.holds}
# ^ the fields a bulk update sets: (the issue's field that holds it, a label for the preview)
PLAN = contextvars.ContextVar("bulk plan", default=None)  # (its key, plan), for one request
CLIENT = contextvars.ContextVar("client", default=None)  # the Session a request came in
BULK_TIME = 300.0  # seconds a batch may take in all; what is left then is for the retry call


class NotSent(ToolError):
    """An item of a batch that was not sent (the rate limit's wait is too long, the batch's
    time is up, the client cancelled): it goes to "not run", with the retry call."""


class Pacer:
    """One write at a time, at least BULK_GAP apart; when the last answer said the key has no
    request left in its class, wait for the reset (at most BULK_MAX_WAIT); after a 429, wait
    what it says and try once more."""

    def __init__(self):
        self.last, self.waited, self.this = 0.0, 0.0, 0.0
        self.until = time.monotonic() + BULK_TIME

    def attend(self):
        """Between writes and while waiting: a ping is answered; a cancellation of this call
        stops it."""
        client = CLIENT.get()
        if client is not None and client.meanwhile():
            raise NotSent("The client cancelled the call.", "nothing more was sent.")

    def wait(self, seconds, why):
        if self.this + seconds > BULK_MAX_WAIT:  # the waits for one write, in all
            raise NotSent(f"Backlog's rate limit would make this write wait {seconds:,.0f} s.",
                          "run the retry call later"
                          + (" (in a minute or two)." if seconds < 600 else "."))
        if time.monotonic() + seconds > self.until:
            raise NotSent(f"The batch used its {BULK_TIME:.0f} s.", "run the retry call.")
        if seconds > 0:
            Progress.step(f"waiting {seconds:.1f} s for {why}")
            end = time.monotonic() + seconds
            while time.monotonic() < end:
                self.attend()
                time.sleep(min(0.1, max(0.0, end - time.monotonic())))
            self.waited += seconds
            self.this += seconds

    def before(self):
        rate = api.rate
        if rate.get("remaining", 1) <= 0 and "reset" in rate:
            self.wait(rate["reset"] - time.time(), "Backlog's rate limit to reset")
        self.wait(self.last + BULK_GAP - time.monotonic(), "the next write")

    def write(self, run):
        """run() once, paced; a 429 is waited out and run() tried once more."""
        self.this = 0.0
        self.attend()
        for attempt in (0, 1):
            self.before()
            try:
                return run()
            except BacklogError as exc:
                if exc.status != 429 or attempt:
                    raise
                rate = api.rate
                self.wait(rate.get("retry", rate.get("reset", time.time() + 1) - time.time()),
                          "Backlog's rate limit (HTTP 429)")
            finally:
                self.last = time.monotonic()


def holding(issue, field):
    """(value to compare, words) of what an issue holds in a field a bulk update sets."""
    value = issue.get(BULK_FIELDS[field][0])
    if isinstance(value, list):
        value = [v for v in value if isinstance(v, dict)]
        return sorted(v.get("id") for v in value), ", ".join(
            str(v.get("name")) for v in value) or "none"
    if isinstance(value, dict):
        return value.get("id"), str(value.get("name") or value.get("userId") or value.get("id"))
    if isinstance(value, str) and field.endswith("date"):
        value = value[:10]
    return value, "none" if value in (None, "") else str(value)


def named_ids(field, ids, project):
    """The names of ids of a NAMED field, as its project lists them."""
    what, _, _, key, per_project = NAMED[field]
    found = {item["id"]: item.get("name") or item.get(key) for item in
             listed(what, project if per_project else None)}
    return ", ".join(str(found.get(i, i)) for i in ids) or "none"


def diff(issue, changes):
    """([(label, before, after)] of the changes an issue does not hold yet, the changes with
    its project's names made ids), or a ToolError for a name its project does not have."""
    project = issue.get("projectId")
    wanted = names_to_ids(dict(changes), project)
    return changed(issue, wanted, project), wanted


def changed(issue, wanted, project):
    out = []
    for field, value in wanted.items():
        if field not in BULK_FIELDS:
            continue
        if field == "custom_fields":
            for name, target in value.items():
                now = (issue.get("customFields") or {}).get(name) or {}
                before = now.get("value") if isinstance(now, dict) else None
                if not loosely_equal(before, target):
                    out.append((f"{name}", shown_value(before), shown_value(target)))
            continue
        before, words = holding(issue, field)
        after = value if not isinstance(value, list) else sorted(value)
        if before == after or (after in ("", []) and before in (None, "", [])):
            continue
        label = BULK_FIELDS[field][1]
        target = (named_ids(field, after if isinstance(after, list) else [after], project)
                  if field in NAMED and after not in ("", []) else shown_value(after))
        out.append((label, words, target))
    return out


def loosely_equal(before, target):
    """Does a custom field hold the target already (given by name, id or value)?"""
    def words(value):
        items = value if isinstance(value, list) else [value]
        out = set()
        for item in items:
            if isinstance(item, dict):
                out |= {str(item.get("id")), str(item.get("name"))}
            elif item not in (None, ""):
                out.add(str(item))
        return out
    wanted = words(target)
    return wanted <= words(before) and len(target if isinstance(target, list) else [target]) \
        == len(before if isinstance(before, list) else [before])


def shown_value(value):
    if value in (None, "", []):
        return "none"
    if isinstance(value, list):
        return ", ".join(shown_value(v) for v in value)
    if isinstance(value, dict):
        return str(value.get("name") or value.get("id"))
    return str(value)


def bulk_changes(args):
    """The changes a bulk update asks for, as issue_update takes them (clear made empty)."""
    changes = {k: v for k, v in args.items() if k in BULK_FIELDS and v is not None}
    for name in args.get("clear") or ():
        if changes.get(name) not in (None, []):
            raise ToolError(f"'{name}' is both set and in clear: give one of them.")
        changes[name] = ISSUE_FIELDS[name].clear
    return changes


def planned(make):
    """A batch's plan, made once per request from the batch's arguments (not dry_run or
    on_error): the question and the run that follows it share it, so what runs is what was
    asked."""
    def plan(args):
        key = (make.__name__, here().name, json.dumps(
            {k: v for k, v in args.items() if v is not None and k not in ("dry_run",
                                                                           "on_error")},
            sort_keys=True, ensure_ascii=False, default=str))
        kept = PLAN.get()
        if kept is not None and kept[0] == key:
            return kept[1]
        made = make(args)
        PLAN.set((key, made))
        return made
    return plan


def plan_digest(tool_):
    """The digest of the plan a batch's question was just made from (None for other tools):
    a 2026-07-28 confirmation is bound to it, so a batch that changed is asked again."""
    import hashlib
    kept = PLAN.get() if tool_.asks is not None else None
    return None if kept is None else hashlib.sha256(json.dumps(
        kept[1], sort_keys=True, ensure_ascii=False, default=str).encode(
        "utf-8", "surrogatepass")).hexdigest()


@planned
def bulk_plan(args):
    """The items of a bulk update: [{issue, key, changes: [(label, before, after)]} or
    {issue, why}], read through the pipeline (an issue outside the allow-list is refused
    there, on its own)."""
    if (args.get("issues") is None) == (args.get("where") is None):
        raise ToolError("Give the issues either as a list (issues) or as filters (where).")
    changes = bulk_changes(args)
    if not changes and not args.get("comment"):
        raise ToolError("Nothing to change: give at least one field, clear or a comment.")
    if args.get("where") is not None:
        where = dict(args["where"])
        count = checked(run_tool(TOOLS["issue_count_get"], where)[1], {"count": int})["count"]
        if count > BULK_MAX:
            raise ToolError(f"{count} issues match; one call changes at most {BULK_MAX}.",
                            "narrow `where` (a milestone, a status, an assignee) or change "
                            "them in parts.")
        found = run_tool(TOOLS["issue_list_get"], dict(where, count=BULK_MAX))[1]
        issues = [(i.get("issueKey"), i) for i in rows(found, {})]
    else:
        issues = []
        for n, given in enumerate(args["issues"], 1):
            Progress.step(f"reading {given}", total=len(args["issues"]))
            try:
                issues.append((given, checked(run_tool(TOOLS["issue_details_get"], {
                    "issue_id_or_key": given})[1], {})))
            except ToolError as exc:
                issues.append((given, exc))
    plan = []
    for given, issue in issues:
        if isinstance(issue, ToolError):
            plan.append({"issue": str(given), "why": redact(issue)})
            continue
        key = issue.get("issueKey") or str(given)
        try:
            admit(TOOLS["issue_update"], {"issue_id_or_key": key})  # may it be written?
            found, wanted = diff(issue, changes)
        except ToolError as exc:
            plan.append({"issue": key, "why": redact(exc)})
            continue
        plan.append({"issue": key, "set": wanted, "changes": found if (found or changes)
                     else [("comment", "", "added")]})
    return plan


def line_of(item):
    """'DEMO-12: status Open → In Progress; milestone Sprint 12 → Sprint 13'."""
    return f"{item['issue']}: " + "; ".join(
        f"{label} {before} → {after}" if before else f"{label} {after}"
        for label, before, after in item["changes"])


def bulk_question(args):
    """The one question for a whole batch: how many, which, what changes, what will not."""
    plan = bulk_plan(args)
    doing = [i for i in plan if i.get("changes")]
    what = sorted({f"{one_line(label, 40)} → {quoted(after, 40)}" for i in doing
                   for label, _, after in i["changes"]})
    keys = [i["issue"] for i in doing]
    rest = [f"{n} already so" for n in [sum(1 for i in plan if i.get("changes") == [])] if n] \
        + [f"{n} refused" for n in [sum(1 for i in plan if "why" in i)] if n]
    return (f"Update {len(doing)} issues ({', '.join(keys[:5])}"
            f"{f' and {len(keys) - 5} more' if len(keys) > 5 else ''}): "
            f"{'; '.join(what[:8]) or 'a comment'}"
            f"{'; ' + ', '.join(rest) if rest else ''}? Fields are overwritten.")


BulkWhere = P("object", "issue_list_get's filters, e.g. {project_ids: [DEMO], milestone_ids: "
                        "[Sprint 12], status_ids: [Open]}")
DryRun = P("boolean", "Only show what would change (default when you cannot be asked)")
OnError = P("string", "On a failed item: stop (default) or continue", enum=["stop", "continue"])


def bulk_update_params():
    """issue_update's fields that a bulk update sets, described once, where they are."""
    update = TOOLS["issue_update"].params
    fields = {n: update[n] for n in BULK_FIELDS}
    fields.update(comment=update["comment"].like(text=False),  # rendered per item's project
                  notified_user_ids=update["notified_user_ids"],
                  clear=update["clear"])
    return fields


@tool("Update many issues", write="issue", destructive=lambda a: not a.get("dry_run"),
      idempotent=True, extra=True, asks=bulk_question)
def issue_bulk_update(issues: P("array", "Issue keys or ids (at most 100)", items="string",
                                ident="issue") = None,
                      where: BulkWhere = None, dry_run: DryRun = None,
                      on_error: OnError = "stop", **fields: bulk_update_params()):
    """Change up to 100 issues at once: a preview, one confirmation, paced writes, a
    receipt."""
    args = dict(fields, issues=issues, where=where)
    with answering():  # what reading the issues says of itself is not this answer's
        plan = bulk_plan(args)
    call = {"name": "issue_bulk_update", "arguments": {k: v for k, v in dict(
        args, dry_run=False, on_error=on_error if on_error != "stop" else None).items()
        if v is not None}}
    if dry_run:
        return {"would change": [line_of(i) for i in plan if i.get("changes")],
                "unchanged": [i["issue"] for i in plan if i.get("changes") == []],
                "refused": [{"issue": i["issue"], "why": i["why"]} for i in plan if "why" in i],
                "apply": call}
    extra = {k: fields.get(k) for k in ("comment", "notified_user_ids") if fields.get(k)}
    return run_batch(plan, TOOLS["issue_update"], on_error, lambda item: dict(
        as_update(item["set"]), issue_id_or_key=item["issue"], **extra), lambda left: dict(
        call, arguments=dict(call["arguments"], issues=[i["issue"] for i in left], where=None)))


def as_update(values):
    """Changes as issue_update takes them: what is emptied, in its clear."""
    gone = [k for k, v in values.items() if v in ("", []) and k in CLEARABLE]
    kept = {k: v for k, v in values.items() if k not in gone}
    return dict(kept, clear=gone) if gone else kept


@planned
def bulk_add_plan(args):
    """The items of a bulk add: each checked as issue_add would check it (its arguments, the
    allow-list, its names), and one the project already has (the same summary, among the
    latest issues you made there) skipped."""
    project = args["project_id_or_key"]
    me = checked(api.get(("users", "myself")), {"id": int})["id"]
    mine = run_tool(TOOLS["issue_list_get"], {
        "project_ids": [project], "created_user_ids": [str(me)], "sort": "created",
        "count": BULK_MAX, "fields": ["issueKey", "summary"]})[1]
    made = {i["summary"]: i.get("issueKey") for i in rows(mine, {})
            if isinstance(i.get("summary"), str)}
    plan = []
    for n, given in enumerate(args["issues"], 1):
        label = f"#{n} {clip(str(given.get('summary')), 60)}"
        if any(TOOLS["issue_add"].named(k) == "project_id_or_key" for k in given):
            plan.append({"issue": label, "why": f"An item names no project: every item goes "
                                                f"to {project} (project_id_or_key)."})
            continue
        item = dict(given, project_id_or_key=project)
        try:
            checked_ = admit(TOOLS["issue_add"], item)
            words = [f"{BULK_FIELDS[k][1] if k in BULK_FIELDS else k} {shown_value(v)}"
                     for k, v in checked_.items()
                     if k not in ("project_id_or_key", "summary", "description")]
            names_to_ids(dict(checked_), project_id(project))
        except ToolError as exc:
            plan.append({"issue": label, "why": redact(exc)})
            continue
        if given.get("summary") in made:
            plan.append({"issue": label, "changes": [], "exists": made[given["summary"]]})
            continue
        plan.append({"issue": label, "changes": [("new", "", "; ".join(words) or "issue")],
                     "args": item, "given": given})
    return plan


def bulk_add_question(args):
    plan = bulk_add_plan(args)
    doing = [i for i in plan if i.get("changes")]
    rest = [f"{n} already made" for n in [sum(1 for i in plan if "exists" in i)] if n] \
        + [f"{n} refused" for n in [sum(1 for i in plan if "why" in i)] if n]
    return (f"Add {len(doing)} issues to {args['project_id_or_key']} "
            f"({', '.join(i['issue'] for i in doing[:5])}"
            f"{f' and {len(doing) - 5} more' if len(doing) > 5 else ''})"
            f"{'; ' + ', '.join(rest) if rest else ''}?")


@tool("Add many issues", write="issue", extra=True, asks=bulk_add_question)
def issue_bulk_add(project_id_or_key: ProjectIdOrKey,
                   issues: P("array", "Up to 100 objects with issue_add's fields (summary, "
                                      "issue_type_id, …)", items="object"),
                   dry_run: DryRun = None, on_error: OnError = "stop"):
    """Create up to 100 issues in a project: a preview, one confirmation, paced writes, a
    receipt."""
    args = {"project_id_or_key": project_id_or_key, "issues": issues}
    with answering():
        plan = bulk_add_plan(args)
    call = {"name": "issue_bulk_add", "arguments": dict(
        args, dry_run=False, **({"on_error": on_error} if on_error != "stop" else {}))}
    if dry_run:
        return {"would add": [line_of(i) for i in plan if i.get("changes")],
                "already made": [f"{i['issue']} ({i['exists']})" for i in plan if "exists" in i],
                "refused": [{"issue": i["issue"], "why": i["why"]} for i in plan if "why" in i],
                "apply": call}
    return run_batch(plan, TOOLS["issue_add"], on_error, lambda item: dict(item["args"]),
                     lambda left: dict(call, arguments=dict(call["arguments"], issues=[
                         i["given"] for i in left])))


def run_batch(plan, tool_, on_error, arguments, retry):
    """Run tool_ on each planned item (arguments(item)), paced, through the pipeline: the
    receipt, with the call that retries what failed or was not run (retry(items))."""
    pacer, left, stopped = Pacer(), [], False
    receipt = {"done": [], "skipped": [i["issue"] + (f" ({i['exists']})" if "exists" in i else "")
                                       for i in plan if i.get("changes") == []],
               "refused": [{"issue": i["issue"], "why": i["why"]} for i in plan if "why" in i],
               "failed": [], "outcome unknown": [], "not run": []}
    items = [i for i in plan if i.get("changes")]
    for n, item in enumerate(items, 1):
        if stopped:  # the rest is left for the retry call
            receipt["not run"].append(item["issue"])
            left.append(item)
            continue
        args = arguments(item)
        try:
            with guarded(tool_.name):
                render(tool_, args)  # the project's text format, per item
            value = pacer.write(lambda: run_tool(tool_, args)[1])
            made = value.get("issueKey") if isinstance(value, dict) and \
                tool_.name == "issue_add" else None
            receipt["done"].append(f"{made} ← {item['issue']}" if made else line_of(item))
            audit(tool_, args, "done", "asked once for the batch")
        except NotSent as exc:  # nothing sent: this one and the rest are for the retry call
            receipt["not run"].append(item["issue"])
            receipt["why not run"] = redact(exc)
            left.append(item)
            stopped = True
        except ToolError as exc:
            audit(tool_, args, "failed", "asked once for the batch", exc)
            unknown = exc.retryable and not isinstance(exc, BacklogError)  # no answer came
            receipt["outcome unknown" if unknown else "failed"].append(
                {"issue": item["issue"], "why": redact(exc)})
            left.append(item)
            stopped = on_error != "continue"
        Progress.step(f"{item['issue']}: {'failed' if item in left else 'done'}", at=n,
                      total=len(items))
    if left:
        receipt["retry"] = retry(left)
    if pacer.waited >= 1:
        note(f"Waited {pacer.waited:.0f} s in all for Backlog's rate limit and the pacing of "
             "writes.")
    return {k: v for k, v in receipt.items() if v}


# == Tools: projects ===========================================================

def project_list(project_id_or_key, what):
    return api.get(("projects", project_id_or_key, what))


@tool("List projects", pages=("projectKey", "name"))
def project_list_get(archived: P("boolean", "true: archived only; false: active only") = None,
                     fields: Fields = None):
    """List the projects you can see (only BACKLOG_PROJECTS when set)."""
    return api.get("projects", {"archived": archived})


@tool("Get project")
def project_details_get(project_id_or_key: ProjectIdOrKey):
    """Get a project's settings: key, name, enabled features, formatting rule."""
    return api.get(("projects", project_id_or_key))


@tool("List statuses")
def project_status_list_get(project_id_or_key: ProjectIdOrKey):
    """List a project's issue statuses with ids."""
    return project_list(project_id_or_key, "statuses")


@tool("List issue types")
def project_issue_type_list_get(project_id_or_key: ProjectIdOrKey):
    """List a project's issue types (Task, Bug, ...) with ids."""
    return project_list(project_id_or_key, "issueTypes")


EXAMPLES = {1: "text", 2: "line 1\nline 2", 3: 12.5, 4: "2025-06-30"}


@tool("List custom fields")
def project_custom_field_list_get(project_id_or_key: ProjectIdOrKey):
    """List a project's custom fields: types, items, and an example value for issue_add."""
    out = []
    for field in rows(project_list(project_id_or_key, "customFields"), {"id": int, "name": str}):
        items = [{"id": i["id"], "name": i["name"]}
                 for i in rows(field.get("items") or [], {"id": int, "name": str})]
        kind = _int(field.get("typeId"))
        example = EXAMPLES.get(kind) if kind in EXAMPLES else \
            [i["name"] for i in items[:2]] if kind in (6, 7) else \
            (items[0]["name"] if items else None)
        view = {"id": field["id"], "name": field["name"], "type": FIELD_TYPES.get(kind, kind),
                "required": field.get("required"), "description": field.get("description"),
                "applicableIssueTypes": field.get("applicableIssueTypes"), "example": example}
        if items:
            view["items"] = items
        if field.get("allowInput"):
            view["allowOther"] = True
        out.append(view)
    return out


@tool("List categories", pages=("name",))
def project_category_list_get(project_id_or_key: ProjectIdOrKey):
    """List a project's categories with ids."""
    return project_list(project_id_or_key, "categories")


@tool("List project members", pages=PEOPLE)
def project_user_list_get(project_id_or_key: ProjectIdOrKey, fields: Fields = None):
    """List a project's members with user ids (for assignee_id)."""
    return project_list(project_id_or_key, "users")


@tool("List resolutions")
def project_resolution_list_get():
    """List the resolutions (Fixed, Won't Fix, ...) with ids."""
    return api.get("resolutions")


def activities(path, activity_type_ids, min_id, max_id, count, order):
    return api.get(path, {"activityTypeId": activity_type_ids, "minId": min_id,
                          "maxId": max_id, "count": count, "order": order})


@tool("List project activity", whole="issue_details_get")
def project_activity_list_get(project_id_or_key: ProjectIdOrKey,
                              activity_type_ids: ActivityTypes = None, min_id: MinId = None,
                              max_id: MaxId = None, count: Count = 20, order: Order = None,
                              fields: Fields = None):
    """List a project's recent activity (issue, wiki, git, file events)."""
    return activities(("projects", project_id_or_key, "activities"),
                      activity_type_ids, min_id, max_id, count, order)


TextRule = P("string", "Text formatting", enum=["markdown", "backlog"])


@tool("Add project", write="project")
def project_add(name: P("string", "Project name"),
                key: P("string", "Project key (A-Z, 0-9, _)", pattern=r"[_A-Z0-9]{1,25}\Z",
                       check="is not a project key in capitals like DEMO", owner="project"),
                chart_enabled: P("boolean", "Enable charts") = False,
                subtasking_enabled: P("boolean", "Enable subtasks") = False,
                text_formatting_rule: TextRule = "markdown"):
    """Create a project (space administrators only)."""
    return api.post("projects", {"name": name, "key": key,
                                 "chartEnabled": chart_enabled,
                                 "subtaskingEnabled": subtasking_enabled,
                                 "textFormattingRule": text_formatting_rule})


@tool("Update project", write="project", idempotent=True,
      destructive=overwrites("key"))
def project_update(project_id_or_key: ProjectIdOrKey, name: P("string", "Project name") = None,
                   key: P("string", "New project key", pattern=r"[_A-Z0-9]{1,25}\Z",
                          check="is not a project key in capitals like DEMO",
                          owner="project") = None,
                   chart_enabled: Bool = None, subtasking_enabled: Bool = None,
                   text_formatting_rule: TextRule = None,
                   archived: P("boolean", "Archive or unarchive") = None):
    """Change a project's name, key, features or archived state."""
    form = {"name": name, "key": key, "chartEnabled": chart_enabled,
            "subtaskingEnabled": subtasking_enabled, "textFormattingRule": text_formatting_rule,
            "archived": archived}
    if all(v is None for v in form.values()):
        raise ToolError("Nothing to update: give name, key, archived or another setting.")
    return api.patch(("projects", project_id_or_key), form)


@tool("Delete project", write="project", destructive=True, idempotent=True)
def project_delete(project_id_or_key: ProjectIdOrKey):
    """Delete a project with all its issues, wikis and files (space administrators only)."""
    return api.delete(("projects", project_id_or_key))


@tool("Add category", write="project")
def project_category_add(project_id_or_key: ProjectIdOrKey, name: P("string", "Category name")):
    """Add a category to a project."""
    return api.post(("projects", project_id_or_key, "categories"), {"name": name})


VersionName = P("string", "Milestone name")


@tool("Add milestone", write="project")
def project_version_add(project_id_or_key: ProjectIdOrKey, name: VersionName,
                        description: MilestoneText = None, start_date: Date = None,
                        release_due_date: Date = None):
    """Add a milestone (version) to a project."""
    return api.post(("projects", project_id_or_key, "versions"),
                    {"name": name, "description": description, "startDate": start_date,
                     "releaseDueDate": release_due_date})


@tool("Update milestone", write="project", idempotent=True,
      destructive=overwrites("description"))
def project_version_update(project_id_or_key: ProjectIdOrKey,
                           version_id: P("integer", "Milestone id", minimum=1), name: VersionName,
                           description: MilestoneText = None, start_date: Date = None,
                           release_due_date: Date = None,
                           archived: P("boolean", "Archive or unarchive") = None):
    """Update a milestone (version): name, dates, description, archived."""
    return api.patch(("projects", project_id_or_key, "versions", version_id),
                     {"name": name, "description": description, "startDate": start_date,
                      "releaseDueDate": release_due_date, "archived": archived})


@tool("Delete milestone", write="project", destructive=True, idempotent=True)
def project_version_delete(project_id_or_key: ProjectIdOrKey,
                           version_id: P("integer", "Milestone id", minimum=1)):
    """Delete a milestone (version) from a project."""
    return api.delete(("projects", project_id_or_key, "versions", version_id))


# == Tools: shared files =======================================================

def directory(path):
    parts = [p for p in path.replace("\\", "/").split("/") if p]
    for part in parts:
        segment(part)
    return tuple(parts)


@tool("List shared files")
def file_shared_list_get(project_id_or_key: ProjectIdOrKey,
                         path: P("string", "Directory, e.g. specs/2025; root is ''") = "",
                         order: Order = None, offset: Offset = 0, count: Count = 20,
                         fields: Fields = None):
    """List a shared-file directory of a project."""
    parts = directory(path) or (SLASH,)
    return api.get(("projects", project_id_or_key, "files", "metadata") + parts,
                   {"order": order, "offset": offset, "count": count})


@tool("Download shared file", file=True)
def file_shared_download(project_id_or_key: ProjectIdOrKey,
                         shared_file_id: SharedFileId,
                         format: Format = None):
    """Download a project's shared file as image, text or base64."""
    return download(("projects", project_id_or_key, "files", shared_file_id),
                    format)


# == Tools: users ==============================================================

@tool("List users", pages=PEOPLE)
def user_list_get(fields: Fields = None):
    """List the users of the space with ids, names, roles."""
    return api.get("users")


@tool("Get myself")
def user_myself_get():
    """Get the user that the API key belongs to."""
    return api.get(("users", "myself"))


@tool("List user activity", whole="issue_details_get")
def user_activity_list_get(user_id: UserId, activity_type_ids: ActivityTypes = None,
                           min_id: MinId = None, max_id: MaxId = None, count: Count = 20,
                           order: Order = None, fields: Fields = None):
    """List a user's recent activity."""
    return activities(("users", user_id, "activities"), activity_type_ids, min_id, max_id,
                      count, order)


@tool("Get user")
def user_details_get(user_id: UserId):
    """Get a user of the space: name, role, mail address."""
    return api.get(("users", user_id))


RECENT = {"issues": "recentlyViewedIssues", "projects": "recentlyViewedProjects",
          "wikis": "recentlyViewedWikis"}


@tool("List recently viewed", whole="issue_details_get")
def user_recent_list_get(kind: P("string", "What to list", enum=list(RECENT)) = "issues",
                         offset: Offset = 0, count: Count = 20):
    """List what you viewed last (issues, projects or wiki pages): your recent work."""
    return api.get(("users", "myself", RECENT[kind]), {"offset": offset, "count": count})


@tool("List stars received", extra=True)
def user_star_list_get(user_id: UserId, min_id: MinId = None, max_id: MaxId = None,
                       count: Count = 20, order: Order = None):
    """List the stars a user received (what was starred, by whom)."""
    return api.get(("users", user_id, "stars"), {"minId": min_id, "maxId": max_id,
                                                "count": count, "order": order})


STAR_TARGETS = {"issue_id_or_key": "issueId", "comment_id": "commentId", "wiki_id": "wikiId",
                "pull_request_id": "pullRequestId",
                "pull_request_comment_id": "pullRequestCommentId"}


@tool("Add star", write="star", extra=True)
def user_star_add(issue_id_or_key: IssueIdOrKey.like(
                      doc="Issue to star (or the issue of comment_id)") = None,
                  comment_id: P("integer", "Issue comment to star", minimum=1,
                                owner="comment") = None,
                  wiki_id: WikiId.like(doc="Wiki page to star") = None,
                  pull_request_id: P("integer", "Pull request id (not number)", minimum=1,
                                     owner="unscoped") = None,
                  pull_request_comment_id: P("integer", "PR comment id", minimum=1,
                                             owner="unscoped") = None):
    """Star an issue, an issue comment, a wiki page, a PR or a PR comment."""
    given = {k: v for k, v in locals().items() if v is not None}
    target = [k for k in given if k != "issue_id_or_key" or "comment_id" not in given]
    if len(target) != 1:
        raise ToolError("Give exactly one thing to star (a comment_id may come with its "
                        "issue_id_or_key).")
    name = target[0]
    value = given[name]
    if name == "issue_id_or_key" and not DIGITS.match(str(value)):
        value = checked(api.get(("issues", value)), {"id": int})["id"]  # a numeric issueId
    api.post("stars", {STAR_TARGETS[name]: value})
    return f"Starred {name.replace('_id_or_key', '').replace('_id', '')} {given[name]}."


@tool("Remove star", write="star", destructive=True, idempotent=True, extra=True)
def user_star_delete(star_id: P("integer", "Star id (user_star_list_get)", minimum=1,
                                owner="star")):
    """Remove one of your stars."""
    api.delete(("stars", star_id))
    return f"Star {star_id} removed."


@tool("Count stars", extra=True)
def user_star_count_get(user_id: UserId, since: Date = None, until: Date = None):
    """Count the stars a user received, optionally between two dates."""
    if restricted():
        raise ToolError("Under BACKLOG_PROJECTS stars are not counted space-wide.",
                        "user_star_list_get lists the stars of the allowed projects.")
    return api.get(("users", user_id, "stars", "count"), {"since": since, "until": until})


WatchSort = P("string", "Sort key", enum=["created", "updated", "issueUpdated"])
AlreadyRead = P("boolean", "true: already read only; false: unread only")


@tool("List watchings", whole="issue_details_get")
def user_watching_list_get(user_id: UserId, resource_already_read: AlreadyRead = None,
                           issue_ids: IssueIds = None, sort: WatchSort = None, order: Order = None,
                           offset: Offset = 0, count: Count = 20, fields: Fields = None):
    """List the issues a user watches."""
    return api.get(("users", user_id, "watchings"), {
        "resourceAlreadyRead": resource_already_read, "issueId": issue_ids, "sort": sort,
        "order": order, "offset": offset, "count": count})


COUNT_PAGES = 5  # pages of 100 a count under BACKLOG_PROJECTS looks at, at most


def count_allowed(path, params):
    """Count the items of an offset-paged list that belong to allowed projects, looking at
    COUNT_PAGES pages at most."""
    total = 0
    for page in range(COUNT_PAGES):
        Progress.step(f"counting page {page + 1}", total=COUNT_PAGES)
        items = rows(api.get(path, dict(params, count=100, offset=page * 100)), {})
        total += held(items)
        if len(items) < 100:
            return {"count": total}
    return at_least(total)


def at_least(total):
    checked_ = COUNT_PAGES * 100
    return {"count": total, "note": f"at least {total}: under BACKLOG_PROJECTS each item's "
                                    f"project is checked, and only the first {checked_} were"}


@tool("Count watchings", extra=True)
def user_watching_count_get(user_id: UserId, resource_already_read: AlreadyRead = None):
    """Count the issues a user watches."""
    read = resource_already_read
    if restricted():
        return count_allowed(("users", user_id, "watchings"), {"resourceAlreadyRead": read})
    return api.get(("users", user_id, "watchings", "count"), {"resourceAlreadyRead": read})


# == Tools: wikis ==============================================================

WIKI_PROJECTS = 20  # wiki_list_get without a project asks at most this many projects


@tool("List wiki pages", pages=())
def wiki_list_get(project_id_or_key: OptProject = None, keyword: Keyword = None,
                  fields: Fields = None):
    """List a project's wiki pages (every allowed or active project's if none given)."""
    if project_id_or_key is not None:
        projects = [project_id_or_key]
    elif restricted():
        projects = settings().projects
    else:  # Backlog lists one project's pages at a time
        found = rows(api.get("projects", {"archived": False}), {"projectKey": str})
        projects = [p["projectKey"] for p in found if p.get("useWiki") is not False]
        if found and not projects:
            raise ToolError("No active project of this space has a wiki (" + NO_WIKI + ").",
                            "use the documents: document_list_get.")
        if len(projects) > WIKI_PROJECTS:
            raise ToolError(f"The space has {len(projects)} active projects; listing the wiki "
                            "of each is too much.",
                            "give project_id_or_key "
                            "(project_list_get lists the projects).")
    pages = []
    for project in projects:
        Progress.step(f"wiki pages of {project}", total=len(projects))
        pages += rows(api.get("wikis", {"projectIdOrKey": project, "keyword": keyword}), {})
    return pages


@tool("Count wiki pages")
def wiki_count_get(project_id_or_key: ProjectIdOrKey):
    """Count a project's wiki pages."""
    return api.get(("wikis", "count"), {"projectIdOrKey": project_id_or_key})


@tool("List wiki tags", extra=True, pages=("name",))
def wiki_tag_list_get(project_id_or_key: ProjectIdOrKey):
    """List the tags used on a project's wiki pages."""
    return api.get(("wikis", "tags"), {"projectIdOrKey": project_id_or_key})


@tool("Get wiki page", texts=True)
def wiki_details_get(wiki_id: WikiId):
    """Get a wiki page with its content, tags and attachments."""
    return api.get(("wikis", wiki_id))


@tool("Get wiki history", texts=True, cursor="version",
      whole="wiki_history_get (with version)")
def wiki_history_get(wiki_id: WikiId, min_id: MinId = None, max_id: MaxId = None,
                     count: Count = 20, order: Order = None, fields: Fields = None,
                     version: P("integer", "Read this version, with its content",
                                minimum=1) = None):
    """List the versions of a wiki page, newest first (who, when); one version's content
    with version."""
    if version is not None:  # Backlog's bounds are exclusive: the one version between them
        found = rows(api.get(("wikis", wiki_id, "history"), {
            "minId": version - 1, "maxId": version + 1, "count": 1}), {})
        if not found:
            raise Missing("wiki page version", version)
        return found[0]
    return [{k: v for k, v in page.items() if k != "content"} for page in rows(api.get(
        ("wikis", wiki_id, "history"),
        {"minId": min_id, "maxId": max_id, "count": count, "order": order}), {})]


@tool("List wiki attachments", extra=True)
def wiki_attachment_list_get(wiki_id: WikiId):
    """List a wiki page's attachments."""
    return api.get(("wikis", wiki_id, "attachments"))


@tool("Download wiki attachment", file=True, extra=True)
def wiki_attachment_download(wiki_id: WikiId, attachment_id: AttachmentId, format: Format = None):
    """Download a wiki attachment as image, text or base64."""
    return download(("wikis", wiki_id, "attachments", attachment_id), format)


MailNotify = P("boolean", "Email the change to watchers")


def wiki_path(wiki_id, *rest):
    return ("wikis", wiki_id) + rest


@tool("List wiki shared files", extra=True)
def wiki_shared_file_list_get(wiki_id: WikiId):
    """List the shared files linked to a wiki page."""
    return api.get(wiki_path(wiki_id, "sharedFiles"))


@tool("Add wiki page", write="wiki")
def wiki_add(project_id_or_key: ProjectIdOrKey, name: P("string", "Page name; '/' nests pages"),
             content: Content, mail_notify: MailNotify = None):
    """Create a wiki page in a project."""
    return api.post("wikis", {"projectId": project_id(project_id_or_key), "name": name,
                              "content": content, "mailNotify": mail_notify})


@tool("Update wiki page", write="wiki", idempotent=True,
      destructive=overwrites("content"))
def wiki_update(wiki_id: WikiId, name: P("string", "New page name") = None,
                content: Content = None, mail_notify: MailNotify = None):
    """Update a wiki page's name or content."""
    if name is None and content is None:
        raise ToolError("Nothing to update: give name or content.")
    return api.patch(("wikis", wiki_id), {"name": name, "content": content,
                                          "mailNotify": mail_notify})


@tool("Delete wiki page", write="wiki", destructive=True, idempotent=True)
def wiki_delete(wiki_id: WikiId, mail_notify: MailNotify = None):
    """Delete a wiki page for good; returns the deleted page."""
    return api.delete(wiki_path(wiki_id), {"mailNotify": mail_notify})


@tool("Attach files to wiki page", write="wiki", extra=True)
def wiki_attachment_add(wiki_id: WikiId, attachment_ids: P(
        "array", "Ids from issue_attachment_upload", items="integer")):
    """Attach uploaded files to a wiki page."""
    return api.post(wiki_path(wiki_id, "attachments"), {"attachmentId": attachment_ids})


@tool("Delete wiki attachment", write="wiki", destructive=True, idempotent=True, extra=True)
def wiki_attachment_delete(wiki_id: WikiId, attachment_id: AttachmentId):
    """Delete an attachment from a wiki page; returns it."""
    return api.delete(wiki_path(wiki_id, "attachments", attachment_id))


@tool("Link shared files to wiki page", write="wiki", idempotent=True, extra=True)
def wiki_shared_file_link(wiki_id: WikiId, file_ids: SharedFileIds):
    """Link shared files of the page's project to a wiki page."""
    return api.post(wiki_path(wiki_id, "sharedFiles"), {"fileId": file_ids})


@tool("Unlink shared file from wiki page", write="wiki", destructive=True, idempotent=True,
      extra=True)
def wiki_shared_file_unlink(wiki_id: WikiId, shared_file_id: SharedFileId):
    """Unlink a shared file from a wiki page (the file stays)."""
    return api.delete(wiki_path(wiki_id, "sharedFiles", shared_file_id))


# == Tools: space ==============================================================

@tool("Get space")
def space_details_get():
    """Get the space: name, language, time zone, formatting rule."""
    return api.get("space")


@tool("List spaces")
def space_list_get():
    """List the Backlog spaces this server reaches: name, host, projects, writes, your user."""
    out = []
    for name, space in SPACES.items():
        with within(name):
            s = settings()
            try:
                me = checked(api.get(("users", "myself")), {"userId": str})
                user = f"{me.get('name')} ({me['userId']})"
            except ToolError as exc:
                user = f"unknown: {redact(exc.what)}"
            out.append({"space": name, "default": name == DEFAULT_SPACE,
                        "host": s.base_url or None, "projects": s.allowed() or "all",
                        "writable": sorted(s.writable),
                        "user": user, "problems": s.problems or None})
    return out


@tool("Get API rate limit", extra=True)
def space_rate_limit_get():
    """Get the API rate limit left for the key: read, update, search, icon per minute."""
    return api.get("rateLimit")


@tool("Get space notice", extra=True)
def space_notice_get():
    """Get the notice that space administrators show to every user."""
    return api.get(("space", "notification"))


@tool("List space activity", whole="issue_details_get")
def space_activity_list_get(activity_type_ids: ActivityTypes = None, min_id: MinId = None,
                            max_id: MaxId = None, count: Count = 20, order: Order = None,
                            fields: Fields = None):
    """List recent activity across the space."""
    return activities(("space", "activities"), activity_type_ids, min_id, max_id, count, order)


# == Tools: notifications ======================================================

@tool("List notifications", whole="issue_details_get")
def notification_list_get(min_id: MinId = None, max_id: MaxId = None, count: Count = 20,
                          order: Order = None, fields: Fields = None):
    """List your notifications, newest first."""
    return api.get("notifications", {"minId": min_id, "maxId": max_id, "count": count,
                                     "order": order})


@tool("Count notifications")
def notification_count_get(already_read: P("boolean", "Count read (true) or unread (false)") = None,
                           resource_already_read: P("boolean", "Filter on the resource's read "
                                                               "state") = None):
    """Count your notifications."""
    params = {"alreadyRead": already_read, "resourceAlreadyRead": resource_already_read}
    if restricted():
        return count_allowed_notifications(params)
    return api.get(("notifications", "count"), params)


def count_allowed_notifications(params):
    """Count notifications of allowed projects by paging through them (COUNT_PAGES)."""
    total, max_id = 0, None
    for page in range(COUNT_PAGES):
        Progress.step(f"counting notifications, page {page + 1}", total=COUNT_PAGES)
        items = rows(api.get("notifications", {"count": 100, "maxId": max_id}), {"id": int})
        total += held([n for n in items if all(v is None or n.get(k) == v
                                               for k, v in params.items())])
        if len(items) < 100:
            return {"count": total}
        max_id = items[-1]["id"]  # Backlog's maxId is exclusive
    return at_least(total)


@tool("Mark notification read", write="notification", idempotent=True)
def notification_mark_read(notification_id: P("integer", "Notification id", minimum=1,
                                             owner="notification")):
    """Mark one notification as read."""
    api.post(("notifications", notification_id, "markAsRead"))
    return f"Notification {notification_id} marked as read."


@tool("Reset unread count", write="notification", idempotent=True, extra=True)
def notification_count_reset():
    """Reset your unread-notification count to zero."""
    return api.post(("notifications", "markAsRead"))


# == Prompts ===================================================================
# Workflows a person starts by name (`/mcp__backlog__triage DEMO-42` in Claude Code). The
# server gathers the data itself, through the tools (allow-list and lean answers hold), and
# hands the model one message with the task and the data; a Backlog failure becomes a line
# in that message, never a protocol error.

PROMPTS = {}


class Prompt:
    def __init__(self, fn, title, arguments):
        self.fn, self.name, self.title, self.arguments = fn, fn.__name__, title, arguments
        self.description = " ".join((fn.__doc__ or "").split())

    def definition(self, prefix="", space=None):
        """With several spaces, a prompt of a space other than the default one is listed
        again as SPACE_NAME (a host passes prompt arguments by position, so a space cannot be
        a third one)."""
        if space is not None:
            return dict(self.definition(prefix), name=f"{prefix}{space}_{self.name}",
                        title=f"{self.title} ({space})",
                        description=f"{self.description} In space {space}.")
        return {"name": prefix + self.name, "title": self.title,
                "description": self.description,
                "arguments": [{"name": n, "description": d, "required": r}
                              for n, d, r in self.arguments]}


def prompt(title, *arguments):
    """Register a prompt: (name, description, required) for each argument, at most two."""
    def register(fn):
        if len(arguments) > 2 or not fn.__doc__:
            raise TypeError(f"prompt {fn.__name__}: at most two arguments and a docstring")
        PROMPTS[fn.__name__] = Prompt(fn, title, arguments)
        return fn
    return register


def gather(parts):
    """The data of a prompt: each (label, tool, arguments) run as the model would run it;
    a failure is said in its place, but the first part (the prompt's subject) not found ends
    the prompt."""
    out, share = [], settings().max_answer // len(parts)  # the message fits one answer
    for label, name, arguments in parts:
        Progress.step(f"gathering {label.lower()}", total=len(parts))
        try:
            args, value = run_tool(TOOLS[name], arguments)
            answer, kept = fit(shaped(value), share)
            text = answer + (f"\n({page_note(TOOLS[name], args, value, kept)})"
                             if isinstance(value, list) else "")
        except ToolError as exc:
            if isinstance(exc, NotFound) and not out:
                raise
            text = f"(could not get it: {redact(exc)})"
        out.append(f"## {label}\n{text}")
    return "\n\n".join(out)


def list_prompts():
    prefix = settings().prefix
    others = [n for n in SPACES if several() and n != DEFAULT_SPACE]
    return {"prompts": [p.definition(prefix) for p in PROMPTS.values()]
            + [p.definition(prefix, space) for space in others for p in PROMPTS.values()]}


def prompt_named(name):
    """(space name, Prompt or None) of an exposed prompt name: SPACE_NAME names a prompt of a
    space other than the default one."""
    prefix = settings().prefix
    bare = name[len(prefix):] if isinstance(name, str) and name.startswith(prefix) else ""
    space = next((s for s in SPACES if several() and s != DEFAULT_SPACE
                  and bare.startswith(f"{s}_") and bare[len(s) + 1:] in PROMPTS), None)
    return space, PROMPTS.get(bare[len(space) + 1:] if space else bare)


def get_prompt(name, arguments):
    space, found = prompt_named(name)
    if found is not None and isinstance(arguments, dict):
        space, arguments = prompt_addresses(found, space, arguments)
    with within(space):
        return _get_prompt(name, found, arguments)


def prompt_addresses(found, space, arguments):
    """(space, arguments) of a prompt given pasted addresses: each stands for what it names
    (DEMO-42 of .../view/DEMO-42; a pull request's repo and number), in the space its host
    names; a host of no space, or an address naming nothing the argument takes, is -32602
    before any request."""
    out, known = dict(arguments), {n for n, _, _ in found.arguments}
    for key, value in arguments.items():
        try:
            got = web_address(value) if key in known and isinstance(value, str) else None
        except ToolError as exc:
            raise RpcError(-32602, f"{key}: {redact(exc)}") from None
        if got is None:
            continue
        named = address_values(got[1])
        if key not in named:
            raise RpcError(-32602, f"{key}: {clip(value, 120)} names no {key}.")
        if space is not None and got[0].name != space:
            raise RpcError(-32602, f"{key}: the address is of space '{got[0].name}', "
                                   f"this prompt of space '{space}'.")
        space = got[0].name if several() else None
        out.update({n: v for n, v in named.items() if n in known and (
            n == key or not str(arguments.get(n) or "").strip())})
    return space, out


def _get_prompt(name, found, arguments):
    if found is None:
        raise RpcError(-32602, f"Unknown prompt: {clip(name, 80)}. Call prompts/list.")
    if not isinstance(arguments, dict) or not all(isinstance(v, str)
                                                  for v in arguments.values()):
        raise RpcError(-32602, "prompts/get 'arguments' must map names to strings.")
    known = {n for n, _, _ in found.arguments}
    given = {k: scrub(v).strip() for k, v in arguments.items() if k in known and v.strip()}
    missing = [n for n, _, r in found.arguments if r and n not in given]
    if missing:
        raise RpcError(-32602, f"Prompt {found.name} needs: {', '.join(missing)}.")
    try:
        with guarded(f"prompt {found.name}"):
            text = found.fn(**given)
    except ToolError as exc:
        text = f"The data for this request could not be gathered: {redact(exc)}"
    notes = NOTES.get() or []
    if notes:
        text += "\n\n(" + in_room(notes) + ")"
    return {"description": found.description,
            "messages": [{"role": "user", "content": {"type": "text", "text": text}}]}


def this_servers(name):
    """A tool named in a prompt so that a model finds it whatever prefix its host shows."""
    return (f"the {settings().prefix}{name} tool of this server (your host may show it with "
            f"a prefix, e.g. mcp__backlog__{settings().prefix}{name})")


@prompt("Triage an issue", ("issue", "Issue key, e.g. DEMO-42", True))
def triage(issue):
    """Propose status, priority, assignee and next step for an issue, from its data."""
    key = issue.upper()
    project = key.rsplit("-", 1)[0]
    return (f"Triage Backlog issue {key}. Propose its status, priority, assignee and the next "
            f"step, each with a one-line reason, then offer to apply them with "
            f"{this_servers('issue_update')}.\n\n"
            + gather([("Issue", "issue_details_get", {"issue_id_or_key": key}),
                      ("Comments, oldest first", "issue_comment_list_get",
                       {"issue_id_or_key": key, "order": "asc", "count": 30}),
                      ("Statuses", "project_status_list_get", {"project_id_or_key": project}),
                      ("Priorities", "issue_priority_list_get", {}),
                      ("Categories", "project_category_list_get", {"project_id_or_key": project}),
                      ("Members", "project_user_list_get", {"project_id_or_key": project,
                                                            "fields": ["id", "userId", "name"]})]))


OPEN_STATUSES = [1, 2, 3]  # Open, In Progress, Resolved: Backlog's fixed ids (Closed is 4)


@prompt("Stand-up", ("project", "Project key (default: every allowed project)", False))
def standup(project=None):
    """My open issues, what changed since yesterday and what is overdue."""
    import datetime
    yesterday = (datetime.date.today() - datetime.timedelta(days=1)).isoformat()
    me = checked(api.get(("users", "myself")), {"id": int})["id"]
    scope = {"project_ids": [project.upper()]} if project else {}
    mine = dict(scope, assignee_ids=[me], status_ids=OPEN_STATUSES, count=50,
                fields=["issueKey", "summary", "status", "priority", "dueDate", "updated"])
    return ("Write my stand-up from these Backlog issues: what I work on, what changed since "
            f"yesterday ({yesterday}), and what is overdue, in three short lists.\n\n"
            + gather([("My open issues", "issue_list_get", dict(mine, sort="updated")),
                      ("Changed since yesterday", "issue_list_get",
                       dict(mine, updated_since=yesterday)),
                      ("Overdue", "issue_list_get", dict(mine, due_date_until=yesterday))]))


@prompt("Release notes", ("project", "Project key", True),
        ("milestone", "Milestone name", True))
def release_notes(project, milestone):
    """The milestone's closed issues, grouped by type, as release notes."""
    return (f"Write release notes for milestone '{milestone}' of project {project.upper()} "
            "from its closed issues below: group them by issue type, one line each, in plain "
            "words for users.\n\n"
            + gather([("Closed issues", "issue_list_get",
                       {"project_ids": [project.upper()], "milestone_ids": [milestone],
                        "status_ids": [4], "count": 100,
                        "fields": ["issueKey", "summary", "issueType", "resolution"]})]))


@prompt("Draft an issue", ("project", "Project key", True))
def draft_issue(project):
    """What issue_add needs in a project, to turn your text into one correct call."""
    key = project.upper()
    return (f"Turn what I write next into one call of {this_servers('issue_add')} for "
            f"project {key}: choose the "
            "issue type, priority and fields from the lists below, fill every required custom "
            "field, and show me the call before you make it.\n\n"
            + gather([("Issue types", "project_issue_type_list_get", {"project_id_or_key": key}),
                      ("Priorities", "issue_priority_list_get", {}),
                      ("Custom fields", "project_custom_field_list_get",
                       {"project_id_or_key": key}),
                      ("Categories", "project_category_list_get", {"project_id_or_key": key}),
                      ("Milestones", "issue_milestone_list_get",
                       {"project_id_or_key": key, "archived": False}),
                      ("Members", "project_user_list_get", {"project_id_or_key": key,
                                                            "fields": ["id", "userId", "name"]})]))


PR_REF = re.compile(r"(?:.*/git/)?([_A-Za-z0-9]{1,25})/([A-Za-z0-9][A-Za-z0-9_.-]{0,99})"
                    r"(?:/pullRequests/([1-9][0-9]{0,9}))?/?\Z")


@prompt("Review a pull request", ("repo", "PROJECT/repo, or the pull request's URL", True),
        ("number", "Pull request number (not needed with a URL)", False))
def review_pr(repo, number=None):
    """A pull request, its comments and its linked issue, for a review."""
    match = PR_REF.match(repo)
    number = number or (match.group(3) if match else None)
    if not match or not number or not DIGITS.match(number):
        raise ToolError("give PROJECT/repo and a number, or the pull request's URL")
    project, name = match.group(1).upper(), match.group(2)
    where = {"project_id_or_key": project, "repo_id_or_name": name, "pr_number": int(number)}
    parts = [("Pull request", "git_pr_details_get", where),
             ("Comments", "git_pr_comment_list_get", dict(where, order="asc", count=50))]
    try:
        issue = checked(run_tool(TOOLS["git_pr_details_get"], where)[1], {}).get("issue")
    except ToolError:
        issue = None
    if isinstance(issue, dict) and isinstance(issue.get("issueKey"), str):
        parts.append(("Linked issue", "issue_details_get",
                      {"issue_id_or_key": issue["issueKey"]}))
    return (f"Review pull request #{number} of {project}/{name}: summarize the change, check "
            "it against the linked issue, list risks and questions for the author.\n\n"
            + gather(parts))


# == Resources =================================================================
# Backlog's things as resources a person attaches (`@` in Claude Code): URIs name the space's
# host and mirror Backlog's web paths, backlog://HOST/view/DEMO-42. A read goes through the
# tools, so the allow-list holds exactly as for them.

RESOURCES = []  # Resource, in the order resources/templates/list gives them


class Resource:
    """A resource template: its URI below backlog://HOST/, its name, its description, the
    pattern of its path and the function that reads one (with the pattern's groups)."""

    def __init__(self, template, name, description, pattern, read):
        self.template, self.name, self.description = template, name, description
        self.pattern, self.read = re.compile(pattern + r"\Z"), read


def resource(template, name, description, pattern):
    """Register a resource reader: @resource("view/{issue}", "Issue", "...", r"view/(...)")."""
    def register(fn):
        RESOURCES.append(Resource(template, name, description, pattern, fn))
        return fn
    return register


RESOURCES_PAGE = 50


def resource_space(uri):
    """(space name, path) of a backlog:// URI; -32002 when no space has its host."""
    match = re.match(r"backlog://([^/]+)/(.*)\Z", uri or "") if isinstance(uri, str) else None
    for name, space in SPACES.items():
        if match and host_of(space) and match.group(1).lower() == host_of(space):
            return name, match.group(2)
    raise RpcError(-32002, f"Resource not found: {clip(uri, 120)}. URIs look like "
                           f"backlog://{host_of(here()) or 'your-space.backlog.com'}/view/DEMO-42.",
                   {"uri": clip(uri, 200) if isinstance(uri, str) else None})


def read_resource(uri):
    if isinstance(uri, str) and WEB.match(uri.strip()):  # a page's address, pasted
        try:
            uri = resource_of_address(uri) or uri
        except ToolError as exc:
            raise RpcError(-32002, f"Resource not found: {redact(exc)}",
                           {"uri": clip(uri, 200)}) from None
    name, path = resource_space(uri)
    with within(name):
        for found in RESOURCES:
            match = found.pattern.match(path)
            if match:
                try:
                    with guarded(uri):
                        return {"contents": found.read(uri, *match.groups())}
                except ToolError as exc:
                    raise RpcError(-32002, f"Resource not readable: {clip(uri, 120)}: "
                                           f"{redact(exc)}", {"uri": uri}) from None
    raise RpcError(-32002, f"Resource not found: {clip(uri, 120)}. Templates: "
                           "resources/templates/list.", {"uri": uri})


def web_url(path):
    return f"{settings().base_url}/{path}"


@resource("view/{issue}", "Issue", "An issue with its latest comments, as Markdown",
          r"view/([_A-Za-z0-9]{1,25}-[1-9][0-9]{0,9})")
def read_issue(uri, key):
    issue = checked(run_tool(TOOLS["issue_details_get"], {"issue_id_or_key": key})[1], {})
    comments = rows(run_tool(TOOLS["issue_comment_list_get"], {"issue_id_or_key": key,
                                                                "count": 5})[1], {})
    lines = [f"# {key} · {one_line(issue.get('summary'))}", f"Web: {web_url('view/' + key)}",
             "", f"- Status: {named(issue.get('status'))}",
             f"- Type: {named(issue.get('issueType'))}",
             f"- Priority: {named(issue.get('priority'))}",
             f"- Assignee: {named(issue.get('assignee')) or 'nobody'}",
             f"- Due: {one_line(issue.get('dueDate') or '-', 10)}", "", "## Description",
             fenced(issue.get("description") or "")]
    shown_comments = [c for c in reversed(list(comments)) if isinstance(c, dict)
                      and c.get("content")]
    if shown_comments:
        lines += ["", f"## The latest {len(shown_comments)} comments, oldest first"]
    for comment in shown_comments:
        lines += ["", f"### {named(comment.get('createdUser'))}, "
                      f"{one_line(comment.get('created'), 10)}", fenced(comment["content"])]
    return markdown(uri, lines, ("issue_details_get", {"issue_id_or_key": key}))


def named(value):
    """The name of a status, type, user... of Backlog's, on one line of ours."""
    return one_line(value.get("name") if isinstance(value, dict) else value, 80)


@resource("wiki/{id}", "Wiki page", "A wiki page's content", r"wiki/([1-9][0-9]{0,17})")
def read_wiki(uri, wiki_id):
    page = checked(run_tool(TOOLS["wiki_details_get"], {"wiki_id": int(wiki_id)})[1], {})
    return markdown(uri, [f"# {one_line(page.get('name'))}",
                          f"Web: {web_url('wiki/' + wiki_id)}", "",
                          fenced(page.get("content") or "")],
                    ("wiki_details_get", {"wiki_id": int(wiki_id)}))


@resource("document/{id}", "Document", "A document's Markdown",
          r"document/([0-9a-fA-F]{32})")
def read_document(uri, document_id):
    doc = checked(run_tool(TOOLS["document_details_get"], {"document_id": document_id})[1], {})
    return markdown(uri, [f"# {one_line(doc.get('title'))}", "", fenced(doc.get("plain") or "")],
                    ("document_details_get", {"document_id": document_id}))


@resource("projects/{project}", "Project", "A project: settings, statuses, milestones",
          r"projects/([_A-Za-z0-9]{1,25})")
def read_project(uri, key):
    project = checked(run_tool(TOOLS["project_details_get"], {"project_id_or_key": key})[1], {})
    statuses = rows(run_tool(TOOLS["project_status_list_get"], {"project_id_or_key": key})[1],
                    {})
    milestones = rows(run_tool(TOOLS["issue_milestone_list_get"], {
        "project_id_or_key": key, "archived": False})[1], {})
    return markdown(uri, [
        f"# {one_line(project.get('name'))} ({key})", f"Web: {web_url('projects/' + key)}", "",
        f"- Text formatting: {named(project.get('textFormattingRule'))}",
        f"- Statuses: {', '.join(named(s) for s in statuses)}",
        f"- Milestones: {', '.join(named(m) for m in milestones) or 'none'}"],
        ("issue_milestone_list_get", {"project_id_or_key": key}))


@resource("git/{project}/{repo}/pullRequests/{number}", "Pull request", "A pull request",
          r"git/([_A-Za-z0-9]{1,25})/([A-Za-z0-9][A-Za-z0-9_.-]{0,99})/pullRequests/"
          r"([1-9][0-9]{0,9})")
def read_pr(uri, project, repo, number):
    pr = checked(run_tool(TOOLS["git_pr_details_get"], {"project_id_or_key": project,
                                                        "repo_id_or_name": repo,
                                                        "pr_number": int(number)})[1], {})
    issue = pr.get("issue")
    linked = f"{one_line(issue.get('issueKey'), 40)} {one_line(issue.get('summary'))}" \
        if isinstance(issue, dict) else one_line(issue or "none")
    return markdown(uri, [
        f"# {project}/{repo} #{number} · {one_line(pr.get('summary'))}",
        f"Web: {web_url(f'git/{project}/{repo}/pullRequests/{number}')}", "",
        f"- Status: {named(pr.get('status'))}",
        f"- Branches: {one_line(pr.get('branch'), 100)} → {one_line(pr.get('base'), 100)}",
        f"- Assignee: {named(pr.get('assignee')) or 'nobody'}", f"- Linked issue: {linked}",
        "", "## Description", fenced(pr.get("description") or "")],
        ("git_pr_details_get", {"project_id_or_key": project, "repo_id_or_name": repo,
                                "pr_number": int(number)}))


def markdown(uri, lines, via):
    """A read's one content: Markdown of ours, Backlog's text fenced in it, within the
    answer budget, and the notes, which name `via` (tool, arguments): the call that reads
    the rest (a resource cannot be called again with more)."""
    call_ = f"the {via[0]} tool ({', '.join(f'{k}={v}' for k, v in via[1].items())})"
    notes = [n.replace("call again with", f"call {call_} with") for n in NOTES.get() or []]
    text = "\n".join(lines)
    budget = settings().max_answer - NOTE_ROOM
    size = len(dumps(text).encode())
    if size > budget:
        keep = len(text) * budget // size
        while len(dumps(text[:keep]).encode()) > budget:
            keep = keep * 9 // 10
        text, fence = text[:keep], None
        for line in text.split("\n"):  # a fence of ours the cut leaves open is closed
            opened = re.fullmatch(r"(`{3,})text", line)
            fence = (opened.group(1) if opened else fence) if fence is None else (
                None if line == fence else fence)
        text += "…" + (f"\n{fence}" if fence else "")
        notes.insert(0, f"Cut to fit one answer (BACKLOG_MAX_ANSWER_BYTES="
                        f"{settings().max_answer:,}); call {call_} to read it in parts.")
    text += "\n\n> " + in_room(notes, NOTE_ROOM - 100) if notes else ""
    return [{"uri": uri, "mimeType": "text/markdown", "text": text}]


@resource("file/{project}/{id}", "Shared file", "A project's shared file, as it is",
          r"file/([_A-Za-z0-9]{1,25})/([1-9][0-9]{0,17})")
def read_file(uri, project, file_id):
    import base64
    got = run_tool(TOOLS["file_shared_download"], {"project_id_or_key": project,
                                                   "shared_file_id": int(file_id),
                                                   "format": "raw"})[1]
    if len(got.data) * 4 // 3 > settings().max_answer:
        raise ToolError(f"The file is {len(got.data):,} bytes, more than one answer holds "
                        f"(BACKLOG_MAX_ANSWER_BYTES={settings().max_answer:,}).",
                        f"the file_shared_download tool reads it in parts (offset), or saves "
                        "it with BACKLOG_DOWNLOAD_DIR.")
    return [{"uri": uri, "mimeType": got.content_type.split(";")[0].strip(),
             "blob": base64.b64encode(redact_bytes(got.data)).decode()}]


RECENT_RESOURCES = (  # what resources/list offers of what you viewed last
    ("issues", "issue", "issueKey", ISSUE_KEY_RE,
     lambda i: (f"view/{i['issueKey']}", f"{i['issueKey']} {one_line(i.get('summary'))}")),
    ("wikis", "page", "id", r"[1-9][0-9]{0,17}",
     lambda p: (f"wiki/{p['id']}", f"Wiki: {one_line(p.get('name'))}")))


def list_resources(cursor):
    """Concrete things to attach: the issues and wiki pages you viewed last, the projects."""
    items = []
    for name, space in SPACES.items():
        with within(name):
            host = host_of(space)
            label = f" ({name})" if several() else ""
            for kind, inner, key, pattern, make in RECENT_RESOURCES:
                try:
                    viewed = run_tool(TOOLS["user_recent_list_get"], {"kind": kind, "count": 20})[1]
                except ToolError:
                    viewed = []
                for item in viewed if isinstance(viewed, list) else []:  # odd answers too
                    thing = item.get(inner) if isinstance(item, dict) else None
                    if isinstance(thing, dict) and re.fullmatch(pattern, str(thing.get(key))):
                        path, title = make(thing)
                        items.append({"uri": f"backlog://{host}/{path}", "name": title + label})
            try:
                listed_ = run_tool(TOOLS["project_list_get"], {"archived": False})[1]
            except ToolError:
                listed_ = []
            items += [{"uri": f"backlog://{host}/projects/{p['projectKey']}",
                       "name": f"Project {p['projectKey']}: {one_line(p.get('name'))}{label}"}
                      for p in (listed_ if isinstance(listed_, list) else []) if isinstance(p, dict)
                      and PROJECT_KEY.match(str(p.get("projectKey")))]
    start = int(cursor) if isinstance(cursor, str) and DIGITS.match(cursor) else 0
    if cursor not in (None, "") and not (isinstance(cursor, str) and DIGITS.match(cursor)):
        raise RpcError(-32602, "Invalid cursor: call resources/list without one.")
    shown = fitting(items[start:start + RESOURCES_PAGE], 1)
    page = {"resources": shown}
    if start + len(shown) < len(items):
        page["nextCursor"] = str(start + len(shown))
    return page


def fitting(items, at_least):
    """The first items whose JSON fits the answer budget (at least `at_least` of them)."""
    shown, room = [], settings().max_answer - NOTE_ROOM
    for item in items:
        room -= len(dumps(item).encode()) + 1
        if room < 0 and len(shown) >= at_least:
            break
        shown.append(item)
    return shown


def one_page(params):
    """A list that is one page takes no cursor but its absence (or an empty one)."""
    if params.get("cursor") not in (None, ""):
        raise RpcError(-32602, "Invalid cursor: this list has one page; call it without one.")


def list_templates():
    hosts = [host_of(space) for space in SPACES.values() if host_of(space)] or ["HOST"]
    return {"resourceTemplates": [
        {"uriTemplate": f"backlog://{host}/{found.template}", "name": found.name + (
            f" ({host})" if len(hosts) > 1 else ""), "description": found.description}
        for host in hosts for found in RESOURCES]}


# == Completions ===============================================================

def complete(params):
    """Values for a prompt argument or a template variable, from a prefix: project keys,
    issue keys, milestone names, repositories; at most 100."""
    argument = params.get("argument") if isinstance(params.get("argument"), dict) else {}
    name, prefix = argument.get("name"), argument.get("value")
    context = params.get("context") if isinstance(params.get("context"), dict) else {}
    context = context.get("arguments") if isinstance(context.get("arguments"), dict) else {}
    if not isinstance(name, str) or not isinstance(prefix, str):
        raise RpcError(-32602, "completion/complete needs argument {name, value} strings.")
    ref = params.get("ref") if isinstance(params.get("ref"), dict) else {}
    values, every = [], True
    if WEB.match(prefix.strip()):  # a pasted address completes to what it names
        return {"completion": {"values": addressed_value(name, prefix), "hasMore": False}}
    try:
        # the space of the prompt or resource completed: its own projects, issues, repos
        space = resource_space(ref.get("uri"))[0] if ref.get("type") == "ref/resource" \
            else prompt_named(ref.get("name"))[0]
        with within(space), guarded("completion/complete"):
            found, every = COMPLETERS.get(name, lambda p, c: ([], True))(prefix, context)
            values = [v for v in found if isinstance(v, str)]
    except (ToolError, RpcError):
        values = []
    values = list(dict.fromkeys(v for v in values if v.lower().startswith(prefix.lower())))
    shown = fitting(values[:100], 0)
    return {"completion": {"values": shown, "total": len(values),
                           "hasMore": len(values) > len(shown) or not every}}


def address_values(parts):
    """What the parts of a pasted address name, by prompt argument or template variable:
    project DEMO, issue DEMO-42, a pull request's repo DEMO/webapp and number 7."""
    project = parts.get("project")
    return {k: v for k, v in {
        "project": project, "issue": parts.get("number") and f"{project}-{parts['number']}",
        "repo": parts.get("repo") and f"{project}/{parts['repo']}",
        "number": parts.get("pr")}.items() if v and project}


def addressed_value(name, address):
    """[the value of a prompt argument or template variable that a pasted address names]
    (none for an address of no space, of another kind, or outside BACKLOG_PROJECTS)."""
    try:
        space, parts = web_address(address)
        with within(space.name):
            if level_of(parts.get("project") or "") is None:
                return []
            value = address_values(parts).get(name)
    except (ToolError, BacklogError):
        return []
    return [value] if value else []


COMPLETERS = {}  # argument or template variable name -> completer


def completer(*names):
    """Register what completes these arguments: fn(prefix, context) -> (values, whether they
    are every value that starts with the prefix)."""
    def register(fn):
        COMPLETERS.update(dict.fromkeys(names, fn))
        return fn
    return register



@completer("project")
def _projects(prefix, context):
    found = run_tool(TOOLS["project_list_get"], {"keyword": prefix} if prefix else {})[1]
    return strings(found, "projectKey"), (getattr(found, "total", 0) or 0) <= len(
        strings(found, "projectKey"))


ISSUE_PREFIX = re.compile(r"([_A-Za-z0-9]{1,25})-([0-9]{0,9})\Z")
SCAN = 300  # a project with no more issues than this is scanned whole


@completer("issue")
def _issues(prefix, context):
    """Issue keys: those you viewed last, and, from PROJ-12, the project's keys that start
    so (PROJ-12, PROJ-120...): a small project is scanned whole, a large one looked up where
    such keys lie (issues are numbered in the order they were made)."""
    viewed = run_tool(TOOLS["user_recent_list_get"], {"kind": "issues", "count": 50})[1]
    keys = strings([i.get("issue") for i in viewed if isinstance(i, dict)]
                   if isinstance(viewed, list) else [], "issueKey")
    match = ISSUE_PREFIX.match(prefix)
    if not match:
        return keys, False
    project, digits = match.group(1).upper(), match.group(2)
    count = checked(run_tool(TOOLS["issue_count_get"], {"project_ids": [project]})[1],
                    {"count": int})["count"]
    starts = range(0, count, 100) if count <= SCAN else [max(0, int(digits) * m - 21)
                                                        for m in (1, 10, 100) if digits
                                                        and int(digits) * m <= count + 1000]
    for offset in starts:
        keys += strings(run_tool(TOOLS["issue_list_get"], {
            "project_ids": [project], "sort": "created", "order": "asc", "offset": offset,
            "count": 100, "fields": ["issueKey"]})[1], "issueKey")
    return keys, count <= SCAN


@completer("milestone")
def _milestones(prefix, context):
    project = str(context.get("project") or "").upper()
    if not project:
        return [], True
    found = run_tool(TOOLS["issue_milestone_list_get"], dict(
        {"project_id_or_key": project, "archived": True},
        **({"keyword": prefix} if prefix else {})))[1]
    return strings(found, "name"), (getattr(found, "total", 0) or 0) <= len(
        strings(found, "name"))


@completer("repo")
def _repos(prefix, context):
    keys = [prefix.split("/")[0].upper()] if "/" in prefix else _projects(prefix, context)[0][:10]
    out = []
    for key in keys:
        try:
            out += [f"{key}/{name}" for name in strings(run_tool(
                TOOLS["git_repository_list_get"], {"project_id_or_key": key})[1], "name")]
        except ToolError:
            pass
    return (out if "/" in prefix else out + [k + "/" for k in keys]), "/" in prefix


def strings(items, key):
    """The `key` texts of the objects of a Backlog list (anything else in it is passed)."""
    return [i[key] for i in items if isinstance(i, dict) and isinstance(i.get(key), str)] \
        if isinstance(items, list) else []




# == MCP methods ===============================================================

SERVER_INFO = {"name": "mcp-backlog-server", "version": __version__}
CAPABILITIES = {"tools": {}, "prompts": {}, "resources": {}, "completions": {}}
LOG_LEVELS = ("debug", "info", "notice", "warning", "error", "critical", "alert", "emergency")
INSTRUCTIONS = (  # routing in few words: Codex repeats them in every tool, Claude Code
    # shows them with the tool names only (their definitions load on search), Cline drops them
    "Backlog (Nulab; *.backlog.com, *.backlog.jp, *.backlogtool.com): issues (課題, keys like "
    "PROJ-123), comments (コメント), wiki (Wiki), documents (ドキュメント), pull requests "
    "(プルリクエスト), shared files (共有ファイル). Find issues: {p}issue_list_get (status, type "
    "and user names work within one project); read one: {p}issue_details_get; comment: "
    "{p}issue_comment_add; change: {p}issue_update. Others by family: {p}wiki_*, "
    "{p}document_*, {p}git_pr_*, {p}file_shared_*, {p}project_* (statuses, members, "
    "milestones). A pasted Backlog URL works where an id does. Answers are paged and cut to "
    "size; each says how to get the rest. Texts are written in the project's format (Markdown "
    "or Backlog notation), converted if needed.")
ALWAYS_LOAD = ("issue_list_get", "issue_details_get", "issue_comment_add", "project_list_get")
# ^ what the first turn of a Backlog session calls: loaded up front by hosts that defer the
# rest (Claude Code's tool search honours _meta anthropic/alwaysLoad)


def instructions():
    return INSTRUCTIONS.format(p=settings().prefix)


def form_mode(elicitation):
    """Did the client declare form-mode elicitation? {} or {"form": {}} (2025-11-25 on);
    never ask in a mode not declared."""
    return isinstance(elicitation, dict) and (not elicitation
                                              or isinstance(elicitation.get("form"), dict))


METHODS = {}    # JSON-RPC method -> Session method that answers it
LEGACY = set()  # methods of the legacy era only (2026-07-28 has none of them)
CACHEABLE = {}  # 2026-07-28: methods whose results extend CacheableResult -> (ttlMs, scope)


def method(name, legacy=False, cache=None):
    """Register a Session method as the answer to a JSON-RPC method; `legacy`: not in the
    2026-07-28 era; `cache`: (ttlMs, cacheScope) its results carry in that era."""
    def register(fn):
        METHODS[name] = fn
        if legacy:
            LEGACY.add(name)
        if cache:
            CACHEABLE[name] = cache
        return fn
    return register


class Session:
    """What the client negotiated: its protocol version, or the stateless era."""

    def __init__(self):
        import collections
        self.version = None
        self.elicit = False          # the client asks a person a question for us (form mode)
        self.lines = None            # the client's lines, when serve() reads them
        self.queued = collections.deque()  # lines that came while we waited for an answer
        self.cancelled = set()       # ids of queued requests the client cancelled meanwhile
        self.batch = []              # requests of the batch being answered, not yet run
        self.asked = 0

    def waiting(self, id_):
        """Whether a request with this id waits its turn (queued, or later in the batch being
        answered): only such a request can be cancelled before it runs."""
        def ids(message):
            return [m.get("id") for m in (message if isinstance(message, list) else [message])
                    if isinstance(m, dict) and "method" in m]
        queued = []
        for line in self.queued:
            try:
                queued += ids(parse_line(line))
            except (UnicodeDecodeError, ValueError, RecursionError):
                pass
        return id_ in queued + ids(self.batch)

    @method("initialize", legacy=True)
    def initialize(self, params):
        requested = params.get("protocolVersion")
        self.version = requested if requested in LEGACY_VERSIONS else LEGACY_VERSIONS[0]
        capabilities = params.get("capabilities")
        self.elicit = self.version >= "2025-06-18" and form_mode(
            capabilities.get("elicitation") if isinstance(capabilities, dict) else None)
        info = dict(SERVER_INFO, title="Backlog") if self.version >= "2025-06-18" else SERVER_INFO
        prefetch()
        return {"protocolVersion": self.version, "capabilities": CAPABILITIES,
                "serverInfo": info, "instructions": instructions()}

    @method("server/discover")
    def discover(self, params):
        prefetch()
        return {"supportedVersions": list(MODERN_VERSIONS), "capabilities": CAPABILITIES,
                "instructions": instructions(), "ttlMs": 3600000, "cacheScope": "public",
                "_meta": {META + "serverInfo": SERVER_INFO}}

    @method("ping", legacy=True)
    def ping(self, params):
        return {}

    @method("tools/list", cache=(3600000, "public"))
    def list_tools(self, params):
        tools = enabled_tools()
        prefix = settings().prefix
        names = list(tools)
        cursor = params.get("cursor")
        start = 0
        if cursor not in (None, ""):
            if not isinstance(cursor, str) or not DIGITS.match(cursor) \
                    or int(cursor) > len(names):
                raise RpcError(-32602, "Invalid cursor: call tools/list without one.")
            start = int(cursor)
        page = names[start:start + TOOLS_PAGE_SIZE]
        result = {"tools": [self._shape(tools[n].definition(prefix)) for n in page]}
        if start + TOOLS_PAGE_SIZE < len(names):
            result["nextCursor"] = str(start + TOOLS_PAGE_SIZE)
        return result

    def _shape(self, definition):
        """A tool definition as the negotiated version knows it: before 2025-06-18 the title
        lives in the annotations, and 2024-11-05 has no annotations at all."""
        if self.version and self.version < "2025-06-18":
            definition = dict(definition)
            title = definition.pop("title")
            if self.version == "2024-11-05":
                definition.pop("annotations")
            else:
                definition["annotations"] = dict(definition["annotations"], title=title)
        return definition

    @method("tools/call")
    def call_tool(self, params):
        name = params.get("name")
        if not isinstance(name, str):
            raise RpcError(-32602, "tools/call needs a string 'name'.")
        arguments = params.get("arguments")
        meta = params.get("_meta") if isinstance(params.get("_meta"), dict) else {}
        if META + "protocolVersion" in meta:  # 2026-07-28: ask in the result, if it can
            can = form_mode(meta.get(META + "clientCapabilities", {}).get("elicitation"))
            confirm = confirm_modern(params) if can else None
        else:
            confirm = self.confirm if self.elicit and self.lines else None
        return call_tool(name, {} if arguments is None else arguments, confirm=confirm)

    def confirm(self, tool_, args):
        """Ask the person through the client (elicitation/create) and wait for the answer:
        (answer, None to go ahead or the result to give instead). While waiting, a ping is
        answered at once, other lines wait their turn, and a cancellation of this call or
        CONFIRM_WAIT seconds end the wait."""
        self.asked += 1
        ask = f"confirm-{self.asked}"
        Progress.out.write({"jsonrpc": "2.0", "id": ask, "method": "elicitation/create",
                            "params": elicitation(tool_, args)})
        result = self.wait_for(ask)
        if isinstance(result, tuple):
            return result[0], said(result[1])
        return answered(result, tool_)

    def wait_for(self, ask):
        """The client's result for request `ask`, or (answer, sentence) saying why there is
        none. Lines are read through receive(), the one reader of stdin."""
        import signal
        alarm = hasattr(signal, "setitimer")
        if alarm:
            def expired(*_):
                raise TimeoutError
            previous = signal.signal(signal.SIGALRM, expired)
            signal.setitimer(signal.ITIMER_REAL, CONFIRM_WAIT)
        try:
            for line in iter(self.receive, None):
                kind, result = self.heard(line, ask)
                if kind == "answer":
                    return result
                if kind == "cancelled":
                    return "cancelled", "Cancelled: nothing was changed."
            return "no answer", "No answer (the client went away): nothing was changed."
        except TimeoutError:
            return "no answer", (f"No answer within {CONFIRM_WAIT / 60:g} minutes: nothing "
                                 "was changed.")
        finally:
            if alarm:
                signal.setitimer(signal.ITIMER_REAL, 0)
                signal.signal(signal.SIGALRM, previous)

    def heard(self, line, ask=None):
        """A line the client sent while a call runs (a question open, a batch): (kind, value).
        ("answer", result) for the reply to request `ask`; ("cancelled", None) when this
        very call is cancelled; else (None, None), a ping answered, a cancellation of a
        waiting request noted, anything else queued to wait its turn."""
        try:
            message = parse_line(line)
        except (UnicodeDecodeError, ValueError, RecursionError):
            message = None
        params = message.get("params") if isinstance(message, dict) and message.get(
            "method") == "notifications/cancelled" else None
        this = ANSWERING.get()
        if isinstance(message, dict) and ask is not None and message.get("id") == ask \
                and "method" not in message:
            return "answer", message.get("result")
        if isinstance(message, dict) and message.get("method") == "ping" and "id" in message:
            Progress.out.write(handle(message, self))
        elif isinstance(params, dict) and this is not None and params.get("requestId") == this:
            return "cancelled", None
        elif isinstance(params, dict) and isinstance(params.get("requestId"), (str, int)):
            if self.waiting(params["requestId"]):  # it will not run
                self.cancelled.add(params["requestId"])
        else:
            self.queued.append(line)
        return None, None

    def receive(self):
        """The next line from the client (None at its end, again and again)."""
        if not hasattr(self.lines, "get"):
            return next(self.lines, None)
        line = self.lines.get()
        if line is None:
            self.lines.put(None)  # the end stays the end
        return line

    def meanwhile(self):
        """While a long call runs (a batch): the lines the client sent meanwhile, read without
        waiting: a ping is answered, a cancellation of a waiting request noted, anything else
        waits its turn. True when this very call was cancelled."""
        import queue
        cancelled = False
        while hasattr(self.lines, "get_nowait"):
            try:
                line = self.lines.get_nowait()
            except queue.Empty:
                break
            if line is None:  # the client went away: its end waits its turn too
                self.lines.put(None)
                break
            cancelled = self.heard(line)[0] == "cancelled" or cancelled
        return cancelled

    def next_line(self):
        """The next line to answer: one that waited its turn, else a new one."""
        return self.queued.popleft() if self.queued else self.receive()

    @method("prompts/list", cache=(0, "private"))
    def list_prompts(self, params):
        one_page(params)
        return list_prompts()

    @method("prompts/get")
    def get_prompt(self, params):
        if not isinstance(params.get("name"), str):
            raise RpcError(-32602, "prompts/get needs a string 'name'.")
        arguments = params.get("arguments")
        return get_prompt(params["name"], {} if arguments is None else arguments)

    @method("resources/list", cache=(0, "private"))
    def list_resources(self, params):
        return list_resources(params.get("cursor"))

    @method("resources/templates/list", cache=(0, "private"))
    def list_templates(self, params):
        one_page(params)
        return list_templates()

    @method("resources/read", cache=(0, "private"))
    def read_resource(self, params):
        return read_resource(params.get("uri"))

    @method("completion/complete")
    def complete(self, params):
        return complete(params)

    @method("logging/setLevel", legacy=True)
    def set_level(self, params):
        if params.get("level") not in LOG_LEVELS:
            raise RpcError(-32602, f"level must be one of {', '.join(LOG_LEVELS)}.")
        return {}  # our log goes to stderr; no notifications/message are sent




# == JSON-RPC over stdio =======================================================

def error_reply(id_, code, message, data=None):
    error = {"code": code, "message": message}
    if data is not None:
        error["data"] = data
    return {"jsonrpc": "2.0", "id": id_, "error": error}


def valid_id(message):
    id_ = message.get("id")
    return isinstance(id_, str) or (isinstance(id_, int) and not isinstance(id_, bool))


def batch_item(message, session):
    """The reply to one message of a batch: not another batch, not initialize (2025-03-26),
    none for a request the client cancelled while it waited."""
    if isinstance(message, list):
        return error_reply(None, -32600, "A batch holds JSON objects, not batches.")
    if isinstance(message, dict) and valid_id(message) and "method" in message:
        if message["id"] in session.cancelled:
            session.cancelled.discard(message["id"])
            return None
        if message["method"] == "initialize":
            return error_reply(message["id"], -32600, "initialize cannot be part of a batch.")
    return handle(message, session)


def handle(message, session):
    """One decoded JSON-RPC message in, its reply out (None for notifications)."""
    if isinstance(message, list):
        if session.version != "2025-03-26":
            return error_reply(None, -32600, "Batches are not supported in this protocol version.")
        if not message:
            return error_reply(None, -32600, "Empty batch.")
        session.batch, replies = list(message), []
        while session.batch:
            replies.append(batch_item(session.batch.pop(0), session))
        replies = [r for r in replies if r is not None]
        return replies or None
    if not isinstance(message, dict):
        return error_reply(None, -32600, "A message must be a JSON object.")
    if "method" not in message and ("result" in message or "error" in message):
        return None  # a response (whatever its id) is never answered
    if "id" not in message:
        return None if "method" in message \
            else error_reply(None, -32600, "Invalid request: no method.")
    if not valid_id(message):
        return error_reply(None, -32600, "Invalid request: id must be a string or an integer.")
    id_, method = message["id"], message.get("method")
    if message.get("jsonrpc") != "2.0" or not isinstance(method, str):
        return error_reply(id_, -32600, "Invalid request: needs jsonrpc '2.0' and a string method.")
    params = message.get("params", {})
    if params is None:
        params = {}
    if not isinstance(params, dict):
        return error_reply(id_, -32602, "params must be an object.")
    try:
        modern = _modern(params, method)
        handler = METHODS.get(method)
        if handler is None or (modern and method in LEGACY):
            raise RpcError(-32601, f"Method not found: {clip(method, 80)}")
        meta = params.get("_meta")
        token = meta.get("progressToken") if isinstance(meta, dict) else None
        valid = isinstance(token, str) or (isinstance(token, int) and not isinstance(token, bool))
        bound = (ANSWERING.set(id_), PROGRESS.set(Progress(token) if valid else None),
                 PLAN.set(None), CLIENT.set(session))  # a batch's plan lives one request
        try:
            with answering():
                result = handler(session, params)
        except RpcError as exc:
            if modern and exc.code == -32002:  # this era says -32602 for a missing resource
                exc.code = -32602
            raise
        finally:  # a request answered inside this one (a ping) has bound and unbound its own
            CLIENT.reset(bound[3])
            PLAN.reset(bound[2])
            PROGRESS.reset(bound[1])
            ANSWERING.reset(bound[0])
        if modern:
            result = dict(result, resultType=result.get("resultType", "complete"))
            if method in CACHEABLE:  # the era's results that may be cached say how long
                result.update(zip(("ttlMs", "cacheScope"), CACHEABLE[method]))
        return {"jsonrpc": "2.0", "id": id_, "result": result}
    except RpcError as exc:
        return error_reply(id_, exc.code, exc.message, exc.data)
    except Exception:  # a bug: report it, keep serving
        import traceback
        log(f"internal error in {method}:\n{traceback.format_exc()}")
        return error_reply(id_, -32603, "Internal error in the server; see its stderr log.")


def _modern(params, method):
    """True for a stateless-era request (per-request _meta); checks its version and capabilities."""
    meta = params.get("_meta")
    if method == "server/discover":
        return True
    if not isinstance(meta, dict) or META + "protocolVersion" not in meta:
        return False
    version = meta[META + "protocolVersion"]
    if version not in MODERN_VERSIONS:
        asked = clip(version, 40) if isinstance(version, str) else shown(version, 40)
        raise RpcError(-32022, f"Unsupported protocol version: {asked}",
                       {"supported": list(MODERN_VERSIONS), "requested": asked})
    if not isinstance(meta.get(META + "clientCapabilities"), dict):
        raise RpcError(-32602, f"_meta needs {META}clientCapabilities.")
    return True


def parse_line(line):
    """A client's line: strict JSON (NaN and Infinity refused). A lone surrogate escape stays
    as it came, so that an id with one is echoed alike; tool arguments are scrubbed before
    use. Raises ValueError for what is not one JSON value."""
    return json.loads(line.decode("utf-8"), strict=False, parse_constant=_refuse)  # raw tabs: ok


def _refuse(constant):
    raise ValueError(f"{constant} is not JSON")


def inbox(stdin):
    """The client's lines, read by a thread of their own (stdin's only reader) into a queue,
    so that a long call can answer a ping or see a cancellation meanwhile; None at the end."""
    import queue
    import threading
    lines = queue.Queue()

    def chunks():  # the process's stdin by its descriptor: no buffer lock held at exit
        try:
            fd = stdin.fileno() if stdin is sys.stdin.buffer else None
        except (OSError, ValueError, AttributeError):
            fd = None
        if fd is None:
            yield from stdin
            return
        while True:
            data = os.read(fd, 65536)
            if not data:
                return
            yield data

    def pump():
        pieces = []  # of a line not ended yet (a long one comes in many reads)
        try:
            for data in chunks():
                while data:
                    end = data.find(b"\n") + 1
                    pieces.append(data[:end] if end else data)
                    data = data[end:] if end else b""
                    if end:
                        lines.put(b"".join(pieces))
                        pieces = []
        except (OSError, ValueError):  # stdin closed under us
            pass
        if pieces:
            lines.put(b"".join(pieces))
        lines.put(None)
    threading.Thread(target=pump, name="stdin", daemon=True).start()
    return lines


def serve(stdin=None, stdout=None):
    """Read JSON-RPC lines from stdin and write one reply line per request, until EOF."""
    stdin = stdin or sys.stdin.buffer
    out = Progress.out = Writer(stdout or sys.stdout.buffer)
    session = Session()
    session.lines = inbox(stdin)
    for line in iter(session.next_line, None):
        if not line.strip():
            continue
        try:
            message = parse_line(line)
        except (UnicodeDecodeError, ValueError, RecursionError):
            reply = error_reply(None, -32700, "Parse error: each line must be one JSON object.")
        else:
            if isinstance(message, dict) and "method" in message and valid_id(message) \
                    and message["id"] in session.cancelled:
                session.cancelled.discard(message["id"])  # cancelled while it waited: not run
                continue
            reply = handle(message, session)
        if reply is not None:
            out.write(reply)


ANSWERING = contextvars.ContextVar("answering", default=None)  # id of the request answered
PROGRESS = contextvars.ContextVar("progress", default=None)    # its Progress, if it asked


class Progress:
    """notifications/progress for the request being answered, only when it carries
    _meta.progressToken: `progress` grows with every step (pages, projects, bytes)."""

    out = None      # the Writer of stdout, once serve() runs

    def __init__(self, token):
        self.token, self.done = token, 0

    @staticmethod
    def step(message, at=None, total=None):
        """One step more (or the count reached, `at`), said to the client."""
        self = PROGRESS.get()
        if self is None or Progress.out is None:
            return
        self.done = self.done + 1 if at is None else max(at, self.done + 1)
        params = {"progressToken": self.token, "progress": self.done, "message": message}
        if total is not None and total >= self.done:
            params["total"] = total
        Progress.out.write({"jsonrpc": "2.0", "method": "notifications/progress",
                            "params": params})


class Writer:
    """The one writer of stdout: each message is one line of strict JSON (RFC 8259) that
    cannot fail to encode, with the secrets redacted; a SIGTERM that arrives while a line is
    being written ends the process once the line is whole."""

    stopping = writing = False

    def __init__(self, stream):
        self.stream = stream

    def write(self, message):
        data = wire(message)
        Writer.writing = True
        try:
            self.stream.write(data)  # the line and its newline: one buffer, not copied again
            self.stream.flush()
        finally:
            Writer.writing = False
        if Writer.stopping:
            raise SystemExit(0)

    @staticmethod
    def terminate(*_):
        if Writer.writing:
            Writer.stopping = True
        else:
            raise SystemExit(0)


def wire(message):
    """A message as the bytes of one line. The fast path is one dumps and one encode; the
    rare message that holds a secret, a lone surrogate (escaped \\udXXX from a client, cut
    text from Backlog), NaN or Infinity is cleaned and encoded again."""
    try:
        text = json.dumps(message, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
        forms, encoded, _ = secret_forms()
        if not any(form in text for form in forms) and not ("%" in text
                                                            and encoded.search(text)):
            return text.encode("utf-8") + b"\n"
    except (ValueError, UnicodeEncodeError):
        pass
    except (TypeError, RecursionError):
        message = error_reply(message.get("id") if isinstance(message, dict) else None, -32603,
                              "Internal error in the server; see its stderr log.")
        log(f"unserialisable message dropped: {type(message)}")
    text = json.dumps(clean(message), ensure_ascii=False, separators=(",", ":"),
                      allow_nan=False)
    return text.encode("utf-8", "backslashreplace") + b"\n"  # only in strings: \udXXX


def clean(value):
    """What wire() sends when the fast path fails: secrets redacted, NaN and Infinity made
    null. A lone surrogate left (only a client's own, echoed: Backlog's text is scrubbed when
    read) is written as its JSON escape (backslash-u-dXXX), so that the client reads back
    what it sent."""
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, float):
        return value if value - value == 0 else None
    if isinstance(value, (list, tuple)):
        return [clean(v) for v in value]
    if isinstance(value, dict):
        return {redact(k): clean(v) for k, v in value.items()}  # names are ours or Backlog's
    return value


# == Bundle ====================================================================
# The manifest of backlog_mcp.mcpb, the MCP Bundle that zipapp.sh packs around the .pyz:
# Claude Desktop installs it with a double click and asks for the settings in a form, keeping
# the key (sensitive: true) encrypted with the system's keychain. Manifest version 0.3, the one
# the MCPB specification calls current (github.com/modelcontextprotocol/mcpb, MANIFEST.md).

BUNDLED_PYZ = "server/backlog_mcp.pyz"
# The form, in words for a person: the rows of SETTINGS_TABLE that have a `form`.
BUNDLE_FORM = tuple((row.form[0], row.name) + row.form[1:] for row in SETTINGS_TABLE if row.form)


def bundle_manifest():
    """manifest.json of the bundle. Its tools and prompts are those a server started from
    the form left at its defaults lists (for display; the settings can add tools)."""
    form = {}
    for field, name, kind, title, description, required in BUNDLE_FORM:
        default = ROWS[name].default if kind == "boolean" else ""  # the server's own default
        form[field] = dict(type=kind, title=title, description=description, required=required,
                           **({"sensitive": True} if ROWS[name].secret else {}),
                           **({} if required else {"default": default}))
    # An optional field needs a default: a host leaves ${user_config.X} as it is without one.
    env = {name: str(form[field].get("default", "")).lower()
           for field, name, *_ in BUNDLE_FORM}
    before_env, before_flags = CONFIGURED
    configure(dict(env, BACKLOG_BASE_URL="https://your-space.backlog.com",
                   BACKLOG_API_KEY="0" * 64))  # only to list the tools; nothing is sent
    try:
        tools = [{"name": name, "description": tool_.description.split(". ")[0].rstrip(".")}
                 for name, tool_ in enabled_tools().items()]
        prompts = [{"name": p.name, "description": p.description,
                    "arguments": [n for n, _, _ in p.arguments],
                    "text": p.description + "".join(f"\n{d}: ${{arguments.{n}}}"
                                                    for n, d, _ in p.arguments)}
                   for p in PROMPTS.values()]
    finally:
        configure(before_env, **before_flags)
    run = ["-I", "${__dirname}/" + BUNDLED_PYZ]  # -I: no PYTHON* variable or user site reaches it
    return {
        "manifest_version": "0.3",
        "name": SERVER_INFO["name"],
        "display_name": "Backlog",
        "version": __version__,
        "description": "Backlog (Nulab) for Claude: issues, wikis, documents, Git pull "
                       "requests and shared files.",
        "long_description": (
            "Lets the assistant read and work on a Backlog space with your API key: find and "
            "update issues, write comments, read wikis and documents, review pull requests. "
            "Limit it to some projects, or to reading only, in the settings. Needs Python 3.9 "
            "or newer (python.org); nothing else is installed."),
        "author": {"name": "mcp-backlog-server contributors"},
        "license": "MIT",
        "privacy_policies": ["https://nulab.com/privacy/"],  # Backlog's (Nulab's) own
        "keywords": ["backlog", "nulab", "issues", "wiki", "git", "pull requests",
                     "project management"],
        "icon": "icon.png",
        "server": {"type": "python", "entry_point": BUNDLED_PYZ, "mcp_config": {
            "command": "python3", "args": run,
            "env": {name: f"${{user_config.{field}}}" for field, name, *_ in BUNDLE_FORM},
            # Windows: python3 is the Store's stub there; python.org's installer brings py.
            "platform_overrides": {"win32": {"command": "py", "args": ["-3", *run]}}}},
        "tools": tools,
        "tools_generated": True,
        "prompts": prompts,
        "compatibility": {"platforms": ["darwin", "win32", "linux"],
                          "runtimes": {"python": ">=3.9"}},
        "user_config": form,
    }


# == Command line ==============================================================

HELP = """usage: {0} [--read-only] [--toolsets a,b] [--version | --help | --check | --list-tools]
       {0} tools
       {0} help TOOL
       {0} call TOOL [name=value ...] [--json '{{...}}' | --json -] [--pretty] [--output FILE]
                    [--space NAME]
       {0} prompt NAME [argument ...]      what a prompt hands the model
       {0} read backlog://HOST/view/DEMO-42  what a resource holds

Serves MCP (JSON-RPC on stdin/stdout) when called with no command: a client's config starts
it. --check tests the settings against the space; `call` runs one tool from the shell.

Settings (environment variables):
{1}
"""


def help_text():
    name = os.path.basename(sys.argv[0] or "") or "backlog_mcp.pyz"
    if name in ("__main__.py", "-c"):
        name = "backlog_mcp.pyz"
    rows = "\n".join(f"  {row.name:27} {row.help}" for row in SETTINGS_TABLE)
    return HELP.format(name, rows).rstrip("\n")


def list_tools_lines():
    prefix = settings().prefix
    lines = []
    for t in TOOLS.values():
        why = t.disabled_because()
        lines.append(f"{prefix + t.name:34} {t.category:12} {'write' if t.write else 'read':5} "
                     f"{'enabled' if why is None else 'disabled: ' + why}")
    return lines


def all_problems():
    return list(dict.fromkeys(p for space in SPACES.values() for p in space.settings.problems))


def problems(after=None):
    """The configuration problems on stderr, one a line; exit status 1."""
    lines = ["configuration problem: " + p for p in all_problems()]
    emit("\n".join(lines + ([after] if after else [])), "stderr")
    raise SystemExit(1)


CHECK_ADVICE = {  # what --check tells a person, instead of the model's next step
    401: "BACKLOG_API_KEY was refused (HTTP 401): create a key in Backlog under Personal "
         "Settings > API, or check that it belongs to this space.",
    403: "The key's user may not read the space (HTTP 403): ask a space administrator.",
    404: "Nothing answers at BACKLOG_BASE_URL's /api/v2 (HTTP 404): check the space's URL.",
}


def check():
    s = settings()
    if s.problems:
        raise SystemExit("\n".join("configuration problem: " + p for p in s.problems))
    try:
        space = checked(api.get("space"), {})
        me = checked(api.get(("users", "myself")), {})
    except BacklogError as exc:
        raise SystemExit("error: " + CHECK_ADVICE.get(exc.status, "Backlog refused the "
                                                      f"request (HTTP {exc.status}).")
                         + f" Backlog said: {redact(exc.said or exc.what)}") from None
    except ToolError as exc:
        raise SystemExit("error: " + redact(exc.what)) from None
    missing = []
    for key in s.projects or ():
        try:
            project_info(key)
        except ToolError:
            missing.append(key)
    if missing:
        try:
            seen = ", ".join(p["projectKey"] for p in api.get("projects")) or "none"
        except (ToolError, KeyError, TypeError):
            seen = "(could not be listed)"
        raise SystemExit("\n".join(f"error: BACKLOG_PROJECTS: project {key} does not exist or "
                                   "this key cannot see it." for key in missing)
                         + f"\nprojects this key can see: {seen}")
    enabled = enabled_tools()
    out = [f"space: {space.get('name')} ({space.get('spaceKey')}) at {s.base_url}",
           f"user: {me.get('name')} ({me.get('userId')}, id {me.get('id')})",
           f"projects: {', '.join(s.allowed() or ['all the key can see'])}",
           "writable groups: "
           + (", ".join(g for g in WRITE_GROUPS if g in s.writable) or "none (read-only)"),
           f"toolsets: {', '.join(c for c in CATEGORIES if c in s.toolsets)}",
           f"uploads from: {os.pathsep.join(s.upload_dirs) or 'none (BACKLOG_UPLOAD_DIRS unset)'}",
           f"tools: {len(enabled)} enabled of {len(TOOLS)}", "ok"]
    emit("\n".join(out))


def emit(text, stream="stdout"):
    """The command line's one writer: redacted, UTF-8 whatever the locale, never a
    traceback when the stream is closed or missing."""
    target = getattr(sys, stream, None)
    try:
        target.buffer.write(SURROGATE.sub("\ufffd", redact(text)).encode("utf-8", "replace")
                            + b"\n")
        target.flush()
    except (AttributeError, OSError, ValueError):
        pass


def usage(message):
    """A usage error on the command line: message to stderr, exit status 2."""
    emit(f"usage error: {message}", "stderr")
    raise SystemExit(2)


def cli_value(tool_, name, text):
    """A command-line value read by the parameter's schema type."""
    param = tool_.params[tool_.named(name)]
    kinds = param.items if param.type == "array" else param.type
    kinds = kinds if isinstance(kinds, list) else [kinds]

    def scalar(item):
        if "integer" in kinds and re.match(r"-?[0-9]{1,18}\Z", item):
            return int(item)
        if "number" in kinds:
            try:
                return float(item) if len(item) < 40 else item
            except ValueError:
                pass
        if "boolean" in kinds and item.lower() in ("true", "false"):
            return item.lower() == "true"
        if "object" in kinds:
            try:
                return json.loads(item, parse_constant=_refuse)
            except (ValueError, RecursionError):
                usage(f"{name} takes a JSON object, e.g. "
                      f"{name}='{{\"Severity\":\"High\"}}'")
        return item

    if param.type == "array":
        if text.startswith("["):
            try:
                return json.loads(text, parse_constant=_refuse)
            except (ValueError, RecursionError):
                pass
        return [scalar(part.strip()) for part in text.split(",") if part.strip()]
    return scalar(text)


def cli_call(argv):
    """`call TOOL name=value ...`: run one tool and print what the model would get."""
    pretty = "--pretty" in argv
    argv = [a for a in argv if a != "--pretty"]
    output = json_arg = space = None
    rest = []
    it = iter(argv)
    for arg in it:
        if arg in ("--output", "-o", "--json", "--space"):
            value = next(it, None)
            if value is None:
                usage(f"{arg} needs a value")
            if arg == "--json":
                json_arg = value
            elif arg == "--space":
                space = value
            else:
                output = value
        else:
            rest.append(arg)
    if not rest:
        usage("call TOOL [name=value ...]; `tools` lists the tools")
    if space is not None and space not in SPACES:
        usage(f"--space: no space '{clip(space, 40)}'; spaces: "
              f"{', '.join(n for n in SPACES if n) or 'only one (BACKLOG_SPACES unset)'}")
    with within(space):
        cli_run(rest[0], rest[1:], json_arg, output, pretty, space)


def cli_run(name, pairs, json_arg, output, pretty, space=None):
    tool_ = cli_tool(name)
    arguments = {}
    if json_arg is not None:
        try:
            arguments = parse_line((sys.stdin.buffer.read() if json_arg == "-"
                                    else json_arg.encode("utf-8", "surrogateescape")))
        except (ValueError, RecursionError, AttributeError, OSError) as exc:
            usage(f"--json is not valid JSON ({clip(exc, 80)})")
        if not isinstance(arguments, dict):
            usage("--json takes a JSON object")
    for pair in pairs:
        key, sep, text = pair.partition("=")
        if not sep:
            usage(f"'{pair}' is not name=value")
        if tool_.named(key) is None:
            usage(f"{tool_.name} has no parameter '{key}'. "
                             f"Parameters: {', '.join(tool_.params) or 'none'}")
        value = cli_value(tool_, key, text)
        if key in arguments and isinstance(arguments[key], list) and isinstance(value, list):
            arguments[key] = arguments[key] + value
        else:
            arguments[key] = value
    try:
        named = addresses_space(tool_, arguments)  # a pasted address: its host's space
        if not pasted(tool_, arguments):  # else checked once the address is read
            tool_.bind(arguments)
    except ToolError as exc:
        usage(str(exc))
    with within(space or named):
        cli_answer(tool_, arguments, output, pretty)


def cli_answer(tool_, arguments, output, pretty):
    """Run a tool from the command line (the pipeline of tools/call; the person typed the
    command, so nothing is asked) and print its answer (or write it to `output`)."""
    try:
        args, value = run_call(tool_, arguments)
    except ToolError as exc:
        emit(str(exc), "stderr")
        raise SystemExit(1) from None
    if output:
        data = redact_bytes(value.raw) if isinstance(value, Download) else \
            (redact(dumps(value, pretty)) + "\n").encode("utf-8")
        try:
            with open(output, "wb") as fh:
                fh.write(data)
        except (OSError, ValueError) as exc:
            emit(f"cannot write {output}: {exc.strerror if isinstance(exc, OSError) else exc}",
                 "stderr")
            raise SystemExit(1) from None
        emit(f"wrote {len(data)} bytes to {output}", "stderr")
        return
    result = result_of(tool_, args, value)
    texts = [c.get("text") if c["type"] == "text" else f"[{c['mimeType']} image: use --output FILE]"
             for c in result["content"]]
    if pretty and not isinstance(value, (str, Download)):
        texts[0] = dumps(json.loads(texts[0]), pretty=True)
    emit(texts[0])
    for note in texts[1:]:
        emit(note, "stderr")


def cli_rpc(command, argv):
    """`prompt NAME [value ...]` and `read URI`: print what the model would get."""
    if not argv:
        usage("prompt NAME [argument ...] | read URI")
    try:
        if command == "read":
            result = read_resource(argv[0])
            for content in result["contents"]:
                emit(content.get("text") or f"[{content.get('mimeType')} blob, "
                     f"{len(content.get('blob', '')) * 3 // 4} bytes]")
            return
        found = PROMPTS.get(argv[0][len(settings().prefix):]) or PROMPTS.get(argv[0])
        if found is None:
            usage(f"unknown prompt '{clip(argv[0], 40)}'; prompts: {', '.join(PROMPTS)}")
        values = dict(zip([n for n, _, _ in found.arguments], argv[1:]))  # by position, as
        result = get_prompt(settings().prefix + found.name, values)  # Claude Code passes them
        emit(result["messages"][0]["content"]["text"])
    except RpcError as exc:
        emit(exc.message, "stderr")
        raise SystemExit(1) from None


def cli_tool(name):
    found = TOOLS.get(name) or tool_named(name)
    if found is None:
        wanted = name[len(settings().prefix):][:64] if name.startswith(settings().prefix) \
            else name[:64]
        near = sorted((distance(wanted, n), n) for n in TOOLS)
        close = [n for d, n in near if d <= max(2, len(wanted) // 4)][:5]
        usage(f"unknown tool '{clip(name, 64)}'."
              + (f" Did you mean: {', '.join(close)}?" if close else "")
              + " `tools` lists them all.")
    why = found.disabled_because()
    if why:
        usage(f"{found.name} is disabled: {why}")
    return found


def cli_help(name):
    tool_ = cli_tool(name)
    lines = [f"{tool_.name}: {tool_.title}", tool_.description,
             f"group: {tool_.write or 'read'}; " + (tool_.disabled_because() or "enabled"), "",
             "parameters:"]
    rows = []
    for pname, param in tool_.params.items():
        if pname in tool_.unlisted:
            continue
        schema = param.schema()
        kind = schema["type"] + (f" of {schema['items']['type']}" if "items" in schema else "")
        enum = schema.get("enum") or schema.get("items", {}).get("enum")
        rows.append((pname, kind, "required" if pname in tool_.required else "optional",
                     param.doc + (f" ({', '.join(map(str, enum))})" if enum else "")))
    widths = [max([len(r[i]) for r in rows] + [0]) for i in range(3)]
    lines += [f"  {r[0]:{widths[0]}}  {r[1]:{widths[1]}}  {r[2]:{widths[2]}}  {r[3]}"
              for r in rows] or ["  (none)"]
    emit("\n".join(lines))


def main(argv=None):
    argv = list(sys.argv[1:] if argv is None else argv)
    flags = {}
    for row in SETTINGS_TABLE:  # the settings' own flags: --read-only, --toolsets a,b
        if row.cli and row.cli[0] in argv:
            i = argv.index(row.cli[0])
            takes = row.cli[1] is None
            if takes and i + 1 >= len(argv):
                usage(f"{row.cli[0]} needs a value: {row.help}")
            flags[row.attribute] = argv[i + 1] if takes else True
            del argv[i:i + 1 + takes]
    configure(**flags)
    command = argv[0] if argv else None
    if command in ("--version", "-V"):
        emit(f"mcp-backlog-server {__version__}")
        if sys.version_info < (3, 9):
            problems()
    elif command in ("--help", "-h"):
        emit(help_text())
    elif command in ("--list-tools", "tools"):
        for name in SPACES:
            with within(name):
                emit((f"space {name}:\n" if several() else "") + "\n".join(list_tools_lines()))
        if all_problems():
            problems("the tool list above is what the server offers until they are fixed")
    elif command == "--check":
        failed = False
        for name in SPACES:  # one block a space; a bad one does not stop the others
            with within(name):
                if several():
                    emit(f"space {name}{' (default)' if name == DEFAULT_SPACE else ''}:")
                try:
                    check()
                except SystemExit as exc:
                    failed = True
                    if isinstance(exc.code, str):
                        emit(exc.code, "stderr")
        if failed:
            raise SystemExit(1)
    elif command == "help" and len(argv) == 2:
        cli_help(argv[1])
    elif command == "call":
        cli_call(argv[1:])
    elif command in ("prompt", "read"):
        cli_rpc(command, argv[1:])
    elif command is None:
        run_server()
    else:
        usage(f"unknown argument '{clip(command, 80)}'\n\n{help_text()}")


def run_server():
    import signal
    for problem in all_problems():
        log("configuration problem: " + problem)
    for variable in IGNORED:
        log(f"note: {variable} is not a setting of this server; it is ignored")
    signal.signal(signal.SIGTERM, Writer.terminate)
    if sys.stdin is None or sys.stdout is None:
        log("stdin or stdout is closed: a client starts this server with both as pipes.")
        raise SystemExit(1)
    if sys.stdin.isatty():
        log("this speaks MCP (JSON-RPC) on stdin/stdout for an MCP client. To try it by hand: "
            f"{help_text().split()[1]} --check, or call TOOL name=value (see --help). "
            "Ctrl-D ends it.")
    try:
        serve()
    except KeyboardInterrupt:
        pass
    except BrokenPipeError:  # the client went away: leave quietly, no flush at exit
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())


if __name__ == "__main__":
    main()
