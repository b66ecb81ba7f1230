"""Native onnxruntime on the same artifact, dtype and thread count as the browser: the in-browser/native ratio."""

import time
from pathlib import Path

import numpy as np

from model_prep.layout import SUFFIX
from model_prep.verify.onnx_runner import DecoderSession
from model_prep.verify.replies import load_tokenizer

from .prompts import NEW_TOKENS


def open_session(model_dir: Path, manifest: dict, dtype: str, threads: int):
    """The artifact the browser loads for `dtype`: an ONNX graph on onnxruntime, or a GGUF on native llama.cpp."""
    files = manifest["dtypes"][dtype]["files"]
    gguf = next((f for f in files if f.endswith(".gguf")), None)
    if gguf:
        from model_prep.verify.gguf import LlamaCppSession

        return "native-llama.cpp", LlamaCppSession(model_dir / gguf, n_ctx=2048, threads=threads)
    return "native-onnxruntime", DecoderSession(model_dir / "onnx" / f"model{SUFFIX[dtype]}.onnx", threads=threads)


def measure(
    model_dir: Path, manifest: dict, dtype: str, prompts: dict[str, str], threads: int, new_tokens: int = NEW_TOKENS
) -> list[dict]:
    tokenizer = load_tokenizer(model_dir)
    start = time.perf_counter()
    runner, session = open_session(model_dir, manifest, dtype, threads)
    load_s = time.perf_counter() - start
    rows = []
    for name, text in prompts.items():
        ids = tokenizer.apply_chat_template([{"role": "user", "content": text}], add_generation_prompt=True)
        session.reset()
        t0 = time.perf_counter()
        token = int(np.argmax(session.forward(list(ids))[-1]))
        ttft = time.perf_counter() - t0
        t1 = time.perf_counter()
        for _ in range(new_tokens - 1):  # eos is not a stop here: every run decodes the same number of tokens
            token = int(np.argmax(session.forward([token])[-1]))
        decode = time.perf_counter() - t1
        rows.append(
            {
                "runner": runner,
                "prompt": name,
                "model": manifest["id"],
                "revision": manifest["revision"],
                "device": "cpu",
                "dtype": dtype,
                "runtime": runner.removeprefix("native-"),
                "threads": threads,
                "load_s": load_s,
                "ttft_s": ttft,
                "prefill_tokens_per_s": len(ids) / ttft,
                "decode_tokens_per_s": (new_tokens - 1) / decode,
                "prompt_tokens": len(ids),
                "new_tokens": new_tokens,
            }
        )
    return rows
