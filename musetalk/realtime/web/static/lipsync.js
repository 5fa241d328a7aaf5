// Lip sync for the WebRTC page: holds the picture back by as much as its sound plays behind it.
//
// The server stamps both tracks from one media clock and its RTCP sender reports pair each with the time it
// was sent, so the browser knows which sound goes with which picture: getStats()' estimatedPlayoutTimestamp
// gives, for each track, the sender's time of the media playing now. A browser's own synchroniser should
// bring the two together; headless Chromium's leaves the sound 35-40 ms behind its picture (docs/webrtc.md,
// One clock). LipSync closes the gap with the knob a page has, the video receiver's jitterBufferTarget:
// raised while the sound is behind, lowered while it is ahead. It never holds the sound (an audio jitter
// buffer grows at once but shrinks over many seconds), and it gives up for good once the browser answers a
// raise by delaying the sound as much: two synchronisers pulling against each other only add delay.
"use strict";

const LIPSYNC_SAMPLES = 3;  // estimates (one per getStats() poll) whose median decides a step
const LIPSYNC_SETTLING = 4;  // estimates ignored after a step: a jitter buffer moves to its new target gradually
const LIPSYNC_DEAD_BAND_MS = 20;  // a median offset this small is left alone: the estimates' own noise
const LIPSYNC_MOST_STEP_MS = 100;  // the largest change of the hold in one step
const LIPSYNC_MOST_HOLD_MS = 400;  // the picture is never held longer than this
const LIPSYNC_STALE_MS = 1000;  // an offset beyond this is a stale estimate (a track that stalled): ignored
const LIPSYNC_ANSWERED = 0.5;  // the sound's delay rising by this part of a raise (or 20 ms) means: answered

function median(values) {
  const sorted = values.slice().sort((a, b) => a - b);
  return sorted[Math.floor(sorted.length / 2)];
}

class LipSync {
  /** ``video``: the RTCRtpReceiver of the remote video (its jitterBufferTarget is set, in ms). */
  constructor(video) {
    this.video = video;
    this.holdMs = 0;  // the picture is held this long for its sound
    this.settled = false;  // the last decision changed nothing: the sound with its picture, or a bound reached
    this.off = false;  // given up: the browser answered a raise by delaying the sound
    this.offsets = [];
    this.soundDelays = [];
    this.ignore = 0;  // estimates still to ignore after the last step
    this.raise = null;  // the last raise: {by, soundDelayMs} (the sound's delay just before it)
  }

  /** One poll: ``offsetMs``, the A/V offset as played (audio minus video estimatedPlayoutTimestamp; negative:
   * the sound is behind), and ``soundDelayMs``, the audio jitter buffer's delay over the last poll (both
   * ms, or null). Returns the hold now asked of the picture (ms). */
  update(offsetMs, soundDelayMs) {
    if (this.off) return this.holdMs;
    if (offsetMs === null || offsetMs === undefined || Math.abs(offsetMs) > LIPSYNC_STALE_MS) return this.holdMs;
    if (this.ignore > 0) {
      this.ignore -= 1;
      return this.holdMs;
    }
    this.offsets.push(offsetMs);
    if (soundDelayMs !== null && soundDelayMs !== undefined) this.soundDelays.push(soundDelayMs);
    if (this.offsets.length < LIPSYNC_SAMPLES) return this.holdMs;
    const offset = median(this.offsets);
    const soundDelay = this.soundDelays.length ? median(this.soundDelays) : null;
    this.offsets = [];
    this.soundDelays = [];
    if (this.answered(soundDelay)) return this.giveUp(soundDelay);
    this.raise = null;  // a raise is judged by the one decision after it
    const step = Math.max(-LIPSYNC_MOST_STEP_MS, Math.min(LIPSYNC_MOST_STEP_MS, -offset));
    const hold = Math.round(Math.max(0, Math.min(LIPSYNC_MOST_HOLD_MS, this.holdMs + step)));
    this.settled = Math.abs(offset) < LIPSYNC_DEAD_BAND_MS || hold === this.holdMs;
    if (this.settled || !("jitterBufferTarget" in this.video)) return this.holdMs;
    if (hold > this.holdMs && soundDelay !== null) this.raise = { by: hold - this.holdMs, soundDelayMs: soundDelay };
    this.video.jitterBufferTarget = this.holdMs = hold;
    this.ignore = LIPSYNC_SETTLING;
    console.info(`lip sync: the sound plays ${Math.round(-offset)} ms behind its picture; the picture held ${hold} ms`);
    return this.holdMs;
  }

  /** Whether the sound's delay rose with the last raise (the browser's synchroniser pulling back). */
  answered(soundDelayMs) {
    if (!this.raise || soundDelayMs === null) return false;
    const rise = soundDelayMs - this.raise.soundDelayMs;
    return rise > Math.max(20, LIPSYNC_ANSWERED * this.raise.by);
  }

  giveUp(soundDelayMs) {
    console.warn(`lip sync off: the browser delayed the sound from ${Math.round(this.raise.soundDelayMs)} to ` +
                 `${Math.round(soundDelayMs)} ms as the picture was held ${this.raise.by} ms more`);
    this.off = this.settled = true;
    this.video.jitterBufferTarget = this.holdMs = 0;
    return 0;
  }
}
