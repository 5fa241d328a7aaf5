"""``dub``: a talking-head video or a photo plus speech -> a lip-synced mp4 with the audio muxed.

Streaming, in-process, bounded memory:

    decode + face analysis + crop  (thread)  ->  encode latents + generate in batches  (caller's thread)
                                             ->  paste-back (3 threads) + video encode in order  (thread)

The generator keeps two batches on the model device: batch k+1 is queued before the faces of batch k
are awaited, so a GPU stays busy while the CPU threads work (``DubResult.device_idle_fraction``).

Output frame count = floor(audio seconds x fps) with the source's true fps; frames without a face are
passed through in place; the mp4 is written beside OUT and renamed only when complete.
"""
from __future__ import annotations

import json
import logging
import os
import queue
import threading
import time
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import torch
from tqdm.auto import tqdm

from ..audio import SAMPLE_RATE, decode_audio, frame_count, frame_windows, to_mono_16k, whisper_hidden_states
from ..audio.silence import silent_frames, still_weights
from ..errors import AudioError, FaceError, MuseTalkError
from ..face import (BlendMask, FaceAnalyzer, FaceRecord, RecordedFaces, crop_face, default_blend_mode,
                    draw_debug_overlay, make_blend_mask, paste_face)
from ..video import VideoWriter, atomic_output, probe
from .acceleration import default_acceleration, resolve_dtype
from .lipsync import MuseTalk, PendingFaces
from .memory import map_large_buffers
from .source import SourceInfo, describe_source, source_frames
from .timing import StageTimer

log = logging.getLogger(__name__)

PASTE_THREADS = 3  # paste-back threads (OpenCV releases the GIL); frames are still encoded in order


@dataclass
class DubOptions:
    """Settings of one dub; defaults are the official ones where the official tool has them.

    dtype "auto" is float16 on CUDA, float32 elsewhere; decoder "vae" (official) or "tiny" (TAESD);
    compile "off", "compile" or "cudagraphs" (batches then padded to ``batch_size``); video_encoder
    "auto" uses h264_nvenc where it works; face_records: an ``.npz`` of :func:`musetalk.face.save_records`
    for the source's frames, used instead of face analysis.
    """

    models: str | None = None
    version: str = "v1.5"
    device: str = "cpu"
    dtype: str = "auto"
    decoder: str = "vae"
    compile: str = "off"
    video_encoder: str = "auto"
    face_records: str | None = None
    batch_size: int = 8
    bbox_shift: int = 0
    extra_margin: int = 10
    fps: float = 25.0
    crf: int = 18
    start: float = 0.0
    end: float | None = None
    smooth: bool = True
    debug_overlay: str | None = None
    silence_still: bool = False
    blend: str = "landmarks"
    colour_match: bool = False
    face_index: int = 0
    progress: bool = True
    stats: str | None = None


@dataclass
class DubResult:
    output: str
    frames: int
    fps: float
    audio_seconds: float
    frames_without_face: int
    seconds: float
    stage_seconds: dict[str, float] = field(default_factory=dict)
    device_busy_seconds: float = 0.0
    device_idle_fraction: float = 0.0
    video_encoder: str = ""

    @property
    def frames_per_second(self) -> float:
        return self.frames / self.seconds if self.seconds else 0.0


@dataclass(frozen=True)
class FrameSpan:
    """Output frames ``first..stop-1`` of a dub, with face analysis started ``warmup`` frames earlier so
    tracking and smoothing reach the state a whole-video dub has there (chunked dubbing)."""

    first: int
    stop: int
    warmup: int = 0

    @property
    def frames(self) -> int:
        return self.stop - self.first


@dataclass
class _Speech:
    """The driving audio: 16 kHz mono for the features, the original samples for the mp4."""

    mono16k: np.ndarray
    native: np.ndarray
    native_rate: int

    @property
    def seconds(self) -> float:
        return len(self.mono16k) / SAMPLE_RATE


def load_speech(path: str | os.PathLike, start: float = 0.0, end: float | None = None) -> _Speech:
    """Decode ``path`` once and cut it to [start, end) seconds."""
    native, rate = decode_audio(path)
    duration = len(native) / rate
    stop = duration if end is None else min(end, duration)
    if start < 0 or start >= stop:
        raise AudioError(f"--start {start} / --end {end} leave no audio of {path} ({duration:.2f} s long)")
    native = native[int(round(start * rate)) : int(round(stop * rate))]
    return _Speech(to_mono_16k(native, rate), native, rate)


def load_model(options: DubOptions) -> MuseTalk:
    """The model as the options say; batches are padded to ``batch_size`` when compiled or on CUDA."""
    device = torch.device(options.device)
    accel = default_acceleration(device, options.batch_size, options.compile)
    return MuseTalk.from_pretrained(options.models, options.version, device, resolve_dtype(options.dtype, device),
                                    options.decoder, accel)


class Prompts:
    """Audio prompts (50, 384) per output frame, windowed lazily from the whisper hidden states so memory
    stays at ~0.23 GB per 10 minutes of audio; optionally cross-faded to digital silence in pauses."""

    def __init__(self, model: MuseTalk, speech: _Speech, fps: float, silence_still: bool) -> None:
        self.fps = fps
        self.num_samples = len(speech.mono16k)
        self.count = frame_count(self.num_samples, fps)
        self.states = whisper_hidden_states(model.whisper, model.feature_extractor, speech.mono16k,
                                            model.device, model.dtype)
        self.still = None
        if silence_still:
            self.still = still_weights(silent_frames(speech.mono16k, fps, self.count))
            quiet = np.zeros(2 * SAMPLE_RATE, np.float32)
            self.silent_prompt = model.features_from_samples(quiet, fps)[frame_count(SAMPLE_RATE, fps)]
            log.info("%d of %d frames lie in pauses and are kept still", int((self.still > 0).sum()), self.count)

    def __getitem__(self, frames: np.ndarray) -> np.ndarray:
        """Prompts float32 (len(frames), 50, 384) for output frame indices ``frames``."""
        first = int(frames.min())
        out = frame_windows(self.states, self.num_samples, self.fps, first, int(frames.max()) + 1)[frames - first]
        if self.still is not None:
            w = self.still[frames][:, None, None]
            out = (1 - w) * out + w * self.silent_prompt
        return out.astype(np.float32)


@dataclass
class _Item:
    index: int
    source_index: int
    frame: np.ndarray
    record: FaceRecord
    crop: np.ndarray | None
    face: np.ndarray | None = None


_DONE = object()


def _put_until(q: queue.Queue, item, abandon: Callable[[], bool]) -> bool:
    """Put ``item`` into the bounded queue ``q`` unless ``abandon()`` turns true first; True when it was put."""
    while not abandon():
        try:
            q.put(item, timeout=0.1)
            return True
        except queue.Full:
            continue
    return False


def _produce(items: Iterator[_Item], out: queue.Queue, stop: threading.Event) -> None:
    """Put every item (then _DONE) into ``out``, giving up when ``stop`` is set."""
    try:
        for item in items:
            if not _put_until(out, item, stop.is_set):
                return
    finally:
        _put_until(out, _DONE, stop.is_set)


class _Dubber:
    """One dub run: wires the stages together and keeps the per-stage timings."""

    def __init__(self, model: MuseTalk, options: DubOptions, source: SourceInfo, speech: _Speech,
                 span: FrameSpan | None = None) -> None:
        self.model = model
        self.options = options
        self.source = source
        self.speech = speech
        self.fps = float(source.fps)
        self.timer = StageTimer()
        self.whole = span is None
        self.span = span or FrameSpan(0, frame_count(len(speech.mono16k), self.fps))
        self.total = self.span.frames
        self.analyzer = None if options.face_records else FaceAnalyzer(
            version=options.version, bbox_shift=options.bbox_shift, extra_margin=options.extra_margin,
            smooth=options.smooth, face_index=options.face_index, fps=self.fps)
        self.analyze = RecordedFaces(options.face_records) if options.face_records else self.analyzer.analyze
        self.parser = self._face_parser()
        self._last_mask: tuple[int, BlendMask] | None = None
        self.faces_found = 0
        self.frames_without_face = 0
        self.video_encoder = ""

    def _face_parser(self):
        """BiSeNet parser for ``blend="parsing"``; None for the landmark mask."""
        if self.options.blend == "landmarks":
            return None
        if self.options.blend != "parsing":
            raise MuseTalkError(f"unknown blend {self.options.blend!r}: choose landmarks or parsing")
        from ..face import load_face_parser
        from ..models.layout import model_paths

        parser = load_face_parser(self.options.models, device=str(self.model.device))
        if parser is None:
            weights = model_paths(self.options.models, self.options.version).face_parsing_weights
            raise MuseTalkError(f"--blend parsing needs the BiSeNet weights {weights}: run `musetalk download` "
                                f"or use the default landmark blend")
        return parser

    def _analyze(self, frame: np.ndarray) -> FaceRecord:
        with self.timer("face analysis"):
            return self.analyze(frame)

    def _analyze_from(self, first: int) -> Callable[[np.ndarray], FaceRecord]:
        """The face analysis for source frames in order, skipping (no face) those before ``first``."""
        seen = 0

        def analyze(frame: np.ndarray) -> FaceRecord:
            nonlocal seen
            seen += 1
            return self._analyze(frame) if seen > first else FaceRecord.missing()

        return analyze

    def _skip_before(self) -> int:
        """Source frames that need no analysis: those before the warm-up, when the span lies in the video's
        first forward pass (the ping-pong part reuses records of every source frame)."""
        start = max(0, self.span.first - self.span.warmup)
        if self.source.is_photo or start == 0:
            return 0
        if probe(self.source.path).num_frames < self.span.stop:
            return 0
        return start

    def items(self) -> Iterator[_Item]:
        gaps = self.analyzer.gap_filler((self.source.height, self.source.width, 3)) if self.analyzer else None
        frames = source_frames(self.source, self.span.stop, self._analyze_from(self._skip_before()), gaps)
        for i in range(self.span.stop):
            with self.timer("decode"):
                source_index, frame, record = next(frames)
            if i < self.span.first:
                continue
            with self.timer("crop"):
                crop = crop_face(frame, record) if record.found else None
            yield _Item(i, source_index, frame, record, crop)

    def launch(self, batch: list[_Item], prompts: Prompts) -> PendingFaces | None:
        """Queue the batch's faces on the model device; None when no frame of it has a face."""
        with_face = [item for item in batch if item.crop is not None]
        if not with_face:
            return None
        crops = np.stack([item.crop for item in with_face])
        with self.timer("encode latents"), self.model.busy():
            latents = self.model.unet_input(crops, crops)
        with self.timer("audio prompts"):
            batch_prompts = prompts[np.array([item.index for item in with_face])]
        with self.timer("generate"):
            return self.model.launch(latents, batch_prompts)

    def collect(self, batch: list[_Item], pending: PendingFaces | None) -> None:
        """Wait for the faces of a launched batch and attach them to its items."""
        if pending is None:
            return
        with self.timer("generate"):
            faces = pending.result()
        self.model.busy.mark_done()
        for item, face in zip([item for item in batch if item.crop is not None], faces):
            item.face = face

    def composite(self, item: _Item) -> np.ndarray:
        """The output frame of ``item``: its generated face pasted back, or the source frame without a face."""
        if item.face is None:
            return item.frame
        with self.timer("paste"):
            mask = self._mask(item)
            return paste_face(item.frame, item.face, item.record, mask, colour_match=self.options.colour_match)

    def _count(self, item: _Item) -> None:
        """Count faces in frame order; the first face frame gives the debug overlay."""
        if item.face is None:
            self.frames_without_face += 1
            return
        if self.options.debug_overlay and self.faces_found == 0:
            _save_image(self.options.debug_overlay, draw_debug_overlay(item.frame, item.record, self._mask(item)))
        self.faces_found += 1

    def _mask(self, item: _Item) -> BlendMask:
        """Blend mask of the item's source frame; the last one is kept (a photo needs just one), no more,
        so memory does not grow with the video."""
        if self._last_mask is None or self._last_mask[0] != item.source_index:
            mask = make_blend_mask(item.frame.shape, item.record, default_blend_mode(self.options.version),
                                   parser=self.parser, frame=item.frame)
            self._last_mask = (item.source_index, mask)
        return self._last_mask[1]

    def write(self, done: queue.Queue, writer: VideoWriter, bar: tqdm, stop: threading.Event) -> None:
        """Paste-back on :data:`PASTE_THREADS` threads, video encode on this one, frames in order."""
        with ThreadPoolExecutor(max_workers=PASTE_THREADS, thread_name_prefix="paste") as pool:
            pasting: deque[Future] = deque()
            while not stop.is_set():
                try:
                    item = done.get(timeout=0.1)
                except queue.Empty:
                    item = None
                if item is _DONE:
                    break
                if item is not None:
                    self._count(item)
                    pasting.append(pool.submit(self.composite, item))
                while pasting and (item is None or pasting[0].done() or len(pasting) > 2 * PASTE_THREADS):
                    self._encode(pasting.popleft().result(), writer, bar)
            while pasting and not stop.is_set():
                self._encode(pasting.popleft().result(), writer, bar)

    def _encode(self, frame: np.ndarray, writer: VideoWriter, bar: tqdm) -> None:
        with self.timer("video encode"):
            writer.write(frame)
        bar.update(1)

    def run(self, path: Path) -> None:
        with self.timer("audio features"):
            prompts = Prompts(self.model, self.speech, self.fps, self.options.silence_still)
        batch_size = max(1, self.options.batch_size)
        ready: queue.Queue = queue.Queue(maxsize=2 * batch_size)
        done: queue.Queue = queue.Queue(maxsize=2 * batch_size)
        stop = threading.Event()
        bar = tqdm(total=self.total, unit="frame", desc="dub", disable=not self.options.progress)
        with self._writer(path) as writer, \
                ThreadPoolExecutor(max_workers=2, thread_name_prefix="dub") as pool:
            self.video_encoder = writer.encoder
            producer = pool.submit(_produce, self.items(), ready, stop)
            consumer = pool.submit(self.write, done, writer, bar, stop)
            try:
                self._generate_loop(ready, done, prompts, batch_size, consumer)
                producer.result()
                consumer.result()
            finally:
                stop.set()
                bar.close()
        if self.whole and self.faces_found == 0:
            raise FaceError(f"no face found in {self.source.path}: use a video or photo where one face is clearly "
                            f"visible (frontal, at least ~80 px tall)")

    def _writer(self, path: Path) -> VideoWriter:
        """The mp4 of a whole dub (with the audio, at the chosen quality), or of a span: video only and
        lossless (its frames are joined and encoded once more with the audio)."""
        if not self.whole:
            return VideoWriter(path, self.source.width, self.source.height, self.source.fps, crf=0)
        return VideoWriter(path, self.source.width, self.source.height, self.source.fps, crf=self.options.crf,
                           audio=self.speech.native, audio_rate=self.speech.native_rate,
                           encoder=self.options.video_encoder)

    def _generate_loop(self, ready: queue.Queue, done: queue.Queue, prompts: Prompts, batch_size: int,
                       consumer: Future) -> None:
        """Batches of ``batch_size`` items; each is launched before the previous one is collected."""
        batch: list[_Item] = []
        in_flight: tuple[list[_Item], PendingFaces | None] | None = None
        finished = False
        while not finished:
            item = ready.get()
            finished = item is _DONE
            if not finished:
                batch.append(item)
            if batch and (finished or len(batch) == batch_size):
                launched = (batch, self.launch(batch, prompts))
                if in_flight is not None:
                    self._hand_over(*in_flight, done, consumer)
                in_flight, batch = launched, []
        if in_flight is not None:
            self._hand_over(*in_flight, done, consumer)
        _put_checked(done, _DONE, consumer)

    def _hand_over(self, batch: list[_Item], pending: PendingFaces | None, done: queue.Queue,
                   consumer: Future) -> None:
        self.collect(batch, pending)
        for item in batch:
            _put_checked(done, item, consumer)


def _put_checked(q: queue.Queue, item, consumer: Future) -> None:
    """Put into a bounded queue unless its consumer has died (then raise the consumer's error)."""
    if not _put_until(q, item, consumer.done):
        consumer.result()
        raise RuntimeError("the video writer stopped early")


def _save_image(path: str, rgb: np.ndarray) -> None:
    import cv2

    if not cv2.imwrite(str(path), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)):
        raise MuseTalkError(f"cannot write the debug overlay {path}: use a .png/.jpg path in a writable folder")
    log.info("debug overlay written to %s", path)


def _open_inputs(source: str | os.PathLike, audio: str | os.PathLike, options: DubOptions
                 ) -> tuple[_Speech, SourceInfo, int]:
    """The speech, the source's facts and the output frame count; inputs checked before any model loads."""
    speech = load_speech(audio, options.start, options.end)
    info = describe_source(source, options.fps)
    total = frame_count(len(speech.mono16k), float(info.fps))
    if total == 0:
        raise AudioError(f"{audio} is shorter than one video frame at {float(info.fps):.3f} fps")
    return speech, info, total


def dub_length(source: str | os.PathLike, audio: str | os.PathLike, options: DubOptions | None = None
               ) -> tuple[int, float]:
    """Frame count (floor(audio seconds x fps)) and frame rate of ``dub(source, audio, ...)``."""
    _, info, total = _open_inputs(source, audio, options or DubOptions())
    return total, float(info.fps)


def dub(source: str | os.PathLike, audio: str | os.PathLike, output: str | os.PathLike,
        options: DubOptions | None = None, model: MuseTalk | None = None) -> DubResult:
    """Lip-sync ``source`` (video or photo) to ``audio`` and write ``output`` (mp4, H.264 + AAC).

    Inputs are checked before the models load. ``model`` reuses a loaded :class:`MuseTalk` (batch jobs).
    With ``options.stats`` (a path), a JSON file there records the settings and the measured speed.
    """
    options = options or DubOptions()
    started = time.perf_counter()
    map_large_buffers()
    speech, info, total = _open_inputs(source, audio, options)
    model = model or load_model(options)
    model.busy.reset()
    dubber = _Dubber(model, options, info, speech)
    log.info("dubbing %s (%dx%d, %.3f fps) with %s: %d frames", source, info.width, info.height,
             float(info.fps), audio, total)
    with atomic_output(output) as tmp:
        dubber.run(tmp)
        elapsed = time.perf_counter() - started
        result = DubResult(str(output), total, float(info.fps), speech.seconds, dubber.frames_without_face,
                           elapsed, dubber.timer.as_dict(), round(model.busy.busy_seconds(), 4),
                           round(model.busy.idle_fraction(), 4), dubber.video_encoder)
        if options.stats:
            write_stats(Path(options.stats), result, options)
    log.info("wrote %s: %d frames in %.1f s (%.2f frames/s)", output, total, elapsed, result.frames_per_second)
    return result


def dub_span(source: str | os.PathLike, audio: str | os.PathLike, output: str | os.PathLike, span: FrameSpan,
             options: DubOptions | None = None, model: MuseTalk | None = None) -> DubResult:
    """Output frames ``span.first..span.stop-1`` of ``dub(source, audio, ...)``, exactly as the whole dub
    renders them (same audio prompts, face analysis warmed up ``span.warmup`` frames ahead), into a
    lossless video-only mp4 ``output`` (written atomically); a span without any face is no error here."""
    options = options or DubOptions()
    started = time.perf_counter()
    map_large_buffers()
    speech, info, total = _open_inputs(source, audio, options)
    if not 0 <= span.first < span.stop <= total:
        raise MuseTalkError(f"frames {span.first}..{span.stop - 1} lie outside the {total} frames of the dub of "
                            f"{source} with {audio}")
    model = model or load_model(options)
    dubber = _Dubber(model, options, info, speech, span)
    with atomic_output(output) as tmp:
        dubber.run(tmp)
    return DubResult(str(output), span.frames, float(info.fps), speech.seconds, dubber.frames_without_face,
                     time.perf_counter() - started, dubber.timer.as_dict())


def write_stats(path: Path, result: DubResult, options: DubOptions) -> None:
    """The settings and the measured speed of a dub as JSON at ``path``."""
    record = {"result": {**asdict(result), "frames_per_second": result.frames_per_second}, "options": asdict(options)}
    with atomic_output(path) as tmp:
        tmp.write_text(json.dumps(record, indent=2))

