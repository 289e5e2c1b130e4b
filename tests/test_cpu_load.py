"""cpu_load: passive OpenMP waiting only when other tasks share the cores, and never over the user's choice."""
import os
import subprocess
import sys
import time

import pytest

import cpu_load


@pytest.fixture(autouse=True)
def torch_not_yet_loaded(monkeypatch):
    """As at train.py's start-up (other tests of the suite have imported torch)."""
    monkeypatch.delitem(sys.modules, 'torch', raising=False)


def choose(environ, others, cores=2):
    return cpu_load.choose_omp_wait_policy(environ, measure=lambda: others, cores=cores), environ


def test_busy_cores_give_passive_waiting():
    note, env = choose({}, others=1.0)
    assert env['OMP_WAIT_POLICY'] == 'PASSIVE'
    assert note.startswith("1.0 other tasks are running on the 2 cores: torch's threads wait passively")


def test_idle_cores_keep_spinning():
    assert choose({}, others=0.2) == (None, {})
    assert choose({}, others=3.0, cores=16)[1] == {'OMP_WAIT_POLICY': 'PASSIVE'}  # 16 threads + 3 > 16 cores
    assert choose({'OMP_NUM_THREADS': '8'}, others=3.0, cores=16) == (None, {'OMP_NUM_THREADS': '8'})


def test_user_choice_one_thread_and_no_proc_are_left_alone():
    for env in ({'OMP_WAIT_POLICY': 'ACTIVE'}, {'GOMP_SPINCOUNT': '1000'}, {'OMP_NUM_THREADS': '1'}):
        assert choose(dict(env), others=5.0) == (None, env)
    assert choose({}, others=None) == (None, {})


def test_torch_loaded_means_too_late(monkeypatch):
    monkeypatch.setitem(sys.modules, 'torch', object())
    assert choose({}, others=5.0) == (None, {})


def test_procs_running_counts_others(tmp_path):
    stat = tmp_path / 'stat'
    stat.write_text('cpu  1 2 3 4\nprocs_running 3\nprocs_blocked 0\n')
    assert cpu_load.other_runnable(samples=2, interval=0, stat_path=str(stat)) == 2.0
    stat.write_text('cpu  1 2 3 4\n')
    assert cpu_load.other_runnable(samples=2, interval=0, stat_path=str(stat)) is None
    assert cpu_load.other_runnable(stat_path=str(tmp_path / 'missing')) is None


@pytest.mark.skipif(not os.path.exists('/proc/stat'), reason='needs Linux /proc/stat')
def test_a_busy_loop_is_seen():
    busy = subprocess.Popen([sys.executable, '-c', 'while True: pass'])
    try:
        time.sleep(0.3)
        assert cpu_load.other_runnable() >= 0.9
    finally:
        busy.kill()
        busy.wait()


@pytest.mark.skipif(not os.path.exists('/proc/stat') or cpu_load.usable_cores() < 2,
                    reason='needs Linux /proc/stat and two cores')
@pytest.mark.parametrize('cpu_threads', [0, 1])
def test_train_beside_a_busy_loop_waits_passively_and_says_so(tmp_path, cpu_threads):
    """With one torch thread (the demo config) there is no barrier to wait at: nothing is said."""
    from train_helpers import TINY, make_dataset, read_metrics, run_train
    data = make_dataset(str(tmp_path / 'data'))
    out = str(tmp_path / 'out')
    busy = subprocess.Popen([sys.executable, '-c', 'while True: pass'])
    try:
        time.sleep(0.3)
        p = run_train(TINY + [f'--data_dir={data}', f'--out_dir={out}', '--max_iters=2', f'--cpu_threads={cpu_threads}'],
                      env={'OMP_NUM_THREADS': str(cpu_load.usable_cores())})
    finally:
        busy.kill()
        busy.wait()
    said = "threads wait passively (OMP_WAIT_POLICY=PASSIVE" in p.stdout
    assert said == (cpu_threads == 0)
    run = next(r for r in read_metrics(out) if r['event'] == 'run')
    assert run['system']['omp_wait_policy'] == 'PASSIVE'
