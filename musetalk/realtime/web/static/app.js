// MuseTalk real-time page. Selecting an avatar shows its poster at once and opens one live session
// (/ws/{avatar}?live=1): the avatar stays on screen at rest, and typed text (`say`), the microphone and WAV
// files all speak through that session; Stop interrupts. Frames are drawn on the audio clock (frame i at
// start + delay + i / fps of the AudioContext), and the speech the server sends back for `say` is played
// at its frame's time on the same clock, so sound and picture stay together.
"use strict";

const $ = (id) => document.getElementById(id);
const token = new URLSearchParams(location.search).get("token");
const REFUSALS = { 1008: "policy", 1013: "server full" };

// Counters for people and for the browser test.
const stats = (window.musetalk = {
  state: "idle", received: 0, drawn: 0, lastDrawn: -1, skipped: 0, sentBytes: 0, audioPlayed: 0,
  utterances: 0, utteranceFrames: null, firstFrameMs: null, fps: 0, latencyMs: 0, poster: null,
  refusal: null, error: null,
});
let avatars = [];
let live = null;
let mic = null;
let audioContext = null;

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

function clock() {
  if (!audioContext) audioContext = new AudioContext();
  audioContext.resume();
  return audioContext;
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
  Object.assign(stats, { received: 0, drawn: 0, lastDrawn: -1, skipped: 0, utterances: 0, utteranceFrames: null,
                         firstFrameMs: null, refusal: null, error: null, poster: null });
  live = new LiveSession(avatar);
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

// Frames by index, drawn when the audio clock reaches them. `delay` (how far the picture trails the live
// stream) grows when frames arrive late, but never while speech plays (that would pull them apart). Speech
// to play from frame i waits until frame i (or its skip) has arrived, so it starts with its picture.
class Player {
  constructor(ctx, fps) {
    this.ctx = ctx;
    this.fps = fps;
    this.start = null;
    this.delay = 0.3;
    this.bitmaps = new Map();
    this.shown = -1;
    this.arrived = 0;
    this.waiting = [];
    this.sounds = new Set();
    this.soundUntil = 0;
    this.running = true;
    const tick = () => { if (this.running) { this.render(); requestAnimationFrame(tick); } };
    requestAnimationFrame(tick);
  }

  at(index) {
    return this.start + this.delay + index / this.fps;
  }

  anchor(index) {
    if (this.start === null) this.start = this.ctx.currentTime - index / this.fps;
  }

  /** Frames (or skips) before ``next`` have arrived: start the speech that waited for them. */
  reached(next) {
    this.arrived = next;
    const ready = this.waiting.filter((w) => w.index < next);
    this.waiting = this.waiting.filter((w) => w.index >= next);
    ready.forEach((w) => this.schedule(w.index, w.buffer));
  }

  add(index, bitmap) {
    this.anchor(index);
    this.bitmaps.set(index, bitmap);
    const late = this.ctx.currentTime - this.at(index);
    if (late > 0 && this.ctx.currentTime >= this.soundUntil) this.delay += late + 0.05;
  }

  /** Play ``buffer`` from frame ``index``'s time, once that frame has arrived. */
  play(index, buffer) {
    this.waiting.push({ index, buffer });
    this.reached(this.arrived);
  }

  // Speech that is due already waits for its time when nothing plays (the picture waits too), otherwise
  // joins in at the right offset.
  schedule(index, buffer) {
    this.anchor(index);
    const now = this.ctx.currentTime;
    if (this.at(index) < now + 0.05 && index > this.shown && now >= this.soundUntil) {
      this.delay += now + 0.05 - this.at(index);
    }
    const when = Math.max(this.at(index), now);
    const offset = when - this.at(index);
    if (offset >= buffer.duration) return;
    const sound = this.ctx.createBufferSource();
    sound.buffer = buffer;
    sound.connect(this.ctx.destination);
    sound.onended = () => {
      if (this.sounds.delete(sound)) stats.audioPlayed += buffer.duration - offset;
    };
    sound.start(when, offset);
    this.sounds.add(sound);
    this.soundUntil = Math.max(this.soundUntil, when + buffer.duration - offset);
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
    const due = Math.floor((this.ctx.currentTime - this.start - this.delay) * this.fps);
    let pick = -1;
    for (const index of this.bitmaps.keys()) if (index <= due && index > pick) pick = index;
    if (pick <= this.shown) return;
    draw(this.bitmaps.get(pick));
    for (const index of [...this.bitmaps.keys()]) {
      if (index <= pick) { this.bitmaps.get(index).close(); this.bitmaps.delete(index); }
    }
    this.shown = pick;
    stats.drawn += 1;
    stats.lastDrawn = pick;
  }

  stop() {
    this.running = false;
    this.silence();
    this.bitmaps.forEach((bitmap) => bitmap.close());
    this.bitmaps.clear();
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

// One live session: the frame index is the number of frames plus `skip` messages so far.
class LiveSession {
  constructor(avatar) {
    this.avatar = avatar;
    this.player = new Player(clock(), avatar.fps);
    this.next = 0;
    this.message = null;
    this.sentAt = null;
    this.reopen = false;
    this.localSound = null;
    this.arrivals = [];
    this.setState("connecting");
    const scheme = location.protocol === "https:" ? "wss" : "ws";
    this.ws = new WebSocket(`${scheme}://${location.host}${withToken(`/ws/${encodeURIComponent(avatar.name)}?live=1`)}`);
    this.ws.binaryType = "arraybuffer";
    this.ws.onopen = () => {
      this.setState("rest");  // a live session starts at rest
      status(`Live: ${avatar.name}. Type a sentence, speak, or drop a WAV file.`);
    };
    this.ws.onmessage = (event) => this.receive(event.data);
    this.ws.onclose = (event) => this.closed(event);
    this.timer = setInterval(() => this.showStats(), 500);
  }

  get open() {
    return this.ws.readyState === WebSocket.OPEN;
  }

  setState(state) {
    stats.state = state;
    const speakable = state === "rest" || state === "speaking";
    $("say").disabled = !speakable;
    $("mic-start").disabled = !speakable || mic !== null;
    $("stop").disabled = state !== "speaking" && mic === null;
    this.showStats();
  }

  async receive(data) {
    if (typeof data === "string") {
      this.control(JSON.parse(data));
      return;
    }
    const index = this.next++;
    stats.received += 1;
    this.noteArrival();
    this.player.reached(this.next);
    const bitmap = await createImageBitmap(new Blob([data], { type: "image/jpeg" }));
    if (this.player.running) this.player.add(index, bitmap);
    else bitmap.close();
  }

  control(msg) {
    if (msg.type === "skip") {
      this.next = Math.max(this.next, msg.index + 1);
      stats.skipped = msg.skipped;
      this.player.reached(this.next);
    } else if (msg.type === "audio") {
      this.player.play(msg.frame, pcm16ToBuffer(this.player.ctx, msg.pcm16, msg.sample_rate));
    } else if (msg.type === "state") {
      if (msg.state === "speaking" && this.sentAt !== null) {  // in order: just before the first speech frame
        stats.firstFrameMs = Math.round(performance.now() - this.sentAt);
        this.sentAt = null;
      }
      if (msg.state === "speaking" && this.localSound) {
        this.player.play(this.next, this.localSound);
        this.localSound = null;
      }
      this.setState(msg.state);
    } else if (msg.type === "utterance_done") {
      stats.utterances += 1;
      stats.utteranceFrames = msg.frames;
    } else if (msg.type === "done") {  // a server without live sessions: one utterance, then a fresh session
      stats.utterances += 1;
      stats.utteranceFrames = msg.frames;
      this.reopen = true;
    } else if (msg.type === "error") {
      this.message = msg.message;
      stats.error = msg.message;
    }
  }

  closed(event) {
    clearInterval(this.timer);
    this.player.stop();
    if (live !== this) return;  // replaced by another avatar's session
    stopMic(false);
    const reason = event.reason || this.message;
    if (this.reopen) {
      live = new LiveSession(this.avatar);
    } else if (event.code in REFUSALS) {
      stats.refusal = reason || REFUSALS[event.code];
      this.setState("refused");
      status(`Refused (${REFUSALS[event.code]}): ${stats.refusal}`, true);
    } else if (event.code === 1011 || this.message) {
      stats.error = reason || `session failed (${event.code})`;
      this.setState("failed");
      status(`Session failed: ${stats.error}`, true);
    } else {
      this.setState("closed");
      status(`Session closed (${event.code}); select an avatar to start again.`);
    }
  }

  noteArrival() {
    const now = performance.now();
    this.arrivals.push(now);
    while (this.arrivals[0] < now - 2000) this.arrivals.shift();
  }

  showStats() {
    const span = this.arrivals.length > 1 ? (this.arrivals.at(-1) - this.arrivals[0]) / 1000 : 0;
    stats.fps = span > 0 ? (this.arrivals.length - 1) / span : 0;
    stats.latencyMs = Math.round(this.player.delay * 1000);
    const first = stats.firstFrameMs === null ? "" : ` · text to first frame ${stats.firstFrameMs} ms`;
    $("stats").textContent = `${stats.state} · ${stats.fps.toFixed(1)} fps · latency ${stats.latencyMs} ms · ` +
      `skipped ${stats.skipped}${first}`;
    $("stats").className = stats.state === "refused" || stats.state === "failed" ? "error" : "";
  }

  send(message) {
    if (this.open) this.ws.send(JSON.stringify(message));
  }

  say(text) {
    this.sentAt = performance.now();
    this.send({ type: "say", text });
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
    this.send({ type: "end" });
  }

  interrupt() {
    this.localSound = null;
    this.player.silence();
    this.send({ type: "interrupt" });
  }

  close() {
    this.send({ type: "close" });
    this.ws.close();
  }
}

async function startMic() {
  if (!live || !live.open || mic) return;
  $("mic-start").disabled = true;
  try {
    const ctx = clock();
    const media = await navigator.mediaDevices.getUserMedia({
      audio: { channelCount: 1, echoCancellation: false, noiseSuppression: false, autoGainControl: false },
    });
    await ctx.audioWorklet.addModule("/static/pcm-worklet.js");
    const source = ctx.createMediaStreamSource(media);
    const node = new AudioWorkletNode(ctx, "pcm-capture");
    const mute = ctx.createGain();
    mute.gain.value = 0;
    source.connect(node).connect(mute).connect(ctx.destination);
    const session = live;
    node.port.onmessage = (event) => session.sendPcm(event.data);
    mic = { session, release() { node.port.onmessage = null; source.disconnect(); media.getTracks().forEach((t) => t.stop()); } };
    $("mic-stop").disabled = false;
    $("stop").disabled = false;
    status(`Listening: speak, then press "Done speaking".`);
  } catch (err) {
    stats.error = String(err);
    status(`Microphone: ${err.message || err}`, true);
    $("mic-start").disabled = !live || !live.open;
  }
}

/** Stop capturing; ``finish`` ends the utterance (the avatar speaks what it got), otherwise it is dropped. */
function stopMic(finish) {
  if (!mic) return;
  mic.release();
  if (finish) mic.session.send({ type: "end" });
  mic = null;
  $("mic-stop").disabled = true;
  if (live) live.setState(stats.state);
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
  status(`Saying: ${text.length > 60 ? text.slice(0, 57) + "..." : text}`);
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
