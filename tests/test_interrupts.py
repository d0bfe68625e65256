"""Interrupts, kills and damaged journals: ``hapi search`` leaves no process and no scratch
behind, says one line, and a rerun resumes with the exact trial count (issue #9, 5 and 6)."""

from __future__ import annotations

import contextlib
import csv
import errno
import fcntl
import json
import os
import resource
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

pytestmark = [
    pytest.mark.skipif(
        not sys.platform.startswith("linux"), reason="reads /proc; --jobs needs fork"
    ),
    pytest.mark.synth(n_val=600, n_test=800, num_blocks=6),  # trials slow enough to interrupt
]

HAPI = [sys.executable, "-m", "hapi_dse"]
SHM = Path("/dev/shm")
COMPLETE, SET_TRIAL_STATE_VALUES = 1, 6  # Optuna's TrialState and JournalOperation codes


@pytest.fixture(autouse=True)
def interrupts_not_ignored() -> Any:
    """Ctrl-C as on a terminal. A suite started in the background by a shell without job
    control (``make test &``) inherits SIGINT ignored, and hapi rightly leaves an ignored
    signal ignored: these tests would then test nothing and time out."""
    prev = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, prev)


@pytest.fixture
def work(ram_dir: Path) -> Path:
    """The working directory of the searches, in RAM where possible (see conftest.ram_dir)."""
    return ram_dir


@contextlib.contextmanager
def started(
    args: list[str], cwd: Path, err: Path, cmd: list[str] = HAPI, **kw: Any
) -> Iterator[subprocess.Popen]:
    """``hapi ARGS`` (``cmd``: another way to run hapi) in its own process group (so that
    Ctrl-C can be sent to the group, as a terminal does); stderr to a file, as orphans would
    keep a pipe open. Killed on the way out if it still runs (a check failed)."""
    with open(err, "w") as f:  # the child has its own copy
        proc = subprocess.Popen(
            [*cmd, *args],
            cwd=cwd,
            stdout=subprocess.DEVNULL,
            stderr=f,
            env=dict(os.environ, HAPI_NO_PROGRESS="1"),
            start_new_session=True,
            **kw,
        )
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def run(args: list[str], cwd: Path, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run(
        [*HAPI, *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        env=dict(os.environ, HAPI_NO_PROGRESS="1"),
        timeout=timeout,
    )


def wait_for(what: str, cond: Callable[[], object], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie nobody reaped has ended)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] not in ("Z", "X")


def children(pid: int) -> list[int]:
    found = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                ppid = int((d / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            if ppid == pid:
                found.append(int(d.name))
    return found


def scratch_of(pid: int, out: Path) -> list[Path]:
    """The scratch journal directories of the search process ``pid``."""
    return [p for base in (SHM, out) for p in base.glob(f".hapi-journal-{pid}-*")]


def complete_in_journal(path: Path) -> int:
    """COMPLETE trials recorded in a journal file (read as bytes; a record being written is
    skipped)."""
    n = 0
    try:
        lines = path.read_bytes().splitlines()
    except FileNotFoundError:
        return 0
    for line in lines:
        try:
            rec = json.loads(line)
        except ValueError:
            continue
        n += rec.get("op_code") == SET_TRIAL_STATE_VALUES and rec.get("state") == COMPLETE
    return n


def journal_is_whole(path: Path) -> bool:
    data = path.read_bytes()
    return data.endswith(b"\n") and all("op_code" in json.loads(line) for line in data.splitlines())


def trial_states(out: Path) -> list[str]:
    with open(out / "devA" / "trials.csv", newline="") as f:
        return [row["state"] for row in csv.DictReader(f)]


def send(proc: subprocess.Popen, sig: str) -> None:
    if sig == "SIGINT":  # Ctrl-C: the terminal signals the whole foreground process group
        os.killpg(proc.pid, signal.SIGINT)
    else:
        os.kill(proc.pid, getattr(signal, sig))


def check_exit(proc: subprocess.Popen, sig: str, err: Path) -> None:
    rc = proc.wait(timeout=20)
    lines = err.read_text().splitlines()
    if sig == "SIGKILL":
        assert rc == -signal.SIGKILL
    else:
        assert rc == 130, lines
        assert len(lines) == 1 and lines[0].startswith("hapi: interrupted"), lines


# -- --jobs: workers and scratch go with the parent ------------------------------------------
@pytest.mark.parametrize("sig", ["SIGINT", "SIGTERM", "SIGKILL"])
def test_a_killed_jobs_search_leaves_no_worker_and_no_scratch(
    synth, tmp_path: Path, work: Path, sig: str
) -> None:
    out, err = tmp_path / "out", tmp_path / "err.txt"
    with started(synth.search_args(out, "--jobs", "2", trials=1000000), work, err) as proc:
        wait_for("2 workers", lambda: len(children(proc.pid)) == 2 or proc.poll() is not None)
        workers = children(proc.pid)
        assert len(workers) == 2, err.read_text()
        scratch = scratch_of(proc.pid, out)
        assert len(scratch) == 1
        wait_for("trials", lambda: complete_in_journal(scratch[0] / "study.log") >= 10)
        send(proc, sig)
        check_exit(proc, sig, err)
    wait_for("the workers to end", lambda: not any(alive(w) for w in workers), timeout=15)
    wait_for("the scratch to go", lambda: not scratch_of(proc.pid, out), timeout=10)


@pytest.mark.parametrize("sig", ["SIGINT", "SIGTERM", "SIGKILL"])
def test_an_interrupted_jobs_search_resumes_with_the_exact_count(
    synth, tmp_path: Path, work: Path, sig: str
) -> None:
    total = 400
    journal = work / "st" / "k.log"  # given relative, with a directory part
    args = synth.search_args(
        tmp_path / "out", "--jobs", "2", "--storage", "journal:st/k.log", "--study", "s",
        trials=total,
    )  # fmt: skip
    err = tmp_path / "err.txt"
    with started(args, work, err) as proc:
        wait_for("trials", lambda: complete_in_journal(journal) >= 30 or proc.poll() is not None)
        workers = children(proc.pid)
        send(proc, sig)
        check_exit(proc, sig, err)
    wait_for("the workers to end", lambda: not any(alive(w) for w in workers), timeout=15)
    before = complete_in_journal(journal)
    assert 30 <= before < total, "the search was not interrupted midway"
    assert journal_is_whole(journal)
    assert not Path(f"{journal}.lock").exists()  # the workers finished their trial and left

    res = run([*args, "--overwrite"], work)
    assert res.returncode == 0, res.stderr
    assert trial_states(tmp_path / "out") == ["COMPLETE"] * total  # nothing lost, none half
    info = json.loads((tmp_path / "out" / "devA" / "search.json").read_text())
    assert info["trials"]["this_run"] == total - before


# -- one process: Ctrl-C during a SQLite search ----------------------------------------------
SLOW_TRIAL_S = 3
# hapi whose trials from number 3 on take SLOW_TRIAL_S: a signal sent while one of them runs
# lands in the trial, however fast the machine
SLOW_HAPI = [
    sys.executable,
    "-c",
    "import sys, time\n"
    "from hapi_dse.search.problem import Problem\n"
    "score = Problem.objective\n"
    "def slow(self, trial):\n"
    f"    if trial.number >= 3: time.sleep({SLOW_TRIAL_S})\n"
    "    return score(self, trial)\n"
    "Problem.objective = slow\n"
    "from hapi_dse.cli import main\n"
    "main()\n",
]


@pytest.mark.parametrize("times", [1, 2])
def test_ctrl_c_during_a_sqlite_search_is_one_line_and_resumes(
    synth, tmp_path: Path, work: Path, times: int
) -> None:
    """One Ctrl-C lets the trial in flight finish; a second one cuts it short. The signals
    are sent once the storage shows trial 3 running (slowed down), so they land mid-trial."""
    import optuna

    from hapi_dse.search.storage import open_storage

    total, url = 25, f"sqlite:///{work / 's.db'}"
    args = synth.search_args(tmp_path / "out", "--storage", url, "--study", "s", trials=total)

    def states() -> list[str]:
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        try:
            study = optuna.load_study(study_name="s", storage=open_storage(url))
        except KeyError:
            return []
        return [t.state.name for t in study.get_trials(deepcopy=False)]

    err = tmp_path / "err.txt"
    with started(args, work, err, cmd=SLOW_HAPI) as proc:
        wait_for(
            "trial 3 to run",
            lambda: states()[3:4] == ["RUNNING"] or proc.poll() is not None,
            timeout=60,
        )
        assert proc.poll() is None, err.read_text()
        for _ in range(times):  # a second Ctrl-C interrupts the trial in flight at once
            os.killpg(proc.pid, signal.SIGINT)
            time.sleep(0.2)  # two signals close together would be delivered as one
        check_exit(proc, "SIGINT", err)
    before = states()
    if times == 1:  # the trial in flight (3) was finished, then the search stopped
        assert before == ["COMPLETE"] * 4
    else:  # it was cut short
        assert before == ["COMPLETE"] * 3 + ["FAIL"]
    res = run([*args, "--overwrite"], work)
    assert res.returncode == 0, res.stderr
    assert trial_states(tmp_path / "out").count("COMPLETE") == total


# -- journals --------------------------------------------------------------------------------
def first_run(synth, work: Path, tmp_path: Path, trials: int = 10) -> list[str]:
    args = synth.search_args(tmp_path / "out", "--storage", "journal:st/k.log", "--study", "s")
    res = run([*args, "--trials", str(trials)], work)
    assert res.returncode == 0, res.stderr
    return [*args, "--overwrite"]


def test_a_lock_left_on_a_journal_with_a_directory_part_is_taken_over(
    synth, tmp_path: Path, work: Path
) -> None:
    args = first_run(synth, work, tmp_path)
    # what Optuna's lock left when its holder was killed: a symlink to the path as given,
    # which resolves against st/ and never exists (Optuna then spun forever)
    os.symlink("st/k.log", work / "st" / "k.log.lock")
    res = run([*args, "--trials", "20"], work, timeout=40)
    assert res.returncode == 0, res.stderr
    assert "took over the lock" in res.stderr
    assert trial_states(tmp_path / "out") == ["COMPLETE"] * 20
    assert not (work / "st" / "k.log.lock").exists()


def test_a_torn_last_record_is_cut_off_with_one_warning(synth, tmp_path: Path, work: Path) -> None:
    args = first_run(synth, work, tmp_path)
    journal = work / "st" / "k.log"
    with open(journal, "ab") as f:
        f.write(b'{"op_code":5,"worker_id":"w","trial_id":3,"param_na')  # a write cut short
    res = run([*args, "--trials", "20"], work)
    assert res.returncode == 0, res.stderr
    warnings = [line for line in res.stderr.splitlines() if "torn" in line]
    assert len(warnings) == 1 and "removed a torn last record (51 bytes)" in warnings[0]
    assert journal_is_whole(journal)
    assert trial_states(tmp_path / "out") == ["COMPLETE"] * 20


def test_a_journal_torn_in_the_middle_is_refused_in_one_line(
    synth, tmp_path: Path, work: Path
) -> None:
    args = first_run(synth, work, tmp_path)
    journal = work / "st" / "k.log"
    lines = journal.read_bytes().count(b"\n")
    with open(journal, "ab") as f:  # a torn record that an older hapi then appended after
        f.write(b'{"op_code":5,"worker_id":"w","tr' + b'{"op_code":1,"study_id":0}\n')
    size = journal.stat().st_size
    res = run([*args, "--trials", "20"], work)
    assert res.returncode == 2
    assert res.stderr.splitlines() == [
        "hapi: error: --storage 'journal:st/k.log': the journal is corrupt "
        f"(line {lines + 1} is not a journal record); hapi cannot resume it: move it away to "
        "start a new study"
    ]
    assert journal.stat().st_size == size  # left as it was


def _limit_file_size(limit: int) -> Callable[[], None]:
    def apply() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, resource.RLIM_INFINITY))

    return apply


@pytest.mark.parametrize("jobs", [1, 2])
def test_a_full_disk_leaves_a_whole_journal_that_resumes(
    synth, tmp_path: Path, work: Path, jobs: int
) -> None:
    # RLIMIT_FSIZE stands for a full disk: writes past it fail (EFBIG), a write that crosses
    # it is cut short, as a write runs out of space midway
    args = first_run(synth, work, tmp_path, trials=20)
    journal = work / "st" / "k.log"
    limit = journal.stat().st_size + 20_000
    err = tmp_path / "err.txt"
    cut = [*args, "--trials", "200", "--jobs", str(jobs)]
    with started(cut, work, err, preexec_fn=_limit_file_size(limit)) as proc:
        assert proc.wait(timeout=60) == 2
    lines = err.read_text().splitlines()
    assert len(lines) == 1 and "cannot write (File too large)" in lines[0], lines
    assert "every trial written before is kept" in lines[0]
    assert journal_is_whole(journal)
    before = complete_in_journal(journal)
    assert 20 < before < 200
    res = run(cut, work)
    assert res.returncode == 0, res.stderr
    assert trial_states(tmp_path / "out").count("COMPLETE") == 200


def test_a_journal_that_could_not_be_written_is_not_left_empty(
    synth, run_cli, tmp_path: Path, work: Path, monkeypatch
) -> None:
    from hapi_dse.search import storage

    def no_space(self, logs) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(storage.JournalFile, "append_logs", no_space)
    journal = work / "new.log"
    res = run_cli(*synth.search_args(tmp_path / "out", "--storage", f"journal:{journal}"))
    assert res.exit_code == 2
    lines = res.stderr.splitlines()
    assert len(lines) == 1 and "No space left on device" in lines[0], lines
    assert not journal.exists()


# -- the scratch journals of searches killed before this fix or by SIGKILL -------------------
def test_scratch_is_swept_only_when_nobody_holds_it(tmp_path: Path) -> None:
    from hapi_dse.search import scratch

    dead = tmp_path / ".hapi-journal-999999-dead"  # its search and workers are gone
    dead.mkdir()
    (dead / "owner.lock").touch()
    (dead / "study.log").write_text("{}\n")
    live, fd = scratch.make_scratch(tmp_path)  # a search running now (it sweeps first)
    assert not dead.exists() and live.is_dir()
    try:
        child = os.fork()
        if child == 0:  # a worker that outlived its parent keeps the scratch alive
            time.sleep(0.5)
            os._exit(0)
        os.close(fd)  # the parent is gone
        scratch.sweep_scratch(tmp_path)
        assert live.is_dir()
        os.waitpid(child, 0)
        scratch.sweep_scratch(tmp_path)  # now nobody holds it
        assert not live.exists()
    finally:
        shutil.rmtree(live, ignore_errors=True)
    fresh = tmp_path / ".hapi-journal-999998-new"  # being made (no lock yet): left alone
    fresh.mkdir()
    scratch.sweep_scratch(tmp_path)
    assert fresh.is_dir()


def test_the_owner_lock_is_shared_with_forked_workers(tmp_path: Path) -> None:
    from hapi_dse.search import scratch

    d, fd = scratch.make_scratch(tmp_path)
    probe = os.open(d / "owner.lock", os.O_RDONLY)
    try:
        with pytest.raises(BlockingIOError):
            fcntl.flock(probe, fcntl.LOCK_EX | fcntl.LOCK_NB)
    finally:
        os.close(probe)
        os.close(fd)
    scratch.sweep_scratch(tmp_path)
    assert not d.exists()


def test_an_interrupt_swallowed_by_a_finaliser_is_delivered_again(capsys) -> None:
    """A second Ctrl-C can land while Python runs a finaliser or a weakref callback, which
    swallows the KeyboardInterrupt and prints a traceback: it must reach the search's own
    code instead, with nothing printed."""
    from hapi_dse.search.interrupts import StopOnSignal

    class Finalised:
        def __del__(self) -> None:
            raise KeyboardInterrupt

    before = sys.unraisablehook
    with pytest.raises(KeyboardInterrupt), StopOnSignal(lambda: None):
        Finalised()  # __del__ runs at once: its exception is "unraisable"
        for _ in range(1000):  # the re-sent signal is handled between bytecodes
            time.sleep(0.001)
    assert sys.unraisablehook is before
    assert "Exception ignored" not in capsys.readouterr().err
