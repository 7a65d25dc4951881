"""What a client reads of the server's lines, shared by the tests and benchmarks/fuzz.py.

Stdlib only: benchmarks/fuzz.py runs as a script and imports it from tests/.
"""

import json


def refuse(constant):
    raise ValueError(f"{constant} is not RFC 8259 JSON")


def strict_json(line):
    """One line of stdout as RFC 8259 reads it: no NaN, no Infinity, UTF-8 only."""
    return json.loads(line.decode("utf-8") if isinstance(line, bytes) else line,
                      parse_constant=refuse)
