// Counts what a decode step asks of the WebGPU API, on any adapter (SwiftShader included): GPU buffers created,
// queue submits, compute dispatches, GPU→CPU readbacks (mapAsync for reading) and CPU→GPU writes, with their bytes,
// and when the last submit happened. On a real GPU these calls, not the arithmetic, are most of a small model's
// token (docs/architecture.md, "The WebGPU decode loop"); their counts are the same on every adapter, so CI can
// assert them where no GPU is lent.
//
// The wrapper patches the WebGPU prototypes once, in the worker, before ONNX Runtime creates its device: every
// device, queue and pass encoder created afterwards (or before) goes through it. Each wrapped call adds one to a
// number and reads performance.now() on submit, which costs nothing next to the call itself.

/**
 * Running totals since install.
 * @typedef {Object} GpuCounts
 * @property {number} buffers         GPUDevice.createBuffer calls
 * @property {number} submits         GPUQueue.submit calls
 * @property {number} dispatches      dispatchWorkgroups + dispatchWorkgroupsIndirect
 * @property {number} readbacks       GPUBuffer.mapAsync with MAP_READ
 * @property {number} readback_bytes  the bytes those map
 * @property {number} writes          GPUQueue.writeBuffer + writeTexture
 * @property {number} write_bytes     the bytes those write
 * @property {number} last_submit_ms  performance.now() at the latest submit
 */

/**
 * The per-step means of a turn's decode steps (the prefill pass left out), as the metrics' `gpu` object.
 * @typedef {Object} GpuStepMetrics
 * @property {number} buffers_per_step
 * @property {number} submits_per_step
 * @property {number} dispatches_per_step
 * @property {number} readbacks_per_step
 * @property {number} readback_bytes_per_step
 * @property {number} writes_per_step
 * @property {number} write_bytes_per_step
 * @property {number|null} encode_ms_per_step  CPU time from a step's start to its last submit (null: no submit)
 * @property {number} steps  decode steps counted
 */

const COUNTED = ["buffers", "submits", "dispatches", "readbacks", "readback_bytes", "writes", "write_bytes"];

/** @type {GpuCounts|null} */
let counts = null;

/** The totals so far (null where the counters are not installed). */
export function gpuCounts() {
  return counts ? { ...counts } : null;
}

/** Byte length of writeBuffer's data argument between its optional offset and size (in elements for typed arrays). */
function writeBytes(data, dataOffset = 0, size) {
  const element = data?.BYTES_PER_ELEMENT ?? 1;
  const total = data?.byteLength ?? 0;
  if (size !== undefined) return size * element;
  return Math.max(0, total - dataOffset * element);
}

/**
 * Wraps the WebGPU prototypes of `scope` (the worker's global) once; returns false where there is no WebGPU.
 * @param {typeof globalThis} [scope]
 */
export function installGpuCounters(scope = globalThis) {
  if (counts) return true;
  const { GPUDevice, GPUQueue, GPUComputePassEncoder, GPUBuffer, GPUMapMode } = scope;
  if (!GPUDevice || !GPUQueue || !GPUComputePassEncoder || !GPUBuffer) return false;
  counts = { last_submit_ms: 0 };
  for (const key of COUNTED) counts[key] = 0;
  const c = counts;
  const wrap = (proto, name, before) => {
    const original = proto[name];
    if (typeof original !== "function") return;
    proto[name] = function counted(...args) {
      before.apply(this, args);
      return original.apply(this, args);
    };
  };
  wrap(GPUDevice.prototype, "createBuffer", () => c.buffers++);
  wrap(GPUQueue.prototype, "submit", () => {
    c.submits++;
    c.last_submit_ms = performance.now();
  });
  wrap(GPUQueue.prototype, "writeBuffer", (_buffer, _offset, data, dataOffset, size) => {
    c.writes++;
    c.write_bytes += writeBytes(data, dataOffset, size);
  });
  wrap(GPUQueue.prototype, "writeTexture", (_destination, data) => {
    c.writes++;
    c.write_bytes += data?.byteLength ?? 0;
  });
  wrap(GPUComputePassEncoder.prototype, "dispatchWorkgroups", () => c.dispatches++);
  wrap(GPUComputePassEncoder.prototype, "dispatchWorkgroupsIndirect", () => c.dispatches++);
  const READ = GPUMapMode?.READ ?? 1;
  wrap(GPUBuffer.prototype, "mapAsync", function (mode, offset = 0, size) {
    if (!(mode & READ)) return;
    c.readbacks++;
    c.readback_bytes += size ?? Math.max(0, this.size - offset);
  });
  return true;
}

/**
 * Per-step deltas of the counters over one turn: `begin()` before a forward pass, `end()` after it; `summary()`
 * averages the steps after the first (the prefill) and returns null where the counters are not installed or the
 * turn had no decode step.
 */
export function createStepMeter() {
  /** @type {Array<Record<string, number>>} */
  const steps = [];
  let start = null;
  return {
    begin() {
      if (!counts) return;
      start = { ...counts, t: performance.now() };
    },
    end() {
      if (!counts || !start) return;
      const step = {};
      for (const key of COUNTED) step[key] = counts[key] - start[key];
      step.encode_ms = step.submits > 0 ? counts.last_submit_ms - start.t : null;
      steps.push(step);
      start = null;
    },
    /** The steps recorded so far, each {buffers, submits, …, encode_ms} (tests and the bench read them). */
    get steps() {
      return steps.slice();
    },
    /** @returns {GpuStepMetrics|null} */
    summary() {
      const decode = steps.slice(1);
      if (!counts || decode.length === 0) return null;
      const mean = (key) => decode.reduce((sum, s) => sum + s[key], 0) / decode.length;
      const out = {};
      for (const key of COUNTED) out[`${key}_per_step`] = round(mean(key));
      const timed = decode.filter((s) => s.encode_ms !== null);
      out.encode_ms_per_step = timed.length
        ? round(timed.reduce((sum, s) => sum + s.encode_ms, 0) / timed.length)
        : null;
      out.steps = decode.length;
      return out;
    },
  };
}

const round = (x) => Number(x.toFixed(3));
