// Audio helpers: level meters on the microphone and on the received track, and a silent
// stand-in track for when no microphone is available (the call keeps its audio m-line).

/**
 * Measures the level of a MediaStream with an AnalyserNode (never connected to the speakers).
 * `onLevel(rms, db)` is called on every animation frame; `onRise()` when the signal becomes
 * audible after at least `quietMs` below the threshold. `peakRms` is the loudest RMS seen.
 */
export class LevelMeter {
  constructor(context, stream, { onLevel, onRise, thresholdDb = -50, quietMs = 250 } = {}) {
    this.source = context.createMediaStreamSource(stream);
    this.analyser = context.createAnalyser();
    this.analyser.fftSize = 1024;
    this.analyser.smoothingTimeConstant = 0;
    this.source.connect(this.analyser);
    this.buffer = new Float32Array(this.analyser.fftSize);
    this.onLevel = onLevel;
    this.onRise = onRise;
    this.thresholdDb = thresholdDb;
    this.quietMs = quietMs;
    this.quietSince = performance.now();
    this.loud = false;
    this.peakRms = 0;
    this.stopped = false;
    this.timer = setInterval(() => this._tick(), 33); // steady even when the tab repaints rarely
  }

  _tick() {
    if (this.stopped) return;
    this.analyser.getFloatTimeDomainData(this.buffer);
    let sum = 0;
    for (const x of this.buffer) sum += x * x;
    const rms = Math.sqrt(sum / this.buffer.length);
    const db = rms > 0 ? 20 * Math.log10(rms) : -Infinity;
    const t = performance.now();
    if (rms > this.peakRms) this.peakRms = rms;
    if (db >= this.thresholdDb) {
      if (!this.loud && t - this.quietSince >= this.quietMs) this.onRise?.(t);
      this.loud = true;
    } else {
      if (this.loud) this.quietSince = t;
      this.loud = false;
    }
    this.onLevel?.(rms, db, t);
  }

  stop() {
    this.stopped = true;
    clearInterval(this.timer);
    try { this.source.disconnect(); } catch { /* already disconnected */ }
  }
}

/** Show a level on a `.meter` element: width from -60 dBFS (empty) to 0 dBFS (full). */
export function showLevel(meter, db) {
  const fraction = Number.isFinite(db) ? Math.min(1, Math.max(0, (db + 60) / 60)) : 0;
  meter.firstElementChild.style.setProperty('width', `${(fraction * 100).toFixed(1)}%`);
  meter.dataset.db = Number.isFinite(db) ? db.toFixed(1) : '-inf';
}

/** A silent audio track, so a call without a microphone still offers a sendrecv audio m-line. */
export function silentTrack(context) {
  const destination = context.createMediaStreamDestination();
  const stream = destination.stream;
  return { stream, track: stream.getAudioTracks()[0] };
}
