"""What a killed run leaves next to its snapshots, met by the next `caffe train` with the same snapshot_prefix.

The snapshot writer (brewnet/solvers/snapshot.py) writes each file to `<file>.tmp<pid>` and renames it, and
writes the caffemodel, then the `.solverstate.brewnet` side file, then the solverstate: a kill -9 leaves
temporary files, or a caffemodel (and side file) whose solverstate never came.  Temporary files of processes
that no longer run are removed; incomplete snapshots are reported, and resuming from one is an error naming
the missing file."""
import os
import re
import subprocess
import sys
import time

from brewnet.solvers import get_solver
from brewnet.solvers import snapshot as snap

from ..tools.test_cli import BIG_NET, write_solver

LONG_AGO = time.time() - 10 * snap.TMP_GRACE_SECONDS


def dead_pid():
    """The pid of a process that has ended (and been reaped)."""
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


def killed_run(tmp_path):
    """The files of a run killed during its snapshot at iteration 2, after a complete one at iteration 1."""
    (tmp_path / "big.prototxt").write_text(BIG_NET)
    solver_file = write_solver(tmp_path / "s.prototxt", net='"big.prototxt"', max_iter=1, display=0,
                               snapshot_prefix=f'"{tmp_path / "big"}"')
    solver = get_solver(solver_file)
    solver.step(1)
    solver.snapshot()
    solver.step(1)
    os.remove(solver.snapshot())         # the kill came before the solverstate's rename: only its tmp file
    solver.close()
    dead, live = dead_pid(), os.getpid()
    for name, mtime in ((f"big_iter_2.solverstate.tmp{dead}", LONG_AGO),
                        (f"big_iter_3.caffemodel.tmp{dead}", time.time()),     # maybe a writer on another host
                        (f"big_iter_3.caffemodel.tmp{live}", LONG_AGO)):       # a running writer's
        (tmp_path / name).write_bytes(b"partial")
        os.utime(tmp_path / name, (mtime, mtime))
    return solver_file, dead, live


def run_caffe(tmp_path, *args):
    return subprocess.run([sys.executable, "-m", "brewnet.tools.cli", "train", *args], cwd=tmp_path,
                          capture_output=True, text=True, timeout=120)


def test_next_training_removes_dead_writers_tmp_files_and_reports_incomplete_snapshots(tmp_path):
    solver_file, dead, live = killed_run(tmp_path)
    run = run_caffe(tmp_path, "-solver", solver_file)
    assert run.returncode == 0, run.stderr[-2000:]
    big = tmp_path / "big"
    assert f"] Removed {big}_iter_2.solverstate.tmp{dead}, left by an interrupted snapshot\n" in run.stderr
    warning = re.search(r"^W\d{4} .*\] (Incomplete snapshot: .*)$", run.stderr, re.M).group(1)
    assert warning == (f"Incomplete snapshot: {big}_iter_2.caffemodel and {big}_iter_2.solverstate.brewnet "
                       f"without {big}_iter_2.solverstate (a run killed while snapshotting); it cannot be resumed "
                       "from, its weights can finetune (-weights)")
    assert sorted(p.name for p in tmp_path.glob("big_iter_*")) == sorted([
        "big_iter_1.caffemodel", "big_iter_1.solverstate", "big_iter_1.solverstate.brewnet",
        "big_iter_2.caffemodel", "big_iter_2.solverstate.brewnet",
        f"big_iter_3.caffemodel.tmp{dead}", f"big_iter_3.caffemodel.tmp{live}"])


def test_resuming_from_an_incomplete_snapshot_names_the_missing_file(tmp_path):
    solver_file, _, _ = killed_run(tmp_path)
    run = run_caffe(tmp_path, "-solver", solver_file, "-snapshot", "big_iter_2.solverstate")
    assert run.returncode == 1 and "Traceback" not in run.stderr
    last = run.stderr.splitlines()[-1]
    assert last.startswith("F") and last.endswith(
        "] solver state file not found: big_iter_2.solverstate (big_iter_2.caffemodel and "
        "big_iter_2.solverstate.brewnet are there without it: the snapshot is incomplete, its run was killed "
        "while writing it; resume from an earlier snapshot)")
    run = run_caffe(tmp_path, "-solver", solver_file, "-snapshot", "big_iter_1.solverstate")
    assert run.returncode == 0 and "Resuming from big_iter_1.solverstate" in run.stderr


def test_hdf5_snapshots_and_nested_tmp_names(tmp_path):
    """HDF5 weights are written through two temporary names (`.h5.tmpP` then `.h5.tmpP.tmpP`)."""
    prefix = str(tmp_path / "net")
    dead = dead_pid()
    names = ["net_iter_4.caffemodel.h5", "net_iter_4.solverstate.h5", "net_iter_4.solverstate.h5.brewnet",
             "net_iter_8.caffemodel.h5", f"net_iter_12.caffemodel.h5.tmp{dead}.tmp{dead}", "other_iter_3.caffemodel"]
    for name in names:
        (tmp_path / name).write_bytes(b"x")
        os.utime(tmp_path / name, (LONG_AGO, LONG_AGO))
    assert snap.incomplete_snapshots(prefix) == [(f"{prefix}_iter_8.solverstate.h5",
                                                  [f"{prefix}_iter_8.caffemodel.h5"])]
    assert snap.remove_orphan_tmp_files(prefix) == [f"{prefix}_iter_12.caffemodel.h5.tmp{dead}.tmp{dead}"]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(names[:4] + names[5:])
    assert str(snap.missing_state_error(f"{prefix}_iter_8.solverstate.h5")).endswith(
        f"({prefix}_iter_8.caffemodel.h5 is there without it: the snapshot is incomplete, its run was killed "
        "while writing it; resume from an earlier snapshot)")
