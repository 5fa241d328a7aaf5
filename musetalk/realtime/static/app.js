// MuseTalk real-time page: stream microphone or WAV audio to /ws/{avatar} as 16 kHz PCM s16le and draw
// the JPEG frames that come back on a canvas, each at its time on the audio clock (frame i at i / fps).
"use strict";

const $ = (id) => document.getElementById(id);
// Counters for people and for the browser test.
const stats = (window.musetalk = { received: 0, drawn: 0, lastDrawn: -1, sentBytes: 0, done: false, frames: null, error: null });
let avatars = [];
let current = null;

function status(text, isError = false) {
  const el = $("status");
  el.textContent = text;
  el.className = isError ? "error" : "";
}

async function loadAvatars(select) {
  avatars = await (await fetch("/avatars")).json();
  const menu = $("avatar");
  menu.replaceChildren(...avatars.map((a) => new Option(`${a.name} (${a.num_frames} frames, ${a.fps} fps)`, a.name)));
  if (select) menu.value = select;
  status(avatars.length ? "Ready: speak or drop a WAV file." : "No avatars yet: prepare one below.");
}

function selectedAvatar() {
  return avatars.find((a) => a.name === $("avatar").value);
}

// Frames by index, drawn when the audio clock reaches them; `start` is the AudioContext time of audio t = 0
// and `delay` how far the picture may trail the sound (grown when frames arrive late, live input only).
class Player {
  constructor(ctx, fps, adaptive) {
    this.ctx = ctx;
    this.fps = fps;
    this.adaptive = adaptive;
    this.start = null;
    this.delay = adaptive ? 0.6 : 0;
    this.bitmaps = new Map();
    this.shown = -1;
    this.onFirst = null;
    this.g = $("view").getContext("2d");
    this.running = true;
    const tick = () => { if (this.running) { this.render(); requestAnimationFrame(tick); } };
    requestAnimationFrame(tick);
  }

  clock() {
    return this.ctx.currentTime - this.start - this.delay;
  }

  add(index, bitmap) {
    this.bitmaps.set(index, bitmap);
    if (index === 0 && this.onFirst) this.onFirst();
    if (this.adaptive && this.start !== null) {
      const late = this.clock() - index / this.fps;
      if (late > 0) this.delay += late + 0.05;
    }
  }

  render() {
    if (this.start === null) return;
    const due = Math.floor(this.clock() * this.fps);
    let pick = -1;
    for (const index of this.bitmaps.keys()) if (index <= due && index > pick) pick = index;
    if (pick <= this.shown) return;
    const bitmap = this.bitmaps.get(pick);
    const canvas = this.g.canvas;
    if (canvas.width !== bitmap.width || canvas.height !== bitmap.height) {
      canvas.width = bitmap.width;
      canvas.height = bitmap.height;
    }
    this.g.drawImage(bitmap, 0, 0);
    for (const index of [...this.bitmaps.keys()]) {
      if (index <= pick) { this.bitmaps.get(index).close(); this.bitmaps.delete(index); }
    }
    this.shown = pick;
    stats.drawn += 1;
    stats.lastDrawn = pick;
  }
}

function openSocket(name, player, onDone) {
  const scheme = location.protocol === "https:" ? "wss" : "ws";
  const ws = new WebSocket(`${scheme}://${location.host}/ws/${encodeURIComponent(name)}`);
  ws.binaryType = "arraybuffer";
  let received = 0;
  ws.onmessage = async (event) => {
    if (typeof event.data === "string") {
      const msg = JSON.parse(event.data);
      if (msg.type === "done") {
        stats.done = true;
        stats.frames = msg.frames;
        status(`Done: ${msg.frames} frames.`);
        onDone();
      } else if (msg.type === "error") {
        stats.error = msg.message;
        status(msg.message, true);
        onDone();
      }
      return;
    }
    const index = received++;
    stats.received += 1;
    player.add(index, await createImageBitmap(new Blob([event.data], { type: "image/jpeg" })));
  };
  ws.onclose = () => { if (!stats.done && !stats.error) onDone(); };
  return new Promise((resolve, reject) => {
    ws.onopen = () => resolve(ws);
    ws.onerror = () => reject(new Error("cannot connect to the server"));
  });
}

function toPcm16(samples) {
  const out = new Int16Array(samples.length);
  for (let i = 0; i < samples.length; i++) {
    const v = Math.max(-1, Math.min(1, samples[i]));
    out[i] = v < 0 ? v * 32768 : v * 32767;
  }
  return out.buffer;
}

function resetStats() {
  Object.assign(stats, { received: 0, drawn: 0, lastDrawn: -1, sentBytes: 0, done: false, frames: null, error: null });
}

function finish() {
  if (current) current.release();
  current = null;
  $("mic-start").disabled = false;
  $("mic-stop").disabled = true;
}

async function startMic() {
  const avatar = selectedAvatar();
  if (!avatar || current) return;
  resetStats();
  $("mic-start").disabled = true;
  try {
    const ctx = new AudioContext();
    await ctx.resume();
    const media = await navigator.mediaDevices.getUserMedia({
      audio: { channelCount: 1, echoCancellation: false, noiseSuppression: false, autoGainControl: false },
    });
    await ctx.audioWorklet.addModule("/static/pcm-worklet.js");
    const player = new Player(ctx, avatar.fps, true);
    const ws = await openSocket(avatar.name, player, () => setTimeout(() => { player.running = false; }, 5000));
    const source = ctx.createMediaStreamSource(media);
    const node = new AudioWorkletNode(ctx, "pcm-capture");
    const mute = ctx.createGain();
    mute.gain.value = 0;
    source.connect(node).connect(mute).connect(ctx.destination);
    player.start = ctx.currentTime;
    node.port.onmessage = (event) => {
      if (ws.readyState === WebSocket.OPEN) { ws.send(event.data); stats.sentBytes += event.data.byteLength; }
    };
    current = {
      stop() {
        node.port.onmessage = null;
        source.disconnect();
        media.getTracks().forEach((t) => t.stop());
        if (ws.readyState === WebSocket.OPEN) ws.send(JSON.stringify({ type: "end" }));
        finish();
      },
      release() {},
    };
    $("mic-stop").disabled = false;
    status(`Listening: speak, then press Stop (avatar ${avatar.name}).`);
  } catch (err) {
    stats.error = String(err);
    status(`Microphone: ${err.message || err}`, true);
    finish();
  }
}

async function playWav(file) {
  const avatar = selectedAvatar();
  if (!avatar || current) return;
  resetStats();
  current = { stop() {}, release() {} };
  try {
    const ctx = new AudioContext();
    await ctx.resume();
    const decoded = await ctx.decodeAudioData(await file.arrayBuffer());
    const offline = new OfflineAudioContext(1, Math.ceil(decoded.duration * 16000), 16000);
    const resampler = offline.createBufferSource();
    resampler.buffer = decoded;
    resampler.connect(offline.destination);
    resampler.start();
    const pcm = (await offline.startRendering()).getChannelData(0);
    const player = new Player(ctx, avatar.fps, false);
    player.onFirst = () => {
      const when = ctx.currentTime + 0.3;
      const sound = ctx.createBufferSource();
      sound.buffer = decoded;
      sound.connect(ctx.destination);
      sound.start(when);
      player.start = when;
    };
    const ws = await openSocket(avatar.name, player, () => finish());
    for (let i = 0; i < pcm.length; i += 4000) {
      const chunk = toPcm16(pcm.subarray(i, i + 4000));
      ws.send(chunk);
      stats.sentBytes += chunk.byteLength;
    }
    ws.send(JSON.stringify({ type: "end" }));
    status(`Playing ${file.name} (${decoded.duration.toFixed(1)} s) on ${avatar.name}...`);
  } catch (err) {
    stats.error = String(err);
    status(`${file.name}: ${err.message || err}`, true);
    finish();
  }
}

async function uploadAvatar(event) {
  event.preventDefault();
  const form = event.target;
  const out = $("upload-status");
  out.textContent = "Uploading...";
  const response = await fetch("/avatars", { method: "POST", body: new FormData(form) });
  if (!response.ok) {
    out.textContent = (await response.json()).message;
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
  $("mic-start").onclick = startMic;
  $("mic-stop").onclick = () => current && current.stop();
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
  loadAvatars().catch((err) => status(`Cannot list avatars: ${err.message}`, true));
}

setUp();
