"""Live channels (musetalk publish): bad input in one line each; one simulated hour keeps audio, video and
wall clock together; a 12 s channel with two spoken items through a real nginx-rtmp, MPEG-TS over UDP and a
.ts file; the ingest killed for 3 s mid-stream."""
from __future__ import annotations

import asyncio
import socket
import threading
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
import soundfile

from musetalk.cli.main import main
from musetalk.realtime.engine.clock import MediaClock
from musetalk.realtime.engine.outbox import Frame, Skip
from musetalk.realtime.outputs.publish import (Backoff, Channel, ChannelSettings, ChannelSpec, EncodeSettings, Item,
                                               Link, parse_target)
from musetalk.realtime.outputs.publish.encode import AUDIO_RATE

from .rtmp_server import MODULE, RtmpServer, free_port

FPS = 25


# -- bad input -----------------------------------------------------------------------------------
@pytest.mark.parametrize("args, line", [
    (["x", "srt://host:9000"], "cannot push to srt://host:9000: this FFmpeg build (PyAV's wheel) has no SRT (libsrt); "
     "push MPEG-TS to udp://HOST:PORT or tcp://HOST:PORT of an SRT gateway (e.g. srt-live-transmit, MediaMTX), or "
     "use rtmp://"),
    (["x", "ftp://host/x"], "cannot push to ftp://host/x: unsupported scheme ftp://; use rtmp://, rtmps://, udp://, "
     "tcp://, http(s)://.../whip or a .flv/.ts/.mp4 file"),
    (["x", "out.avi"], "cannot record to out.avi: unknown file type .avi; end the name with .flv, .ts or .mp4, or give "
     "an rtmp://, udp://, tcp:// or http(s):// URL"),
    (["x", "udp://host"], "cannot push to udp://host: no host or port; write it as udp://HOST:PORT"),
    (["x", "rtmp:///live"], "cannot push to rtmp:///live: no host; write it as rtmp://HOST[:PORT]/APP/KEY"),
    (["x", "/nonexistent/out.ts"], "cannot record to /nonexistent/out.ts: folder /nonexistent does not exist; "
     "create it first"),
    (["x", "out.ts", "--size", "641x480"], "--size must be WIDTHxHEIGHT in even pixels, e.g. 1280x720, got '641x480'"),
    (["x", "out.ts", "--gap", "-1"], "--gap must be 0 or more seconds, got -1"),
    (["x", "out.ts", "--loop"], "--loop repeats the --speak items: give at least one --speak"),
    (["x", "out.ts", "--speak", "missing.wav"], "--speak missing.wav: audio file not found: missing.wav"),
    (["x", "out.ts", "--speak", "a" * 1001], "--speak: text of 1001 characters is too long: at most 1000 at once; "
     "split it into shorter parts"),
])
def test_bad_input_one_line(args, line, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(["publish", *args]) == 1
    assert capsys.readouterr().err == f"musetalk: error: {line}\n"


def test_not_audio_and_unknown_avatar(capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    Path("notes.wav").write_text("not audio")
    assert main(["publish", "x", "out.ts", "--speak", "notes.wav"]) == 1
    assert capsys.readouterr().err == ("musetalk: error: --speak notes.wav: cannot read audio from notes.wav: not an "
                                       "audio or video file (InvalidDataError)\n")
    assert main(["publish", "nobody", "out.ts", "--avatars", str(tmp_path)]) == 1
    assert capsys.readouterr().err == (f"musetalk: error: no avatar named 'nobody' in {tmp_path}/: prepare it with "
                                       f"`musetalk avatar prepare`\n")


# -- one hour on a simulated clock ----------------------------------------------------------------
class SimClock:
    """Simulated perf_counter: waits advance it, plus a random lateness of 0-20 ms (a busy machine)."""

    def __init__(self, seed: int = 0) -> None:
        self.t = 100.0
        self.rng = np.random.default_rng(seed)

    def now(self) -> float:
        return self.t

    async def sleep(self, seconds: float) -> None:
        self.t += seconds + self.rng.uniform(0, 0.02)
        await asyncio.sleep(0)


class SimAvatar:
    name = "sim"

    def __init__(self, fps: float) -> None:
        self.fps = fps
        self.frames = [np.full((16, 16, 3), v, np.uint8) for v in (10, 20, 30)]

    def source_index(self, i: int) -> int:
        return i % 3


class SimSession:
    """A live session's face for paced_frames: every frame ready at once (every 7th skipped), speech (a
    tone) in 10 s of every 60 s."""

    def __init__(self, fps: float, clock: SimClock) -> None:
        self.avatar = SimAvatar(fps)
        self.clock = MediaClock(clock.now() + 1.0, fps)
        self.next_index = 0
        self.utterance_open = self.speaking = False

    async def next_item(self):
        i, self.next_index = self.next_index, self.next_index + 1
        if i % 7 == 3:
            return Skip(i, i // 7 + 1)
        return Frame(i, None, self.avatar.frames[self.avatar.source_index(i)], 0.0, 0.0, 0.0)

    def speaks(self, index: int) -> bool:
        return (index / self.avatar.fps) % 60 < 10

    def take_audio(self, index: int):
        if not self.speaks(index):
            return None
        start, stop = self.clock.sample_span(index, 16000)
        return (0.3 * np.sin(2 * np.pi * 220 * np.arange(start, stop) / 16000)).astype(np.float32)

    def finish(self) -> None: ...
    def interrupt(self) -> None: ...


class RecordingSink:
    """Records every unit's pts; refuses the units whose media time ``down(seconds)`` says (the ingest gone)."""

    made: list["RecordingSink"] = []

    def __init__(self, target, settings, down) -> None:
        self.clock_fps, self.down = float(settings.fps), down
        self.video: list[int] = []
        self.audio: list[tuple[int, int]] = []
        self.bytes_out = 0
        RecordingSink.made.append(self)

    def write(self, unit) -> None:
        if self.down(unit.index / self.clock_fps):
            raise ConnectionResetError(104, "Connection reset by peer")
        self.video.append(unit.video.pts)
        if unit.audio is not None:
            self.audio.append((unit.audio.pts, unit.audio.samples))
        self.bytes_out += 100

    def close(self) -> None: ...
    def abort(self) -> None: ...


@pytest.mark.slow
def test_one_simulated_hour_keeps_audio_video_and_wall_together():
    fps = 30000 / 1001
    sim = SimClock()
    session = SimSession(fps, sim)
    origin = session.clock.origin
    down = lambda t: 1800 <= t < 1803  # noqa: E731 - the ingest gone for 3 s at 30 min
    RecordingSink.made = []
    target = parse_target("rtmp://127.0.0.1/live/sim")
    settings = EncodeSettings(16, 16, Fraction(30000, 1001))
    link = Link("sim", target, settings, queue_frames=10**6, backoff=Backoff(0.25, 1.0), clock=sim.now,
                open_sink=lambda t, s: RecordingSink(t, s, down))
    channel = Channel("sim", session, link, ChannelSettings(gap_s=0, duration_s=3600, budget_s=0.2), now=sim.now)

    from musetalk.realtime.media import paced_frames

    async def run():
        channel._wake = asyncio.Event()  # noqa: SLF001 - the inbox is not used here
        await channel.run(paced_frames(session, 0.2, now=sim.now, sleep=sim.sleep))

    asyncio.run(run())
    total = int(3600 * fps)
    assert channel.stats.frames == total and channel.stats.skipped == len(range(3, total, 7))
    assert link.stats.reconnects == 1 and link.stats.frames_pushed + link.stats.frames_dropped == total
    before, after = [sink for sink in RecordingSink.made if sink.video]  # (failed attempts sent nothing)
    tb = 1 / 90000
    # Video pts are the frame indices on the clock, before and after the fault (no restart from 0).
    for sink in (before, after):
        indices = [round(p * tb * fps) for p in sink.video]
        assert indices == list(range(indices[0], indices[0] + len(indices)))
        assert all(p == round(i / fps / tb) for p, i in zip(sink.video, indices))
        starts = [p for p, _ in sink.audio]
        assert starts == list(np.cumsum([starts[0]] + [n for _, n in sink.audio[:-1]]))  # contiguous samples
    assert before.video[0] == 0 and round(before.video[-1] * tb * fps) == int(1800 * fps)
    assert 1803 <= after.video[0] * tb < 1805  # resumed after the 3 s and the backoff, on the same clock
    video_end = after.video[-1] * tb + 1 / fps
    audio_end = (after.audio[-1][0] + after.audio[-1][1]) / AUDIO_RATE
    assert abs(video_end - audio_end) < 1 / fps
    assert video_end == pytest.approx(total / fps, abs=1e-6)
    wall = sim.now() - origin - 0.2  # the stream's clock against the wall, after an hour
    assert abs(wall - video_end) < 0.1 and abs(channel.stats.drift_s) < 0.1
