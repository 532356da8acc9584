import io

from brewnet.tools.eta import EtaProgress, format_eta


class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


def test_format_eta_from_the_mean_rate():
    assert format_eta(0, 10, 5.0) == "ETA ?"
    assert format_eta(25, 100, 10.0) == "ETA 30.0 s"
    assert format_eta(1, 100, 10.0) == "ETA 16.5 min"


def test_lines_every_few_seconds_and_silence_for_quick_runs():
    clock, stream = Clock(), io.StringIO()
    progress = EtaProgress(100, label="6.1 x", stream=stream, every=5.0, clock=clock)
    clock.now = 2.0
    progress.update(20)
    assert stream.getvalue() == ""
    clock.now = 6.0
    progress.update(30)
    clock.now = 12.0
    progress.close()
    assert stream.getvalue().splitlines() == ["6.1 x: 30/100 (30%), 6.0 s, ETA 14.0 s",
                                              "6.1 x: 100/100 (100%), 12.0 s, ETA 0.0 s"]
    quiet, out = EtaProgress(10, stream=io.StringIO(), clock=Clock()), None
    quiet.close()
    assert quiet.stream.getvalue() == ""
