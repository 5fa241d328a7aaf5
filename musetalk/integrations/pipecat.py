"""MuseTalk as the face of a Pipecat voice agent: :class:`MuseTalkVideoService` (``pip install "musetalk[pipecat]"``),
and :class:`MuseTalkTTSService`, the project's offline voice (:mod:`musetalk.speech`) as a Pipecat TTS service.

    face = MuseTalkVideoService(avatar="anna")                                   # in this process
    face = MuseTalkVideoService(server="http://gpu-box:8000", avatar="anna", token="...")   # on a server
    pipeline = Pipeline([transport.input(), stt, llm, tts, face, transport.output()])

In the shape of Pipecat's avatar video services: it takes the ``TTSAudioRawFrame`` s (any rate, any chunk
size, mono or interleaved channels) between ``TTSStartedFrame`` and ``TTSStoppedFrame`` (all three are
consumed), drives one live session of a prepared avatar, and from ``StartFrame`` to ``EndFrame`` pushes
one ``OutputImageRawFrame`` (RGB, ``sync_with_audio``) per frame at the avatar's fps, each followed by its
slot of audio as a 16 kHz ``SpeechOutputAudioRawFrame`` (silence at rest): the speech comes out delayed
exactly as the pictures that speak it. ``InterruptionFrame`` (and ``UserStartedSpeakingFrame`` with
``interrupt_on_user_speech``) drops the rest of the utterance, audio included. Every other frame passes
through unchanged, in order. ``EndFrame`` lets the current utterance finish, then releases the session;
``CancelFrame`` releases it at once. Give the output transport ``video_out_enabled=True`` with the avatar's
size and fps and leave ``video_out_is_live`` False: the pictures reach it with the audio
(``sync_with_audio``) and it shows each when the sound before it has played.

In-process, every service of the process with the same options shares one engine (one model in memory,
frames of all bots batched together). Remote, the session runs on a ``musetalk serve`` over its WebSocket
protocol (:mod:`musetalk.realtime.remote`). Faults (an unknown avatar, a refusal, a lost server, audio
without a TTS start, a sample rate out of range) are reported as one-line non-fatal ``ErrorFrame`` s; the
pipeline keeps running and the service opens a new session at the next utterance.

Latency: first TTS audio of an utterance -> its first spoken picture pushed, as the service's TTFB metric
(with ``PipelineParams(enable_metrics=True)``), in the log, and in :attr:`MuseTalkVideoService.latencies`.
"""
from __future__ import annotations

import asyncio
import atexit
import dataclasses
import logging
import threading
import time

import numpy as np
import soxr
from pipecat.frames.frames import (
    CancelFrame,
    EndFrame,
    ErrorFrame,
    Frame,
    InterruptionFrame,
    OutputImageRawFrame,
    SpeechOutputAudioRawFrame,
    StartFrame,
    TTSAudioRawFrame,
    TTSStartedFrame,
    TTSStoppedFrame,
    UserStartedSpeakingFrame,
)
from pipecat.processors.frame_processor import FrameDirection
from pipecat.services.ai_service import AIService
from pipecat.services.settings import ServiceSettings, TTSSettings
from pipecat.services.tts_service import TTSService

from ..audio.pcm import from_pcm16, to_pcm16
from ..errors import MuseTalkError
from ..realtime.backend import Backend, BackendOptions, load_backend
from ..realtime.engine.outbox import Event
from ..realtime.media import MediaFrame, paced_frames
from ..realtime.remote import RemoteSession

log = logging.getLogger(__name__)

SAMPLE_RATE = 16000
RATES = (8000, 192000)  # TTS sample rates taken (Hz)
END_WAIT_S = 30.0  # most seconds an EndFrame waits for the utterance still playing
METADATA_KEY = "musetalk"  # frame.metadata["musetalk"]: {"index", "speech", "repeated"} of each frame pushed


# -- one engine per process ------------------------------------------------------------------------
_BACKENDS: dict[BackendOptions, Backend] = {}
_BACKENDS_LOCK = threading.Lock()


def shared_backend(options: BackendOptions) -> Backend:
    """The process's back end for ``options``, loaded on first use (blocking: seconds); later calls with
    equal options return the same one (so every bot shares its engine)."""
    with _BACKENDS_LOCK:
        if options not in _BACKENDS:
            _BACKENDS[options] = load_backend(options)
        return _BACKENDS[options]


@atexit.register
def _close_backends() -> None:
    with _BACKENDS_LOCK:
        for backend in _BACKENDS.values():
            backend.engine.close()
        _BACKENDS.clear()


class LocalFace:
    """A live session of the shared engine, read at its playout times (:func:`musetalk.realtime.media.paced_frames`)."""

    def __init__(self, backend: Backend, avatar, session) -> None:
        self.backend, self.avatar, self.session = backend, avatar, session
        self.fps = avatar.fps
        self._silenced_below = 0  # frames under this index still to play were cut by an interruption

    @classmethod
    async def open(cls, options: BackendOptions, name: str) -> "LocalFace":
        backend = await asyncio.to_thread(shared_backend, options)
        avatar = await asyncio.to_thread(backend.store.load, name)
        session = backend.engine.open(avatar, loop=asyncio.get_running_loop(), live=True, images=True)
        return cls(backend, avatar, session)

    async def feed(self, samples: np.ndarray) -> None:
        """Feed the session, waiting while the audio would run more than the engine's cap ahead of its clock
        (a TTS is faster than real time; the wait holds the frames behind it, never an interruption)."""
        if (wait := self.session.audio_wait_s(len(samples))) > 0:
            await asyncio.sleep(wait)
        self.session.feed(samples)

    async def end(self) -> None:
        self.session.end()

    async def interrupt(self) -> None:
        """Drop the rest of the speech; the frames the session already released (waiting for their playout
        time) are shown at rest and silent."""
        self.session.interrupt()
        self._silenced_below = self.session.sent + self.session.skipped

    async def close(self) -> None:
        self.session.finish()

    def release(self) -> None:
        self.session.close()

    async def items(self):
        async for item in paced_frames(self.session, self.backend.engine.latency_budget_s):
            if isinstance(item, MediaFrame) and item.index < self._silenced_below:
                item = self._at_rest(item)
            yield item

    def _at_rest(self, frame: MediaFrame) -> MediaFrame:
        image = np.asarray(self.avatar.frames[self.avatar.source_index(frame.index)])
        return dataclasses.replace(frame, image=image, audio=np.zeros_like(frame.audio), speech=False)


class _Resampler:
    """One utterance's TTS audio (s16le, interleaved channels) to float32 mono 16 kHz, streaming."""

    def __init__(self, rate: int, channels: int) -> None:
        if not RATES[0] <= rate <= RATES[1] or channels < 1:
            raise MuseTalkError(f"TTS audio at {rate} Hz with {channels} channels cannot be taken: give "
                                f"{RATES[0]}..{RATES[1]} Hz, 1 or more channels")
        self.rate, self.channels = rate, channels
        self._stream = None if rate == SAMPLE_RATE else soxr.ResampleStream(rate, SAMPLE_RATE, 1, dtype="float32",
                                                                            quality="HQ")

    def push(self, pcm: bytes) -> np.ndarray:
        samples = from_pcm16(pcm[: len(pcm) // 2 * 2])
        samples = samples[: samples.size // self.channels * self.channels].reshape(-1, self.channels).mean(axis=1)
        return samples if self._stream is None else self._stream.resample_chunk(samples)

    def flush(self) -> np.ndarray:
        if self._stream is None:
            return np.zeros(0, np.float32)
        return self._stream.resample_chunk(np.zeros(0, np.float32), last=True)


@dataclasses.dataclass
class _Utterance:
    """What the service tracks of the TTS response in progress."""

    resampler: _Resampler | None = None
    fed: int = 0  # 16 kHz samples sent to the face
    dropped: bool = False  # interrupted, refused or without a face: its audio is ignored


def _utterance_played(item) -> bool:
    """Whether ``item`` says an utterance's frames are all out (an interrupted one was counted out when the
    interruption came)."""
    payload = item.payload if isinstance(item, Event) else {}
    return payload.get("type") == "utterance_done" and not payload.get("interrupted")


class MuseTalkVideoService(AIService):
    """See the module docstring.

    avatar: the prepared avatar's name. server: a ``musetalk serve`` URL (http(s)://host:port; None: run the
    model in this process); token: that server's access token. In-process, as ``musetalk serve``'s flags:
    models, avatars (folders; default ``$MUSETALK_MODELS``, ``$MUSETALK_AVATARS``), device (default cuda when
    present), decoder ("tiny" or "vae"), version, dtype ("auto": float16 on CUDA), batch_size, lookahead
    (seconds), latency_budget_ms
    (a frame not out this long after its time is skipped: its picture repeats, its audio plays),
    max_sessions (speaking sessions of the engine; default: calibrated). interrupt_on_user_speech: a
    ``UserStartedSpeakingFrame`` interrupts like an ``InterruptionFrame`` (barge-in).
    """

    def __init__(self, *, avatar: str, server: str | None = None, token: str | None = None,
                 models: str | None = None, avatars: str | None = None, device: str | None = None,
                 decoder: str = "tiny", version: str = "v1.5", dtype: str = "auto", batch_size: int = 16,
                 lookahead: float | None = None, latency_budget_ms: float = 200.0, max_sessions: int | None = None,
                 interrupt_on_user_speech: bool = True, **kwargs) -> None:
        super().__init__(settings=ServiceSettings(model=None), **kwargs)
        if latency_budget_ms <= 0:
            raise MuseTalkError(f"latency_budget_ms must be positive, got {latency_budget_ms:g}")
        self.avatar = avatar
        self.server = server
        self._token = token
        self.options = BackendOptions(models=models, avatars=avatars, version=version, device=device, dtype=dtype,
                                      decoder=decoder, batch_size=batch_size, lookahead_s=lookahead,
                                      latency_budget_s=latency_budget_ms / 1000, max_sessions=max_sessions,
                                      jpeg_quality=None)
        self.interrupt_on_user_speech = interrupt_on_user_speech
        self.latencies: list[float] = []  # seconds, first TTS audio -> first spoken picture, per utterance
        self._face: LocalFace | RemoteSession | None = None
        self._reader: asyncio.Task | None = None
        self._utterance: _Utterance | None = None
        self._first_audio_at: float | None = None
        self._unstarted_reported = False
        self._playing = 0  # utterances fed whose frames are not all out
        self._idle = asyncio.Event()
        self._idle.set()
        self._started = asyncio.Event()  # the StartFrame went downstream: frames may follow

    def can_generate_metrics(self) -> bool:
        return True

    @property
    def engine(self):
        """In-process: the engine this service's session runs on (None before the start, or remote)."""
        return self._face.backend.engine if isinstance(self._face, LocalFace) else None

    # -- lifecycle ---------------------------------------------------------------------------------
    async def start(self, frame: StartFrame) -> None:
        await super().start(frame)
        await self._connect()

    async def stop(self, frame: EndFrame) -> None:
        await super().stop(frame)
        if self._utterance is not None:
            await self._end_utterance()
        try:
            await asyncio.wait_for(self._idle.wait(), END_WAIT_S)
        except TimeoutError:
            log.warning("EndFrame: the utterance still playing after %g s is cut", END_WAIT_S)
        await self._disconnect()

    async def cancel(self, frame: CancelFrame) -> None:
        await super().cancel(frame)
        if self._reader is not None:
            await self.cancel_task(self._reader)
        await self._disconnect()

    async def _connect(self) -> bool:
        """Open the live session (in-process or remote); a refusal is reported and leaves no face."""
        try:
            if self.server is None:
                self._face = await LocalFace.open(self.options, self.avatar)
            else:
                self._face = await RemoteSession.connect(self.server, self.avatar, self._token)
        except MuseTalkError as exc:
            await self._report(f"cannot open the avatar {self.avatar!r}: {exc}")
            return False
        self._reader = self.create_task(self._read(self._face), name=f"{self.name}::frames")
        return True

    async def _disconnect(self) -> None:
        """End the session gracefully: its last frames go out, then it is released."""
        face, reader = self._face, self._reader
        self._face = self._reader = None
        if face is not None:
            try:
                await face.close()
            except MuseTalkError as exc:
                log.info("closing the session: %s", exc)
        if reader is not None and not reader.done():
            await reader
        if isinstance(face, LocalFace):
            face.release()

    # -- frames in ---------------------------------------------------------------------------------
    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        await super().process_frame(frame, direction)
        downstream = direction == FrameDirection.DOWNSTREAM
        if downstream and isinstance(frame, TTSStartedFrame):
            await self._start_utterance()
        elif downstream and isinstance(frame, TTSAudioRawFrame):
            await self._speech(frame)
        elif downstream and isinstance(frame, TTSStoppedFrame):
            await self._end_utterance()
        elif isinstance(frame, InterruptionFrame) or (
                isinstance(frame, UserStartedSpeakingFrame) and self.interrupt_on_user_speech):
            await self._interrupt()
            await self.push_frame(frame, direction)
        else:
            await self.push_frame(frame, direction)
            if isinstance(frame, StartFrame):
                self._started.set()

    async def _start_utterance(self) -> None:
        if self._utterance is not None:
            await self._end_utterance()
        self._unstarted_reported = False
        if self._face is None:
            await self._connect()
        self._utterance = _Utterance(dropped=self._face is None)

    async def _speech(self, frame: TTSAudioRawFrame) -> None:
        utterance = self._utterance
        if utterance is None:
            if not self._unstarted_reported:
                self._unstarted_reported = True
                await self._report("TTS audio without a TTSStartedFrame before it is not spoken: the TTS "
                                   "service must send TTSStartedFrame first")
            return
        if utterance.dropped or self._face is None:
            return
        try:
            if utterance.resampler is None or utterance.resampler.rate != frame.sample_rate:
                if utterance.resampler is not None:
                    await self._feed(utterance, utterance.resampler.flush())
                utterance.resampler = _Resampler(frame.sample_rate, frame.num_channels)
            await self._feed(utterance, utterance.resampler.push(frame.audio))
        except MuseTalkError as exc:
            utterance.dropped = True
            await self._report(str(exc))

    async def _feed(self, utterance: _Utterance, samples: np.ndarray) -> None:
        if not samples.size:
            return
        if utterance.fed == 0:
            self._first_audio_at = time.perf_counter()
            self._playing += 1
            self._idle.clear()
            await self.start_ttfb_metrics()
        utterance.fed += samples.size
        await self._face.feed(samples)

    async def _end_utterance(self) -> None:
        utterance, self._utterance = self._utterance, None
        if utterance is None or utterance.dropped or self._face is None or utterance.resampler is None:
            return
        try:
            await self._feed(utterance, utterance.resampler.flush())
            if utterance.fed:
                await self._face.end()
        except MuseTalkError as exc:
            await self._report(str(exc))

    async def _interrupt(self) -> None:
        if self._utterance is not None:
            self._utterance.dropped = True
        if self._face is not None and self._playing:
            try:
                await self._face.interrupt()
            except MuseTalkError as exc:
                await self._report(str(exc))
        await self._nothing_playing()

    async def _nothing_playing(self) -> None:
        """No utterance plays any more (interrupted, or the session is gone)."""
        if self._first_audio_at is not None:
            self._first_audio_at = None
            await self.cancel_ttfb_metrics()
        self._playing = 0
        self._idle.set()

    # -- frames out --------------------------------------------------------------------------------
    async def _read(self, face) -> None:
        """Push the session's frames with their audio until it ends; a failure is reported once and the
        next utterance opens a new session (meanwhile the transport shows the last picture)."""
        await self._started.wait()
        try:
            async for item in face.items():
                if isinstance(item, MediaFrame):
                    await self._push_media(item)
                elif _utterance_played(item):
                    self._playing = max(0, self._playing - 1)
                    if not self._playing:
                        self._idle.set()
        except MuseTalkError as exc:
            if self._face is face:
                self._face = None
                if self._utterance is not None:
                    self._utterance.dropped = True
                await self._nothing_playing()
                await self._report(f"the avatar session ended: {exc}; a new one opens at the next utterance")
                await face.close()
                if isinstance(face, LocalFace):
                    face.release()

    async def _push_media(self, frame: MediaFrame) -> None:
        if frame.speech and self._first_audio_at is not None:
            latency, self._first_audio_at = time.perf_counter() - self._first_audio_at, None
            self.latencies.append(latency)
            log.info("%s: first TTS audio -> first spoken frame %.0f ms", self.name, latency * 1000)
            await self.stop_ttfb_metrics()
        height, width = frame.image.shape[:2]
        image = OutputImageRawFrame(image=frame.image.tobytes(), size=(width, height), format="RGB")
        image.sync_with_audio = True
        image.metadata[METADATA_KEY] = {"index": frame.index, "speech": frame.speech, "repeated": frame.repeated}
        audio = SpeechOutputAudioRawFrame(audio=to_pcm16(frame.audio).tobytes(), sample_rate=SAMPLE_RATE, num_channels=1)
        audio.metadata[METADATA_KEY] = {"index": frame.index, "speech": frame.speech}
        await self.push_frame(image)
        await self.push_frame(audio)

    async def _report(self, message: str) -> None:
        """One non-fatal ErrorFrame (upstream, as Pipecat reports errors) with a one-line message."""
        await self.push_error(" ".join(message.split()))


class MuseTalkTTSService(TTSService):
    """Text to speech with :class:`musetalk.speech.Synthesizer` (Piper, offline; the bundled voice unless
    ``voice`` names a Piper .onnx), sentence by sentence at 16 kHz (``sample_rate``: another output rate)."""

    def __init__(self, *, voice: str | None = None, synthesizer=None, sample_rate: int = SAMPLE_RATE,
                 **kwargs) -> None:
        from ..speech import Synthesizer

        super().__init__(push_start_frame=True, push_stop_frames=True, sample_rate=sample_rate,
                         settings=TTSSettings(model=None, voice=voice, language=None), **kwargs)
        self._synth = synthesizer or Synthesizer(voice)

    def can_generate_metrics(self) -> bool:
        return True

    async def run_tts(self, text: str, context_id: str):
        sentences = self._synth.sentences(text)

        async def pcm():
            while (samples := await asyncio.to_thread(next, sentences, None)) is not None:
                yield to_pcm16(samples).tobytes()

        try:
            async for frame in self._stream_audio_frames_from_iterator(pcm(), in_sample_rate=SAMPLE_RATE,
                                                                        context_id=context_id):
                await self.stop_ttfb_metrics()
                yield frame
        except MuseTalkError as exc:
            yield ErrorFrame(error=" ".join(str(exc).split()))
