"""A voice agent with a MuseTalk face, fully offline: type a sentence on the page, the avatar answers aloud.

    pip install "musetalk[pipecat,speech]"
    python examples/voice_agent.py --avatar anna                       # the model in this process
    python examples/voice_agent.py --avatar anna --server http://gpu-box:8000 --token T   # faces on a server
    # then open http://127.0.0.1:7860/ (the avatar shows at rest; type, press Say)

The Pipecat pipeline of each browser connection:

    typed text -> EchoLLM -> MuseTalkTTSService (Piper, offline) -> MuseTalkVideoService -> SmallWebRTC out

SmallWebRTC is Pipecat's peer-to-peer WebRTC transport (aiortc): no media server. To make it a real
agent, swap one line each: the microphone in with ``audio_in_enabled=True`` plus an STT service before
the LLM (e.g. ``DeepgramSTTService(api_key=...)`` or ``WhisperSTTService()`` offline), ``EchoLLM`` for an
LLM service with its context aggregators (e.g. ``OpenAILLMService(api_key=...)``), and
``MuseTalkTTSService`` for any Pipecat TTS service (e.g. ``CartesiaTTSService(...)``).
"""
from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import time

from fastapi import FastAPI, HTTPException
from fastapi.responses import HTMLResponse
from pipecat.frames.frames import (
    Frame,
    LLMFullResponseEndFrame,
    LLMFullResponseStartFrame,
    LLMTextFrame,
    TranscriptionFrame,
)
from pipecat.pipeline.pipeline import Pipeline
from pipecat.pipeline.worker import PipelineParams, PipelineWorker
from pipecat.processors.frame_processor import FrameDirection, FrameProcessor
from pipecat.transports.base_transport import TransportParams
from pipecat.transports.smallwebrtc.request_handler import SmallWebRTCRequest, SmallWebRTCRequestHandler
from pipecat.transports.smallwebrtc.transport import SmallWebRTCTransport
from pipecat.workers.runner import WorkerRunner

from musetalk.integrations.pipecat import MuseTalkTTSService, MuseTalkVideoService, shared_backend
from musetalk.realtime.avatars.format import avatars_dir, list_avatars
from musetalk.realtime.remote import find_avatar
from musetalk.speech import Synthesizer

log = logging.getLogger("voice_agent")


class EchoLLM(FrameProcessor):
    """A stand-in LLM: answers each user transcription with the same words (so the agent runs offline)."""

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        await super().process_frame(frame, direction)
        if isinstance(frame, TranscriptionFrame):
            await self.push_frame(LLMFullResponseStartFrame())
            await self.push_frame(LLMTextFrame(frame.text))
            await self.push_frame(LLMFullResponseEndFrame())
        else:
            await self.push_frame(frame, direction)


def avatar_format(args: argparse.Namespace) -> tuple[int, int, float]:
    """(width, height, fps) of the avatar, from the server or the local avatars folder."""
    if args.server:
        info = find_avatar(args.server, args.avatar, args.token)
        return info.width, info.height, info.fps
    for info in list_avatars(avatars_dir(args.avatars)):
        if info["name"] == args.avatar:
            return int(info["width"]), int(info["height"]), float(info["fps"])
    raise SystemExit(f"voice_agent: no avatar {args.avatar!r} in {avatars_dir(args.avatars)}/: prepare it with "
                     f"`musetalk avatar prepare VIDEO --name {args.avatar}`")


def face_service(args: argparse.Namespace) -> MuseTalkVideoService:
    if args.server:
        return MuseTalkVideoService(server=args.server, avatar=args.avatar, token=args.token)
    return MuseTalkVideoService(avatar=args.avatar, models=args.models, avatars=args.avatars, device=args.device,
                                decoder=args.decoder, batch_size=args.batch_size,
                                latency_budget_ms=args.latency_budget_ms, max_sessions=args.max_sessions)


def create_app(args: argparse.Namespace) -> FastAPI:
    """The page, the WebRTC offer endpoint (one pipeline per connection) and the typed-text endpoint."""
    width, height, fps = avatar_format(args)
    voice = Synthesizer()  # one Piper voice for every connection
    handler = SmallWebRTCRequestHandler()
    bots: dict[str, PipelineWorker] = {}

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI):
        if not args.server:
            await asyncio.to_thread(shared_backend, face_service(args).options)  # before the first visitor
        yield

    app = FastAPI(title="MuseTalk voice agent", lifespan=lifespan)

    async def run_bot(connection) -> None:
        # the pictures come with their audio (sync_with_audio), so the video output is not "live"
        transport = SmallWebRTCTransport(connection, TransportParams(
            audio_in_enabled=False, audio_out_enabled=True, video_out_enabled=True,
            video_out_width=width, video_out_height=height, video_out_framerate=round(fps)))
        pipeline = Pipeline([transport.input(), EchoLLM(), MuseTalkTTSService(synthesizer=voice),
                             face_service(args), transport.output()])
        task = PipelineWorker(pipeline, params=PipelineParams(enable_metrics=True), idle_timeout_secs=None)
        bots[connection.pc_id] = task

        @transport.event_handler("on_client_disconnected")
        async def gone(transport, client) -> None:
            bots.pop(connection.pc_id, None)
            await task.cancel()

        runner = WorkerRunner(handle_sigint=False)
        await runner.add_workers(task)
        asyncio.get_running_loop().create_task(runner.run())

    @app.get("/", response_class=HTMLResponse)
    async def page() -> str:
        return PAGE

    @app.post("/api/offer")
    async def offer(request: dict) -> dict:
        return await handler.handle_web_request(SmallWebRTCRequest.from_dict(request), run_bot)

    @app.post("/api/say")
    async def say(request: dict) -> dict:
        task = bots.get(request.get("pc_id", ""))
        text = str(request.get("text", "")).strip()
        if task is None:
            raise HTTPException(404, "no such connection: open the page again")
        if not text:
            raise HTTPException(400, "nothing to say: type a sentence")
        await task.queue_frame(TranscriptionFrame(text=text, user_id="page", timestamp=str(time.time())))
        return {"queued": text}

    return app


PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>MuseTalk voice agent</title>
<style>body{font-family:sans-serif;margin:2em}video{background:#222;max-height:70vh}</style></head>
<body>
<h1>MuseTalk voice agent</h1>
<video id="face" autoplay playsinline></video>
<p><input id="text" size="60" value="Hello there, nice to meet you."> <button id="say">Say</button>
<span id="status">connecting...</span></p>
<script>
// window.agent: what the page saw, for people and tests. change: mean difference (0..255) of the shown
// picture from the first one (the avatar at rest); level: loudness (RMS) of the sound playing.
const state = window.agent = {pcId: null, connected: false, videoFrames: 0, change: 0, level: 0,
                              changedWhileSounding: 0, error: null};
const video = document.getElementById('face'), status = document.getElementById('status');
const thumb = document.createElement('canvas'), paint = thumb.getContext('2d', {willReadFrequently: true});
thumb.width = 64; thumb.height = 64;
let rest = null, analyser = null;
function look() {
  paint.drawImage(video, 0, 0, thumb.width, thumb.height);
  const pixels = paint.getImageData(0, 0, thumb.width, thumb.height).data;
  if (!rest) rest = pixels.slice();
  let sum = 0;
  for (let i = 0; i < pixels.length; i += 4) {
    sum += Math.abs(pixels[i] - rest[i]) + Math.abs(pixels[i + 1] - rest[i + 1]);
  }
  state.change = sum / (pixels.length / 2);
  if (analyser) {
    const wave = new Float32Array(analyser.fftSize);
    analyser.getFloatTimeDomainData(wave);
    state.level = Math.sqrt(wave.reduce((a, x) => a + x * x, 0) / wave.length);
  }
  if (state.level > 0.01 && state.change > 2) state.changedWhileSounding++;
}
async function connect() {
  const pc = new RTCPeerConnection();
  pc.addTransceiver('audio', {direction: 'recvonly'});
  pc.addTransceiver('video', {direction: 'recvonly'});
  const stream = new MediaStream();
  pc.ontrack = (e) => {
    stream.addTrack(e.track);
    video.srcObject = stream;
    if (e.track.kind === 'audio') {
      const ctx = new AudioContext();
      analyser = ctx.createAnalyser();
      ctx.createMediaStreamSource(new MediaStream([e.track])).connect(analyser);
    }
  };
  pc.onconnectionstatechange = () => {
    state.connected = pc.connectionState === 'connected';
    status.textContent = pc.connectionState;
  };
  await pc.setLocalDescription(await pc.createOffer());
  await new Promise((ok) => {
    if (pc.iceGatheringState === 'complete') return ok();
    pc.onicegatheringstatechange = () => pc.iceGatheringState === 'complete' && ok();
  });
  const reply = await fetch('/api/offer', {method: 'POST', headers: {'Content-Type': 'application/json'},
    body: JSON.stringify({sdp: pc.localDescription.sdp, type: pc.localDescription.type})});
  const answer = await reply.json();
  state.pcId = answer.pc_id;
  await pc.setRemoteDescription(answer);
  const count = () => { state.videoFrames++; look(); video.requestVideoFrameCallback(count); };
  video.requestVideoFrameCallback(count);
}
document.getElementById('say').onclick = async () => {
  const reply = await fetch('/api/say', {method: 'POST', headers: {'Content-Type': 'application/json'},
    body: JSON.stringify({pc_id: state.pcId, text: document.getElementById('text').value})});
  if (!reply.ok) state.error = (await reply.json()).detail;
};
connect().catch((e) => { state.error = String(e); status.textContent = 'error: ' + e; });
</script></body></html>
"""


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--avatar", required=True, help="the prepared avatar's name")
    p.add_argument("--server", help="a `musetalk serve` URL to run the faces on (default: in this process)")
    p.add_argument("--token", help="that server's access token")
    p.add_argument("--models", help="models folder (default: $MUSETALK_MODELS or ./models)")
    p.add_argument("--avatars", help="avatars folder (default: $MUSETALK_AVATARS or ./avatars)")
    p.add_argument("--device", help="torch device (default: cuda when available)")
    p.add_argument("--decoder", choices=("tiny", "vae"), default="tiny", help="latent decoder (default: tiny)")
    p.add_argument("--batch-size", type=int, default=16, help="most frames per model call (default 16)")
    p.add_argument("--latency-budget-ms", type=float, default=200.0, help="engine latency budget (default 200)")
    p.add_argument("--max-sessions", type=int, help="speaking sessions of the engine (default: calibrated)")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=7860)
    return p.parse_args(argv)


def main() -> None:
    import uvicorn

    args = parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    app = create_app(args)
    print(f"open http://{args.host}:{args.port}/")
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning")


if __name__ == "__main__":
    main()
