"""``musetalk dub``: lip-sync a video or photo to speech, one pair or a CSV of jobs."""
from __future__ import annotations

import argparse
import csv
import logging
import sys
from pathlib import Path

from ..errors import MuseTalkError
from ..models.layout import ENV_VAR, VERSIONS
from ..speech import MAX_TEXT_CHARS
from .device import add_device_argument, chosen_device
from .say import VOICE_HELP

log = logging.getLogger(__name__)


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Show defaults only where there is one worth showing."""

    def _get_help_string(self, action: argparse.Action) -> str:
        if action.default in (None, False, argparse.SUPPRESS):
            return action.help or ""
        return super()._get_help_string(action)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "dub", help="lip-sync a video or photo to speech",
        description="Re-render the lower face of SOURCE (a video or a single photo) so the lips follow AUDIO, "
                    "and write an mp4 with the audio muxed. Output frames = floor(audio seconds x fps); a "
                    "video shorter than the audio plays forward and backward.",
        formatter_class=_HelpFormatter,
    )
    p.add_argument("source", nargs="?", help="talking-head video (mp4, mov, mkv, ...) or photo (png, jpg, ...)")
    p.add_argument("audio", nargs="?", help="speech: wav, flac, mp3, m4a, or a video with an audio track "
                                             "(or --text)")
    p.add_argument("--text", help=f"speak this text instead of AUDIO (offline speech synthesis, at most "
                                  f"{MAX_TEXT_CHARS} characters)")
    p.add_argument("--voice", help=f"with --text: {VOICE_HELP}")
    p.add_argument("-o", "--output", help="output mp4 (written beside as a temporary file, renamed when complete)")
    p.add_argument("--jobs", metavar="CSV", help="run many dubs with one model load: a CSV with columns "
                                                  "source,audio,output; existing outputs are skipped")
    p.add_argument("--ray", nargs="?", const="", metavar="ADDRESS",
                   help="run the jobs on Ray: a local instance, or the cluster at ADDRESS (host:6379, "
                        "ray://host:10001, auto); sources, audio and outputs may be fsspec URLs")
    p.add_argument("--workers", type=int, help="with --ray: model workers (default: one per GPU, or one per "
                                               "4 CPUs without GPUs)")
    p.add_argument("--chunk-seconds", type=float,
                   help="with --ray: cut dubs longer than this into chunks dubbed in parallel, then joined")
    p.add_argument("--summary", metavar="CSV", help="with --ray: per-job summary (default: JOBS.summary.csv)")
    p.add_argument("--models", help=f"models folder in the official layout (default: ${ENV_VAR} or ./models)")
    p.add_argument("--version", choices=VERSIONS, default="v1.5", help="MuseTalk checkpoint version")
    add_device_argument(p, "with --ray: the cluster's GPUs when it has them")
    p.add_argument("--dtype", choices=("auto", "float32", "float16", "bfloat16"), default="auto",
                   help="model precision: auto is float16 on CUDA, float32 on CPU (half precision needs a GPU)")
    p.add_argument("--decoder", choices=("vae", "tiny"), default="vae",
                   help="latent decoder: the official sd-vae, or TAESD (taesd/ in the models folder): "
                        "several times faster, softer fine detail")
    p.add_argument("--compile", choices=("off", "compile", "cudagraphs"), default="off",
                   help="torch.compile the model step (cudagraphs: also capture it as a CUDA graph); "
                        "batches are padded to --batch-size")
    p.add_argument("--batch-size", type=int, default=8, help="frames generated per UNet/VAE call")
    p.add_argument("--bbox-shift", type=int, default=0,
                   help="v1.0 only: move the mask boundary down (+) or up (-) in pixels; v1.5 ignores it")
    p.add_argument("--extra-margin", type=int, default=10, help="v1.5: pixels added below the chin to the crop")
    p.add_argument("--fps", type=float, default=25.0, help="frame rate of the output for a photo source "
                                                            "(a video keeps its own true rate)")
    p.add_argument("--crf", type=int, default=18, help="H.264 quality: lower is better and larger (0-51)")
    p.add_argument("--start", type=float, default=0.0, help="start of the audio to use, seconds")
    p.add_argument("--end", type=float, default=None, help="end of the audio to use, seconds (default: its end)")
    p.add_argument("--no-smooth", action="store_true", help="no temporal smoothing of the face boxes")
    p.add_argument("--silence-still", action="store_true",
                   help="keep the mouth still and closed in pauses of the speech (no lip chatter)")
    p.add_argument("--blend", choices=("landmarks", "parsing"), default="landmarks",
                   help="blend mask: from landmarks (no extra weights) or BiSeNet face parsing "
                        "(needs face-parse-bisent/79999_iter.pth in the models folder)")
    p.add_argument("--colour-match", action="store_true", help="match the generated face's colours to the frame")
    p.add_argument("--face-index", type=int, default=0,
                   help="which face to follow when several are visible: 0 = largest at the start, 1 = next, ...")
    p.add_argument("--debug-overlay", metavar="PNG",
                   help="save landmarks, crop box and blend mask drawn on the first face frame to this image")
    p.add_argument("--stats", metavar="FILE", help="also write the settings and the timings of the dub as JSON to "
                                                    "FILE (single dub)")
    p.add_argument("-q", "--quiet", action="store_true", default=argparse.SUPPRESS, help="no progress bar")
    p.add_argument("-v", "--verbose", action="store_true", default=argparse.SUPPRESS,
                   help="debug logging and full tracebacks")
    p.set_defaults(func=run)


def options_from_args(args: argparse.Namespace):
    from ..pipeline.dub import DubOptions

    # on Ray the workers' device follows the cluster (its GPUs when it has them), not this machine's
    device = (args.device or "cpu") if args.ray is not None else chosen_device(args.device)
    return DubOptions(
        models=args.models, version=args.version, device=device, dtype=args.dtype, decoder=args.decoder,
        compile=args.compile, batch_size=args.batch_size,
        bbox_shift=args.bbox_shift, extra_margin=args.extra_margin, fps=args.fps, crf=args.crf, start=args.start,
        end=args.end, smooth=not args.no_smooth, debug_overlay=args.debug_overlay, silence_still=args.silence_still,
        blend=args.blend, colour_match=args.colour_match, face_index=args.face_index, progress=not args.quiet,
        stats=args.stats,
    )


def run(args: argparse.Namespace) -> int:
    from ..pipeline.dub import dub

    options = options_from_args(args)
    if args.ray is not None:
        return run_on_ray(args, options)
    if args.jobs:
        if args.source or args.audio or args.output:
            raise MuseTalkError("give either --jobs CSV or SOURCE AUDIO -o OUTPUT, not both")
        if args.stats:
            raise MuseTalkError("--stats writes the timings of a single dub; it does not combine with --jobs")
        return run_jobs(Path(args.jobs), options)
    if args.text is not None:
        return run_text(args, options)
    if not (args.source and args.audio and args.output):
        raise MuseTalkError("usage: musetalk dub SOURCE AUDIO -o OUTPUT.mp4 (or --jobs jobs.csv); see --help")
    if args.voice:
        raise MuseTalkError("--voice goes with --text: give --text \"...\" instead of AUDIO, or drop --voice")
    result = dub(args.source, args.audio, args.output, options)
    print_result(result)
    return 0


def print_result(result) -> None:
    print(f"{result.output}: {result.frames} frames at {result.fps:g} fps, {result.audio_seconds:.2f} s of audio, "
          f"{result.frames_per_second:.2f} frames/s")


def run_text(args: argparse.Namespace, options) -> int:
    """``dub SOURCE --text "..." -o OUT``: the text synthesised to a 16 kHz WAV (in a temporary folder) drives
    the dub in place of AUDIO."""
    import tempfile

    import soundfile

    from ..pipeline.dub import dub
    from ..speech import SAMPLE_RATE, Synthesizer, check_text

    if args.audio:
        raise MuseTalkError(f"give exactly one of AUDIO ({args.audio}) or --text, not both: musetalk dub SOURCE "
                            f"--text \"...\" -o OUTPUT.mp4")
    if not (args.source and args.output):
        raise MuseTalkError("usage: musetalk dub SOURCE --text \"...\" -o OUTPUT.mp4; see --help")
    text = check_text(args.text)
    samples = Synthesizer(args.voice).synthesize(text)
    with tempfile.TemporaryDirectory(prefix="musetalk-speech-") as folder:
        wav = Path(folder) / "speech.wav"
        soundfile.write(wav, samples, SAMPLE_RATE, subtype="FLOAT")
        result = dub(args.source, wav, args.output, options)
    print_result(result)
    return 0


def read_jobs(path: Path) -> list[dict[str, str]]:
    if not path.is_file():
        raise MuseTalkError(f"jobs file not found: {path}")
    with path.open(newline="") as f:
        reader = csv.DictReader(f)
        missing = {"source", "audio", "output"} - set(reader.fieldnames or ())
        if missing:
            raise MuseTalkError(f"{path} needs the columns source,audio,output (missing: {', '.join(sorted(missing))})")
        return [row for row in reader if any((v or "").strip() for v in row.values())]


def run_on_ray(args: argparse.Namespace, options) -> int:
    """``--ray``: the --jobs CSV (or the one SOURCE AUDIO -o OUTPUT) on Ray; prints the summary."""
    from ..distributed.batch import ClusterOptions, run_jobs_on_ray

    if args.jobs:
        path = Path(args.jobs)
        rows, base, summary = read_jobs(path), path.parent, Path(args.summary or f"{path}.summary.csv")
    elif args.source and args.audio and args.output:
        rows, base = [{"source": args.source, "audio": args.audio, "output": args.output}], Path.cwd()
        summary = Path(args.summary or f"{args.output}.summary.csv")
    else:
        raise MuseTalkError("usage: musetalk dub --ray [ADDRESS] --jobs jobs.csv (or SOURCE AUDIO -o OUTPUT)")
    cluster = ClusterOptions(address=args.ray or None, workers=args.workers, chunk_seconds=args.chunk_seconds)
    results = run_jobs_on_ray(rows, base, options, cluster, summary)
    failed = [r.row for r in results if r.status == "failed"]
    counts = {status: sum(r.status == status for r in results) for status in ("done", "skipped", "failed")}
    print(f"{len(results)} jobs: {counts['done']} done, {counts['skipped']} skipped (output exists), "
          f"{counts['failed']} failed" + (f" (rows {', '.join(map(str, failed))})" if failed else "")
          + f"; summary in {summary}")
    return 1 if failed else 0


def run_jobs(path: Path, options) -> int:
    """Dub every row with one model load; skip existing outputs, make missing output folders, refuse an
    output that cannot be written before its dub, go on past failures, print a summary."""
    from ..pipeline.dub import dub, load_model
    from ..video.io import make_writable_output

    rows = read_jobs(path)
    base = path.parent
    model = None
    done, skipped, failed = 0, 0, []
    for n, row in enumerate(rows, start=1):
        source, audio, output = (base / row[k].strip() for k in ("source", "audio", "output"))
        if output.exists():
            log.info("row %d: %s exists, skipped", n, output)
            skipped += 1
            continue
        try:
            model = model or load_model(options)
            make_writable_output(output)  # a missing folder is made; an output that cannot be written fails now
            dub(source, audio, output, options, model=model)
            done += 1
        except MuseTalkError as exc:
            if model is None:
                raise
            print(f"musetalk: row {n} failed: {exc}", file=sys.stderr)
            failed.append(n)
    summary = f"{len(rows)} jobs: {done} done, {skipped} skipped (output exists), {len(failed)} failed"
    print(summary + (f" (rows {', '.join(map(str, failed))})" if failed else ""))
    return 1 if failed else 0
