"""Face analysis and compositing: detection/tracking, iBUG-68 landmarks, the official 256x256 crops,
blend masks and seamless paste-back. Images are uint8 (H, W, 3) RGB; coordinates are frame pixels."""
from .analyzer import FaceAnalyzer
from .blend import match_colour, paste_face
from .crop import CROP_SIZE, bbox_shift_range, crop_box_from_landmarks, crop_face, crop_faces
from .debug import draw_debug_overlay
from .detect import DlibBackend, LandmarkBackend, create_backend, register_backend
from .landmarks import mouth_opening
from .mask import expanded_box, make_blend_mask
from .modes import DEFAULT_BLEND_MODE, default_blend_mode
from .parsing import FaceParser, load_face_parser
from .recorded import RecordedFaces
from .smoothing import OneEuroFilter, jitter
from .types import BlendMask, FaceRecord, load_records, save_records, stack_records, unstack_records

__all__ = [
    "BlendMask", "CROP_SIZE", "DEFAULT_BLEND_MODE", "default_blend_mode", "DlibBackend", "FaceAnalyzer", "FaceParser", "FaceRecord", "LandmarkBackend",
    "OneEuroFilter", "RecordedFaces", "bbox_shift_range", "create_backend", "crop_box_from_landmarks", "crop_face", "crop_faces",
    "draw_debug_overlay", "expanded_box", "jitter", "load_face_parser", "load_records", "make_blend_mask",
    "match_colour", "mouth_opening", "paste_face", "register_backend", "save_records", "stack_records",
    "unstack_records",
]
