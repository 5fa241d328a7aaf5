"""Live sessions: rest between utterances at the avatar's fps, blends, interruptions, idle admission."""
from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from musetalk.realtime.engine.admission import Admission, ServerFull
from musetalk.realtime.engine.engine import Engine
from musetalk.realtime.engine.outbox import Event, Frame, Skip
from musetalk.realtime.engine.render import composite
from musetalk.realtime.engine.session import BLEND_FRAMES, SessionError

from .conftest import fake_models

WHITE = np.full((256, 256, 3), 255, np.uint8)


def white_faces(engine, generate_s: float = 0.0):
    """Fake models whose every generated face is white (so speech frames are known exactly)."""
    fake_models(engine, generate_s)
    plain = engine._generate_batch
    engine._generate_batch = lambda pairs: [WHITE for _ in plain(pairs)]
    return engine


class Reader(threading.Thread):
    """Collects (arrival time, item) of a session until its end; ``error``: the SessionError it ended with."""

    def __init__(self, session) -> None:
        super().__init__(daemon=True)
        self.session, self.items, self.error = session, [], None
        self.start()

    def run(self) -> None:
        try:
            for item in self.session.frames(timeout=60):
                self.items.append((time.perf_counter(), item))
        except SessionError as exc:
            self.error = exc


def speak(session, samples: np.ndarray, chunk_ms: int = 20) -> None:
    """One utterance at real-time pace, then its end."""
    chunk = 16 * chunk_ms
    start = time.perf_counter()
    for k, offset in enumerate(range(0, len(samples), chunk)):
        time.sleep(max(0.0, start + k * chunk_ms / 1000 - time.perf_counter()))
        session.feed(samples[offset : offset + chunk])
    session.end()


def test_live_session_through_three_utterances(tiny_musetalk, store, speech):
    avatar = store.load("video")
    seconds = (1.0, 0.7, 1.3)
    with Engine(tiny_musetalk, batch_size=8, jpeg_quality=None, lookahead_s=0.1, capacity=2) as engine:
        white_faces(engine)
        session = engine.open(avatar, live=True)
        reader = Reader(session)
        time.sleep(1.0)
        for k, s in enumerate(seconds):
            speak(session, speech[16000 * (k + 1): 16000 * (k + 1) + int(s * 16000)])
            time.sleep(2.0)
        session.finish()
        reader.join(30)
    frames = [(t, i) for t, i in reader.items if not isinstance(i, Event)]
    events = [i.payload for _, i in reader.items if isinstance(i, Event)]
    assert not any(isinstance(i, Skip) for _, i in frames)
    assert [i.index for _, i in frames] == list(range(len(frames)))
    assert events == [{"type": "state", "state": "speaking"}, {"type": "utterance_done", "frames": 25},
                      {"type": "state", "state": "rest"}] + [
                     {"type": "state", "state": "speaking"}, {"type": "utterance_done", "frames": 17},
                     {"type": "state", "state": "rest"}] + [
                     {"type": "state", "state": "speaking"}, {"type": "utterance_done", "frames": 32},
                     {"type": "state", "state": "rest"}]
    span = frames[-1][0] - frames[0][0]
    assert abs((len(frames) - 1) / span - 25) <= 2.5, f"{(len(frames) - 1) / span:.1f} fps"
    speaking, index_of_event, position = set(), [], 0
    for _, item in reader.items:  # the frame indices each utterance covers, from the events' positions
        if isinstance(item, Event):
            index_of_event.append(position)
        else:
            position += 1
    starts, stops = index_of_event[0::3], index_of_event[1::3]
    for start, stop, n in zip(starts, stops, (25, 17, 32)):
        assert stop - start == n
        speaking.update(range(start, stop))
        for k, index in enumerate(range(start, stop)):
            image, source = frames[index][1].image, avatar.source_index(index)
            rest = np.asarray(avatar.frames[source])
            talk = composite(avatar, source, WHITE)
            if BLEND_FRAMES <= k < n - BLEND_FRAMES:
                assert np.array_equal(image, talk)
            else:  # blend frames lie between rest and speech, and differ from both
                low, high = np.minimum(rest, talk), np.maximum(rest, talk)
                assert (image >= low).all() and (image <= high).all()
                assert not np.array_equal(image, rest) and not np.array_equal(image, talk)
    for index, (_, item) in enumerate(frames):
        if index not in speaking:  # rest: the source frames, unaltered, in ping-pong order
            assert np.array_equal(item.image, avatar.frames[avatar.source_index(index)])
    assert len(frames) - len(speaking) >= 25 * (1.0 + 3 * 2.0) * 0.9


def test_interrupt_stops_within_two_frames(tiny_musetalk, store, speech):
    with Engine(tiny_musetalk, batch_size=8, jpeg_quality=None, lookahead_s=0.1) as engine:
        white_faces(engine)
        session = engine.open(store.load("photo"), live=True)
        reader = Reader(session)
        session.feed(speech[:16000 * 4])  # 4 s of speech at once, no end
        deadline = time.monotonic() + 30
        while sum(isinstance(i, Frame) and i.image.max() == 255 for _, i in reader.items) < 5:
            assert time.monotonic() < deadline, "no speech"
            time.sleep(0.01)
        session.interrupt()
        at = len(reader.items)
        time.sleep(0.5)
        session.finish()
        reader.join(30)
    after = [i for _, i in reader.items[at:]]
    done = next(k for k, i in enumerate(after) if isinstance(i, Event) and i.payload["type"] == "utterance_done")
    assert sum(isinstance(i, Frame) for i in after[:done]) <= 2
    assert after[done + 1].payload == {"type": "state", "state": "rest"}
    rest = [i for i in after[done + 2:] if isinstance(i, Frame)]
    assert len(rest) >= 8 and all(np.array_equal(i.image, store.load("photo").frames[0]) for i in rest)
    indices = [i.index for _, i in reader.items if not isinstance(i, Event)]
    assert indices == list(range(len(indices)))


def test_ten_idle_and_one_speaking_within_budget_where_eleven_speaking_are_refused(tiny_musetalk, store, speech):
    budget = 0.3
    with pytest.raises(ServerFull):
        admission = Admission(capacity=2)
        for speaking in range(11):
            admission.check(speaking, 0, live=False)
    with Engine(tiny_musetalk, batch_size=8, latency_budget_s=budget, capacity=2, lookahead_s=0.1) as engine:
        white_faces(engine, generate_s=0.02)
        avatar = store.load("photo")
        sessions = [engine.open(avatar, live=True) for _ in range(11)]
        readers = [Reader(s) for s in sessions]
        time.sleep(0.5)
        speak(sessions[0], speech[16000:16000 * 3])
        time.sleep(0.5)
        assert engine.health() | {"load": 0} == {"sessions": 11, "speaking": 0, "capacity": 2, "load": 0,
                                                  "free": True}
        for s in sessions:
            s.finish()
        for r in readers:
            r.join(30)
    for session, reader in zip(sessions, readers):
        frames = [i for _, i in reader.items if isinstance(i, Frame)]
        skips = [i for _, i in reader.items if isinstance(i, Skip)]
        assert len(frames) >= 25 * 3 * 0.8 and len(skips) <= 0.05 * len(frames)
    spoken = [i.payload for _, i in readers[0].items if isinstance(i, Event)]
    assert {"type": "utterance_done", "frames": 50} in spoken
    # the speaker's utterance was drawn: 45 or more of its 50 frames differ from the rest frame (the photo's
    # one source frame, the same JPEG every time), the idle sessions' frames never do
    rest = next(i.jpeg for _, i in readers[0].items if isinstance(i, Frame))
    talking = [[i for _, i in r.items if isinstance(i, Frame) and i.jpeg != rest] for r in readers]
    assert 45 <= len(talking[0]) <= 50 and not any(talking[1:]), [len(t) for t in talking]


def test_the_speaker_beyond_capacity_is_the_one_that_skips(tiny_musetalk, store, speech):
    # capacity 1: A speaks first and keeps its slot; B starts speaking 0.2 s later while the engine is full.
    # Both together ask 50 frames/s of a generator making 4 frames per 100 ms (40 frames/s).
    with Engine(tiny_musetalk, batch_size=4, latency_budget_s=0.3, capacity=1, lookahead_s=0.1) as engine:
        white_faces(engine, generate_s=0.1)
        avatar = store.load("photo")
        first, second = engine.open(avatar, live=True), engine.open(avatar, live=True)
        readers = [Reader(first), Reader(second)]
        clip = speech[16000:16000 * 3]
        speakers = [threading.Thread(target=speak, args=(first, clip))]
        speakers[0].start()
        time.sleep(0.2)
        speakers.append(threading.Thread(target=speak, args=(second, clip)))
        speakers[1].start()
        for t in speakers:
            t.join()
        time.sleep(1.0)
        for s in (first, second):
            s.finish()
        for r in readers:
            r.join(30)
    assert first.skipped <= 2 and second.skipped >= 10, (first.skipped, second.skipped)
    for reader in readers:
        indices = [i.index for _, i in reader.items if not isinstance(i, Event)]
        assert indices == list(range(len(indices)))
