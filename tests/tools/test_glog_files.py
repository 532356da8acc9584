"""GLOG_log_dir: `caffe` writes glog's log files — <program>.<host>.<user>.log.<SEVERITY>.<yyyymmdd>-<hhmmss>.<pid>,
each holding its severity and above, with the <program>.<SEVERITY> symlinks — besides stderr, as
GLOG_logtostderr / GLOG_alsologtostderr say."""
import getpass
import logging
import os
import re
import socket
import subprocess

from brewnet.log import GlogFileHandler

from .test_cli_errors import CAFFE, caffe_command

GLOG_LINE = re.compile(r"^[IWEF]\d{4} \d\d:\d\d:\d\d\.\d{6} +\d+ [\w.]+:\d+\] ")
HEADER = re.compile(r"Log file created at: \d{4}/\d\d/\d\d \d\d:\d\d:\d\d\nRunning on machine: (.*)\n"
                    r"Log line format: \[IWEF\]mmdd hh:mm:ss\.uuuuuu threadid file:line\] msg\n")


def run_with(tmp_path, name, **env):
    """`caffe train` resuming from an incomplete snapshot: info lines, a warning (the snapshot is incomplete),
    then the fatal error (its solverstate is missing)."""
    folder = tmp_path / name
    folder.mkdir()
    (folder / "s.prototxt").write_text('net: "net.prototxt" base_lr: 0.1 lr_policy: "fixed" max_iter: 1 '
                                       'snapshot_prefix: "run"\n')
    (folder / "run_iter_5.caffemodel").write_bytes(b"")
    environment = dict(os.environ, **env)
    for variable in ("GLOG_logtostderr", "GLOG_alsologtostderr", "GLOG_minloglevel", "GLOG_stderrthreshold"):
        if variable not in env:
            environment.pop(variable, None)
    return folder, subprocess.Popen(caffe_command() + ["train", "-solver", "s.prototxt", "-snapshot",
                                                       "run_iter_5.solverstate"],
                                    cwd=folder, env=environment, stderr=subprocess.PIPE, text=True)


def finish(process):
    err = process.communicate(timeout=120)[1]
    assert process.returncode == 1 and "Traceback" not in err
    return err


def test_log_dir_files_and_stderr(tmp_path):
    (tmp_path / "logs").mkdir()
    (tmp_path / "quiet").mkdir()
    logs, both = run_with(tmp_path, "both", GLOG_log_dir=str(tmp_path / "logs"))
    quiet, errors_only = run_with(tmp_path, "errors_only", GLOG_log_dir=str(tmp_path / "quiet"),
                                  GLOG_alsologtostderr="0")
    _, stderr_only = run_with(tmp_path, "stderr_only", GLOG_log_dir=str(tmp_path / "quiet"), GLOG_logtostderr="1")

    lines = finish(both).splitlines()
    assert all(GLOG_LINE.match(line) for line in lines) and lines[-1].startswith("F")
    assert any(line.startswith("W") and "Incomplete snapshot: run_iter_5.caffemodel without "
               "run_iter_5.solverstate" in line for line in lines)
    program = os.path.basename(CAFFE) if os.path.exists(CAFFE) else "cli.py"
    stem = f"{program}.{socket.gethostname()}.{getpass.getuser()}.log."
    files = sorted(os.listdir(tmp_path / "logs"))
    assert len(files) == 8
    for severity, letters in (("INFO", "IWEF"), ("WARNING", "WEF"), ("ERROR", "EF"), ("FATAL", "F")):
        [name] = [f for f in files if f.startswith(stem + severity + ".")]
        assert re.fullmatch(re.escape(stem + severity) + r"\.\d{8}-\d{6}\." + str(both.pid), name)
        assert os.readlink(tmp_path / "logs" / f"{program}.{severity}") == name
        text = (tmp_path / "logs" / name).read_text()
        header = HEADER.match(text)
        assert header and header.group(1) == socket.gethostname()
        assert text[header.end():].splitlines() == [line for line in lines if line[0] in letters]

    # GLOG_alsologtostderr=0: the files get everything, stderr only errors (GLOG_stderrthreshold's default)
    err = finish(errors_only)
    assert len(err.splitlines()) == 1 and err.startswith("F")
    info = [f for f in os.listdir(tmp_path / "quiet") if ".log.INFO." in f]
    assert len(info) == 1 and "Use CPU." in (tmp_path / "quiet" / info[0]).read_text()

    # GLOG_logtostderr=1: stderr only, no files
    assert "Use CPU." in finish(stderr_only)
    assert not [f for f in os.listdir(tmp_path / "quiet") if str(stderr_only.pid) in f]


def test_unwritable_log_dir_is_said_once(tmp_path, capsys):
    handler = GlogFileHandler(str(tmp_path / "missing"), "caffe")
    for message in ("first", "second"):
        handler.handle(logging.LogRecord("brewnet", logging.WARNING, "x.py", 1, message, None, None))
    assert capsys.readouterr().err == (f"Could not write log files in {tmp_path / 'missing'}: No such file or "
                                       "directory; logging to stderr only\n")
    assert not (tmp_path / "missing").exists()
