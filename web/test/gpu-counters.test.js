// gpu-counters.js in Node, on stand-in WebGPU classes: what each wrapped call adds, and the per-step means of a turn's
// decode steps (the first pass, the prefill, left out).
import assert from "node:assert/strict";
import { test } from "node:test";
import { createStepMeter, gpuCounts, installGpuCounters } from "../src/gpu-counters.js";

class GPUDevice {
  createBuffer(descriptor) {
    return { size: descriptor.size };
  }
}
class GPUQueue {
  submit() {}
  writeBuffer() {}
  writeTexture() {}
}
class GPUComputePassEncoder {
  dispatchWorkgroups() {}
  dispatchWorkgroupsIndirect() {}
}
class GPUBuffer {
  constructor(size) {
    this.size = size;
  }
  async mapAsync() {}
}
const scope = { GPUDevice, GPUQueue, GPUComputePassEncoder, GPUBuffer, GPUMapMode: { READ: 1, WRITE: 2 } };

test("no WebGPU: nothing is wrapped and the meter reports nothing", () => {
  assert.equal(installGpuCounters({}), false);
  assert.equal(gpuCounts(), null);
  const meter = createStepMeter();
  meter.begin();
  meter.end();
  assert.equal(meter.summary(), null);
});

test("each call is counted, and a turn's decode steps are averaged without its prefill", async () => {
  assert.equal(installGpuCounters(scope), true);
  const device = new GPUDevice();
  const queue = new GPUQueue();
  const pass = new GPUComputePassEncoder();
  const meter = createStepMeter();
  /** One forward pass: `buffers` created, `dispatches` dispatched, one submit, a 64-byte write, one 1 kB readback. */
  const step = async (buffers, dispatches) => {
    meter.begin();
    for (let i = 0; i < buffers; i++) device.createBuffer({ size: 16 });
    for (let i = 0; i < dispatches; i++) pass.dispatchWorkgroups(1);
    queue.writeBuffer({}, 0, new Float32Array(16));
    queue.writeBuffer({}, 0, new Uint8Array(100), 10, 20); // 20 bytes from the 11th
    queue.submit([]);
    await new GPUBuffer(1024).mapAsync(1);
    await new GPUBuffer(512).mapAsync(2); // a write mapping is no readback
    meter.end();
  };
  await step(40, 300); // the prefill
  await step(2, 30);
  await step(4, 34);
  const gpu = meter.summary();
  assert.deepEqual({ ...gpu, encode_ms_per_step: null }, {
    buffers_per_step: 3,
    submits_per_step: 1,
    dispatches_per_step: 32,
    readbacks_per_step: 1,
    readback_bytes_per_step: 1024,
    writes_per_step: 2,
    write_bytes_per_step: 84,
    encode_ms_per_step: null,
    steps: 2,
  });
  assert.ok(gpu.encode_ms_per_step >= 0);
  assert.equal(meter.steps.length, 3);
  assert.equal(gpuCounts().buffers, 46);
});
