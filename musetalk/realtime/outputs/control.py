"""The control protocol of a streaming session, independent of its transport (WebSocket, WebRTC data channel).

Session parameters (query): ``lookahead=<seconds>`` (this session's audio look-ahead), ``live=1`` (a live
session), ``bargein=1`` (live: a new utterance while one plays interrupts it): :func:`session_params`.

Client -> server: binary PCM s16le 16 kHz mono chunks of any size, then text ``{"type": "end"}``; or
``{"type": "say", "text": "..."}`` (an utterance synthesised sentence by sentence that ends by itself);
live sessions also ``{"type": "interrupt"}`` and ``{"type": "close"}``. :class:`Control` applies them to
the session; anything the protocol does not allow raises :class:`ProtocolError` (the transport then sends
``{"type": "error", "message"}`` and closes: WebSocket code 1008).

Server -> client (sent by the transport, in order with the frames): ``skip``, ``state``,
``utterance_done`` events, and (transports that carry no audio track) the speech of a ``say`` as
``{"type": "audio", "frame": i, "sample_rate": 16000, "pcm16": "<base64 s16le>"}`` to play from frame
i's time.
"""
from __future__ import annotations

import asyncio
import base64
import json
import logging
import math
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Callable, Iterator, Mapping


from ...audio.load import SAMPLE_RATE
from ...audio.pcm import to_pcm16
from ...errors import MuseTalkError
from ..engine.session import Session, SessionError

log = logging.getLogger(__name__)

MAX_LOOKAHEAD_S = 2.0


class ProtocolError(MuseTalkError):
    """A client sent something the protocol does not allow."""


class Voice:
    """The speech synthesizer of ``say`` messages (a :class:`musetalk.speech.Synthesizer`), made on first use."""

    def __init__(self, synthesizer=None) -> None:
        self._synth = synthesizer
        self._lock = asyncio.Lock()

    async def get(self):
        async with self._lock:
            if self._synth is None:
                from ...speech import Synthesizer

                self._synth = await asyncio.to_thread(Synthesizer)
            return self._synth


@dataclass(frozen=True)
class SessionParams:
    """A session's query parameters: ``lookahead_s`` (None: the server's default), ``live``, ``bargein``."""

    lookahead_s: float | None
    live: bool
    bargein: bool


def session_params(query: Mapping[str, str]) -> SessionParams:
    """``lookahead``, ``live`` and ``bargein`` from a query; :class:`ProtocolError` for a bad value."""
    return SessionParams(_lookahead(query.get("lookahead")), _flag(query, "live"), _flag(query, "bargein"))


def _flag(query: Mapping[str, str], name: str) -> bool:
    """A 0/1 query parameter."""
    value = query.get(name, "0")
    if value not in ("0", "1"):
        raise ProtocolError(f"{name} must be 0 or 1, got {value!r}")
    return value == "1"


def _lookahead(text: str | None) -> float | None:
    """The ``lookahead`` query parameter in seconds (None: the server's default)."""
    if text is None:
        return None
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not 0 <= value <= MAX_LOOKAHEAD_S:
        raise ProtocolError(f"lookahead must be seconds in [0, {MAX_LOOKAHEAD_S:g}], got {text!r}")
    return value


def parse_message(text: str) -> dict:
    """A text message as a JSON object with a ``type``; :class:`ProtocolError` otherwise."""
    try:
        msg = json.loads(text)
    except ValueError:
        raise ProtocolError(f"text messages must be JSON, got {text[:40]!r}") from None
    if not isinstance(msg, dict) or not isinstance(msg.get("type"), str):
        raise ProtocolError(f"unknown message {text[:60]!r}: send PCM as binary and {{\"type\": \"end\"}} last")
    return msg


class Control:
    """One client's control of its session: what its messages do, and what the receiver tracks (barge-in,
    the odd byte of the last PCM chunk, the ``say`` being spoken). ``audio_messages``: a ``say``'s speech
    is also sent to the client as ``audio`` events (for transports without an audio track);
    ``on_interrupt(frame)``: told the frame from which the session is at rest after each interruption (a
    transport holding frames before it drops their speech)."""

    def __init__(self, session: Session, bargein: bool, voice: Voice, audio_messages: bool = True,
                 on_interrupt: Callable[[int], None] | None = None) -> None:
        self.session = session
        self.bargein = bargein
        self.voice = voice
        self.audio_messages = audio_messages
        self.on_interrupt = on_interrupt
        self.carry = b""
        self.saying: asyncio.Task | None = None

    @property
    def busy_saying(self) -> bool:
        return self.saying is not None and not self.saying.done()

    def receive_bytes(self, chunk: bytes) -> None:
        """Apply a binary message (PCM s16le)."""
        with _misuse_is_protocol_error(self.session):
            self.audio(chunk)

    def receive_text(self, text: str) -> None:
        """Apply a text message (a JSON control message)."""
        with _misuse_is_protocol_error(self.session):
            self.control(parse_message(text), text)

    def audio(self, chunk: bytes) -> None:
        """PCM: continues the current utterance or (live) starts the next one, interrupting the one still
        playing when the client asked for barge-in."""
        session = self.session
        if not session.live and session.frame_total is not None:
            raise ProtocolError("audio received after {\"type\": \"end\"}")
        if self.busy_saying:
            raise ProtocolError("audio received while a say message is spoken: wait for it, or interrupt it")
        data = self.carry + chunk
        self.carry = data[len(data) // 2 * 2 :]
        if len(data) < 2:
            return
        if self.bargein and session.speaking and not session.utterance_open:
            self.interrupt()
        session.feed_pcm16(data[: len(data) // 2 * 2])

    def control(self, msg: dict, text: str) -> None:
        """``end`` (after whole samples) and ``say``; live sessions also ``interrupt`` and ``close``."""
        kind, session = msg["type"], self.session
        if kind == "end":
            if self.carry:
                raise ProtocolError("the PCM ended inside a sample: s16le audio needs an even number of bytes")
            if self.busy_saying:
                raise ProtocolError("a say message ends by itself: send no end for it")
            session.end()
        elif kind == "say":
            self.say(msg.get("text"))
        elif kind == "interrupt" and session.live:
            self.stop_saying()
            self.interrupt()
        elif kind == "close" and session.live:
            session.finish()
        else:
            allowed = "end, say, interrupt, close" if session.live else "end, say"
            raise ProtocolError(f"unknown message {text[:60]!r}: the text messages here are {allowed}")

    def say(self, text) -> None:
        """Start speaking ``text`` as one utterance (synthesised sentence by sentence)."""
        from ...speech import check_text

        if not isinstance(text, str):
            raise ProtocolError('a say message needs "text": a string')
        try:
            text = check_text(text)
        except MuseTalkError as exc:
            raise ProtocolError(str(exc)) from None
        session = self.session
        if self.busy_saying or session.utterance_open:
            raise ProtocolError("say while an utterance is open: end it (or interrupt it) first")
        if not session.live and session.frame_total is not None:
            raise ProtocolError("say received after the end of the session's audio")
        if self.bargein and session.speaking:
            self.interrupt()
        self.saying = asyncio.create_task(speak(session, text, self.voice, self.audio_messages))

    def interrupt(self) -> None:
        """Interrupt the session's speech (and tell ``on_interrupt``)."""
        cut = self.session.interrupt()
        if cut is not None and self.on_interrupt is not None:
            self.on_interrupt(cut)

    def stop_saying(self) -> None:
        """Cancel the ``say`` being synthesised (interrupt, or the client left)."""
        if self.saying is not None:
            self.saying.cancel()


@contextmanager
def _misuse_is_protocol_error(session: Session) -> Iterator[None]:
    """A :class:`SessionError` raised while the session is still active is the client's misuse (a failed
    session is reported by the sender): re-raised as :class:`ProtocolError`."""
    try:
        yield
    except SessionError as exc:
        if session.active:
            raise ProtocolError(str(exc)) from None
        raise


async def speak(session: Session, text: str, voice: Voice, audio_messages: bool = True) -> None:
    """Feed the speech of ``text`` sentence by sentence, then end the utterance; with ``audio_messages``,
    an ``audio`` message for the client to play each sentence at its frame's time. A sentence synthesised
    after its start time passed on a live session's clock is preceded by silence up to the clock (its
    frames and audio shift together, never start cut); a long text is fed as its clock plays it (under the
    session's audio cap). A synthesis fault, or the session refusing what the say feeds it, fails the
    session with the reason (nobody awaits this task: the sender reports it)."""
    try:
        synth = await voice.get()
        sentences = synth.sentences(text)
        while (samples := await asyncio.to_thread(next, sentences, None)) is not None:
            session.pad_to_clock(known_ahead=True)
            while (wait := session.audio_wait_s(len(samples))) > 0:
                await asyncio.sleep(wait)
            frame = session.feed(samples, known_ahead=True)  # synthesised: no look-ahead wait before it plays
            if audio_messages:
                pcm = to_pcm16(samples).tobytes()
                session.notify({"type": "audio", "frame": frame, "sample_rate": SAMPLE_RATE,
                                "pcm16": base64.b64encode(pcm).decode()})
        session.end()
    except SessionError as exc:
        if session.active:
            session.fail(f"say failed: {exc}")
    except Exception as exc:  # noqa: BLE001 - reported to the client as this session's failure
        log.exception("speech synthesis failed")
        session.fail(f"speech synthesis failed: {exc}")
