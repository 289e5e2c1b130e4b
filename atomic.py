"""
Atomic file writes, the one place for them: write to a temporary name in the same folder,
flush it to disk, rename it over the target. A crash or a kill at any moment leaves either
the old file or the new one, never a torn one. Torch-free (diagnose and prepare use it too).

The temporary name is PATH.tmpPID: a folder's leftovers from killed writers are recognised
(and removed) by stale_temporaries().
"""
import json
import os


def temp_name(path):
    return f"{path}.tmp{os.getpid()}"


def write_atomic(path, write):
    """write(tmp) to a temporary name beside path, fsync it, rename it over path."""
    tmp = temp_name(path)
    try:
        write(tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as e:  # name the file the caller asked for, not the temporary one
        raise OSError(e.errno, e.strerror or str(e), path) from e
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def make_parent(path):
    """Create path's folder; a failure names path, the file the caller wanted to write."""
    try:
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    except OSError as e:
        raise OSError(e.errno, e.strerror or str(e), path) from e


def write_text_atomic(path, text):
    def write(tmp):
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)
    write_atomic(path, write)


def write_json_atomic(path, obj):
    write_text_atomic(path, json.dumps(obj, indent=2) + "\n")


def stale_temporaries(folder, stems):
    """Paths of STEM.tmpPID files in folder (STEM one of stems) left by writers other than this
    process: half-written files of killed runs, which nothing ever reads."""
    out = []
    for name in os.listdir(folder):
        stem, dot, pid = name.rpartition(".tmp")
        if dot and stem in stems and pid.isdigit() and int(pid) != os.getpid():
            out.append(os.path.join(folder, name))
    return out
