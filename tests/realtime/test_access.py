"""Token and Origin checks of the server: open paths, 401/403 over HTTP, error + close 1008 on WebSockets,
and refusals that leave other sessions and the stored avatars untouched."""
from __future__ import annotations

import hashlib
import json

import cv2
import numpy as np
import pytest
from fastapi.testclient import TestClient

from musetalk.audio.features import frame_count
from musetalk.realtime.web.access import AccessPolicy
from musetalk.realtime.server import create_app

TOKEN = "s3cret-token"
ALLOWED = "https://kiosk.example"
FOREIGN = "https://evil.example"
NO_TOKEN = "missing or wrong token: add ?token=<token> or the header 'Authorization: Bearer <token>'"
BEARER = {"Authorization": f"Bearer {TOKEN}"}


def foreign_origin(origin: str) -> str:
    return f"origin {origin} not allowed: open the page from this server or add --allow-origin"


@pytest.fixture(scope="module")
def client(store, engine):
    with TestClient(create_app(store, engine, AccessPolicy(TOKEN, (ALLOWED,)))) as client:
        yield client


def snapshot(root) -> dict[str, str]:
    """sha256 of every file under ``root`` by relative path."""
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def expect_refusal(ws, message: str) -> None:
    assert json.loads(ws.receive_text()) == {"type": "error", "message": message}
    close = ws.receive()
    assert close == {"type": "websocket.close", "code": 1008, "reason": message.encode()[:123].decode()}


def speak(ws, samples: int = 4000, sent_before: int = 0) -> None:
    """Send ``samples`` of silence and the end; expect every frame of ``sent_before + samples`` samples
    (each one a JPEG or a ``skip`` message), then ``done``."""
    ws.send_bytes(b"\0\0" * samples)
    ws.send_text('{"type": "end"}')
    frames = 0
    while (msg := ws.receive()).get("bytes") is not None or json.loads(msg["text"])["type"] == "skip":
        frames += 1
    done, total = json.loads(msg["text"]), frame_count(sent_before + samples, 25)
    assert done["type"] == "done" and done["frames"] == total and frames == total, done


def test_open_paths_need_no_token(client):
    assert client.get("/health").json()["status"] == "ok"
    assert client.get("/").status_code == 200
    assert client.get("/static/app.js").status_code == 200


@pytest.mark.parametrize("path", ["/avatars", "/avatars/photo/poster.jpg", "/avatars/photo/status", "/docs"])
def test_http_without_or_with_a_wrong_token_is_401(client, path):
    for reply in (client.get(path), client.get(path, params={"token": "wrong"}),
                  client.get(path, headers={"Authorization": "Bearer wrong"})):
        assert reply.status_code == 401 and reply.json() == {"type": "error", "message": NO_TOKEN}
        assert reply.headers["www-authenticate"] == "Bearer"


def test_token_in_query_or_bearer_header(client):
    assert [a["name"] for a in client.get("/avatars", params={"token": TOKEN}).json()] == ["photo", "video"]
    assert [a["name"] for a in client.get("/avatars", headers=BEARER).json()] == ["photo", "video"]


def test_poster_is_the_first_stored_frame(client, store):
    reply = client.get("/avatars/video/poster.jpg", headers=BEARER)
    assert reply.status_code == 200 and reply.headers["content-type"] == "image/jpeg"
    image = cv2.cvtColor(cv2.imdecode(np.frombuffer(reply.content, np.uint8), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
    np.testing.assert_array_equal(image, store.load("video").frames[0])
    missing = client.get("/avatars/nobody/poster.jpg", headers=BEARER)
    assert missing.status_code == 404 and missing.json()["message"] == "no avatar named 'nobody'"


def test_foreign_origin_post_is_403(client, store, media):
    before = snapshot(store.root)
    reply = client.post("/avatars", headers={**BEARER, "Origin": FOREIGN}, data={"name": "evil"},
                        files={"file": ("musk.png", (media / "musk.png").read_bytes(), "image/png")})
    assert reply.status_code == 403 and reply.json() == {"type": "error", "message": foreign_origin(FOREIGN)}
    assert snapshot(store.root) == before


@pytest.mark.parametrize("url, headers, message", [
    ("/ws/photo?token=wrong", {}, NO_TOKEN),
    (f"/ws/photo?token={TOKEN}", {"Origin": FOREIGN}, foreign_origin(FOREIGN)),
    ("/ws/photo", {**BEARER, "Origin": "http://testserver.evil.example"},
     foreign_origin("http://testserver.evil.example")),
])
def test_websocket_refusals_close_1008_and_leave_others_alone(client, store, url, headers, message):
    before = snapshot(store.root)
    with client.websocket_connect(f"/ws/video?token={TOKEN}") as running:
        running.send_bytes(b"\0\0" * 2000)
        with client.websocket_connect(url, headers=headers) as ws:
            expect_refusal(ws, message)
        speak(running, 2000, sent_before=2000)
    assert snapshot(store.root) == before


@pytest.mark.parametrize("headers", [
    {"Origin": "http://testserver"},  # the page served by this server
    {"Origin": ALLOWED},  # --allow-origin
    {},  # a non-browser client
])
def test_websocket_with_token_from_allowed_origins(client, headers):
    with client.websocket_connect("/ws/photo", headers=headers) as ws:  # the origin does not replace the token
        expect_refusal(ws, NO_TOKEN)
    with client.websocket_connect(f"/ws/photo?token={TOKEN}", headers=headers) as ws:
        speak(ws)


def test_bearer_header_on_websocket(client):
    with client.websocket_connect("/ws/photo", headers={"Authorization": "Bearer wrong"}) as ws:
        expect_refusal(ws, NO_TOKEN)
    with client.websocket_connect("/ws/photo", headers=BEARER) as ws:
        speak(ws)


def test_without_a_token_only_the_origin_is_checked(store, engine):
    with TestClient(create_app(store, engine)) as client:
        assert client.get("/avatars").status_code == 200
        with client.websocket_connect("/ws/photo", headers={"Origin": FOREIGN}) as ws:
            expect_refusal(ws, foreign_origin(FOREIGN))
        with client.websocket_connect("/ws/photo") as ws:
            speak(ws)


def foreign_host(host: str) -> str:
    return (f"host {host} not allowed: open the page at an address the server listens on (127.0.0.1, localhost) "
            f"or add --allow-host")


def test_loopback_without_a_token_refuses_a_foreign_host(store, engine):
    """DNS rebinding: a page of evil.example whose name now resolves to 127.0.0.1 sends its own Host and Origin."""
    from musetalk.realtime.web.access import served_hosts

    rebound = {"Host": "evil.example:8000", "Origin": "http://evil.example:8000"}
    policy = AccessPolicy(hosts=served_hosts("127.0.0.1", ["Avatar.LAN"]))
    with TestClient(create_app(store, engine, policy), base_url="http://127.0.0.1:8000") as client:
        refused = client.get("/avatars", headers=rebound)
        assert (refused.status_code, refused.json()["message"]) == (403, foreign_host("evil.example:8000"))
        assert client.get("/", headers=rebound).status_code == 403
        with client.websocket_connect("/ws/photo", headers=rebound) as ws:
            expect_refusal(ws, foreign_host("evil.example:8000"))
        assert client.get("/avatars").status_code == 200
        for host in ("localhost:8000", "[::1]:8000", "avatar.lan:8000"):
            assert client.get("/avatars", headers={"Host": host}).status_code == 200, host
        with client.websocket_connect("/ws/photo", headers={"Host": "localhost:8000",
                                                            "Origin": "http://localhost:8000"}) as ws:
            speak(ws)


def test_serve_passes_its_address_and_allowed_hosts(tmp_path):
    """``serve --allow-host`` reaches the policy; a token makes the Host check unnecessary."""
    import argparse

    from musetalk.cli import serve
    from musetalk.realtime.web.access import served_hosts

    parser = argparse.ArgumentParser()
    serve.register(parser.add_subparsers())
    args = parser.parse_args(["serve", "--host", "127.0.0.2", "--allow-host", "kiosk.lan"])
    assert serve.access_policy(args).hosts == served_hosts("127.0.0.2", ["kiosk.lan"])
    assert {"127.0.0.2", "kiosk.lan", "localhost"} <= set(serve.access_policy(args).hosts)
    with_token = parser.parse_args(["serve", "--token", TOKEN])
    assert serve.access_policy(with_token).token == TOKEN
