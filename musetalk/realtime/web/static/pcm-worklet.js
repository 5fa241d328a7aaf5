// AudioWorklet: microphone samples (context rate) -> 16 kHz mono PCM s16le chunks posted to the page.
// Resampling: average over each output sample's input span (a box low-pass), then linear position steps.
class PcmCapture extends AudioWorkletProcessor {
  constructor(options) {
    super();
    this.ratio = sampleRate / 16000;           // input samples per output sample
    this.chunk = (options.processorOptions && options.processorOptions.chunk) || 1600;  // 100 ms
    this.out = new Int16Array(this.chunk);
    this.fill = 0;
    this.pos = 0;                              // fractional input position of the next output sample
    this.acc = 0;
    this.count = 0;
  }

  process(inputs) {
    const input = inputs[0];
    if (!input || input.length === 0) return true;
    const mono = input[0];
    for (let i = 0; i < mono.length; i++) {
      this.acc += mono[i];
      this.count += 1;
      this.pos += 1;
      if (this.pos >= this.ratio) {
        this.pos -= this.ratio;
        const v = Math.max(-1, Math.min(1, this.acc / this.count));
        this.out[this.fill++] = v < 0 ? v * 32768 : v * 32767;
        this.acc = 0;
        this.count = 0;
        if (this.fill === this.chunk) {
          this.port.postMessage(this.out.buffer.slice(0));
          this.fill = 0;
        }
      }
    }
    return true;
  }
}

registerProcessor("pcm-capture", PcmCapture);
