"""``musetalk face-debug``: save a picture of the face analysis (landmarks, crop box, blend mask)."""
from __future__ import annotations

import argparse
import logging

log = logging.getLogger(__name__)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("face-debug", help="draw the detected face, crop box and blend mask on a frame",
                       description="Analyse an image or a video up to --frame and save that frame with the "
                                   "landmarks (white), detector box (blue), crop box (green), expanded blend "
                                   "box (yellow) and blend mask (red).")
    p.add_argument("input", help="image or video")
    p.add_argument("-o", "--output", required=True, help="output image (png/jpg)")
    p.add_argument("--frame", type=int, default=0, help="video frame to draw (default: 0)")
    p.add_argument("--version", choices=("v1.5", "v1.0"), default="v1.5")
    p.add_argument("--bbox-shift", type=int, default=0, help="v1.0: move the mask boundary down (+) or up (-), px")
    p.add_argument("--extra-margin", type=int, default=10, help="v1.5: pixels added below the chin")
    p.add_argument("--mode", choices=("jaw", "raw", "neck"), default=None,
                   help="blend region (default: jaw for v1.5, raw for v1.0)")
    p.add_argument("--parsing", action="store_true", help="use BiSeNet face parsing (needs the weights)")
    p.add_argument("--models", help="models folder for --parsing (default: $MUSETALK_MODELS or ./models)")
    p.add_argument("--face-index", type=int, default=0, help="face to follow, by decreasing size (default: 0)")
    p.add_argument("--no-smooth", action="store_true", help="turn temporal smoothing off")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import itertools

    import cv2

    from ..errors import FaceError, VideoError
    from ..face import FaceAnalyzer, default_blend_mode, draw_debug_overlay, load_face_parser, make_blend_mask
    from ..video.io import is_image, read_frames, read_image

    analyzer = FaceAnalyzer(version=args.version, bbox_shift=args.bbox_shift, extra_margin=args.extra_margin,
                            smooth=not args.no_smooth, face_index=args.face_index)
    frames = [read_image(args.input)] if is_image(args.input) else read_frames(args.input)
    count, rec, frame = 0, None, None
    for frame in itertools.islice(frames, max(args.frame, 0) + 1):
        rec = analyzer.analyze(frame)
        count += 1
    if count == 0 or (not is_image(args.input) and count <= args.frame):
        raise VideoError(f"{args.input} has only {count} frames: pick a smaller --frame")
    parser = None
    if args.parsing:
        parser = load_face_parser(args.models)
        if parser is None:
            raise FaceError("no face-parsing weights: run `musetalk download` or drop --parsing")
    mode = args.mode or default_blend_mode(args.version)
    mask = make_blend_mask(frame.shape, rec, mode, parser=parser, frame=frame) if rec.found else None
    overlay = draw_debug_overlay(frame, rec, mask)
    if not cv2.imwrite(args.output, cv2.cvtColor(overlay, cv2.COLOR_RGB2BGR)):
        raise VideoError(f"cannot write {args.output}: use a .png or .jpg path in an existing folder")
    log.info("face %s; crop box %s; written %s", "found" if rec.found else "NOT found",
             rec.crop_box.tolist(), args.output)
    return 0
