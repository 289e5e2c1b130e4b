import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)


# tiny models' ops gain nothing from a second thread and lose a lot on busy cores
# (tests/test_model.py, tests/test_optim.py: pytestmark = pytest.mark.usefixtures("one_torch_thread"))
@pytest.fixture(scope="module")
def one_torch_thread():
    import torch
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


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


# the fault suite's tiny dataset and uninterrupted reference run (tests/test_faults.py,
# test_fault_stages.py, test_bad_input.py)
@pytest.fixture(scope="session")
def fault_lab(tmp_path_factory):
    """{root, data, ref (its final ckpt.pt and best.pt, loaded), ref_dir}: 40 iterations, an eval
    and a checkpoint every 10."""
    import fault_helpers as fh
    root = tmp_path_factory.mktemp("faults")
    data = fh.make_dataset(str(root / "data"))
    ref_dir = str(root / "ref")
    ref = fh.reference_run(data, ref_dir, max_iters=40, eval_interval=10)
    return {"root": root, "data": data, "ref": ref, "ref_dir": ref_dir}
