"""The page's own rules, in headless Chromium (Playwright, tests/realtime/browser.py): its WebSocket playout
delay shrinks back after a hiccup; a typed sentence waits while the microphone streams (or another is
spoken) and the microphone does not open during one, each with a visible reason, and the session lives on."""
from __future__ import annotations

import contextlib

import pytest

from musetalk.realtime.server import create_app

from .browser import serving
from .test_browser import open_page, text_of, wait_stats

STALL_MS = 1500


@pytest.fixture(scope="module")
def engine(tiny_musetalk):
    """Frames later than 1 s past their time are skipped, so a live session keeps its clock when loaded."""
    from musetalk.realtime.engine.engine import Engine

    with Engine(tiny_musetalk, batch_size=8, latency_budget_s=1.0) as engine:
        yield engine


@pytest.fixture
def url(store, engine, browser):
    """The server's URL; the browser leaves the page (closing its session) before the server stops."""
    with contextlib.ExitStack() as stack:
        yield stack.enter_context(serving(create_app(store, engine)))
        browser.goto("about:blank")


def click(browser, button: str) -> None:
    browser.evaluate(f"document.getElementById('{button}').click()")


def type_text(browser, text: str) -> None:
    browser.evaluate(f"document.getElementById('text').value = {text!r}")


@pytest.mark.timeout(120)
def test_playout_delay_shrinks_back_after_a_hiccup(browser, url):
    """The page's main thread stalls 1.5 s: the frames that waited meanwhile arrive late and the delay
    grows past 1 s; at rest it comes back under 400 ms once the frames of the last 3 s had room to spare."""
    open_page(browser, url + "/")
    wait_stats(browser, "s.state === 'rest' && s.drawn >= 5", 60)
    browser.evaluate(f"(() => {{ const t = performance.now(); while (performance.now() - t < {STALL_MS}) {{}} }})()")
    grown = wait_stats(browser, "s.latencyMs >= 1000", 10)
    shrunk = wait_stats(browser, "s.latencyMs <= 400", 30)
    assert shrunk["drawn"] > grown["drawn"] and shrunk["state"] == "rest" and shrunk["skipped"] == grown["skipped"]


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_say_and_microphone_wait_for_each_other(browser, url):
    """A sentence typed while the microphone streams is queued (visible reason), said after "Done speaking";
    the microphone does not open while a typed sentence is spoken (visible reason); a sentence typed during
    another waits for it. Nothing reaches the server that it would refuse: the session lives on."""
    open_page(browser, url + "/")
    wait_stats(browser, "s.state === 'rest'", 60)
    click(browser, "mic-start")
    wait_stats(browser, "s.sentBytes >= 16000", 60)
    type_text(browser, "Hello there, this sentence keeps the avatar busy for a little while.")
    click(browser, "say")
    wait_stats(browser, "s.queued === 1", 10)
    assert text_of(browser, "notice") == 'Queued: the avatar says it when you press "Done speaking". (1 waiting)'
    click(browser, "mic-stop")
    wait_stats(browser, "s.queued === 0 && s.utterances === 1", 120)  # the microphone's utterance, then the say
    assert text_of(browser, "notice") == ""
    click(browser, "mic-start")  # the say is being spoken: refused in the page
    assert text_of(browser, "notice") == "The microphone opens once the typed sentence is spoken (or press Stop)."
    assert browser.evaluate("document.getElementById('mic-stop').disabled") is True
    type_text(browser, "Nice to meet you.")
    click(browser, "say")
    assert text_of(browser, "notice") == "Queued: the avatar says it after the sentence it is speaking. (1 waiting)"
    final = wait_stats(browser, "s.utterances === 3 && s.queued === 0 && s.state === 'rest'", 180)
    assert final["error"] is None and final["refusal"] is None and final["transport"] == "ws"
