"""The page in a real browser: headless Chromium (system package) with a fake microphone fed from a WAV
file, driven by Playwright (tests/realtime/browser.py). The page opens a live session per avatar: the avatar shows at once
(poster), stays at rest, speaks typed text, the microphone and WAV files, and shows refusals."""
from __future__ import annotations

import contextlib
import math

import cv2
import numpy as np
import pytest
import soundfile

from musetalk.realtime.web.access import AccessPolicy
from musetalk.realtime.server import create_app

from .browser import Page, serving
from .conftest import fake_models

TOKEN = "page-token-123"
SENTENCE = "Hello there, nice to meet you."
CANVAS_RECT = ("(() => { const r = document.getElementById('view').getBoundingClientRect();"
               " return {x: r.x, y: r.y, width: r.width, height: r.height}; })()")
# Wraps the page's draw(): window.speechDraws counts the frames drawn and those whose pixels differ from the
# first one drawn after it is installed (at rest: the photo's one source frame, the same every time).
COUNT_SPEECH_DRAWS = """(() => {
  const draw = window.draw, seen = (window.speechDraws = {rest: null, drawn: 0, speech: 0});
  window.draw = (bitmap) => {
    draw(bitmap);
    const view = document.getElementById('view');
    const pixels = view.getContext('2d').getImageData(0, 0, view.width, view.height).data;
    let sum = 0;
    for (let i = 0; i < pixels.length; i += 3) sum = (sum * 31 + pixels[i]) >>> 0;
    if (seen.rest === null) seen.rest = sum;
    seen.drawn += 1;
    if (sum !== seen.rest) seen.speech += 1;
  };
})()"""


@pytest.fixture(scope="module")
def engine(tiny_musetalk):
    """The engine of the page tests: frames later than 1 s past their time are skipped, so a live session
    keeps its clock on a loaded machine (a stalled one would hold back its rest frames). Fake models (black
    faces, no model cost): on a loaded 2-core machine a tiny whisper pass alone can take over the 1 s budget,
    and then every speech frame is skipped; the page's speech frames must be drawn whatever the load."""
    from musetalk.realtime.engine.engine import Engine

    with Engine(tiny_musetalk, batch_size=8, latency_budget_s=1.0) as engine:
        yield fake_models(engine)


@pytest.fixture
def serve(store, engine, browser):
    """``serve(**options)`` starts ``create_app(store, engine, **options)``; returns its URL. Afterwards the
    browser leaves the page (closing its session) before the server stops."""
    with contextlib.ExitStack() as stack:
        yield lambda **options: stack.enter_context(serving(create_app(store, engine, **options)))
        browser.goto("about:blank")


def open_page(browser: Page, url: str, avatar: str | None = None, transport: str = "ws") -> None:
    """Load the page over ``transport`` (?transport=), wait for the avatar list, and pick ``avatar``
    (default: the first, "photo")."""
    browser.goto(url + ("&" if "?" in url else "?") + f"transport={transport}")
    browser.wait_for("document.querySelectorAll('#avatar option').length === 2", 30)
    if avatar:
        browser.evaluate(f"(() => {{ const m = document.getElementById('avatar'); m.value = '{avatar}';"
                         f" m.dispatchEvent(new Event('change')); }})()")


def wait_stats(browser: Page, condition: str, timeout: float) -> dict:
    """window.musetalk once ``condition`` (JS over ``s``, the counters) holds; fails fast on a page error."""
    value = browser.wait_for(f"(s => s.error ? {{pageError: s.error}} : ({condition}) && s)(window.musetalk)",
                             timeout)
    assert "pageError" not in value, f"page error: {value['pageError']}"
    return value


def canvas_pixels(browser: Page) -> np.ndarray:
    """The canvas as shown on the page, uint8 (H, W, 3) BGR."""
    rect = browser.evaluate(CANVAS_RECT)
    return cv2.imdecode(np.frombuffer(browser.screenshot(rect), np.uint8), cv2.IMREAD_COLOR)


def assert_not_blank(image: np.ndarray) -> None:
    assert image.std() > 20 and len(np.unique(image.reshape(-1, 3), axis=0)) > 1000, "canvas looks blank"


def text_of(browser: Page, element: str) -> str:
    return browser.evaluate(f"document.getElementById('{element}').textContent")


@pytest.mark.timeout(120)
def test_avatar_shows_at_once_with_the_token(browser, serve):
    """Before any audio the poster is on the canvas; the page's ?token= reaches every fetch and the socket."""
    url = serve(access=AccessPolicy(token=TOKEN))
    open_page(browser, f"{url}/?token={TOKEN}")
    stats = wait_stats(browser, "s.poster === 'photo'", 30)
    assert stats["audioPlayed"] == 0 and stats["sentBytes"] == 0
    shown = canvas_pixels(browser)
    assert shown.shape[:2] == (266, 474)  # the canvas takes the avatar's frame size
    assert_not_blank(shown)
    # the live session got past the token check
    wait_stats(browser, "s.state === 'rest'", 30)


@pytest.mark.timeout(180)
def test_typed_sentence_is_spoken_then_rest(browser, serve, synthesizer):
    """Rest frames stream at once; a typed sentence is spoken (speech frames drawn, its audio played on the page)
    as one utterance of floor(seconds x fps) frames; then the avatar is back at rest."""
    open_page(browser, serve() + "/")
    rest = wait_stats(browser, "s.state === 'rest' && s.drawn >= 5", 60)
    assert rest["audioPlayed"] == 0 and rest["refusal"] is None
    assert_not_blank(canvas_pixels(browser))
    browser.evaluate(COUNT_SPEECH_DRAWS)
    browser.wait_for("window.speechDraws.drawn >= 2", 30)
    browser.evaluate(f"document.getElementById('text').value = {SENTENCE!r}")
    browser.evaluate("document.getElementById('say').click()")
    wait_stats(browser, "s.state === 'speaking'", 60)
    seconds = len(synthesizer.synthesize(SENTENCE)) / 16000
    done = wait_stats(browser, "s.utterances === 1 && s.state === 'rest'", 120)
    assert done["utteranceFrames"] == math.floor(seconds * 25)
    assert done["firstFrameMs"] is not None
    draws = browser.evaluate("window.speechDraws")  # speech frames drawn, told apart from rest frames
    assert done["utteranceFrames"] / 2 <= draws["speech"] <= done["utteranceFrames"], (draws, done)
    played = wait_stats(browser, f"s.audioPlayed >= {seconds - 0.05}", 30)  # all the speech was played
    assert played["audioPlayed"] <= seconds + 0.05
    assert_not_blank(canvas_pixels(browser))
    line = text_of(browser, "stats")
    assert line.startswith("rest · WebSocket · ") and " fps · latency " in line and " · skipped " in line, line


@pytest.mark.timeout(180)
def test_stop_interrupts_the_speech(browser, serve):
    """Stop drops the rest of a long utterance (frames and its audio) and the avatar is back at rest."""
    open_page(browser, serve() + "/")
    wait_stats(browser, "s.state === 'rest'", 60)
    long_text = "This is a long sentence that keeps the avatar talking for quite a few seconds. " * 3
    browser.evaluate(f"document.getElementById('text').value = {long_text!r}")
    browser.evaluate("document.getElementById('say').click()")
    wait_stats(browser, "s.state === 'speaking' && s.drawn > 0", 90)
    assert browser.evaluate("document.getElementById('stop').disabled") is False
    browser.evaluate("document.getElementById('stop').click()")
    stopped = wait_stats(browser, "s.state === 'rest'", 20)
    assert stopped["audioPlayed"] < 3  # most of the ~15 s of speech was never played
    assert browser.evaluate("document.getElementById('stop').disabled") is True


@pytest.mark.timeout(180)
def test_microphone_speaks_through_the_live_session(browser, serve):
    """Microphone audio (a fake device fed from sun.wav) is one utterance; "Done speaking" ends it."""
    open_page(browser, serve() + "/")
    wait_stats(browser, "s.state === 'rest'", 60)
    browser.evaluate("document.getElementById('mic-start').click()")
    wait_stats(browser, "s.sentBytes >= 32000", 60)
    browser.evaluate("document.getElementById('mic-stop').click()")
    final = wait_stats(browser, "s.utterances === 1 && s.state === 'rest'", 120)
    # all audio sent becomes the utterance's frames: floor(seconds x 25) for sentBytes / 2 samples at 16 kHz
    assert final["utteranceFrames"] == int(final["sentBytes"] / 2 / 16000 * 25) >= 25


@pytest.mark.timeout(180)
def test_wav_file_is_spoken_and_played(browser, serve, speech, tmp_path):
    """A WAV file (stereo here) chosen on the page is resampled, spoken and played from its first frame."""
    clip = tmp_path / "clip.wav"
    soundfile.write(clip, np.repeat(speech[:16000][:, None], 2, axis=1), 16000, subtype="PCM_16")
    open_page(browser, serve() + "/", avatar="video")
    wait_stats(browser, "s.state === 'rest'", 60)
    browser.set_files("#wav", [clip])
    final = wait_stats(browser, "s.utterances === 1 && s.audioPlayed >= 0.99", 120)
    assert final["utteranceFrames"] == 25 and final["sentBytes"] == 32000
    size = browser.evaluate("(() => { const c = document.getElementById('view'); return [c.width, c.height]; })()")
    assert size == [576, 768]


@pytest.fixture(scope="module")
def engine_for_one(tiny_musetalk):
    """An engine with room for one speaking session."""
    from musetalk.realtime.engine.engine import Engine

    with Engine(tiny_musetalk, batch_size=8, capacity=1) as engine:
        yield engine


@pytest.mark.timeout(120)
def test_refusal_is_shown_when_the_server_is_full(browser, store, engine_for_one):
    """With room for one speaking session, held by a plain (speaking) session, the page's live session is
    refused with 1013 and the page shows why."""
    from websockets.sync.client import connect

    with serving(create_app(store, engine_for_one)) as url, connect(url.replace("http", "ws") + "/ws/photo"):
        open_page(browser, url + "/")
        refused = browser.wait_for("window.musetalk.state === 'refused' && window.musetalk", 30)
    assert refused["refusal"].startswith("server full: 1 of 1 sessions in use; try again later"), refused
    assert text_of(browser, "status") == f"Refused (server full): {refused['refusal']}"
    assert browser.evaluate("document.getElementById('say').disabled") is True
