"""``musetalk say``: a prepared avatar speaking a text, written to an mp4 (offline speech synthesis)."""
from __future__ import annotations

import argparse
import logging

from ..models.layout import ENV_VAR as MODELS_ENV
from ..models.layout import VERSIONS
from ..realtime.backend import open_store
from .avatar import AVATARS_HELP, DECODER_CHOICES
from .device import add_device_argument, chosen_device

log = logging.getLogger(__name__)

VOICE_HELP = "Piper voice .onnx (its .onnx.json beside it; default: the bundled en_US-joe-medium voice)"


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("say", help="make a prepared avatar speak a text (offline speech synthesis)",
                       description="Synthesise TEXT with a Piper voice and render the prepared avatar NAME "
                                   "speaking it: an mp4 with floor(speech seconds x fps) frames and the speech.")
    p.add_argument("text", help="what to say (at most 1000 characters)")
    p.add_argument("--avatar", required=True, help="name of a prepared avatar (see `musetalk avatar list`)")
    p.add_argument("-o", "--output", required=True, help="output mp4 (written beside, renamed when complete)")
    p.add_argument("--voice", help=VOICE_HELP)
    p.add_argument("--avatars", help=AVATARS_HELP)
    p.add_argument("--models", help=f"models folder (default: ${MODELS_ENV} or ./models)")
    p.add_argument("--version", choices=VERSIONS, default="v1.5", help="model version (default: v1.5)")
    add_device_argument(p)
    p.add_argument("--decoder", choices=DECODER_CHOICES, default="vae",
                   help="latent decoder: the official sd-vae (default) or TAESD (taesd/ in the models folder); "
                        "the one the avatar was prepared with")
    p.add_argument("--batch-size", type=int, default=8, help="frames per model call (default: 8)")
    p.add_argument("--crf", type=int, default=18, help="H.264 quality: lower is better and larger (default: 18)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..pipeline.lipsync import MuseTalk
    from ..realtime.outputs.recording import render_speech
    from ..speech import Synthesizer, check_text

    text = check_text(args.text)
    synth = Synthesizer(args.voice)
    samples = synth.synthesize(text)
    device = chosen_device(args.device)
    mt = MuseTalk.from_pretrained(args.models, version=args.version, device=device, decoder=args.decoder)
    avatar = open_store(args.avatars, args.models, mt, device).load(args.avatar)
    result = render_speech(mt, avatar, samples, args.output, batch_size=args.batch_size, crf=args.crf)
    print(f"{result.output}: {result.frames} frames at {result.fps:g} fps, {result.audio_seconds:.2f} s of speech")
    return 0
