"""`musetalk say` and `musetalk dub --text` with tiny models and the real voice: frame counts, audio, refusals."""
from __future__ import annotations

import math
import time

import av
import pytest

from musetalk.cli.main import main
from musetalk.video import probe

HELLO = "Hello there."


@pytest.fixture(scope="module")
def hello_seconds(synthesizer) -> float:
    return len(synthesizer.synthesize(HELLO)) / 16000


@pytest.fixture(scope="module")
def store(tmp_path_factory, tiny_models, tiny_musetalk):
    """An avatars folder for the tiny models, opened as the commands open it (with the face parser)."""
    from musetalk.face import load_face_parser
    from musetalk.realtime.avatars.store import AvatarStore

    return AvatarStore(tmp_path_factory.mktemp("avatars"), tiny_musetalk, parser=load_face_parser(tiny_models))


@pytest.fixture(scope="module")
def avatars(store, media):
    """The avatars folder with "photo" (musk.png) prepared for the tiny models."""
    store.prepare(media / "musk.png", "photo")
    return store.root


def audio_seconds(path) -> float:
    with av.open(str(path)) as container:
        stream = container.streams.audio[0]
        return float(stream.duration * stream.time_base)


def run_cli(capsys, *args) -> tuple[int, str, str]:
    code = main([*map(str, args), "--quiet"] if args[0] == "dub" else ["--quiet", *map(str, args)])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def assert_refused(result: tuple[int, str, str], message: str, folder) -> None:
    code, _, err = result
    assert code == 1 and err == f"musetalk: error: {message}\n", err
    assert not [p.name for p in folder.iterdir() if p.suffix in (".mp4", ".json") or ".part" in p.name]


def test_say_renders_the_avatar_speaking(tmp_path, capsys, tiny_models, avatars, hello_seconds):
    out = tmp_path / "hello.mp4"
    code, stdout, _ = run_cli(capsys, "say", HELLO, "--avatar", "photo", "--avatars", avatars,
                              "--models", tiny_models, "--device", "cpu", "-o", out)
    frames = math.floor(hello_seconds * 25)
    assert code == 0 and stdout == f"{out}: {frames} frames at 25 fps, {hello_seconds:.2f} s of speech\n"
    info = probe(out)
    assert (info.num_frames, info.width, info.height, info.has_audio) == (frames, 474, 266, True)
    assert abs(audio_seconds(out) - hello_seconds) < 0.05


def test_say_refusals(tmp_path, capsys, tiny_models, avatars):
    out = tmp_path / "o.mp4"
    common = ("--avatars", avatars, "--models", tiny_models, "--device", "cpu", "-o", out)
    assert_refused(run_cli(capsys, "say", "Hi.", "--avatar", "nobody", *common),
                   f"no avatar named 'nobody' in {avatars}/: prepare it with `musetalk avatar prepare`", tmp_path)
    assert_refused(run_cli(capsys, "say", "a" * 1001, "--avatar", "photo", *common),
                   "text of 1001 characters is too long: at most 1000 at once; split it into shorter parts", tmp_path)
    assert_refused(run_cli(capsys, "say", "  ", "--avatar", "photo", *common),
                   "no text to speak: give at least one word", tmp_path)
    voice = tmp_path / "none.onnx"
    assert_refused(run_cli(capsys, "say", "Hi.", "--avatar", "photo", "--voice", voice, *common),
                   f"voice file not found: {voice}: give a Piper voice .onnx (its .onnx.json beside it)", tmp_path)


def test_dub_text_replaces_the_audio(tmp_path, capsys, tiny_models, media, hello_seconds):
    out = tmp_path / "dub.mp4"
    code, stdout, _ = run_cli(capsys, "dub", media / "musk.png", "--text", HELLO, "-o", out, "--models", tiny_models)
    frames = math.floor(hello_seconds * 25)
    assert code == 0 and stdout.startswith(f"{out}: {frames} frames at 25 fps, {hello_seconds:.2f} s of audio, ")
    assert probe(out).num_frames == frames and abs(audio_seconds(out) - hello_seconds) < 0.05


def test_dub_text_refusals(tmp_path, capsys, tiny_models, media):
    photo = media / "musk.png"
    wav = media / "sun.wav"
    out = tmp_path / "o.mp4"
    assert_refused(run_cli(capsys, "dub", photo, wav, "--text", "Hi.", "-o", out),
                   f"give exactly one of AUDIO ({wav}) or --text, not both: musetalk dub SOURCE --text \"...\" "
                   f"-o OUTPUT.mp4", tmp_path)
    assert_refused(run_cli(capsys, "dub", photo, wav, "--voice", "v.onnx", "-o", out),
                   "--voice goes with --text: give --text \"...\" instead of AUDIO, or drop --voice", tmp_path)
    assert_refused(run_cli(capsys, "dub", photo, "--text", "b" * 1001, "-o", out, "--models", tiny_models),
                   "text of 1001 characters is too long: at most 1000 at once; split it into shorter parts", tmp_path)
    assert_refused(run_cli(capsys, "dub", photo, "--text", "Hi.", "-o", tmp_path / "no" / "o.mp4",
                           "--models", tiny_models),
                   f"cannot write {tmp_path / 'no' / 'o.mp4'}: folder {tmp_path / 'no'} does not exist", tmp_path)


def test_a_slow_writer_loses_no_frame(tmp_path, monkeypatch, tiny_musetalk, store, avatars, media):
    """The recording waits for its writer: the writer holds its first frame until the engine has made
    every other one (55 frames, more than a real-time client may have waiting), and all are written."""
    from musetalk.audio import load_audio
    from musetalk.realtime.engine.engine import Engine
    from musetalk.realtime.outputs.recording import render_speech
    from musetalk.video.io import VideoWriter

    sessions = []
    open_session, write = Engine.open, VideoWriter.write

    def recorded_open(self, *args, **kwargs):
        sessions.append(open_session(self, *args, **kwargs))
        return sessions[-1]

    def held_write(self, frame):
        deadline = time.monotonic() + 120
        while self.frames_written == 0 and sessions[0].queue_depth < 55 and time.monotonic() < deadline:
            time.sleep(0.05)  # the other 54 frames and the end wait in the outbox
        write(self, frame)

    monkeypatch.setattr(Engine, "open", recorded_open)
    monkeypatch.setattr(VideoWriter, "write", held_write)
    samples = load_audio(media / "sun.wav")[: 2 * 16000 + 3200]
    avatar = store.load("photo")
    result = render_speech(tiny_musetalk, avatar, samples, tmp_path / "held.mp4")
    assert sessions[0].queue_depth == 0
    assert result.frames == 55 and probe(tmp_path / "held.mp4").num_frames == 55


@pytest.mark.parametrize("decoder", ["vae", "tiny"])
def test_say_speaks_an_avatar_prepared_by_the_cli_with_the_same_models(tmp_path, capsys, tiny_models, media,
                                                                      hello_seconds, decoder):
    """`avatar prepare` and `say` open the store alike (face parser from the models folder, same decoder):
    the avatar `prepare` made is not stale for `say`."""
    import json

    avatars = tmp_path / "avatars"
    common = ("--avatars", avatars, "--models", tiny_models, "--device", "cpu", "--decoder", decoder)
    assert run_cli(capsys, "avatar", "prepare", media / "musk.png", "--name", "musk", *common)[0] == 0
    assert json.loads((avatars / "musk" / "avatar.json").read_text())["mask"] == "parsing"
    out = tmp_path / "hello.mp4"
    code, stdout, err = run_cli(capsys, "say", HELLO, "--avatar", "musk", "-o", out, *common)
    frames = math.floor(hello_seconds * 25)
    assert (code, err) == (0, "") and stdout == f"{out}: {frames} frames at 25 fps, {hello_seconds:.2f} s of speech\n"
    assert probe(out).num_frames == frames
