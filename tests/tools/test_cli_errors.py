"""The `caffe` program meets a user's mistakes: flag values out of range, an unknown command, -help, --version.
The cases run the installed `caffe` in a subprocess, as a user would (the flag values also through its main()
in this process), and check the one line it prints and its exit status."""
import importlib
import importlib.metadata
import os
import pkgutil
import subprocess
import sys

import pytest

import brewnet
import brewnet.tools
from brewnet.tools import cli

from ..solvers._nets import golden_workdir

CAFFE = os.path.join(os.path.dirname(sys.executable), "caffe")


def caffe_command():
    """The installed entry point when there is one, else the module (same main())."""
    return [CAFFE] if os.path.exists(CAFFE) else [sys.executable, "-m", "brewnet.tools.cli"]


def run_caffe(args, cwd):
    return subprocess.run(caffe_command() + args, cwd=cwd, capture_output=True, text=True, timeout=120)


BAD_VALUES = [
    (["test", "-model", "net.prototxt", "-weights", "w", "-iterations", "-5"],
     "failed validation of new value '-5' for flag 'iterations': Expect: a number of iterations >= 1"),
    (["time", "-model", "net.prototxt", "-iterations", "0"],
     "failed validation of new value '0' for flag 'iterations': Expect: a number of iterations >= 1"),
    (["time", "-model", "net.prototxt", "-gpu", "-1"],
     "failed validation of new value '-1' for flag 'gpu': Expect: device ids >= 0"),
    (["time", "-model", "net.prototxt", "-gpu", "0,x"],
     "failed validation of new value '0,x' for flag 'gpu': Expect: device ids separated by ','"),
    (["time", "-model", "net.prototxt", "-gpu", "0,0"],
     "failed validation of new value '0,0' for flag 'gpu': Expect: each device once"),
    (["train", "-solver", "s.prototxt", "-procs", "0"],
     "failed validation of new value '0' for flag 'procs': Expect: a number of processes >= 1"),
    (["train", "-solver", "s.prototxt", "-sigint_effect", "bogus"],
     "failed validation of new value 'bogus' for flag 'sigint_effect': Expect: one of none, stop, snapshot"),
    (["train", "-solver", "s.prototxt", "-sighup_effect", "restart"],
     "failed validation of new value 'restart' for flag 'sighup_effect': Expect: one of none, stop, snapshot"),
    (["train", "-solver", "s.prototxt", "-sigterm_effect", "kill"],
     "failed validation of new value 'kill' for flag 'sigterm_effect': Expect: one of none, stop, snapshot"),
    (["time", "-model", "net.prototxt", "-phase", "train"],
     "failed validation of new value 'train' for flag 'phase': Expect: TRAIN or TEST"),
    (["time", "-model", "net.prototxt", "-stage", "a,,b"],
     "failed validation of new value 'a,,b' for flag 'stage': Expect: stage names separated by ','"),
    (["time", "-model", "net.prototxt", "-level", "high"], "illegal value 'high' specified for int32 flag 'level'"),
    (["time", "-model", "net.prototxt", "-iterations", "1e3"],
     "illegal value '1e3' specified for int32 flag 'iterations'"),
]


@pytest.mark.parametrize("args, message", BAD_VALUES, ids=[" ".join(a[-2:]) for a, _ in BAD_VALUES])
def test_out_of_range_flag_is_one_error_line(args, message, tmp_path, monkeypatch, capsys):
    """Through caffe's main() in this process (each `caffe` process pays torch's start-up; the real program
    is run below for three of them)."""
    monkeypatch.chdir(tmp_path)
    assert cli.main(args) == 1
    captured = capsys.readouterr()
    assert len(captured.err.splitlines()) == 1 and captured.err.startswith("ERROR: ")      # gflags' words
    assert message in captured.err and captured.out == ""


@pytest.mark.parametrize("case", [0, 2, 6])
def test_out_of_range_flag_in_the_real_program(case, tmp_path):
    args, message = BAD_VALUES[case]
    run = run_caffe(args, tmp_path)
    assert run.returncode == 1 and run.stdout == ""
    assert run.stderr.startswith("ERROR: ") and len(run.stderr.splitlines()) == 1
    assert message in run.stderr and "Traceback" not in run.stderr


def test_help_lists_every_command_and_tool(tmp_path):
    run = run_caffe(["--help"], tmp_path)
    assert run.returncode == 0
    lines = run.stdout.splitlines()
    for command in ("train", "test", "device_query", "time"):
        assert any(line.split()[:1] == [command] for line in lines), command
    for tool, text in cli.TOOLS.items():
        assert f"  {tool:<26}{text}" in lines, tool
    assert "    -sigterm_effect (Optional (brewnet only); action to take when a SIGTERM signal (a scheduler's stop) " \
           "is received: snapshot (then stop), stop or none.) type: string default: \"snapshot\"" in lines


def test_every_tool_is_listed():
    """cli.TOOLS names exactly the modules of brewnet.tools that `caffe <tool>` runs (a main(argv))."""
    runnable = {m.name for m in pkgutil.iter_modules(brewnet.tools.__path__)
                if m.name != "cli" and cli.find_tool(m.name) is not None}
    assert runnable == set(cli.TOOLS)
    assert all(text and "\n" not in text for text in cli.TOOLS.values())


def test_unknown_command_lists_commands_and_tools(tmp_path):
    run = run_caffe(["trian", "-solver", "s.prototxt"], tmp_path)
    assert run.returncode == 1 and "Traceback" not in run.stderr
    messages = [line.split("] ", 1)[1] for line in run.stderr.splitlines()]
    assert messages[-1] == "Unknown action: trian" and run.stderr.splitlines()[-1].startswith("F")
    for name in ("train", "test", "time", "device_query"):
        assert f"\t{name}" in messages
    for tool, text in cli.TOOLS.items():
        assert f"\t{tool:<26}{text}" in messages


def test_version_is_defined_once(tmp_path):
    import caffe
    run = run_caffe(["--version"], tmp_path)
    assert run.returncode == 0 and run.stdout == "caffe version 1.0.0\n"
    assert brewnet.__version__ == caffe.__version__ == importlib.metadata.version("brewnet") == "1.0.0"


def test_command_errors_name_the_value(golden, tmp_path, monkeypatch):
    """Errors found after parsing (a file, a device) are one glog F line too, with status 1."""
    golden_workdir(golden, tmp_path, monkeypatch)
    run = run_caffe(["time", "-model", "net.prototxt", "-precision", "fp8"], tmp_path)
    assert run.returncode == 1 and "Traceback" not in run.stderr
    last = run.stderr.splitlines()[-1]
    assert last.startswith("F") and last.endswith("-precision: Expect: one of fp32, bf16, fp16, Actual: 'fp8'")
