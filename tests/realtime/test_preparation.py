"""Avatar preparation streams (memory flat in the video's length) and yields to live sessions."""
from __future__ import annotations

import threading
import time
import tracemalloc
from collections import deque

import numpy as np
import pytest

from musetalk.realtime.avatars.store import AvatarStore, PrepareSettings
from musetalk.realtime.engine.outbox import Event, Frame, Skip

from .conftest import fake_models, wait_until
from .test_live import Reader, speak

FACE = np.zeros((256, 256, 3), np.uint8)

LOOP_FRAMES = 4
SIZE = (288, 384)  # width, height: sun.mp4 at half size keeps the test fast


@pytest.fixture(scope="module")
def looped(tmp_path_factory, media):
    """``looped(seconds)``: sun.mp4's first 4 frames at half size, looped to ``seconds`` at 25 fps, as an mp4
    with the face records of its frames (so no face analysis runs): (video path, records path), made once."""
    import cv2

    from musetalk.face import FaceAnalyzer, save_records
    from musetalk.video.io import VideoWriter, read_frames

    folder = tmp_path_factory.mktemp("looped")
    frames = [cv2.resize(f, SIZE, interpolation=cv2.INTER_AREA)
              for f, _ in zip(read_frames(media / "sun.mp4"), range(LOOP_FRAMES))]
    analyzer = FaceAnalyzer(version="v1.5", smooth=False)
    records = [analyzer.analyze(f) for f in frames]
    assert all(r.found for r in records)

    def make(seconds: int):
        video, faces = folder / f"loop{seconds}.mp4", folder / f"loop{seconds}.npz"
        if video.is_file():
            return video, faces
        with VideoWriter(video, *SIZE, 25) as writer:
            for i in range(25 * seconds):
                writer.write(frames[i % LOOP_FRAMES])
        save_records(faces, [records[i % LOOP_FRAMES] for i in range(25 * seconds)])
        return video, faces

    return make


def preparation_peak(root, mt, video, faces, name: str) -> int:
    """Peak bytes traced (numpy arrays and Python objects) beyond those already held, from the start of
    preparing ``video`` (in a fresh store) until its files are written (the "save" progress, before the avatar
    is loaded)."""
    peaks = []

    def progress(stage: str, done: int, total: int) -> None:
        if stage == "save":
            peaks.append(tracemalloc.get_traced_memory()[1])

    store = AvatarStore(root, mt)
    tracemalloc.reset_peak()
    held = tracemalloc.get_traced_memory()[0]
    store.prepare(video, name, PrepareSettings(face_records=str(faces)), progress=progress)
    return peaks[0] - held


@pytest.mark.slow
def test_preparation_memory_is_flat_in_the_video_length(tmp_path, tiny_musetalk, looped):
    """Preparing 60 s (1500 frames) needs no more than 4 MB beyond what 10 s (250 frames) needs.

    The bound: what grows with the length is bookkeeping, about 2 KB a frame (the face record kept for
    records.npz and the one read from the records file, ~0.7 KB each with their arrays; offsets and a mask
    box, 32 bytes), so 1250 more frames add about 2.5 MB. Holding the video instead (the JPEGs, ~20 KB a
    frame here, and the latents, 32 KB) would add over 60 MB."""
    short, long = looped(10), looped(60)
    tracemalloc.start()
    try:
        peak_short = preparation_peak(tmp_path / "avatars", tiny_musetalk, *short, "short")
        peak_long = preparation_peak(tmp_path / "avatars", tiny_musetalk, *long, "long")
    finally:
        tracemalloc.stop()
    store = AvatarStore(tmp_path / "avatars", tiny_musetalk)
    assert [store.load(n).num_frames for n in ("short", "long")] == [250, 1500]
    assert peak_long - peak_short < 4e6, (peak_short, peak_long)


class FifoDevice:
    """A fake accelerator shared by the engine and a preparation: one call at a time, in the order asked."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._queue: deque = deque()

    def run(self, seconds: float) -> None:
        ticket = object()
        with self._cond:
            self._queue.append(ticket)
            self._cond.wait_for(lambda: self._queue[0] is ticket)
        time.sleep(seconds)
        with self._cond:
            self._queue.popleft()
            self._cond.notify_all()


class PreparationModel:
    """``mt`` for preparations whose latents (zeros) take ``seconds`` of ``device`` per call; ``calls`` holds
    when each call started (``time.perf_counter()``)."""

    def __init__(self, mt, device: FifoDevice, seconds: float) -> None:
        self._mt, self._device, self._seconds = mt, device, seconds
        self.calls: list[float] = []

    def __getattr__(self, name: str):
        return getattr(self._mt, name)

    def unet_input(self, masked, reference):
        import torch

        self.calls.append(time.perf_counter())
        self._device.run(self._seconds)
        return torch.zeros((len(masked), 8, 32, 32))


def speech_frames(items: list) -> tuple[list, int]:
    """The speech frames (from "speaking" to "utterance_done") among a live session's (time, item) pairs, and
    the number of skips."""
    frames, skips, speaking = [], 0, False
    for _, item in items:
        if isinstance(item, Event):
            if item.payload == {"type": "state", "state": "speaking"}:
                speaking = True
            elif item.payload["type"] == "utterance_done":
                speaking = False
        elif isinstance(item, Skip):
            skips += 1
        elif speaking:
            frames.append(item)
    return frames, skips


PREP_CALL_S = 0.2  # one preparation step on the device: shorter than the budget
FRAME_S = 0.012  # the engine's device time per generated frame: 83 frames/s alone
SPEAKERS = 2  # 50 frames/s asked: 60 % of the device
PRIORITY_BUDGET_S = 0.35


@pytest.mark.slow
@pytest.mark.parametrize("yielding", [True, False], ids=["yielding", "not-yielding"])
def test_live_sessions_keep_their_budget_while_an_avatar_is_prepared(tmp_path, tiny_musetalk, store, speech, looped,
                                                                     yielding):
    """Two live sessions speak 2 s each (50 frames each) while a 10 s avatar (250 frames, 16 steps of 0.2 s on
    the device) is prepared on the same fake device, which serves one call at a time in the order asked.

    Yielding (the engine's background lane): the preparation starts at most one device step while the
    sessions speak, so a session waits at most for the one step in flight when it starts to speak (0.2 s,
    within the 0.35 s budget): at most 2 frames a session are skipped (0 measured), the speech frames' p95
    latency is within the budget, and the preparation finishes afterwards. Not yielding (the control, showing
    the load is real): the preparation keeps taking steps during the speech (6-7 measured) and an engine call
    may wait 0.2 s behind one: 5 or more of the 100 frames are skipped, or the p95 latency is above half the
    budget (measured: 8 to 21 skipped, p95 0.26 s)."""
    from musetalk.realtime.avatars.prepare import no_wait
    from musetalk.realtime.engine.engine import Engine

    video, faces = looped(10)
    device = FifoDevice()
    model = PreparationModel(tiny_musetalk, device, PREP_CALL_S)
    preparing = AvatarStore(tmp_path / "avatars", model)
    clip = speech[16000:16000 * 3]
    with Engine(tiny_musetalk, batch_size=8, jpeg_quality=None, lookahead_s=0.1, capacity=SPEAKERS,
                latency_budget_s=PRIORITY_BUDGET_S) as engine:
        fake_models(engine)
        engine._generate_batch = lambda pairs: (device.run(FRAME_S * len(pairs)), [FACE] * len(pairs))[1]
        sessions = [engine.open(store.load("photo"), live=True) for _ in range(SPEAKERS)]
        readers = [Reader(s) for s in sessions]
        stepping = threading.Event()
        preparer = threading.Thread(target=preparing.prepare, args=(video, "new", PrepareSettings(face_records=str(faces))),
                                    kwargs={"progress": lambda stage, *_: stage == "latents" and stepping.set(),
                                            "turn": engine.background.wait_turn if yielding else no_wait})
        preparer.start()
        assert stepping.wait(60), "the preparation did not start"
        spoken_from = time.perf_counter()
        speakers = [threading.Thread(target=speak, args=(s, clip)) for s in sessions]
        for t in speakers:
            t.start()
        for t in speakers:
            t.join()
        wait_until(lambda: all(any(isinstance(i, Event) and i.payload["type"] == "utterance_done" for _, i in r.items)
                               for r in readers))
        spoken_until = time.perf_counter()
        preparer.join(120)
        for s in sessions:
            s.finish()
        for r in readers:
            r.join(30)
    during = sum(spoken_from <= t <= spoken_until for t in model.calls)
    assert any(t > spoken_until for t in model.calls), "the preparation ended before the speech"
    assert preparing.load("new").num_frames == 250
    results = [speech_frames(r.items) for r in readers]
    skipped = [skips for _, skips in results]
    if yielding:
        assert during <= 1, during
        assert all(n <= 2 for n in skipped), skipped
        for frames, skips in results:
            assert len(frames) + skips == 50
            assert np.percentile([f.latency for f in frames], 95) <= PRIORITY_BUDGET_S
        assert engine.background.waited_s > 0
    else:
        p95 = max(np.percentile([f.latency for f in frames], 95) for frames, _ in results)
        assert during >= 3, during
        assert sum(skipped) >= 5 or p95 > PRIORITY_BUDGET_S / 2, (skipped, p95)


def test_the_background_lane_waits_while_a_session_speaks(tiny_musetalk, store, speech):
    """The engine's lane is free while its live session is at rest, busy from its first audio until the
    utterance is out, then free again; a wait_turn blocked meanwhile returns then, and on close."""
    from musetalk.realtime.engine.engine import Engine

    with Engine(tiny_musetalk, batch_size=8, jpeg_quality=None, lookahead_s=0.1) as engine:
        fake_models(engine)
        lane = engine.background
        session = engine.open(store.load("photo"), live=True)
        reader = Reader(session)
        wait_until(lambda: any(isinstance(i, Frame) for _, i in reader.items))
        assert not lane.busy
        session.feed(speech[:8000])
        wait_until(lambda: lane.busy)
        waiter = threading.Thread(target=lane.wait_turn)
        waiter.start()
        session.end()
        waiter.join(30)
        assert not waiter.is_alive() and not lane.busy and lane.waited_s > 0
        wait_until(lambda: any(isinstance(i, Event) and i.payload == {"type": "utterance_done", "frames": 12}
                               for _, i in reader.items))
        session.feed(speech[:8000])  # speaking again: a waiter is released by the engine's shutdown
        wait_until(lambda: lane.busy)
        waiter = threading.Thread(target=lane.wait_turn)
        waiter.start()
    waiter.join(30)
    assert not waiter.is_alive()
    reader.join(5)  # the session's reader ends with the engine, not after its own timeout
    assert not reader.is_alive() and str(reader.error) == "the engine is shut down"
