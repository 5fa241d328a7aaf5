"""Admission control: the capacity model of the start-up calibration, and who is admitted."""
from __future__ import annotations

import pytest

import musetalk.realtime.engine.admission as admission
from musetalk.realtime.engine.admission import Admission, ServerFull


@pytest.mark.parametrize("frame_ms, window_ms, budget_s, expected", [
    (10.0, 5.0, 0.2, 3),    # 4 sessions would render 100 % of the time
    (2.0, 21.0, 0.2, 3),    # 4 sessions: an 84 ms whisper step / (1 - 0.2) = 105 ms > half the budget
    (2.0, 21.0, 0.5, 7),
    (50.0, 5.0, 0.2, 1),    # not even one session keeps up: still 1, the least that serves anybody
])
def test_calibration_cost_model(monkeypatch, frame_ms, window_ms, budget_s, expected):
    batch = 8
    monkeypatch.setattr(admission, "_generate_seconds", lambda mt, b: b * frame_ms / 1000)
    monkeypatch.setattr(admission, "_jpeg_seconds", lambda: 0.0)
    monkeypatch.setattr(admission, "_whisper_seconds", lambda mt, windows: windows * window_ms / 1000)
    assert admission.calibrate(None, batch, budget_s) == expected


def test_calibration_on_the_tiny_models(tiny_musetalk):
    assert admission.calibrate(tiny_musetalk, 2, budget_s=1000.0) >= 1


def test_idle_live_sessions_cost_a_share_of_a_speaking_one():
    full = Admission(capacity=2)
    assert full.admits(speaking=1, idle=0, live=False) and not full.admits(speaking=2, idle=0, live=False)
    assert full.admits(speaking=1, idle=19, live=True) and not full.admits(speaking=1, idle=20, live=True)
    assert not full.admits(speaking=1, idle=1, live=False)
    assert full.load(1, 10) == 0.75 and Admission(None).admits(100, 100, False)
    with pytest.raises(ServerFull, match=r"^server full: 2 of 2 sessions in use; try again later$"):
        full.check(speaking=2, idle=0, live=True)
