"""Probe ORT's WebGPU EP on this machine: devices, and MatMulNBits with uint8 vs float zero points (speed, error).

Decode-shaped: one token (M=1) against a K×N 4-bit weight, the matmul that dominates LLM decode on a GPU.
"""

import sys
import time

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper


def matmulnbits_model(k: int, n: int, block: int, zp_kind: str, dtype=TensorProto.FLOAT) -> onnx.ModelProto:
    rng = np.random.default_rng(0)
    blocks = k // block
    packed = rng.integers(0, 256, size=(n, blocks, block // 2), dtype=np.uint8)
    np_dtype = np.float16 if dtype == TensorProto.FLOAT16 else np.float32
    scales = (rng.random(n * blocks, dtype=np.float32) * 0.02).astype(np_dtype)
    inits = [
        helper.make_tensor("B", TensorProto.UINT8, packed.shape, packed.tobytes(), raw=True),
        helper.make_tensor("scales", dtype, scales.shape, scales.tobytes(), raw=True),
    ]
    inputs = ["A", "B", "scales"]
    if zp_kind == "uint8":
        zp = rng.integers(0, 256, size=(n, (blocks + 1) // 2), dtype=np.uint8)
        inits.append(helper.make_tensor("zp", TensorProto.UINT8, zp.shape, zp.tobytes(), raw=True))
        inputs.append("zp")
    elif zp_kind == "float":
        zp = (rng.random(n * blocks, dtype=np.float32) * 15).astype(np_dtype)
        inits.append(helper.make_tensor("zp", dtype, zp.shape, zp.tobytes(), raw=True))
        inputs.append("zp")
    node = helper.make_node("MatMulNBits", inputs, ["Y"], domain="com.microsoft", K=k, N=n, bits=4, block_size=block)
    graph = helper.make_graph(
        [node],
        "g",
        [helper.make_tensor_value_info("A", dtype, [1, k])],
        [helper.make_tensor_value_info("Y", dtype, [1, n])],
        inits,
    )
    return helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", 21), helper.make_opsetid("com.microsoft", 1)]
    )


def session(model: onnx.ModelProto, webgpu: bool) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.log_severity_level = 3
    if webgpu:
        import onnxruntime_ep_webgpu as ep

        devices = [d for d in ort.get_ep_devices() if d.ep_name == ep.get_ep_name()]
        options.add_provider_for_devices(devices[:1], {})
        return ort.InferenceSession(model.SerializeToString(), options)
    return ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])


def main() -> None:
    import onnxruntime_ep_webgpu as ep

    ort.register_execution_provider_library("webgpu", ep.get_library_path())
    print("devices:", [(d.ep_name, str(d.device.type), d.device.vendor) for d in ort.get_ep_devices()], flush=True)
    k, n = int(sys.argv[1]) if len(sys.argv) > 1 else 1024, int(sys.argv[2]) if len(sys.argv) > 2 else 3072
    for dtype in (TensorProto.FLOAT, TensorProto.FLOAT16):
        for zp_kind in ("none", "uint8", "float"):
            model = matmulnbits_model(k, n, 32, zp_kind, dtype)
            a = np.random.default_rng(1).standard_normal((1, k)).astype(np.float16 if dtype == 10 else np.float32)
            try:
                gpu = session(model, webgpu=True)
                want = session(model, webgpu=False).run(None, {"A": a})[0].astype(np.float32)
                got = gpu.run(None, {"A": a})[0].astype(np.float32)
                for _ in range(20):
                    gpu.run(None, {"A": a})
                t = time.perf_counter()
                for _ in range(200):
                    gpu.run(None, {"A": a})
                us = (time.perf_counter() - t) / 200 * 1e6
                err = float(np.abs(got - want).max() / (np.abs(want).max() + 1e-9))
                print(
                    f"{'fp16' if dtype == 10 else 'fp32'} zp={zp_kind:<5} {us:8.1f} us/run  rel.err {err:.2e}",
                    f"providers={gpu.get_providers()[0]}",
                    flush=True,
                )
            except Exception as e:  # refusal is the finding
                print(f"{'fp16' if dtype == 10 else 'fp32'} zp={zp_kind:<5} FAILED: {str(e)[:200]}", flush=True)


if __name__ == "__main__":
    main()
