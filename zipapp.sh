#!/usr/bin/env bash
# Build backlog_mcp.pyz: the server plus requests and its pure-Python dependencies, in one file
# that runs with nothing but a stock CPython 3.9 to 3.13 (also on a machine without internet).
# Beside it, backlog_mcp.mcpb: the MCP Bundle that Claude Desktop installs with a double click
# (manifest.json from backlog_mcp.bundle_manifest(), the .pyz under server/, LICENSE, an icon).
#
#   bash zipapp.sh [OUTPUT]         default OUTPUT: backlog_mcp.pyz (and backlog_mcp.mcpb)
#
# Needs PyPI once, to fetch the pinned wheels (or WHEELS=DIR with them already downloaded).
# Bytecode is compiled for every CPython 3.9-3.13 found (PATH, then pyenv), so that start-up
# does not compile the sources; an interpreter without its bytecode compiles the sources
# shipped beside it. Reproducible: same sources and interpreters, same bytes.
set -euo pipefail
cd "$(dirname "$0")"
python="${PYTHON:-python3}"

# The stock interpreters, by one rule (the tests and .ci/run ask this script for them):
# for each minor 3.9-3.13, pyenv's newest patch release, else pythonX.Y on PATH.
interpreters=()
for v in 3.9 3.10 3.11 3.12 3.13; do
  exe=""
  if command -v pyenv >/dev/null 2>&1; then
    dir="$(ls -d "$(pyenv root)/versions/$v".* 2>/dev/null | sort -V | tail -n 1 || true)"
    [ -n "$dir" ] && exe="$dir/bin/python$v"
  fi
  [ -z "$exe" ] && exe="$(command -v "python$v" 2>/dev/null || true)"
  if [ -n "$exe" ] && "$exe" -c pass >/dev/null 2>&1; then interpreters+=("$exe"); fi
done

if [ "${1:-}" = "--pythons" ]; then
  printf '%s\n' "${interpreters[@]}"
  exit 0
fi
out="${1:-backlog_mcp.pyz}"

# Pure-Python wheels that still support Python 3.9; licences travel in their dist-info.
pins="requests==2.32.5 urllib3==2.6.3 idna==3.20 certifi==2026.10.19.post1 charset_normalizer==3.5.3"

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
wheels="${WHEELS:-$work/wheels}"
if [ -z "${WHEELS:-}" ]; then
  # shellcheck disable=SC2086
  "$python" -m pip download --quiet --disable-pip-version-check --no-deps --only-binary=:all: --platform any \
    --python-version 3.9 --implementation py --abi none -d "$wheels" $pins
fi

"$python" - "$wheels" "$work/stage" "$out" "${interpreters[@]}" <<'PY'
import os, subprocess, sys, zipfile

wheels, stage, out, interpreters = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4:]
os.makedirs(stage)
for name in sorted(os.listdir(wheels)):
    if name.endswith(".whl"):
        with zipfile.ZipFile(os.path.join(wheels, name)) as whl:
            whl.extractall(stage)
for name in ("backlog_mcp.py", "LICENSE"):
    with open(name, "rb") as src, open(os.path.join(stage, name), "wb") as dst:
        dst.write(src.read())
with open(os.path.join(stage, "__main__.py"), "w") as main:
    main.write('''"""Run the server; use the bytecode built for this interpreter when the archive has it."""
import os
import sys

if sys.version_info < (3, 9):  # said in words any Python (2 too) can run: not a traceback
    sys.stderr.write("mcp-backlog-server needs Python 3.9 or newer; %s is Python %s. Run it "
                     "with python3 (3.9 to 3.13): python3 backlog_mcp.pyz\\n"
                     % (sys.executable, sys.version.split()[0]))
    sys.exit(1)
sys.path.insert(0, os.path.join(os.path.dirname(__file__), "_pyc", sys.implementation.cache_tag))
import backlog_mcp  # noqa: E402

backlog_mcp.main()
''')

# Bytecode per interpreter, in _pyc/<cache tag>/ (not certifi: its cacert.pem sits beside its
# source). Unchecked-hash pycs carry no timestamp.
COMPILE = r'''
import os, py_compile, sys
stage = sys.argv[1]
root = os.path.join(stage, "_pyc", sys.implementation.cache_tag)
for folder, dirs, files in os.walk(stage):
    dirs[:] = sorted(d for d in dirs if d not in ("_pyc", "certifi") and not d.endswith(".dist-info"))
    for name in sorted(files):
        rel = os.path.relpath(os.path.join(folder, name), stage)
        if name.endswith(".py") and rel != "__main__.py":
            py_compile.compile(os.path.join(stage, rel), os.path.join(root, rel + "c"), dfile=rel,
                               doraise=True,
                               invalidation_mode=py_compile.PycInvalidationMode.UNCHECKED_HASH)
'''
for exe in interpreters:
    subprocess.run([exe, "-s", "-c", COMPILE, stage], check=True,
                   env=dict(os.environ, PYTHONHASHSEED="0"))  # set constants in one order

entries = []
for folder, dirs, files in os.walk(stage):
    dirs.sort()
    for name in files:
        path = os.path.join(folder, name)
        if "__pycache__" not in path and not name.endswith(".pyc") or "/_pyc/" in path:
            entries.append(os.path.relpath(path, stage))
tmp = out + ".tmp"
with open(tmp, "wb") as fh:
    fh.write(b"#!/usr/bin/env python3\n")
    with zipfile.ZipFile(fh, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as pyz:
        for rel in sorted(entries):
            info = zipfile.ZipInfo(rel.replace(os.sep, "/"), date_time=(1980, 1, 1, 0, 0, 0))
            info.external_attr = 0o644 << 16
            info.compress_type = zipfile.ZIP_DEFLATED
            with open(os.path.join(stage, rel), "rb") as src:
                pyz.writestr(info, src.read(), compresslevel=9)
os.chmod(tmp, 0o755)
os.replace(tmp, out)
tags = sorted(os.listdir(os.path.join(stage, "_pyc"))) if interpreters else []
print(f"built {out}: {os.path.getsize(out):,} bytes; bytecode for {', '.join(tags) or 'none'}")


def icon(size=512):
    """A white list on a green rounded square, as a PNG (antialiased by distance to edges)."""
    import struct
    import zlib

    def box(x0, y0, x1, y1, r):  # a rounded rectangle: its rows, and a distance function
        cx, cy, hx, hy = (x0 + x1) / 2, (y0 + y1) / 2, (x1 - x0) / 2 - r, (y1 - y0) / 2 - r
        def distance(x, y):
            qx, qy = abs(x - cx) - hx, abs(y - cy) - hy
            return (max(qx, 0) ** 2 + max(qy, 0) ** 2) ** 0.5 + min(max(qx, qy), 0) - r
        return y0 - 1, y1 + 1, x0 - 1, x1 + 1, distance
    s = size / 512
    square = box(16 * s, 16 * s, 496 * s, 496 * s, 104 * s)
    marks = [box(x0 * s, (y - h) * s, x1 * s, (y + h) * s, h * s)
             for y in (160, 256, 352) for x0, x1, h in ((112, 168, 28), (200, 400, 24))]
    rows = []
    for y in range(size):
        row = bytearray(b"\0")  # filter: none
        near = [m for m in marks if m[0] <= y + 0.5 <= m[1]]
        for x in range(size):
            px, py = x + 0.5, y + 0.5
            base = min(1.0, max(0.0, 0.5 - square[4](px, py)))
            white = max([min(1.0, max(0.0, 0.5 - m[4](px, py))) for m in near
                         if m[2] <= px <= m[3]] or [0.0])
            colour = [round(c + (255 - c) * white) for c in (31, 157, 116)]
            row += bytes(colour + [round(255 * base)])
        rows.append(bytes(row))

    def chunk(kind, data):
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data)))
    header = struct.pack(">IIBBBBB", size, size, 8, 6, 0, 0, 0)  # 8-bit RGBA
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header)
            + chunk(b"IDAT", zlib.compress(b"".join(rows), 9)) + chunk(b"IEND", b""))


# The bundle: its manifest comes from the module (tools and prompts from the registry).
sys.dont_write_bytecode = True
sys.path.insert(0, stage)  # requests and the module, as the .pyz carries them
import json  # noqa: E402
import backlog_mcp  # noqa: E402

bundle = (out[:-4] if out.endswith(".pyz") else out) + ".mcpb"
with open(out, "rb") as pyz, open("LICENSE", "rb") as licence:
    files = {"LICENSE": licence.read(), "icon.png": icon(),
             "manifest.json": (json.dumps(backlog_mcp.bundle_manifest(), indent=2,
                                          ensure_ascii=False) + "\n").encode(),
             backlog_mcp.BUNDLED_PYZ: pyz.read()}
with zipfile.ZipFile(bundle + ".tmp", "w") as mcpb:
    for name in sorted(files):
        info = zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0))
        info.external_attr = 0o644 << 16
        info.compress_type = zipfile.ZIP_STORED if name.endswith(".pyz") else zipfile.ZIP_DEFLATED
        mcpb.writestr(info, files[name], compresslevel=9)
os.replace(bundle + ".tmp", bundle)
print(f"built {bundle}: {os.path.getsize(bundle):,} bytes")
PY
