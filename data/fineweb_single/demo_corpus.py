"""
The embedded demo corpus: text that every Python installation carries, written as a small
parquet in FineWeb's schema so that the demo runs the same pipeline as a real FineWeb file.

Documents: the sections of CPython's reference documentation in pydoc_data.topics (the text
behind help('if')), then the docstrings of the standard library's top-level modules, read
from their source with ast (nothing is imported or run). About 580k characters, 340 documents.
"""
import ast
import glob
import os
import sys
import sysconfig

import pyarrow as pa
import pyarrow.parquet as pq

from errors import UserError

FINEWEB_SCHEMA = pa.schema([
    ("text", pa.string()), ("id", pa.string()), ("dump", pa.string()), ("url", pa.string()),
    ("date", pa.string()), ("file_path", pa.string()), ("language", pa.string()),
    ("language_score", pa.float64()), ("token_count", pa.int64()),
])


def topic_sections():
    """(name, text) for each section of each pydoc topic; a section starts at a heading
    underlined with '=' or '-', as the reStructuredText the topics were rendered from."""
    try:
        from pydoc_data.topics import topics
    except ImportError:
        raise UserError("this Python lacks pydoc_data.topics (its documentation); install the "
                        "full Python (e.g. apt install python3-full) or prepare a file with --input")
    for key in sorted(topics):
        lines = topics[key].split("\n")
        section, number = [], 0
        for i, line in enumerate(lines):
            underline = lines[i + 1] if i + 1 < len(lines) else ""
            is_heading = len(underline) >= 3 and len(underline) == len(line) and set(underline) in ({"="}, {"-"})
            if is_heading and section:
                yield f"{key}/{number}", "\n".join(section).strip()
                section, number = [], number + 1
            section.append(line)
        yield f"{key}/{number}", "\n".join(section).strip()


def module_docstrings():
    """(module name, docstring) of the standard library's top-level .py modules."""
    for path in sorted(glob.glob(os.path.join(sysconfig.get_paths()["stdlib"], "*.py"))):
        try:
            with open(path, encoding="utf-8") as f:
                doc = ast.get_docstring(ast.parse(f.read()))
        except (OSError, SyntaxError, UnicodeDecodeError, ValueError):
            continue  # a stripped or odd installation: use what there is
        if doc:
            yield os.path.basename(path)[:-3], doc


def write_demo_parquet(path):
    """Write the demo corpus to `path` (atomically) and return the number of documents."""
    version = "%d.%d" % sys.version_info[:2]
    rows = []
    for name, text in topic_sections():
        rows.append((text, f"pydoc_data.topics/{name}", f"https://docs.python.org/{version}/reference/"))
    for name, text in module_docstrings():
        rows.append((text, f"stdlib/{name}", f"https://docs.python.org/{version}/library/{name}.html"))
    n = len(rows)
    table = pa.table({
        "text": [r[0] for r in rows], "id": [r[1] for r in rows],
        "dump": [f"python-{sys.version.split()[0]}"] * n, "url": [r[2] for r in rows],
        "date": [None] * n, "file_path": ["pydoc_data/topics.py" if r[1].startswith("pydoc") else "Lib"
                                          for r in rows],
        "language": ["en"] * n, "language_score": [1.0] * n, "token_count": [None] * n,
    }, schema=FINEWEB_SCHEMA)
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    pq.write_table(table, path + ".tmp", row_group_size=128)
    os.replace(path + ".tmp", path)
    return n
