"""The media clock: a live session played out frame by frame with its speech, from one clock."""
from __future__ import annotations

import asyncio
import time

import numpy as np
import pytest

from musetalk.realtime.engine.clock import AudioTimeline, MediaClock, frame_sample
from musetalk.realtime.engine.engine import Engine
from musetalk.realtime.media import AudioOut, MediaFrame, paced_frames, resampler_delay, video_frame

from .test_live import white_faces

BUDGET_S = 0.3


def test_timeline_takes_slots_with_gaps_as_zeros_and_forgets_what_was_played():
    timeline = AudioTimeline()
    timeline.add(100, np.arange(1, 51, dtype=np.float32))  # samples 100..149
    timeline.add(200, np.full(10, 7, np.float32))  # 200..209
    assert timeline.take(0, 100) is None
    part = timeline.take(140, 205)
    assert part.tolist() == list(range(41, 51)) + [0.0] * 50 + [7.0] * 5
    assert timeline.samples == 5
    timeline.drop_from(207)
    assert timeline.take(205, 210).tolist() == [7.0, 7.0, 0.0, 0.0, 0.0]
    assert timeline.samples == 0


def test_frame_samples_follow_the_true_frame_rate():
    clock = MediaClock(origin=10.0, fps=30000 / 1001)
    assert [clock.sample_start(i, 16000) for i in (0, 1, 2, 30)] == [0, 533, 1067, 16016]
    assert clock.frame_wall(30) == pytest.approx(10.0 + 1.001)
    assert clock.frame_at(10.0 + 1.001) == 30


def _play(engine, avatar, script, seconds: float, budget_s: float = BUDGET_S
          ) -> tuple[list[MediaFrame], list, MediaClock, list[int]]:
    """Open a live image session, run ``script(session)`` in a thread, collect ``seconds`` of playout."""
    async def run():
        session = engine.open(avatar, loop=asyncio.get_running_loop(), live=True, images=True)
        starts: list[int] = []
        feeder = asyncio.create_task(asyncio.to_thread(script, session, starts))
        frames, events = [], []
        async for item in paced_frames(session, budget_s):
            if isinstance(item, MediaFrame):
                frames.append(item)
                if item.playout_at >= session.clock.frame_wall(0) + budget_s + seconds:
                    session.finish()
            else:
                events.append((len(frames), item.payload))  # (the index of the frame it precedes, event)
        await feeder
        clock = session.clock
        session.close()
        return frames, events, clock, starts
    return asyncio.run(run())


def _speak_after(delay_s: float, samples: np.ndarray):
    def script(session, starts):
        time.sleep(delay_s)
        starts.append(session.feed(samples))
        session.end()
    return script


def test_picture_and_sound_leave_together_at_the_playout_point(tiny_musetalk, store, speech):
    avatar = store.load("video")
    said = speech[:16000]  # 1.0 s: 25 frames at 25 fps
    with Engine(tiny_musetalk, batch_size=8, lookahead_s=0.1, latency_budget_s=BUDGET_S, capacity=2) as engine:
        white_faces(engine)
        frames, events, clock, (start,) = _play(engine, avatar, _speak_after(0.5, said), seconds=2.5)
    assert [f.index for f in frames] == list(range(len(frames)))
    assert [f.playout_at for f in frames] == [clock.frame_wall(i) + BUDGET_S for i in range(len(frames))]
    speaking = [f.index for f in frames if f.speech]
    assert speaking == list(range(start, start + 25))
    sound = np.concatenate([f.audio for f in frames])
    first = frame_sample(start, avatar.fps, 16000)
    assert np.array_equal(sound[first: first + len(said)], said)
    assert not sound[:first].any() and not sound[first + len(said):].any()
    drawn = [f.index for f in frames if f.speech and not f.repeated]
    assert len(drawn) >= 20, f"speech frames drawn: {drawn}"  # fake models are instant: nearly all drawn
    rest = np.asarray(avatar.frames[avatar.source_index(0)])
    assert np.array_equal(frames[0].image, rest)
    assert (start, {"type": "state", "state": "speaking"}) in events  # at the playout of its frame, not before
    assert (start + 25, {"type": "utterance_done", "frames": 25}) in events


def test_a_frame_that_misses_the_budget_repeats_the_picture_while_its_sound_plays_on_time(tiny_musetalk, store, speech):
    avatar = store.load("video")
    said = speech[16000:24000]  # 0.5 s: 12 frames
    with Engine(tiny_musetalk, batch_size=8, lookahead_s=0.1, latency_budget_s=BUDGET_S, capacity=2) as engine:
        white_faces(engine, generate_s=2 * BUDGET_S)  # every speech frame would be late: skipped
        frames, _, clock, (start,) = _play(engine, avatar, _speak_after(0.3, said), seconds=2.0)
    speech_frames = [f for f in frames if f.speech]
    assert [f.index for f in speech_frames] == list(range(start, start + 12))
    assert all(f.repeated for f in speech_frames)
    assert all(np.array_equal(f.image, frames[start - 1].image) for f in speech_frames)
    sound = np.concatenate([f.audio for f in frames])
    first = frame_sample(start, avatar.fps, 16000)
    assert np.array_equal(sound[first: first + len(said)], said)


def test_a_budget_longer_than_the_outbox_loses_no_frame(tiny_musetalk, store, speech):
    """A 0.8 s budget holds 20 frames before their playout, the session's outbox only 8: the playout loop
    buffers them itself (else the outbox turns the rest into skips)."""
    avatar = store.load("video")
    with Engine(tiny_musetalk, batch_size=8, lookahead_s=0.1, latency_budget_s=0.8, capacity=2,
                outbox_frames=8) as engine:
        white_faces(engine)
        frames, _, _, (start,) = _play(engine, avatar, _speak_after(0.3, speech[:16000]), seconds=2.5, budget_s=0.8)
    assert [f.index for f in frames if f.speech] == list(range(start, start + 25))
    assert [f.index for f in frames if f.repeated] == []


def test_video_and_audio_pts_count_frames_and_samples_of_one_clock():
    clock = MediaClock(origin=0.0, fps=25.0)
    image = np.zeros((8, 8, 3), np.uint8)
    assert video_frame(image, 25, clock).pts == 90000
    out = AudioOut(clock, rate=48000, first_index=50)
    click = np.zeros(16000, np.float32)
    click[3200] = 1.0  # 0.2 s after frame 50
    frames = [f for k in range(25) if (f := out.frame(click[640 * k: 640 * (k + 1)])) is not None]
    assert frames[0].pts == 96000  # frame 50 is at 2.0 s
    assert [b.pts for b in frames[1:]] == [a.pts + a.samples for a, b in zip(frames[:-1], frames[1:])]
    sound = np.concatenate([f.to_ndarray()[0] for f in frames])
    assert resampler_delay(48000) == 48  # FFmpeg's resampler, 16 -> 48 kHz: 1 ms
    assert frames[0].pts + int(np.argmax(sound)) == 96000 + 9600 + 48  # the click at 2.2 s (+ 1 ms) on the same clock
    assert [f.samples for f in frames] == [1920] * 25  # each slot's sound is out by its playout point


def test_synthesised_speech_starts_on_the_clocks_next_frame_microphone_speech_after_its_look_ahead(tiny_musetalk, store,
                                                                                                speech):
    """A say's audio exists before it plays: it needs no look-ahead wait, its first frame is the clock's
    next one; live audio starts where its look-ahead will have arrived (the session's audio delay later)."""
    from musetalk.realtime.engine.session import audio_delay

    avatar = store.load("video")
    with Engine(tiny_musetalk, batch_size=8, lookahead_s=0.4, latency_budget_s=BUDGET_S, capacity=4) as engine:
        white_faces(engine)
        said, heard = engine.open(avatar, live=True), engine.open(avatar, live=True)
        time.sleep(0.5)
        now = time.perf_counter()
        first_said = said.feed(speech[:8000], known_ahead=True)
        first_heard = heard.feed(speech[:8000])
        playing = said.clock.frame_at(now)
        said.close()
        heard.close()
    assert playing <= first_said <= playing + 2
    delay_frames = audio_delay(avatar.fps, 0.4) * avatar.fps  # 25 fps: about 23 frames
    assert abs((first_heard - first_said) - delay_frames) <= 2
