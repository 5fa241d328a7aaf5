"""The server's avatar endpoints: list, upload (size-limited, streamed to disk, prepared in the background),
preparation status and poster. See :mod:`musetalk.realtime.server` for the protocol."""
from __future__ import annotations

import asyncio
import json
import logging
import shutil
from pathlib import Path
from typing import AsyncIterator

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from starlette.datastructures import FormData, UploadFile
from starlette.exceptions import HTTPException
from starlette.formparsers import MultiPartException
from starlette.types import Message, Receive

from ...errors import MuseTalkError
from .store import AvatarError, AvatarStore, PrepareSettings, check_name
from .jobs import PreparationJob, PreparationJobs
from .prepare import Turn, no_wait

log = logging.getLogger(__name__)

DEFAULT_MAX_UPLOAD_MB = 500.0
FIELDS = ("file", "name", "max_frames", "replace")
FLAGS = {"": False, "0": False, "false": False, "no": False, "1": True, "true": True, "yes": True}


class UploadRefused(MuseTalkError):
    """An upload the server does not take: ``status`` is the HTTP status to answer."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def avatar_router(store: AvatarStore, max_upload_mb: float = DEFAULT_MAX_UPLOAD_MB,
                  turn: Turn = no_wait) -> APIRouter:
    """``GET /avatars``, ``POST /avatars``, ``GET /avatars/{name}/status``, ``GET /avatars/{name}/poster.jpg``;
    uploads are prepared taking ``turn`` before each step (see :class:`.jobs.PreparationJobs`)."""
    router = APIRouter()
    jobs = PreparationJobs(store, turn)
    limit = int(max_upload_mb * 1024 * 1024)

    @router.get("/avatars")
    async def avatars() -> list[dict]:
        return store.list()

    @router.post("/avatars")
    async def upload(request: Request) -> Response:
        try:
            job = await _receive_upload(request, store, jobs, limit)
        except UploadRefused as exc:
            log.info("upload refused (%d): %s", exc.status, exc)
            return _error(exc.status, str(exc))
        return StreamingResponse(_ndjson(job.follow()), media_type="application/x-ndjson")

    @router.get("/avatars/{name}/status")
    async def status(name: str) -> Response:
        job = jobs.get(name)
        if job is not None:
            return JSONResponse(job.status())
        if _exists(store, name):
            return JSONResponse({"name": name, "state": "ready"})
        return _error(404, f"no avatar named {name!r} and no upload of it")

    @router.get("/avatars/{name}/poster.jpg")
    async def poster(name: str) -> Response:
        if not _exists(store, name):
            return _error(404, f"no avatar named {name!r}")
        try:
            return Response(await asyncio.to_thread(store.poster, name), media_type="image/jpeg")
        except AvatarError as exc:
            return _error(409, str(exc))

    return router


def _exists(store: AvatarStore, name: str) -> bool:
    try:
        return store.exists(name)
    except AvatarError:
        return False


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"type": "error", "message": message}, status_code=status)


async def _ndjson(events: AsyncIterator[dict]) -> AsyncIterator[str]:
    async for event in events:
        yield json.dumps(event) + "\n"


async def _receive_upload(request: Request, store: AvatarStore, jobs: PreparationJobs, limit: int) -> PreparationJob:
    """Check, receive and store an upload, then start its preparation; :class:`UploadRefused` otherwise."""
    _check_declared_length(request, limit)
    limited = Request(request.scope, _limited(request.receive, limit))
    try:
        form = await limited.form(max_files=1, max_fields=len(FIELDS))
    except (MultiPartException, HTTPException) as exc:
        detail = str(getattr(exc, "detail", None) or exc).rstrip(".")
        raise UploadRefused(400, f"malformed upload ({detail}): send multipart form data with 'file' and 'name'") from None
    try:
        file, name, settings, replace = _fields(form)
        if jobs.busy(name):
            raise UploadRefused(409, f"avatar {name!r} is being prepared: wait for GET /avatars/{name}/status")
        if store.exists(name) and not replace:
            raise UploadRefused(409, f"avatar {name!r} exists: send replace=true to replace it")
        path = _upload_path(store, name, file)
        job = jobs.reserve(name)
        try:
            await asyncio.to_thread(_save, file, path)
        except (OSError, MuseTalkError) as exc:
            job.finish({"type": "error", "message": f"cannot store the upload: {exc}"})
            raise
        jobs.start(job, path, settings)
        return job
    finally:
        await form.close()


def _check_declared_length(request: Request, limit: int) -> None:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise UploadRefused(413, _too_large(limit))


def _too_large(limit: int) -> str:
    return f"upload larger than {limit / 1024 / 1024:g} MB: send a shorter clip or start the server with a larger --max-upload-mb"


def _limited(receive: Receive, limit: int) -> Receive:
    """``receive`` refusing (413) once the request body exceeds ``limit`` bytes."""
    received = 0

    async def receive_limited() -> Message:
        nonlocal received
        message = await receive()
        received += len(message.get("body", b""))
        if received > limit:
            raise UploadRefused(413, _too_large(limit))
        return message

    return receive_limited


def _fields(form: FormData) -> tuple[UploadFile, str, PrepareSettings, bool]:
    """The uploaded file, the avatar name, the settings and whether to replace, each checked."""
    unknown = sorted(set(form.keys()) - set(FIELDS))
    if unknown:
        raise UploadRefused(400, f"unknown upload fields {unknown}: send only {', '.join(FIELDS)}")
    file, name = form.get("file"), form.get("name")
    if not isinstance(file, UploadFile):
        raise UploadRefused(400, "upload without a 'file' part: send the video or photo as multipart field 'file'")
    if not isinstance(name, str):
        raise UploadRefused(400, "upload without a 'name' field: name the avatar (letters, digits, '_', '-', '.')")
    try:
        check_name(name)
    except AvatarError as exc:
        raise UploadRefused(400, str(exc)) from None
    max_frames = form.get("max_frames") or None
    if max_frames is not None and not (isinstance(max_frames, str) and max_frames.isdigit() and int(max_frames) > 0):
        raise UploadRefused(400, f"max_frames must be a positive whole number, got {str(max_frames)[:20]!r}")
    replace = form.get("replace", "")
    if not isinstance(replace, str) or replace.lower() not in FLAGS:
        raise UploadRefused(400, f"replace must be true or false, got {str(replace)[:20]!r}")
    settings = PrepareSettings(max_frames=int(max_frames) if max_frames else None)
    return file, name, settings, FLAGS[replace.lower()]


def _upload_path(store: AvatarStore, name: str, file: UploadFile) -> Path:
    try:
        return store.new_upload_path(name, file.filename or "")
    except AvatarError as exc:
        raise UploadRefused(400, str(exc)) from None


def _save(file: UploadFile, path: Path) -> None:
    """Copy the received file (spooled to disk by the parser) to ``path``, block by block, atomically."""
    from ...video.io import atomic_output

    file.file.seek(0)
    with atomic_output(path) as tmp, open(tmp, "wb") as out:
        shutil.copyfileobj(file.file, out)
