"""Progress output: live tqdm bars on a terminal, plain lines (no carriage returns) elsewhere."""

from __future__ import annotations

import io
import sys
from pathlib import Path

import pytest
from tqdm.std import tqdm as std_tqdm

from shaver import progress
from shaver.cli import main
from shaver.progress import LineProgress, live_bars, progress_bar

FIX = Path(__file__).parent / "fixtures" / "data"


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch):
    fake = FakeClock()
    monkeypatch.setattr(progress.time, "monotonic", fake)
    return fake


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_terminal_gets_live_bars_and_a_log_gets_lines(monkeypatch):
    monkeypatch.setattr(sys, "stderr", Terminal())
    assert live_bars()
    bar = progress_bar(total=3, desc="x")
    assert isinstance(bar, std_tqdm)
    bar.close()
    monkeypatch.setattr(sys, "stderr", io.StringIO())
    assert not live_bars()
    assert isinstance(progress_bar(total=3, desc="x"), LineProgress)


def test_a_closed_stderr_is_not_a_terminal(monkeypatch):
    closed = io.StringIO()
    closed.close()
    monkeypatch.setattr(sys, "stderr", closed)
    assert not live_bars()


def test_lines_every_interval_and_at_the_end(capsys, clock):
    bar = LineProgress(total=500, desc="epoch 1/3", unit="batch", interval=10)
    for _ in range(120):
        clock.now += 0.125  # 15 s in all: one line after 10 s
        bar.update()
    bar.set_postfix(loss="0.4512")
    clock.now += 35
    bar.update(380)
    bar.close()
    bar.close()  # once only
    err = capsys.readouterr().err
    assert "\r" not in err
    assert err.splitlines() == [  # the last update reaches the total: close() says it
        "epoch 1/3: 80/500 batch (16%) 10.0s, 8.0 batch/s",
        "epoch 1/3: done, 500/500 batch (100%) 50.0s, 10.0 batch/s, loss=0.4512",
    ]


def test_short_inner_stage_stays_silent_unless_kept(capsys, clock):
    with LineProgress(total=10, desc="inner", leave=False, interval=10) as bar:
        clock.now += 9
        bar.update(10)
    assert capsys.readouterr().err == ""
    with LineProgress(total=10, desc="long inner", leave=False, interval=10) as bar:
        clock.now += 12
        bar.update(10)  # past the interval, but the total: one line, from close()
    assert capsys.readouterr().err == "long inner: done, 10/10 it (100%) 12.0s, 0.8 it/s\n"
    with LineProgress(total=None, desc="read", unit=" rows", unit_scale=True) as bar:
        clock.now += 2
        bar.update(1_500_000)
    assert capsys.readouterr().err == "read: done, 1.50M rows 2.0s, 750k rows/s\n"


def test_disabled_and_unknown_totals(capsys, clock):
    with LineProgress(total=5, disable=True, interval=0) as bar:
        clock.now += 1
        bar.update(5)
    assert capsys.readouterr().err == ""
    bar = LineProgress(total=float("inf"), initial=4, unit="sample")
    bar.total = None  # callers may change the total on the way
    clock.now += 4
    bar.update(8)
    bar.close()
    assert capsys.readouterr().err == "done, 12 sample 4.0s, 2.0 sample/s\n"


def test_prepare_writes_plain_progress_when_stderr_is_not_a_terminal(tmp_path, capfd):
    code = main(["data", "prepare", "--preset", "criteo", "--input",
                 str(FIX / "criteo_small.txt"), "--out", str(tmp_path / "c")])
    err = capfd.readouterr().err
    assert code == 0
    assert "\r" not in err
    assert "read: done, 40 rows " in err


def test_synth_writes_plain_progress_when_stderr_is_not_a_terminal(tmp_path, capfd):
    code = main(["data", "synth", "--rows", "1000", "--out", str(tmp_path / "s.txt")])
    err = capfd.readouterr().err
    assert code == 0 and "\r" not in err
    assert "synth: done, 1.00k/1.00k rows (100%)" in err


def test_a_notebook_gets_widgets_whatever_stderr_is(monkeypatch):
    import tqdm.autonotebook

    class Widget(std_tqdm):
        pass

    monkeypatch.setattr(tqdm.autonotebook, "tqdm", Widget)
    monkeypatch.setattr(sys, "stderr", io.StringIO())
    assert live_bars()
