"""pyproject.toml installs what users import: every top-level module and every package of diagnose/
(data/ and bench/ are run from the checkout, as in nanoGPT)."""
import glob
import os

import pytest

tomllib = pytest.importorskip("tomllib")  # Python >= 3.11

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def setuptools_table():
    with open(os.path.join(ROOT, "pyproject.toml"), "rb") as f:
        return tomllib.load(f)["tool"]["setuptools"]


def test_py_modules_are_the_top_level_modules():
    on_disk = sorted(os.path.splitext(os.path.basename(p))[0] for p in glob.glob(os.path.join(ROOT, "*.py")))
    assert sorted(setuptools_table()["py-modules"]) == on_disk


def test_packages_are_the_folders_with_an_init():
    on_disk = sorted(os.path.relpath(os.path.dirname(p), ROOT).replace(os.sep, ".")
                     for p in glob.glob(os.path.join(ROOT, "diagnose", "**", "__init__.py"), recursive=True))
    assert sorted(setuptools_table()["packages"]) == on_disk
