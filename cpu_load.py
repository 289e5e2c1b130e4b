"""
The load on the CPU at start-up, and the OpenMP wait policy that follows from it (torch-free: it
runs before torch is imported, since libgomp reads its settings once, when it is loaded).

torch's CPU threads (libgomp) spin at each barrier before they sleep. On cores of their own that is
the fastest way to wait; beside another CPU-bound process it is the slowest, because a spinning
thread holds the core that the thread it waits for needs. On this project's 2-core VM, beside one
busy loop, a step of the 4 x 128 bench config took 439 ms spinning and 243 ms waiting passively;
on the quiet machine passive waiting cost 5-15%. So passive waiting is chosen only when other tasks
are running at start-up. It changes no result: runs and resumes stay bit-exact either way.
"""
import os
import sys
import time

USER_SETTINGS = ('OMP_WAIT_POLICY', 'GOMP_SPINCOUNT')  # a choice the user made is kept


def other_runnable(samples=20, interval=0.005, stat_path='/proc/stat'):
    """The mean number of runnable tasks besides this one (Linux's procs_running, which counts the
    reader itself), over `samples` readings; None where there is no /proc/stat."""
    counts = []
    for i in range(samples):
        try:
            with open(stat_path) as f:
                running = next(int(line.split()[1]) for line in f if line.startswith('procs_running'))
        except (OSError, ValueError, IndexError, StopIteration):
            return None
        counts.append(max(running - 1, 0))
        if i + 1 < samples:
            time.sleep(interval)
    return sum(counts) / len(counts)


def usable_cores():
    """The cores this process may run on (its affinity mask, as taskset or a container sets it)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


def choose_omp_wait_policy(environ=os.environ, measure=other_runnable, cores=None):
    """Sets OMP_WAIT_POLICY=PASSIVE when torch's threads would share cores with other running tasks.
    Returns a line saying so, or None when it left the policy alone: set by the user, torch already
    loaded, one thread, no /proc, or enough idle cores."""
    if 'torch' in sys.modules or any(k in environ for k in USER_SETTINGS):
        return None
    cores = cores or usable_cores()
    try:
        threads = int(environ.get('OMP_NUM_THREADS') or cores)
    except ValueError:
        return None
    if threads <= 1:
        return None
    others = measure()
    if others is None or int(others + 0.5) + threads <= cores:
        return None
    environ['OMP_WAIT_POLICY'] = 'PASSIVE'
    return (f"{others:.1f} other tasks are running on the {cores} cores: torch's threads wait passively "
            f"(OMP_WAIT_POLICY=PASSIVE; set OMP_WAIT_POLICY yourself to choose)")
