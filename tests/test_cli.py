"""The command line: reports, files, exit codes, one-line errors, comparison."""
import json
import os
import subprocess
import sys

import pytest

from diagnose.cli import count, main
from errors import UserError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def nanogpt_log(tmp_path, name="train.log", n=60, slope=0.05, nan_from=None):
    lines = ["tokens per iteration will be: 8,192"]
    for i in range(n):
        loss = 10.0 - slope * i
        text = "nan" if nan_from is not None and i >= nan_from else f"{loss:.4f}"
        if i % 10 == 0:
            lines.append(f"step {i}: train loss {loss:.4f}, val loss {loss + 0.05:.4f}")
        lines.append(f"iter {i}: loss {text}, time 10.00ms, mfu 5.00%")
    p = tmp_path / name
    p.write_text("\n".join(lines) + "\n")
    return str(p)


def test_count_accepts_separators_exponents_and_suffixes():
    assert [count(t) for t in ("524,288", "524_288", "10e9", "124M", "1.5B", "32k")] == \
           [524288, 524288, 10**10, 124000000, 1500000000, 32000]


def test_report_files_and_strict(tmp_path, capsys):
    log = nanogpt_log(tmp_path, nan_from=50)
    out = tmp_path / "o"
    rc = main([log, "--md", str(out / "r.md"), "--json", str(out / "r.json"), "--plot", str(out / "plots")])
    assert rc == 0
    text = capsys.readouterr().out
    assert text.startswith(f"diagnose {log} (nanogpt)") and "CRITICAL" in text
    assert f"plot: {out / 'plots' / 'loss.png'}" in text
    doc = json.loads((out / "r.json").read_text())
    assert doc["schema"] == "diagnose.report/1" and doc["run"]["tokens_per_iter"] == 8192
    assert doc["plots"] == [str(out / "plots" / "loss.png")]
    assert "![loss.png](plots/loss.png)" in (out / "r.md").read_text()
    assert sorted(os.listdir(out)) == ["plots", "r.json", "r.md"]  # no temporary left behind
    assert main([log, "--strict", "--quiet"]) == 1   # the NaN is critical
    assert capsys.readouterr().out == ""


def test_compare_two_runs_on_tokens_axis(tmp_path, capsys):
    a = nanogpt_log(tmp_path, "a.log")
    b = nanogpt_log(tmp_path, "b.log", slope=0.08)
    c = tmp_path / "c.log"  # no tokens per iteration: listed, left out of the overlay
    c.write_text("\n".join(f"iter {i}: loss {9 - i / 100:.3f}, time 1.00ms, mfu 1.00%" for i in range(30)) + "\n")
    rc = main([a, b, str(c), "--plot", str(tmp_path / "p"), "--json", str(tmp_path / "c.json")])
    assert rc == 0
    text = capsys.readouterr().out
    header = text.splitlines()[0].split()
    assert header[:3] == ["run", "format", "last"]
    rows = {ln.split()[0]: ln for ln in text.splitlines()[1:4]}
    assert "4.83e+05" in rows["a.log"] and "8192" in rows["a.log"]   # 59 iters x 8192 tokens
    assert "unknown" in rows["c.log"]
    assert "c.log: tokens unknown: give --tokens-per-iter N" in text
    assert sorted(os.listdir(tmp_path / "p")) == ["compare.png", "loss_1_a.log.png", "loss_2_b.log.png",
                                                   "loss_3_c.log.png"]
    doc = json.loads((tmp_path / "c.json").read_text())
    assert doc["schema"] == "diagnose.compare/1" and len(doc["runs"]) == 3
    assert doc["table"][1]["last_val_loss"] == pytest.approx(10.0 - 0.08 * 50 + 0.05)


def test_user_errors_are_one_line(tmp_path):
    with pytest.raises(UserError, match="not found"):
        main([str(tmp_path / "missing.log")])
    with pytest.raises(UserError, match="unrecognized arguments: --bogus"):
        main([nanogpt_log(tmp_path), "--bogus"])
    with pytest.raises(UserError, match="--md .* is a folder"):
        main([nanogpt_log(tmp_path), "--md", str(tmp_path)])


def test_module_entry_point_exit_codes(tmp_path):
    """The real process: exit 2 and exactly one line on stderr for a user error."""
    empty = tmp_path / "empty.log"
    empty.write_text("")
    proc = subprocess.run([sys.executable, "-m", "diagnose", str(empty)], cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr.count("\n") == 1 and proc.stderr.startswith(f"error: {empty} is empty;")


def test_a_file_that_cannot_be_written_is_one_line_and_the_report_still_prints(tmp_path, capsys):
    log = nanogpt_log(tmp_path)
    blocker = tmp_path / "not_a_folder"
    blocker.write_text("a file where a folder should be")
    rc = main([log, "--json", str(blocker / "r.json"), "--md", str(tmp_path / "ok.md"),
               "--plot", str(blocker / "plots")])
    out, err = capsys.readouterr()
    assert rc == 2
    assert out.startswith(f"diagnose {log} (nanogpt)") and "plot:" not in out
    lines = err.strip().split("\n")
    assert len(lines) == 2
    assert lines[0].startswith(f"error: cannot write plot {blocker / 'plots' / 'loss.png'} (")
    assert lines[1].startswith(f"error: cannot write --json {blocker / 'r.json'} (")
    assert (tmp_path / "ok.md").read_text().startswith("# Diagnosis of")  # the writable one is written
    assert not list(tmp_path.glob(".tmp-*"))


def test_full_disk_in_a_child_process(tmp_path):
    """RLIMIT_FSIZE makes every write past 4 KB fail with EFBIG, as a full disk would."""
    resource = pytest.importorskip("resource")
    log = nanogpt_log(tmp_path)
    out = tmp_path / "out"

    def limit():
        resource.setrlimit(resource.RLIMIT_FSIZE, (4096, 4096))

    proc = subprocess.run([sys.executable, "-m", "diagnose", log, "--json", str(out / "r.json"),
                           "--plot", str(out / "plots")], cwd=ROOT, capture_output=True, text=True,
                          preexec_fn=limit)
    assert proc.returncode == 2
    assert proc.stdout.startswith(f"diagnose {log} (nanogpt)")
    errors = [ln for ln in proc.stderr.splitlines() if ln.startswith("error: ")]
    assert errors == [ln for ln in proc.stderr.splitlines() if ln.strip()]  # nothing else: no traceback
    assert len(errors) == 2 and str(out / "plots" / "loss.png") in errors[0] and str(out / "r.json") in errors[1]
    assert not (out / "r.json").exists() and not list(out.glob(".tmp-*"))
