// Lip sync for the WebRTC page: holds the picture back by as much as its sound plays behind it.
//
// The server stamps both tracks from one media clock and its RTCP sender reports pair each with the time it
// was sent, so the browser knows which sound goes with which picture: getStats()' estimatedPlayoutTimestamp
// gives, for each track, the sender's time of the media playing now. A browser's own synchroniser should
// bring the two together; headless Chromium's leaves the sound 50-80 ms behind its picture (docs/webrtc.md,
// One clock). LipSync closes the gap with the knob a page has, the video receiver's jitterBufferTarget:
// raised while the sound is behind, lowered while it is ahead. The sound itself is never held: an audio
// jitter buffer grows at once but shrinks over many seconds, so holding it would ratchet both delays up.
"use strict";

const LIPSYNC_SAMPLES = 3;  // estimates (one per getStats() poll) whose median decides a step
const LIPSYNC_SETTLING = 4;  // estimates ignored after a step: a jitter buffer moves to its new target gradually
const LIPSYNC_DEAD_BAND_MS = 20;  // a median offset this small is left alone: the estimates' own noise
const LIPSYNC_MOST_STEP_MS = 100;  // the largest change of the hold in one step
const LIPSYNC_MOST_HOLD_MS = 400;  // the picture is never held longer than this
const LIPSYNC_STALE_MS = 1000;  // an offset beyond this is a stale estimate (a track that stalled): ignored

class LipSync {
  /** ``video``: the RTCRtpReceiver of the remote video (its jitterBufferTarget is set, in ms). */
  constructor(video) {
    this.video = video;
    this.holdMs = 0;  // the picture is held this long for its sound
    this.settled = false;  // the last step found the sound with its picture (within the dead band)
    this.offsets = [];
    this.ignore = 0;  // estimates still to ignore after the last step
  }

  /** One estimate of the A/V offset as played: audio minus video estimatedPlayoutTimestamp (ms;
   * negative: the sound is behind), or null. Returns the hold now asked of the picture (ms). */
  update(offsetMs) {
    if (offsetMs === null || offsetMs === undefined || Math.abs(offsetMs) > LIPSYNC_STALE_MS) return this.holdMs;
    if (this.ignore > 0) {
      this.ignore -= 1;
      return this.holdMs;
    }
    this.offsets.push(offsetMs);
    if (this.offsets.length < LIPSYNC_SAMPLES) return this.holdMs;
    const sorted = this.offsets.slice().sort((a, b) => a - b);
    const median = sorted[Math.floor(sorted.length / 2)];
    this.offsets = [];
    const step = Math.max(-LIPSYNC_MOST_STEP_MS, Math.min(LIPSYNC_MOST_STEP_MS, -median));
    const hold = Math.round(Math.max(0, Math.min(LIPSYNC_MOST_HOLD_MS, this.holdMs + step)));
    this.settled = Math.abs(median) < LIPSYNC_DEAD_BAND_MS || hold === this.holdMs;
    if (this.settled || !("jitterBufferTarget" in this.video)) return this.holdMs;
    this.video.jitterBufferTarget = this.holdMs = hold;
    this.ignore = LIPSYNC_SETTLING;
    console.info(`lip sync: the sound plays ${Math.round(-median)} ms behind its picture; the picture held ${hold} ms`);
    return this.holdMs;
  }
}
