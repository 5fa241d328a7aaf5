"""The page over WebRTC in headless Chromium (Playwright): the avatar at rest, then a typed sentence spoken
(speech frames told apart from rest frames in the pictures the <video> presents, its sound heard); the
same through a real TURN server (coturn) with the page forced to relay; picture and sound in sync; and
the automatic fallback to the WebSocket when the server has no WebRTC."""
from __future__ import annotations

import contextlib
import json
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("aiortc")

from musetalk.realtime.outputs.ice import WebRTCSettings, ice_servers  # noqa: E402
from musetalk.realtime.server import create_app  # noqa: E402

from .browser import serving, turn_server, video_probe  # noqa: E402
from .conftest import fake_models  # noqa: E402
from .test_browser import SENTENCE, open_page, text_of, wait_stats  # noqa: E402

SPEECH_LEVEL = 24  # grey levels: a 16x16 block of a speech frame differs this much from the rest picture
CONNECTED = ("s.transport === 'webrtc' && s.rtc && s.rtc.connection === 'connected' && s.state === 'rest'"
             " && s.drawn >= 25")


@pytest.fixture(scope="module")
def engine(tiny_musetalk):
    """An engine on fake models (this module tests delivery and the page, not the network's speed): every
    generated face is black, so speech frames stand out from the rest picture. Frames later than 1 s past
    their time are skipped (the picture repeats), so a session keeps its clock on a loaded machine."""
    from musetalk.realtime.engine.engine import Engine

    with Engine(tiny_musetalk, batch_size=8, latency_budget_s=1.0) as engine:
        yield fake_models(engine)


@pytest.fixture
def serve(store, browser):
    """``serve(engine, **options)`` starts ``create_app(store, engine, **options)``; returns its URL. The
    browser leaves the page (ending its session) before the server stops."""
    with contextlib.ExitStack() as stack:
        yield lambda engine, **options: stack.enter_context(serving(create_app(store, engine, **options)))
        browser.goto("about:blank")


def block_diffs(frames: list[dict], reference: dict) -> np.ndarray:
    """Per presented frame, the largest difference of a 16x16 block's grey level from ``reference``'s."""
    ref = np.array(reference["blocks"], np.float32)
    return np.array([np.abs(np.array(f["blocks"], np.float32) - ref).max() for f in frames])


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_webrtc_page_shows_rest_then_speaks_a_typed_sentence(browser, serve, engine):
    """Over WebRTC the <video> shows the rest picture (every presented frame within noise of the first),
    then the typed sentence: speech frames (the generated mouth) presented, at least half of those the
    engine did not skip and no more than the utterance has, its sound heard on the audio track (silence
    at rest); then rest again. The status line shows the getStats() figures."""
    open_page(browser, serve(engine) + "/", transport="webrtc")
    wait_stats(browser, CONNECTED, 90)
    browser.evaluate(video_probe())
    browser.wait_for("window.probe.frames.length >= 25", 30)
    before = browser.evaluate("window.probe.take()")
    browser.evaluate(f"document.getElementById('text').value = {SENTENCE!r}")
    browser.evaluate("document.getElementById('say').click()")
    done = wait_stats(browser, "s.utterances === 1 && s.state === 'rest'", 180)
    browser.wait_for("window.probe.frames.length >= 50 && window.probe.frames.slice(-25).every(f => f.state === 'rest')", 60)
    during = browser.evaluate("window.probe.take()")
    rest_diffs, diffs = block_diffs(before, before[0]), block_diffs(during, before[0])
    assert rest_diffs.max() < SPEECH_LEVEL, rest_diffs.max()
    speech = int((diffs >= SPEECH_LEVEL).sum())
    assert (done["utteranceFrames"] - done["skipped"]) / 2 <= speech <= done["utteranceFrames"], (speech, done)
    assert diffs[-10:].max() < SPEECH_LEVEL  # back at rest
    rest_rms = max(f["rms"] or 0 for f in before)
    assert rest_rms < 1e-3 and max(f["rms"] or 0 for f in during) > 0.01
    line = text_of(browser, "stats")
    assert line.startswith("rest · WebRTC connected (host) · ") and " fps · " in line, line
    parts = (" kbit/s · jitter buffer ", " ms · dropped ", " · round trip ", " · lip sync ")
    assert all(part in line for part in parts), line


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_relay_through_a_turn_server(browser, serve, engine, tmp_path):
    """coturn on loopback, the server configured with it (as ``--ice-server`` with user and credential),
    the page forced to relay: the selected candidate pair is a relay one, video frames are decoded and
    audio arrives."""
    with turn_server(tmp_path) as turn:
        settings = WebRTCSettings(ice_servers=ice_servers([turn], "u", "p"))
        url = serve(engine, webrtc=settings)
        open_page(browser, url + "/?relay=1", transport="webrtc")
        ice = browser.evaluate("fetch('/ice').then(r => r.json())")
        assert ice == {"iceServers": [{"urls": [turn], "username": "u", "credential": "p"}]}
        stats = wait_stats(browser, CONNECTED + " && s.rtc.candidateType === 'relay' && s.rtc.framesDecoded >= 50"
                                    " && s.rtc.audioBytes > 0 && s.rtc.audioSamples > 0", 120)
        assert stats["fallback"] is None
        assert text_of(browser, "stats").startswith("rest · WebRTC connected (relay) · ")
        browser.goto("about:blank")  # the session ends before the TURN server does


@pytest.mark.slow
@pytest.mark.timeout(480)
def test_microphone_is_an_outgoing_track(browser, serve, engine):
    """The microphone (a fake device playing sun.wav) goes out as the offer's audio track: the server
    speaks it; "Done speaking" ends the utterance (utterance_done after at least the 2 s of frames drawn
    while it streamed); the session goes on at rest."""
    open_page(browser, serve(engine) + "/", transport="webrtc")
    wait_stats(browser, CONNECTED, 90)
    browser.evaluate("document.getElementById('mic-start').click()")
    speaking = wait_stats(browser, "s.state === 'speaking'", 120)
    wait_stats(browser, f"s.drawn >= {speaking['drawn'] + 50}", 120)
    browser.evaluate("document.getElementById('mic-stop').click()")
    done = wait_stats(browser, "s.utterances >= 1", 120)
    assert done["utteranceFrames"] >= 50 and done["refusal"] is None, done
    wait_stats(browser, "s.state === 'rest' && s.rtc.connection === 'connected'", 60)


@pytest.mark.timeout(120)
def test_page_falls_back_to_the_websocket(browser, serve, engine):
    """A server without WebRTC: the page says why and carries on over the WebSocket."""
    open_page(browser, serve(engine, webrtc=None) + "/", transport="webrtc")
    stats = wait_stats(browser, "s.transport === 'ws' && s.state === 'rest' && s.drawn >= 3", 60)
    assert stats["fallback"].startswith("GET /ice: "), stats["fallback"]
    assert text_of(browser, "notice") == f"WebRTC unavailable ({stats['fallback']}); using the WebSocket."


@pytest.fixture(scope="module")
def loudness_engine(tiny_musetalk):
    """The ``webrtc`` tests' loudness model: every face is uniform grey, proportional to the loudness of the
    audio of its own frame slot, so the picture carries its sound's envelope."""
    from musetalk.realtime.engine.engine import Engine

    from .test_webrtc import loudness_models

    with Engine(tiny_musetalk, batch_size=8, lookahead_s=0.1, latency_budget_s=1.0) as engine:
        yield loudness_models(engine)


def picture_loudness(frames: list[dict], reference: dict) -> np.ndarray:
    """Per presented frame, the mean grey level of the blocks the speech changed (the face)."""
    blocks = np.array([f["blocks"] for f in frames], np.float32)
    changed = np.abs(blocks - np.array(reference["blocks"], np.float32)).max(axis=0) >= SPEECH_LEVEL
    assert changed.sum() >= 4, "no face blocks changed while speaking"
    return blocks[:, changed].mean(axis=1)


def best_lag(picture: np.ndarray, sound: np.ndarray, most: int = 10) -> tuple[int, float]:
    """(lag in frames, correlation) maximising the correlation of ``picture[k]`` with ``sound[k + lag]``
    (positive: the sound comes later than its picture)."""
    def corr(lag: int) -> float:
        a = picture[max(0, -lag) : len(picture) - max(0, lag)]
        b = sound[max(0, lag) : len(sound) - max(0, -lag)]
        return float(np.corrcoef(a, b)[0, 1])

    return max(((lag, corr(lag)) for lag in range(-most, most + 1)), key=lambda lc: lc[1])


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_picture_and_sound_in_sync_in_chromium(browser, serve, loudness_engine, speech):
    """With the loudness model, the picture's loudness (frames read by requestVideoFrameCallback) and the
    heard loudness (a WebAudio analyser on the remote audio), sampled at each presented frame, agree best
    within two frames of each other while speaking, once the page's lip sync has settled (it holds the
    picture for the sound that headless Chromium plays behind it)."""
    from .test_webrtc import Synth

    console = []
    browser.page.on("console", lambda message: console.append(message.text))
    open_page(browser, serve(loudness_engine, synthesizer=Synth(speech)) + "/", transport="webrtc")
    wait_stats(browser, CONNECTED + " && s.rtc.lipSyncSettled", 90)
    browser.evaluate(video_probe())
    browser.wait_for("window.probe.frames.length >= 25", 30)
    # only the last frame crosses to Python: parsing a second of frames here held the GIL ~120 ms, the
    # server (a thread of this process) then sent its sound in one late burst, and Chromium's audio jitter
    # buffer held ~130 ms for the rest of the utterance
    reference = browser.evaluate("window.probe.take().slice(-1)")[0]
    browser.evaluate("document.getElementById('text').value = 'Hello there.'")
    browser.evaluate("document.getElementById('say').click()")
    done = wait_stats(browser, "s.utterances === 1 && s.state === 'rest'", 180)
    assert done["utteranceFrames"] == 100  # 4 s of speech
    frames = browser.evaluate("window.probe.take()")
    picture = picture_loudness(frames, reference)
    sound = np.array([f["rms"] or 0.0 for f in frames])
    speaking = picture > picture.min() + SPEECH_LEVEL
    assert speaking.sum() >= 50, speaking.sum()  # most of the 100 speech frames were shown
    first, last = np.flatnonzero(speaking)[[0, -1]]
    lag, corr = best_lag(picture[first : last + 1], sound[first : last + 1])
    assert corr > 0.5 and abs(lag) <= 2, (lag, corr, [line for line in console if line.startswith("lip sync")])


LIPSYNC = Path(__file__).resolve().parents[2] / "musetalk" / "realtime" / "web" / "static" / "lipsync.js"


@pytest.mark.parametrize("offsets, sound, holds, settled", [
    ([-60, -55, -70], None, [0, 0, 60], False),  # the sound 60 ms behind: the picture held 60 ms
    ([-60, -55, -70, -9, -9, -9, -9, -5, 3, 0], None, [0, 0, 60, 60, 60, 60, 60, 60, 60, 60], True),  # left alone
    ([-300] * 31, None, [0, 0] + [100] * 7 + [200] * 7 + [300] * 7 + [400] * 8, True),  # 100 ms a step, 400 in all
    ([-60, -60, -60] + [-9] * 4 + [40, 45, 50], None, [0, 0, 60] + [60] * 4 + [60, 60, 15], False),  # ahead: less
    ([50, 40, 45], None, [0, 0, 0], True),  # the sound ahead with no hold: nothing to take back (it is never held)
    ([-30, 5000, None, -40, -35], None, [0, 0, 0, 0, 35], False),  # stale and missing estimates ignored
    ([-15, 10, 19], None, [0, 0, 0], True),  # within the dead band
    ([-60] * 3 + [-9] * 4 + [-30, -35, -32], [50] * 3 + [0] * 4 + [60, 58, 62],  # the sound's delay rose 10 ms
     [0, 0, 60] + [60] * 4 + [60, 60, 92], False),
    ([-60] * 3 + [-9] * 4 + [-55, -60, -58], [50] * 3 + [0] * 4 + [90, 92, 95],  # rose 42 ms: answered, off
     [0, 0, 60] + [60] * 4 + [60, 60, 0], True),
    ([-60] * 3 + [-9] * 4 + [-5, 0, 3, -50, -50, -50], [50] * 3 + [0] * 4 + [55] * 3 + [100] * 3,  # only the
     [0, 0, 60] + [60] * 4 + [60] * 3 + [60, 60, 110], False),  # decision right after a raise judges it
])
def test_lip_sync_holds_the_picture_for_its_sound(browser, offsets, sound, holds, settled):
    """lipsync.js on polls of the estimated offset (audio minus video, ms) and of the sound's jitter-buffer
    delay (ms): the hold after each, and the video receiver's jitterBufferTarget it sets (never set while
    nothing was held). When the sound's delay rises with a raise (the browser's synchroniser answering),
    it lets the picture go and turns itself off."""
    browser.goto("about:blank")
    browser.page.add_script_tag(path=str(LIPSYNC))
    result = browser.evaluate(f"""(() => {{
      const video = {{ jitterBufferTarget: null }};
      const sync = new LipSync(video);
      const sound = {json.dumps(sound or [None] * len(offsets))};
      const holds = {json.dumps(offsets)}.map((o, k) => sync.update(o, sound[k]));
      return {{ holds, settled: sync.settled, off: sync.off, target: video.jitterBufferTarget }};
    }})()""")
    assert result["holds"] == holds and result["settled"] is settled
    assert result["off"] is (settled and holds[-1] == 0 and any(holds))
    assert result["target"] == (holds[-1] if any(holds) else None)
