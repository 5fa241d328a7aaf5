"""Glass latency in Chromium: from a frame's send time on the server to its display on the page (WebRTC).

A real ``musetalk serve`` (the avatar of bench/realtime.py) and the page in headless Chromium (Playwright,
the system package). The page's <video> reports every frame it presents (requestVideoFrameCallback: RTP
timestamp, receive time of its last packet, expected display time). On loopback a packet's transit is
microseconds, so a frame's receive time is its send time (the moment its last packet left the server):
glass latency = expected display time - receive time, the receiver's jitter buffer, decoding and
rendering. Not in it: the server's encoding (from the frame's playout point to its first packet). Also:
the page's lip-sync hold (the picture held back for its sound, part of the glass latency: lipsync.js),
the jitter buffers and getStats' audio-minus-video estimatedPlayoutTimestamp (what the lip sync acts on),
and the time from sending a typed sentence to its first spoken frame on screen (the first presented frame
that differs from the rest picture: random models draw a face unlike the source).
Called by ``bench/realtime.py --glass``.
"""
from __future__ import annotations

import logging
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
log = logging.getLogger("bench.glass")

DETECT_ABOVE_REST = 6  # grey levels over the rest picture's own noise that mark a speech frame


def block_diffs(frames: list[dict], reference: dict) -> np.ndarray:
    """Per presented frame, the largest difference of a 16x16 block's grey level from ``reference``'s."""
    ref = np.array(reference["blocks"], np.float32)
    return np.array([np.abs(np.array(f["blocks"], np.float32) - ref).max() for f in frames])


def first_speech_frame(rest: list[dict], during: list[dict]) -> int | None:
    """Position in ``during`` of the first presented frame that differs from the rest picture beyond its
    noise (None: no speech frame was shown)."""
    noise = block_diffs(rest, rest[-1]).max()
    speech = np.flatnonzero(block_diffs(during, rest[-1]) > noise + DETECT_ABOVE_REST)
    return int(speech[0]) if len(speech) else None


def say(page, text: str, utterances: int) -> tuple[float, dict]:
    """Say ``text`` on the page; (performance.now() ms when sent, the page's counters once it is spoken and
    the avatar is back at rest, the session's ``utterances``-th utterance)."""
    page.evaluate(f"document.getElementById('text').value = {text!r}")
    said_at = page.evaluate("(() => { const t = performance.now(); document.getElementById('say').click();"
                            " return t; })()")
    done = page.wait_for(f"(s => s.error ? {{error: s.error}} : s.utterances === {utterances} && s.state === 'rest'"
                         " && s)(window.musetalk)", 300)
    if done.get("error"):
        raise RuntimeError(f"the page failed: {done['error']}")
    return said_at, done


def bench_glass(args, work: Path) -> None:
    """Serve ``--avatar``, say ``--say`` on the page over WebRTC, print the figures of the module docstring."""
    sys.path.insert(0, str(ROOT))
    from realtime import prepare, start_server

    from tests.realtime.browser import free_port, launch, new_page, video_probe

    models, avatars, _ = prepare(args, work)
    port = free_port()
    server = start_server(args, models, avatars, port)
    try:
        with launch(Path(args.audio)) as browser, new_page(browser) as page:
            page.goto(f"http://127.0.0.1:{port}/?transport=webrtc")
            page.wait_for("(s => s.transport === 'webrtc' && s.rtc && s.rtc.connection === 'connected' && "
                          "s.state === 'rest' && s.drawn >= 25)(window.musetalk)", 120)
            _, warm = say(page, args.say, 1)  # the first loads the voice
            page.evaluate(video_probe())
            page.wait_for("window.probe.frames.length >= 50", 60)
            rest = page.evaluate("window.probe.take()")
            said_at, done = say(page, args.say, 2)
            page.wait_for("window.probe.frames.slice(-25).every(f => f.state === 'rest')", 60)
            during = page.evaluate("window.probe.take()")
            final = page.evaluate("window.musetalk")
    finally:
        server.terminate()
        server.wait()
    first = first_speech_frame(rest, during)
    frames = [f for f in rest + during if f["receive"] is not None]
    glass = np.array([f["display"] - f["receive"] for f in frames])
    rtc = final["rtc"]
    lines = [
        f"glass latency in Chromium (WebRTC on loopback, {Path(args.avatar).name}: frame received = sent -> shown, "
        f"requestVideoFrameCallback): p50 {np.percentile(glass, 50):.0f} ms, p95 {np.percentile(glass, 95):.0f} ms, "
        f"max {glass.max():.0f} ms over {len(glass)} frames at rest and speaking",
        f"  of which the lip-sync hold {rtc['holdMs']} ms (the picture held for its sound); jitter buffer video "
        f"{rtc['jitterMs']:.0f} ms, audio {rtc['audioJitterMs']:.0f} ms; estimatedPlayoutTimestamp audio - video "
        f"{rtc['playoutDiffMs']} ms; frames dropped {rtc['framesDropped']}; "
        f"speech frames skipped {done['skipped'] - warm['skipped']} of {done['utteranceFrames']}",
        "  text to first spoken frame on screen (say): " +
        (f"{during[first]['display'] - said_at:.0f} ms" if first is not None else
         "not measured: every speech frame was skipped (on a slow CPU raise --budget-ms)") +
        f" (the speaking event after {done['firstFrameMs']} ms)",
    ]
    sys.stdout.write("\n".join(lines) + "\n")
