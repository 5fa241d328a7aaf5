"""Exceptions for problems a user can fix. Each message is one line: what, where, how to fix."""


class MuseTalkError(Exception):
    """Base class: the CLI prints the message alone (no traceback) and exits non-zero."""


class ModelFilesError(MuseTalkError):
    """Model files are missing or cannot be downloaded."""


class CheckpointError(MuseTalkError):
    """A checkpoint file exists but does not fit the model (keys, shapes, format)."""


class AudioError(MuseTalkError):
    """An audio input is missing, unreadable or empty."""


class VideoError(MuseTalkError):
    """A video or image input is missing, unreadable or empty, or an output cannot be written."""


class FaceError(MuseTalkError):
    """No usable face where one is required."""
