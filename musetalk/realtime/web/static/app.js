// MuseTalk real-time page. Selecting an avatar shows its poster at once and opens one live session on it:
// over WebRTC by default (WHEP: POST /whep/{avatar}; a <video> plays the avatar's picture and speech as one
// stream, the browser keeps them together and lipsync.js mends what its synchroniser leaves; the data
// channel "control" carries say/interrupt/close and the session's events; the microphone is an outgoing
// audio track), over the WebSocket (/ws/{avatar}) when WebRTC fails or with ?transport=ws (JPEG frames
// drawn on a canvas on the audio clock, speech played by media time on the same clock). Typed text
// (`say`), the microphone and WAV files speak through that session; Stop interrupts. Query: ?token= (sent
// with every request), ?transport=ws, ?relay=1 (WebRTC through the TURN server only: iceTransportPolicy
// "relay", for tests).
"use strict";

const $ = (id) => document.getElementById(id);
const params = new URLSearchParams(location.search);
const token = params.get("token");
const forcedTransport = params.get("transport");  // "ws" or "webrtc"; default: WebRTC, the WebSocket if it fails
const relayOnly = params.get("relay") === "1";
const REFUSALS = { 1008: "policy", 1013: "server full" };
const HTTP_REFUSALS = { 401: "policy", 403: "policy", 503: "server full" };
const CONNECT_TIMEOUT_MS = 20000;
const FRAME_MAGIC = 0x3146544d;  // "MTF1" little-endian: the WebSocket frame header (outputs/ws.py)
const HEADER_BYTES = 16;

// Counters for people and for the browser tests.
const stats = (window.musetalk = {
  state: "idle", transport: null, fallback: null, received: 0, drawn: 0, lastDrawn: -1, skipped: 0,
  sentBytes: 0, audioPlayed: 0, utterances: 0, utteranceFrames: null, firstFrameMs: null, fps: 0,
  latencyMs: 0, poster: null, refusal: null, error: null, notice: null, queued: 0, rtc: null,
});
let avatars = [];
let live = null;
let mic = null;
let audioContext = null;
const pendingSays = [];  // typed sentences waiting for the microphone or the sentence before them

/** ``path`` with the page's own ?token= added (the server asks it of every fetch and WebSocket). */
function withToken(path) {
  if (!token) return path;
  const url = new URL(path, location.href);
  url.searchParams.set("token", token);
  return url.pathname + url.search;
}

function status(text, isError = false) {
  const el = $("status");
  el.textContent = text;
  el.className = isError ? "error" : "";
}

/** A visible reason why the page held back or refused what was asked (the session goes on). */
function notice(text) {
  stats.notice = text;
  $("notice").textContent = text || "";
}

function clock() {
  if (!audioContext) audioContext = new AudioContext();
  audioContext.resume();
  return audioContext;
}

function showView(which) {
  $("view").hidden = which !== "canvas";
  $("video").hidden = which !== "video";
}

function draw(bitmap) {
  const canvas = $("view");
  if (canvas.width !== bitmap.width || canvas.height !== bitmap.height) {
    canvas.width = bitmap.width;
    canvas.height = bitmap.height;
  }
  canvas.getContext("2d").drawImage(bitmap, 0, 0);
}

async function errorMessage(response) {
  try {
    return (await response.json()).message || response.statusText;
  } catch {
    return `${response.status} ${response.statusText}`;
  }
}

async function loadAvatars(select) {
  const response = await fetch(withToken("/avatars"));
  if (!response.ok) throw new Error(await errorMessage(response));
  avatars = await response.json();
  const menu = $("avatar");
  menu.replaceChildren(...avatars.map((a) => new Option(`${a.name} (${a.num_frames} frames, ${a.fps} fps)`, a.name)));
  if (!avatars.length) {
    status("No avatars yet: prepare one below.");
    return;
  }
  if (select) menu.value = select;
  selectAvatar();
}

function selectedAvatar() {
  return avatars.find((a) => a.name === $("avatar").value);
}

/** Show the selected avatar at once (its poster) and open its live session. */
function selectAvatar() {
  const avatar = selectedAvatar();
  if (!avatar) return;
  stopMic(false);
  if (live) live.close();
  pendingSays.length = 0;
  Object.assign(stats, { received: 0, drawn: 0, lastDrawn: -1, skipped: 0, utterances: 0, utteranceFrames: null,
                         firstFrameMs: null, refusal: null, error: null, poster: null, queued: 0, rtc: null,
                         fallback: null });
  notice(null);
  showView("canvas");
  live = forcedTransport === "ws" || !window.RTCPeerConnection ? new WsSession(avatar) : new RtcSession(avatar);
  showPoster(avatar, live);
}

async function showPoster(avatar, session) {
  const response = await fetch(withToken(`/avatars/${encodeURIComponent(avatar.name)}/poster.jpg`));
  if (!response.ok) {
    status(`No poster for ${avatar.name}: ${await errorMessage(response)}`, true);
    return;
  }
  const bitmap = await createImageBitmap(await response.blob());
  if (live === session && stats.drawn === 0) {  // live frames, once there, take over
    draw(bitmap);
    stats.poster = avatar.name;
  }
  bitmap.close();
}

// What both transports share: the buttons follow the session's state; a typed sentence waits (queued,
// with a visible reason) while the microphone streams or another sentence is spoken, and the microphone
// does not open while a typed sentence is spoken: the server refuses both, and would end the session.
class Session {
  constructor(avatar) {
    this.avatar = avatar;
    this.message = null;
    this.sentAt = null;
    this.saying = false;  // a say message is being spoken (from sending it to its utterance_done)
    this.utterancesEnded = 0;  // utterances this page ended (an end message or a say), in order
    this.utterancesDone = 0;  // ... and of those, how many the server said were done
    this.sayAt = 0;  // the say's place in that order
    this.arrivals = [];
    this.timer = setInterval(() => this.showStats(), 500);
  }

  setState(state) {
    stats.state = state;
    const speakable = state === "rest" || state === "speaking";
    $("say").disabled = !speakable;
    $("mic-start").disabled = !speakable || mic !== null;
    $("stop").disabled = state !== "speaking" && mic === null;
    this.showStats();
  }

  /** A control event of the session (WebSocket text message or data channel message). */
  control(msg) {
    if (msg.type === "skip") {
      stats.skipped = msg.skipped;
    } else if (msg.type === "state") {
      if (msg.state === "speaking" && this.sentAt !== null) {  // in order: just before the first speech frame
        stats.firstFrameMs = Math.round(performance.now() - this.sentAt);
        this.sentAt = null;
      }
      this.setState(msg.state);
    } else if (msg.type === "utterance_done" || msg.type === "done") {
      stats.utterances += 1;
      stats.utteranceFrames = msg.frames;
      if (!msg.interrupted) this.utterancesDone += 1;  // an interrupted one was forgotten with the interrupt
      if (this.saying && this.utterancesDone >= this.sayAt) this.saying = false;
      this.sayNext();
    } else if (msg.type === "error") {
      this.message = msg.message;
      stats.error = msg.message;
    }
  }

  say(text) {
    if (mic) {
      this.queue(text, "Queued: the avatar says it when you press \"Done speaking\".");
    } else if (this.saying) {
      this.queue(text, "Queued: the avatar says it after the sentence it is speaking.");
    } else {
      this.saying = true;
      this.sayAt = ++this.utterancesEnded;
      this.sentAt = performance.now();
      this.send({ type: "say", text });
      status(`Saying: ${text.length > 60 ? text.slice(0, 57) + "..." : text}`);
    }
  }

  queue(text, reason) {
    pendingSays.push(text);
    stats.queued = pendingSays.length;
    notice(`${reason} (${pendingSays.length} waiting)`);
  }

  /** Say the next queued sentence, if nothing holds it back any more. */
  sayNext() {
    if (mic || this.saying || !pendingSays.length || !this.open) return;
    const text = pendingSays.shift();
    stats.queued = pendingSays.length;
    notice(pendingSays.length ? `${pendingSays.length} typed sentence(s) waiting` : null);
    this.say(text);
  }

  /** The page sent the end of an utterance of its own audio (microphone, WAV). */
  endUtterance() {
    this.utterancesEnded += 1;
    this.send({ type: "end" });
  }

  interrupt() {
    pendingSays.length = 0;
    stats.queued = 0;
    notice(null);
    this.saying = false;
    this.utterancesDone = this.utterancesEnded;
    this.send({ type: "interrupt" });
  }

  noteArrival() {
    const now = performance.now();
    this.arrivals.push(now);
    while (this.arrivals[0] < now - 2000) this.arrivals.shift();
  }

  arrivalFps() {
    const span = this.arrivals.length > 1 ? (this.arrivals.at(-1) - this.arrivals[0]) / 1000 : 0;
    return span > 0 ? (this.arrivals.length - 1) / span : 0;
  }

  showFailure(code, reason) {
    if (code in REFUSALS) {
      stats.refusal = reason || REFUSALS[code];
      this.setState("refused");
      status(`Refused (${REFUSALS[code]}): ${stats.refusal}`, true);
    } else if (code === 1011 || this.message) {
      stats.error = reason || `session failed (${code})`;
      this.setState("failed");
      status(`Session failed: ${stats.error}`, true);
    } else {
      this.setState("closed");
      status(`Session closed (${code}); select an avatar to start again.`);
    }
  }
}

// Frames by media time, drawn when the audio clock reaches them (frame at media time t is shown at
// start + delay + t of the AudioContext). `delay` (how far the picture trails the stream) grows when
// frames arrive late (not while speech plays: that would pull them apart) and shrinks back at rest once
// the frames of the last SHRINK_WINDOW_S all arrived with room to spare, so a hiccup does not raise the
// latency for good. Speech plays from its media time on the same clock, once the frame there (or its
// skip) has arrived; speech that would start in the past delays everything instead (never cut).
const MARGIN_S = 0.06;
const MIN_DELAY_S = 0.1;
const SHRINK_WINDOW_S = 3;

class Player {
  constructor(ctx) {
    this.ctx = ctx;
    this.start = null;
    this.delay = 0.3;
    this.frames = [];  // {index, time, bitmap}, in index order
    this.shown = -1;
    this.arrived = 0;
    this.waiting = [];
    this.slack = [];  // [ctx time of arrival, seconds to spare] of recent frames
    this.sounds = new Set();
    this.soundUntil = 0;
    this.running = true;
    const tick = () => { if (this.running) { this.render(); requestAnimationFrame(tick); } };
    requestAnimationFrame(tick);
  }

  at(time) {
    return this.start + this.delay + time;
  }

  anchor(time) {
    if (this.start === null) this.start = this.ctx.currentTime - time;
  }

  get quiet() {
    return this.ctx.currentTime >= this.soundUntil && !this.waiting.length;
  }

  /** Frames (or skips) before ``next`` have arrived: start the speech that waited for them. */
  reached(next) {
    this.arrived = Math.max(this.arrived, next);
    const ready = this.waiting.filter((w) => w.index < this.arrived);
    this.waiting = this.waiting.filter((w) => w.index >= this.arrived);
    ready.forEach((w) => this.schedule(w.time, w.buffer));
  }

  add(index, time, bitmap) {
    this.anchor(time);
    this.frames.push({ index, time, bitmap });
    const now = this.ctx.currentTime;
    const spare = this.at(time) - now;
    if (spare < 0 && now >= this.soundUntil) this.delay += -spare + MARGIN_S;
    this.slack.push([now, this.at(time) - now]);
    while (this.slack[0][0] < now - SHRINK_WINDOW_S) this.slack.shift();
  }

  /** At rest, give back the delay the last frames did not need (keeping MARGIN_S and MIN_DELAY_S). */
  shrink() {
    const now = this.ctx.currentTime;
    if (!this.quiet || !this.slack.length || this.slack[0][0] > now - SHRINK_WINDOW_S + 0.5) return;
    const spare = Math.min(...this.slack.map(([, s]) => s));
    const cut = Math.min(spare - 2 * MARGIN_S, this.delay - MIN_DELAY_S);
    if (cut <= 0) return;
    this.delay -= cut;
    this.slack = this.slack.map(([t, s]) => [t, s - cut]);
  }

  /** Play ``buffer`` from media time ``time`` (frame ``index``'s slot), once that frame has arrived. */
  play(index, time, buffer) {
    this.waiting.push({ index, time, buffer });
    this.reached(this.arrived);
  }

  schedule(time, buffer) {
    this.anchor(time);
    const now = this.ctx.currentTime;
    if (this.at(time) < now + MARGIN_S) this.delay += now + MARGIN_S - this.at(time);
    const sound = this.ctx.createBufferSource();
    sound.buffer = buffer;
    sound.connect(this.ctx.destination);
    sound.onended = () => {
      if (this.sounds.delete(sound)) stats.audioPlayed += buffer.duration;
    };
    const when = this.at(time);
    sound.start(when);
    this.sounds.add(sound);
    this.soundUntil = Math.max(this.soundUntil, when + buffer.duration);
  }

  silence() {
    this.waiting = [];
    const sounds = [...this.sounds];
    this.sounds.clear();
    sounds.forEach((sound) => sound.stop());
    this.soundUntil = 0;
  }

  render() {
    if (this.start === null) return;
    this.shrink();
    const due = this.ctx.currentTime - this.start - this.delay;
    let pick = -1;
    while (pick + 1 < this.frames.length && this.frames[pick + 1].time <= due) pick += 1;
    if (pick < 0) return;
    const frame = this.frames[pick];
    this.frames.splice(0, pick).forEach((f) => f.bitmap.close());
    this.frames.shift();
    draw(frame.bitmap);
    frame.bitmap.close();
    this.shown = frame.index;
    stats.drawn += 1;
    stats.lastDrawn = frame.index;
  }

  stop() {
    this.running = false;
    this.silence();
    this.frames.forEach((f) => f.bitmap.close());
    this.frames = [];
  }
}

function pcm16ToBuffer(ctx, base64, rate) {
  const bytes = Uint8Array.from(atob(base64), (c) => c.charCodeAt(0));
  const pcm = new Int16Array(bytes.buffer, 0, bytes.length >> 1);
  const buffer = ctx.createBuffer(1, Math.max(pcm.length, 1), rate);
  const out = buffer.getChannelData(0);
  for (let i = 0; i < pcm.length; i++) out[i] = pcm[i] / 32768;
  return buffer;
}

function toPcm16(samples) {
  const out = new Int16Array(samples.length);
  for (let i = 0; i < samples.length; i++) {
    const v = Math.max(-1, Math.min(1, samples[i]));
    out[i] = v < 0 ? v * 32768 : v * 32767;
  }
  return out.buffer;
}

/** (index, media seconds, JPEG bytes) of a WebSocket frame message with its header (frame_header=1). */
function parseFrame(data) {
  const view = new DataView(data);
  if (data.byteLength < HEADER_BYTES || view.getUint32(0, true) !== FRAME_MAGIC) {
    throw new Error("a frame message without its header");
  }
  return [view.getUint32(4, true), view.getFloat64(8, true), new Uint8Array(data, HEADER_BYTES)];
}

// One live session over the WebSocket: each frame carries its index and media time (frame header).
class WsSession extends Session {
  constructor(avatar) {
    super(avatar);
    stats.transport = "ws";
    this.player = new Player(clock());
    this.next = 0;
    this.reopen = false;
    this.localSound = null;
    this.setState("connecting");
    const scheme = location.protocol === "https:" ? "wss" : "ws";
    const path = `/ws/${encodeURIComponent(avatar.name)}?live=1&frame_header=1`;
    this.ws = new WebSocket(`${scheme}://${location.host}${withToken(path)}`);
    this.ws.binaryType = "arraybuffer";
    this.ws.onopen = () => {
      this.setState("rest");  // a live session starts at rest
      status(`Live: ${avatar.name}. Type a sentence, speak, or drop a WAV file.`);
    };
    this.ws.onmessage = (event) => this.receive(event.data);
    this.ws.onclose = (event) => this.closed(event);
  }

  get open() {
    return this.ws.readyState === WebSocket.OPEN;
  }

  async receive(data) {
    if (typeof data === "string") {
      this.control(JSON.parse(data));
      return;
    }
    const [index, time, jpeg] = parseFrame(data);
    this.next = Math.max(this.next, index + 1);
    stats.received += 1;
    this.noteArrival();
    this.player.reached(this.next);
    const bitmap = await createImageBitmap(new Blob([jpeg], { type: "image/jpeg" }));
    if (this.player.running) this.player.add(index, time, bitmap);
    else bitmap.close();
  }

  control(msg) {
    if (msg.type === "skip") {
      this.next = Math.max(this.next, msg.index + 1);
      this.player.reached(this.next);
    } else if (msg.type === "audio") {
      const time = msg.time ?? msg.frame / this.avatar.fps;
      this.player.play(msg.frame, time, pcm16ToBuffer(this.player.ctx, msg.pcm16, msg.sample_rate));
    } else if (msg.type === "state" && msg.state === "speaking" && this.localSound) {
      this.player.play(this.next, this.next / this.avatar.fps, this.localSound);
      this.localSound = null;
    } else if (msg.type === "done") {  // a server without live sessions: one utterance, then a fresh session
      this.reopen = true;
    }
    super.control(msg);
  }

  closed(event) {
    clearInterval(this.timer);
    this.player.stop();
    if (live !== this) return;  // replaced by another avatar's session
    stopMic(false);
    if (this.reopen) live = new WsSession(this.avatar);
    else this.showFailure(event.code, event.reason || this.message);
  }

  showStats() {
    stats.fps = this.arrivalFps();
    stats.latencyMs = Math.round(this.player.delay * 1000);
    const first = stats.firstFrameMs === null ? "" : ` · text to first frame ${stats.firstFrameMs} ms`;
    $("stats").textContent = `${stats.state} · WebSocket · ${stats.fps.toFixed(1)} fps · latency ` +
      `${stats.latencyMs} ms · skipped ${stats.skipped}${first}`;
    $("stats").className = stats.state === "refused" || stats.state === "failed" ? "error" : "";
  }

  send(message) {
    if (this.open) this.ws.send(JSON.stringify(message));
  }

  sendPcm(buffer) {
    if (!this.open) return;
    this.ws.send(buffer);
    stats.sentBytes += buffer.byteLength;
  }

  /** Speak 16 kHz ``pcm`` (float32) as one utterance and play ``sound`` with it from its first frame. */
  speak(pcm, sound) {
    this.localSound = sound;
    for (let i = 0; i < pcm.length; i += 4000) this.sendPcm(toPcm16(pcm.subarray(i, i + 4000)));
    this.endUtterance();
  }

  /** Microphone: its samples as PCM messages (the AudioWorklet resamples to 16 kHz). */
  async startMic(media) {
    const ctx = clock();
    await ctx.audioWorklet.addModule("/static/pcm-worklet.js");
    const source = ctx.createMediaStreamSource(media);
    const node = new AudioWorkletNode(ctx, "pcm-capture");
    const mute = ctx.createGain();
    mute.gain.value = 0;
    source.connect(node).connect(mute).connect(ctx.destination);
    node.port.onmessage = (event) => this.sendPcm(event.data);
    return () => { node.port.onmessage = null; source.disconnect(); };
  }

  interrupt() {
    this.localSound = null;
    this.player.silence();
    super.interrupt();
  }

  close() {
    this.send({ type: "close" });
    this.ws.close();
  }
}

// One live session over WebRTC (WHEP): video and audio arrive as one stream on the <video>, the data
// channel "control" speaks the WebSocket's JSON protocol, the microphone goes out as an audio track.
class RtcSession extends Session {
  constructor(avatar) {
    super(avatar);
    stats.transport = "webrtc";
    this.resource = null;
    this.ended = false;
    this.lastStats = null;
    this.setState("connecting");
    this.connect().catch((err) => this.failed(err));
  }

  get open() {
    return this.channel !== undefined && this.channel.readyState === "open";
  }

  async connect() {
    const response = await fetch(withToken("/ice"));
    if (!response.ok) throw new Error(`GET /ice: ${await errorMessage(response)}`);
    const ice = await response.json();
    const pc = (this.pc = new RTCPeerConnection({
      iceServers: Array.isArray(ice) ? ice : ice.iceServers || [],
      iceTransportPolicy: relayOnly ? "relay" : "all",
    }));
    const video = pc.addTransceiver("video", { direction: "recvonly" });
    this.audio = pc.addTransceiver("audio", { direction: "sendrecv" });  // the microphone replaces its track
    this.lipSync = new LipSync(video.receiver);
    this.channel = pc.createDataChannel("control");
    this.channel.binaryType = "arraybuffer";
    this.channel.onopen = () => {
      this.setState("rest");
      status(`Live (WebRTC): ${this.avatar.name}. Type a sentence, speak, or drop a WAV file.`);
    };
    this.channel.onmessage = (event) => typeof event.data === "string" && this.control(JSON.parse(event.data));
    this.channel.onclose = () => this.closed();
    const stream = new MediaStream();
    pc.ontrack = (event) => {
      stream.addTrack(event.track);
      this.attach(stream);
    };
    pc.onconnectionstatechange = () => {
      if (pc.connectionState === "failed") this.failed(new Error("the WebRTC connection failed"));
    };
    this.connectTimer = setTimeout(() => {
      if (pc.connectionState !== "connected") this.failed(new Error(`no WebRTC connection in ${CONNECT_TIMEOUT_MS / 1000} s`));
    }, CONNECT_TIMEOUT_MS);
    await pc.setLocalDescription(await pc.createOffer());
    await gathered(pc);
    const headers = { "Content-Type": "application/sdp" };
    if (token) headers.Authorization = `Bearer ${token}`;
    const answer = await fetch(`/whep/${encodeURIComponent(this.avatar.name)}?live=1`,
                               { method: "POST", headers, body: pc.localDescription.sdp });
    if (answer.status !== 201) {
      const reason = await errorMessage(answer);
      if (answer.status in HTTP_REFUSALS) {
        this.refused(answer.status, reason);
        return;
      }
      throw new Error(`POST /whep: ${answer.status} ${reason}`);
    }
    this.resource = answer.headers.get("Location");
    if (this.ended) this.release();
    else await pc.setRemoteDescription({ type: "answer", sdp: await answer.text() });
  }

  /** Show the remote stream on the <video> and count its frames as they are presented. */
  attach(stream) {
    const video = $("video");
    if (video.srcObject !== stream) {
      video.srcObject = stream;
      const counted = (now, meta) => {
        if (live !== this) return;
        if (stats.drawn === 0) showView("video");
        stats.drawn += 1;
        stats.lastDrawn = meta.presentedFrames;
        video.requestVideoFrameCallback(counted);
      };
      video.requestVideoFrameCallback(counted);
    }
    video.play().catch(() => {  // autoplay with sound needs a click on some browsers
      video.muted = true;
      video.play();
      notice("Sound is muted by the browser: click the picture to hear it.");
      video.onclick = () => { video.muted = false; notice(null); };
    });
  }

  control(msg) {
    if (msg.type !== "audio") super.control(msg);  // the speech arrives on the audio track
  }

  refused(code, reason) {
    this.ended = true;
    clearTimeout(this.connectTimer);
    this.pc.close();
    clearInterval(this.timer);
    const closeCode = { 401: 1008, 403: 1008, 503: 1013 }[code];
    this.showFailure(closeCode, reason);
  }

  /** WebRTC did not work here: say why and carry on over the WebSocket. */
  failed(err) {
    if (this.ended || live !== this) return;
    this.end();
    if (this.open || stats.state === "rest" || stats.state === "speaking") {  // it worked, then broke
      stats.error = String(err.message || err);
      this.setState("failed");
      status(`Session failed: ${stats.error}`, true);
      return;
    }
    stats.fallback = String(err.message || err);
    live = new WsSession(this.avatar);
    notice(`WebRTC unavailable (${stats.fallback}); using the WebSocket.`);
  }

  closed() {
    if (this.ended || live !== this) return;
    this.end();
    stopMic(false);
    this.showFailure(this.message ? 1011 : 1000, this.message);
  }

  end() {
    this.ended = true;
    clearTimeout(this.connectTimer);
    clearInterval(this.timer);
    if (this.pc) this.pc.close();
    this.release();
  }

  release() {
    if (!this.resource) return;
    const headers = token ? { Authorization: `Bearer ${token}` } : {};
    fetch(this.resource, { method: "DELETE", headers, keepalive: true }).catch(() => {});
    this.resource = null;
  }

  async showStats() {
    if (!this.pc || this.ended) return;
    let report;
    try {
      report = await this.pc.getStats();
    } catch (err) {
      if (this.ended) return;  // closed while asking
      throw err;
    }
    const now = performance.now();
    const rtc = { connection: this.pc.connectionState, framesDecoded: 0, framesDropped: 0, bytes: 0,
                  audioBytes: 0, audioSamples: 0, audioEnergy: 0, jitterMs: null, audioJitterMs: null, rttMs: null,
                  candidateType: null };
    let videoPlayout, audioPlayout, audioBuffer = null;
    const byId = new Map();
    report.forEach((s) => byId.set(s.id, s));
    report.forEach((s) => {
      if (s.type === "inbound-rtp" && s.kind === "video") {
        Object.assign(rtc, { framesDecoded: s.framesDecoded || 0, framesDropped: s.framesDropped || 0 });
        rtc.bytes += s.bytesReceived || 0;
        if (s.jitterBufferEmittedCount) rtc.jitterMs = 1000 * s.jitterBufferDelay / s.jitterBufferEmittedCount;
        videoPlayout = s.estimatedPlayoutTimestamp;
      } else if (s.type === "inbound-rtp" && s.kind === "audio") {
        rtc.bytes += s.bytesReceived || 0;
        Object.assign(rtc, { audioBytes: s.bytesReceived || 0, audioSamples: s.totalSamplesReceived || 0,
                             audioEnergy: s.totalAudioEnergy || 0 });
        if (s.jitterBufferEmittedCount) rtc.audioJitterMs = 1000 * s.jitterBufferDelay / s.jitterBufferEmittedCount;
        audioBuffer = { delay: s.jitterBufferDelay || 0, emitted: s.jitterBufferEmittedCount || 0 };
        audioPlayout = s.estimatedPlayoutTimestamp;
      } else if (s.type === "transport" && s.selectedCandidatePairId) {
        const pair = byId.get(s.selectedCandidatePairId);
        if (pair) {
          rtc.rttMs = pair.currentRoundTripTime === undefined ? null : 1000 * pair.currentRoundTripTime;
          const local = byId.get(pair.localCandidateId);
          rtc.candidateType = local ? local.candidateType : null;
        }
      }
    });
    // estimatedPlayoutTimestamp (audio minus video): the A/V offset as played, a noisy estimate (lipsync.js
    // acts on the median of three)
    rtc.playoutDiffMs = videoPlayout && audioPlayout ? audioPlayout - videoPlayout : null;
    const last = this.lastStats;
    const emitted = audioBuffer && last && last.audioBuffer ? audioBuffer.emitted - last.audioBuffer.emitted : 0;
    const soundDelayMs = emitted > 0 ? 1000 * (audioBuffer.delay - last.audioBuffer.delay) / emitted : null;
    rtc.holdMs = this.lipSync.update(rtc.playoutDiffMs, soundDelayMs);  // ms: the picture held for its sound
    rtc.lipSyncSettled = this.lipSync.settled;
    rtc.lipSyncOff = this.lipSync.off;
    const seconds = last ? (now - last.at) / 1000 : 0;
    rtc.fps = seconds > 0 ? (rtc.framesDecoded - last.framesDecoded) / seconds : 0;
    rtc.kbps = seconds > 0 ? 8 * (rtc.bytes - last.bytes) / seconds / 1000 : 0;
    this.lastStats = { at: now, framesDecoded: rtc.framesDecoded, bytes: rtc.bytes, audioBuffer };
    if (live !== this) return;
    stats.rtc = rtc;
    stats.fps = rtc.fps;
    const ms = (v) => (v === null ? "-" : `${Math.round(v)} ms`);
    const first = stats.firstFrameMs === null ? "" : ` · text to first frame ${stats.firstFrameMs} ms`;
    $("stats").textContent = `${stats.state} · WebRTC ${rtc.connection}${rtc.candidateType ? ` (${rtc.candidateType})` : ""}` +
      ` · ${rtc.fps.toFixed(1)} fps · ${Math.round(rtc.kbps)} kbit/s · jitter buffer ${ms(rtc.jitterMs)}` +
      ` · dropped ${rtc.framesDropped} · round trip ${ms(rtc.rttMs)}` +
      ` · lip sync ${rtc.lipSyncOff ? "off" : `holds ${rtc.holdMs} ms`}` +
      ` · skipped ${stats.skipped}${first}`;
    $("stats").className = stats.state === "refused" || stats.state === "failed" ? "error" : "";
  }

  send(message) {
    if (this.open) this.channel.send(JSON.stringify(message));
  }

  sendPcm(buffer) {
    if (!this.open) return;
    this.channel.send(buffer);
    stats.sentBytes += buffer.byteLength;
  }

  /** Speak 16 kHz ``pcm`` as one utterance: the server plays it back on the audio track, with its frames. */
  speak(pcm) {
    for (let i = 0; i < pcm.length; i += 4000) this.sendPcm(toPcm16(pcm.subarray(i, i + 4000)));
    this.endUtterance();
  }

  /** Microphone: its track replaces the (silent) outgoing audio track; no renegotiation. */
  async startMic(media) {
    await this.audio.sender.replaceTrack(media.getAudioTracks()[0]);
    return () => this.audio.sender.replaceTrack(null);
  }

  close() {
    this.send({ type: "close" });
    this.end();
  }
}

/** Resolves once ``pc`` gathered its ICE candidates (WHEP sends them in the offer), or after 5 s. */
function gathered(pc) {
  if (pc.iceGatheringState === "complete") return Promise.resolve();
  return new Promise((resolve) => {
    const timer = setTimeout(resolve, 5000);
    pc.addEventListener("icegatheringstatechange", () => {
      if (pc.iceGatheringState === "complete") { clearTimeout(timer); resolve(); }
    });
  });
}

async function startMic() {
  if (!live || !live.open || mic) return;
  if (live.saying) {
    notice("The microphone opens once the typed sentence is spoken (or press Stop).");
    return;
  }
  $("mic-start").disabled = true;
  try {
    const media = await navigator.mediaDevices.getUserMedia({
      audio: { channelCount: 1, echoCancellation: true, noiseSuppression: true, autoGainControl: true },
    });
    const session = live;
    const detach = await session.startMic(media);
    mic = {
      session,
      async release() {
        await detach();  // the track's last packets leave before the end that follows them
        media.getTracks().forEach((t) => t.stop());
      },
    };
    $("mic-stop").disabled = false;
    $("stop").disabled = false;
    notice(null);
    status(`Listening: speak, then press "Done speaking".`);
  } catch (err) {
    stats.error = String(err);
    status(`Microphone: ${err.message || err}`, true);
    $("mic-start").disabled = !live || !live.open;
  }
}

/** Stop capturing; ``finish`` ends the utterance (the avatar speaks what it got) once the microphone is
 * detached (a typed sentence still queues until then), otherwise it is dropped. */
function stopMic(finish) {
  if (!mic || mic.stopping) return;
  const current = mic;
  current.stopping = true;
  $("mic-stop").disabled = true;
  const done = () => {
    if (mic === current) mic = null;
    if (finish) current.session.endUtterance();
    if (live) live.setState(stats.state);
    if (finish) current.session.sayNext();
  };
  if (finish) {
    current.release().finally(done);
  } else {
    // the session is going away: nothing waits for the detach, a failed one is only worth a line
    current.release().catch((err) => console.info("microphone detach:", err));
    done();
  }
}

async function playWav(file) {
  if (!live || !live.open) return;
  const session = live;
  try {
    const ctx = clock();
    const decoded = await ctx.decodeAudioData(await file.arrayBuffer());
    const offline = new OfflineAudioContext(1, Math.ceil(decoded.duration * 16000), 16000);
    const resampler = offline.createBufferSource();
    resampler.buffer = decoded;
    resampler.connect(offline.destination);
    resampler.start();
    session.speak((await offline.startRendering()).getChannelData(0), decoded);
    status(`Speaking ${file.name} (${decoded.duration.toFixed(1)} s) on ${session.avatar.name}...`);
  } catch (err) {
    stats.error = String(err);
    status(`${file.name}: ${err.message || err}`, true);
  }
}

function sayText(event) {
  event.preventDefault();
  const text = $("text").value.trim();
  if (!text || !live || !live.open) return;
  clock();
  live.say(text);
}

function stop() {
  stopMic(false);
  if (live) live.interrupt();
}

async function uploadAvatar(event) {
  event.preventDefault();
  const form = event.target;
  const out = $("upload-status");
  out.textContent = "Uploading...";
  const response = await fetch(withToken("/avatars"), { method: "POST", body: new FormData(form) });
  if (!response.ok) {
    out.textContent = await errorMessage(response);
    return;
  }
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buffer += value;
    const lines = buffer.split("\n");
    buffer = lines.pop();
    for (const line of lines.filter(Boolean)) {
      const msg = JSON.parse(line);
      if (msg.type === "progress") out.textContent = `${msg.stage}: ${msg.done} / ${msg.total}`;
      else if (msg.type === "error") out.textContent = msg.message;
      else if (msg.type === "done") {
        out.textContent = `Prepared ${msg.avatar.name}.`;
        await loadAvatars(msg.avatar.name);
      }
    }
  }
}

function setUp() {
  $("avatar").onchange = selectAvatar;
  $("say-form").onsubmit = sayText;
  $("mic-start").onclick = startMic;
  $("mic-stop").onclick = () => stopMic(true);
  $("stop").onclick = stop;
  $("wav").onchange = (e) => e.target.files[0] && playWav(e.target.files[0]);
  const drop = $("drop");
  drop.ondragover = (e) => { e.preventDefault(); drop.classList.add("over"); };
  drop.ondragleave = () => drop.classList.remove("over");
  drop.ondrop = (e) => {
    e.preventDefault();
    drop.classList.remove("over");
    if (e.dataTransfer.files[0]) playWav(e.dataTransfer.files[0]);
  };
  $("upload").onsubmit = uploadAvatar;
  window.addEventListener("pagehide", () => live && live.close());
  loadAvatars().catch((err) => status(`Cannot list avatars: ${err.message}`, true));
}

setUp();
