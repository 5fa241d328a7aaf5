"""ICE servers and WebRTC settings from flags and $MUSETALK_ICE_SERVERS (no WebRTC library needed)."""
from __future__ import annotations

import pytest

from musetalk.errors import MuseTalkError
from musetalk.realtime.outputs.ice import IceServer, WebRTCSettings, ice_servers


def test_flags_and_environment_make_the_ice_servers():
    servers = ice_servers(["stun:stun.example.org:3478", "turn:turn.example.org:3478?transport=udp"], "u", "p",
                          '[{"urls": ["turns:relay.example.org:5349"], "username": "a", "credential": "b"},'
                          ' {"urls": "stun:other.example.org"}]')
    assert servers == (IceServer(("stun:stun.example.org:3478",)),
                       IceServer(("turn:turn.example.org:3478?transport=udp",), "u", "p"),
                       IceServer(("turns:relay.example.org:5349",), "a", "b"),
                       IceServer(("stun:other.example.org",)))
    assert [s.as_json() for s in servers[:2]] == [
        {"urls": ["stun:stun.example.org:3478"]},
        {"urls": ["turn:turn.example.org:3478?transport=udp"], "username": "u", "credential": "p"}]
    assert ice_servers([]) == ()


@pytest.mark.parametrize("urls, user, env, message", [
    (["http://x"], None, None, "--ice-server: an ICE server URL starts with stun:, turn: or turns:, got 'http://x'"),
    (["turn:x:3478"], None, None, "--ice-server turn:x:3478 is a TURN server: give --turn-user and --turn-credential"),
    ([], None, "{", '$MUSETALK_ICE_SERVERS must be JSON: a list of {"urls", "username", "credential"}'),
    ([], None, '{"urls": "stun:x"}',
     '$MUSETALK_ICE_SERVERS must be a JSON list of objects with "urls" (and TURN\'s username, credential)'),
    ([], None, '[{"username": "u"}]', '$MUSETALK_ICE_SERVERS: every ICE server needs "urls", got {"username": "u"}'),
    ([], None, '[{"urls": "turn:x:1"}]', '$MUSETALK_ICE_SERVERS: the TURN server turn:x:1 needs a "username" and a "credential"'),
])
def test_bad_ice_servers_are_refused_in_one_line(urls, user, env, message):
    with pytest.raises(MuseTalkError) as error:
        ice_servers(urls, user, user, env)
    assert str(error.value) == message


def test_video_bit_rate_bounds():
    assert WebRTCSettings().video_kbps == 1000
    with pytest.raises(MuseTalkError, match=r"^--video-kbps must be in \[50, 20000\] kbit/s, got 10$"):
        WebRTCSettings(video_kbps=10)
