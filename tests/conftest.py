import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)


# a real small filesystem for the full-disk tests (tests/test_full_disk.py, tests/test_prepare.py)
@pytest.fixture
def small_filesystem(tmp_path):
    """mount(size) -> a tmpfs of that many bytes inside tmp_path, (root only)."""
    mounts = []
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root; the file-size-limit test covers the write path")

    def mount(size):
        point = tmp_path / f"fs{len(mounts)}"
        point.mkdir()
        p = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(point)],
                           capture_output=True, text=True)
        if p.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here ({p.stderr.strip() or p.returncode}); "
                        f"the file-size-limit test covers the write path")
        mounts.append(point)
        return point
    yield mount
    for point in mounts:
        subprocess.run(["umount", str(point)], check=False)
