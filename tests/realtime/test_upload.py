"""Avatar uploads: size limit (declared and streamed), 409 without replace, malformed forms, failed
preparations, status, and refusals that leave the stored avatars untouched; stale avatars refused on a
WebSocket without being prepared again."""
from __future__ import annotations

import json

import pytest
from fastapi.testclient import TestClient

from musetalk.realtime.avatars.store import AvatarStore
from musetalk.realtime.server import create_app

from .test_access import snapshot

BOUNDARY = "musetalkboundary"
LIMIT_MB = 0.2
TOO_LARGE = ("upload larger than 0.2 MB: send a shorter clip or start the server with a larger --max-upload-mb")


@pytest.fixture(scope="module")
def uploads(tmp_path_factory, tiny_musetalk, engine, media):
    """A client of a server whose store holds "photo" (musk.png), taking uploads up to 0.2 MB."""
    store = AvatarStore(tmp_path_factory.mktemp("uploads"), tiny_musetalk)
    store.prepare(media / "musk.png", "photo")
    with TestClient(create_app(store, engine, max_upload_mb=LIMIT_MB)) as client:
        client.store = store
        yield client


def post(client, name: str, filename: str, content: bytes, **fields):
    return client.post("/avatars", data={"name": name, **fields}, files={"file": (filename, content, "image/jpeg")})


def events(reply) -> list[dict]:
    assert reply.status_code == 200 and reply.headers["content-type"] == "application/x-ndjson"
    return [json.loads(line) for line in reply.text.splitlines()]


def multipart(name: str, filename: str, content: bytes) -> bytes:
    return (f"--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"name\"\r\n\r\n{name}\r\n"
            f"--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"{filename}\"\r\n"
            f"Content-Type: application/octet-stream\r\n\r\n").encode() + content + f"\r\n--{BOUNDARY}--\r\n".encode()


def test_upload_prepares_in_the_background_with_progress_and_status(uploads, media):
    assert uploads.get("/avatars/sit/status").status_code == 404
    got = events(post(uploads, "sit", "sit.jpeg", (media / "sit.jpeg").read_bytes()))
    stages = [e["stage"] for e in got if e["type"] == "progress"]
    assert stages == ["faces", "latents", "masks", "save"]
    assert got[-1]["type"] == "done" and got[-1]["avatar"]["name"] == "sit" and got[-1]["avatar"]["num_frames"] == 1
    assert uploads.get("/avatars/sit/status").json() == {"name": "sit", "state": "ready", "avatar": got[-1]["avatar"]}
    assert uploads.get("/avatars/photo/status").json() == {"name": "photo", "state": "ready"}
    sources = list((uploads.store.root / ".sources" / "sit").iterdir())
    assert len(sources) == 1 and sources[0].read_bytes() == (media / "sit.jpeg").read_bytes()
    assert uploads.store.load("sit").meta["source"]["path"] == str(sources[0])


def test_existing_name_is_409_unless_replace(uploads, media):
    before = snapshot(uploads.store.root)
    reply = post(uploads, "photo", "sit.jpeg", (media / "sit.jpeg").read_bytes())
    assert reply.status_code == 409
    assert reply.json() == {"type": "error", "message": "avatar 'photo' exists: send replace=true to replace it"}
    assert snapshot(uploads.store.root) == before


def test_replace(tmp_path, tiny_musetalk, engine, media):
    store = AvatarStore(tmp_path, tiny_musetalk)
    store.prepare(media / "musk.png", "face")
    with TestClient(create_app(store, engine)) as client:
        got = events(post(client, "face", "monalisa.png", (media / "monalisa.png").read_bytes(), replace="true"))
        assert got[-1]["type"] == "done" and got[-1]["avatar"]["width"] == 300
        assert store.load("face").meta["width"] == 300


@pytest.mark.parametrize("how", ["content-length", "streamed"])
def test_oversize_upload_is_413(uploads, media, how):
    before = snapshot(uploads.store.root)
    body = multipart("big", "musk.png", (media / "musk.png").read_bytes())  # 257 kB > 0.2 MB
    headers = {"Content-Type": f"multipart/form-data; boundary={BOUNDARY}"}
    if how == "content-length":
        reply = uploads.post("/avatars", content=body, headers=headers)
    else:  # chunked, no Content-Length: refused while receiving
        reply = uploads.post("/avatars", content=iter([body[i:i + 16384] for i in range(0, len(body), 16384)]),
                             headers=headers)
        assert "content-length" not in reply.request.headers
    assert reply.status_code == 413 and reply.json() == {"type": "error", "message": TOO_LARGE}
    assert snapshot(uploads.store.root) == before


@pytest.mark.parametrize("kwargs, message", [
    ({"data": {"name": "x"}}, "upload without a 'file' part: send the video or photo as multipart field 'file'"),
    ({"files": {"file": ("a.png", b"x", "image/png")}},
     "upload without a 'name' field: name the avatar (letters, digits, '_', '-', '.')"),
    ({"data": {"name": "../x"}, "files": {"file": ("a.png", b"x", "image/png")}},
     "invalid avatar name '../x': use 1-64 letters, digits, '_', '-' or '.', starting alnum"),
    ({"data": {"name": "x"}, "files": {"file": ("noext", b"x", "image/png")}},
     "upload 'noext' needs a video or image file extension (.mp4, .png, ...)"),
    ({"data": {"name": "x", "max_frames": "ten"}, "files": {"file": ("a.mp4", b"x", "video/mp4")}},
     "max_frames must be a positive whole number, got 'ten'"),
    ({"data": {"name": "x", "replace": "maybe"}, "files": {"file": ("a.mp4", b"x", "video/mp4")}},
     "replace must be true or false, got 'maybe'"),
    ({"data": {"name": "x", "owner": "me"}, "files": {"file": ("a.mp4", b"x", "video/mp4")}},
     "unknown upload fields ['owner']: send only file, name, max_frames, replace"),
    ({"content": b"--x\r\nnonsense", "headers": {"Content-Type": "multipart/form-data"}},
     "malformed upload (Missing boundary in multipart): send multipart form data with 'file' and 'name'"),
    ({"json": {"name": "x"}}, "upload without a 'file' part: send the video or photo as multipart field 'file'"),
])
def test_malformed_upload_is_400(uploads, kwargs, message):
    before = snapshot(uploads.store.root)
    reply = uploads.post("/avatars", **kwargs)
    assert reply.status_code == 400 and reply.json() == {"type": "error", "message": message}
    assert snapshot(uploads.store.root) == before


def test_unreadable_file_fails_its_preparation_and_keeps_the_old_avatar(uploads):
    before = snapshot(uploads.store.root)
    got = events(post(uploads, "photo", "photo.png", b"not an image at all", replace="true"))
    assert got == [{"type": "error", "message": got[-1]["message"]}]
    assert got[-1]["message"].startswith("cannot read image ") and got[-1]["message"].endswith(
        ": not a png/jpeg/bmp/webp/tiff file")
    assert uploads.get("/avatars/photo/status").json() == {"name": "photo", "state": "failed",
                                                         "message": got[-1]["message"]}
    assert snapshot(uploads.store.root) == before
    assert uploads.store.load("photo").meta["width"] == 474


def test_stale_avatar_is_refused_on_the_websocket_not_prepared(uploads):
    meta_path = uploads.store.root / "photo" / "avatar.json"
    original = meta_path.read_text()
    meta = json.loads(original)
    meta["format"] = 1
    meta_path.write_text(json.dumps(meta))
    try:
        before = snapshot(uploads.store.root)
        with uploads.websocket_connect("/ws/photo") as ws:
            message = json.loads(ws.receive_text())["message"]
            assert message.startswith("avatar 'photo' is stale (format 1 != 2): prepare it again with `musetalk "
                                      "avatar prepare ") and message.endswith(" --name photo`")
            assert ws.receive()["type"] == "websocket.close"
        assert snapshot(uploads.store.root) == before
    finally:
        meta_path.write_text(original)


def test_name_being_prepared_is_409_even_with_replace(uploads, media, monkeypatch):
    import threading

    release = threading.Event()
    prepare = uploads.store.prepare

    def held_prepare(*args, **kwargs):
        assert release.wait(30)
        return prepare(*args, **kwargs)

    monkeypatch.setattr(uploads.store, "prepare", held_prepare)
    first: list = []
    thread = threading.Thread(target=lambda: first.append(post(uploads, "held", "sit.jpeg",
                                                               (media / "sit.jpeg").read_bytes())))
    thread.start()
    try:
        while uploads.get("/avatars/held/status").status_code == 404:
            assert thread.is_alive()
        assert uploads.get("/avatars/held/status").json() == {"name": "held", "state": "preparing", "stage": "upload",
                                                              "done": 0, "total": 0}
        reply = post(uploads, "held", "sit.jpeg", (media / "sit.jpeg").read_bytes(), replace="true")
        assert reply.status_code == 409 and reply.json()["message"] == (
            "avatar 'held' is being prepared: wait for GET /avatars/held/status")
    finally:
        release.set()
        thread.join(60)
    assert events(first[0])[-1]["avatar"]["source_name"].endswith(".jpeg")
