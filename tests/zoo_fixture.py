"""The committed ground-truth zoo (tests/fixtures/zoo, made by `python -m bench.zoo.generate`):
its labels, and one rendering as a plain file for the tests that read it."""
import json
import os

from bench.zoo import series

ZOO = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fixtures", "zoo")
with open(os.path.join(ZOO, "labels.json")) as _f:
    LABELS = json.load(_f)["runs"]


def plain(tmp_path, name, fmt):
    """The rendering decompressed under its own file name (diagnose reads the format from it)."""
    file = LABELS[name]["files"][fmt]
    path = tmp_path / f"{name}_{file}"
    with series.open_text(os.path.join(ZOO, name, file + ".gz")) as f:
        path.write_text(f.read())
    return str(path)
