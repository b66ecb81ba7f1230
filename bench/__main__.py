"""`python -m bench`: Edge Chat in Chromium, native onnxruntime on the same artifact and wllama as a peer.

Writes build/bench/results.jsonl (one row per runner × config × prompt, the one metrics schema plus
warm_load_s, turn2_ttft_s, turn2_ttft_no_reuse_s, peak_memory_bytes, model_memory_bytes, model_memory_settled_bytes,
revisit_load_s, revisit_memory_bytes, revisit_memory_settled_bytes, revisit_hashed_bytes, threads, prompt, error)
and build/bench/report.html, and prints the table and the ratios. Prints figures; asserts none.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

from edge_contracts import DEFAULT_MODEL

from . import browser, native, report
from .prompts import NEW_TOKENS, prompt_set
from .server import GGUF_ROUTE, serving

ROOT = Path(__file__).resolve().parents[1]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    p.add_argument("--models", type=Path, default=ROOT / "models")
    p.add_argument("--web", type=Path, default=ROOT / "web")
    p.add_argument("--model", nargs="+", default=[DEFAULT_MODEL])
    p.add_argument("--device", nargs="+", default=["wasm"], choices=["wasm", "webgpu"])
    p.add_argument(
        "--dtype", nargs="+", default=["fp32", "q8", "q4", "gguf-q8_0"], help="dtypes the manifest lacks are skipped"
    )
    p.add_argument("--threads", nargs="+", type=int, default=[1, 2, 4])
    p.add_argument(
        "--session-options",
        nargs="+",
        default=[None],
        type=json.loads,
        metavar="JSON",
        help='ONNX Runtime session options to try, one run each (e.g. \'{"executionMode": "parallel"}\')',
    )
    p.add_argument(
        "--llama-options",
        nargs="+",
        default=[None],
        type=json.loads,
        metavar="JSON",
        help="llama.cpp load settings to try on GGUF dtypes, one run each (e.g. '{\"n_ubatch\": 128}')",
    )
    p.add_argument("--prompts", nargs="+", default=["short", "long512"], choices=["short", "long512"])
    p.add_argument("--new-tokens", type=int, default=NEW_TOKENS)
    p.add_argument("--timeout", type=float, default=1200, help="seconds per browser run")
    p.add_argument(
        "--gguf",
        type=Path,
        default=ROOT / "models/.cache/gguf/SmolLM2-135M-Instruct.Q4_1.gguf",
        help="the peer's weights (wllama); skipped when missing",
    )
    p.add_argument(
        "--no-revisit",
        action="store_true",
        help="skip the returning visit (a new page in the same profile, loading from the caches) after each run",
    )
    p.add_argument("--no-native", action="store_true")
    p.add_argument("--no-wllama", action="store_true")
    p.add_argument(
        "--peer-every-model",
        action="store_true",
        help="run the wllama peer on --gguf for every model, not only GGUF-sourced ones (e.g. the pipeline's own GGUF)",
    )
    p.add_argument("--out", type=Path, default=ROOT / "build" / "bench")
    p.add_argument("--chromium", default=os.environ.get("EDGE_CHAT_CHROMIUM", "/usr/bin/chromium"))
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from playwright.sync_api import sync_playwright

    from model_prep.verify.replies import load_tokenizer

    args.out.mkdir(parents=True, exist_ok=True)
    results = args.out / "results.jsonl"
    results.write_text("")
    stamp = {
        "run": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "host": platform.node(),
        "cpus": os.cpu_count(),
        "new_tokens_asked": args.new_tokens,
    }
    rows: list[dict] = []

    def emit(new: list[dict]) -> None:
        with results.open("a") as f:
            for row in new:
                row = {**stamp, **row}
                rows.append(row)
                f.write(json.dumps(row) + "\n")
        for row in new:
            print(
                f"  {row.get('runner')} {row.get('dtype')} {row.get('threads')}t {row.get('prompt')}: "
                f"decode {row.get('decode_tokens_per_s')} tok/s, ttft {row.get('ttft_s')} s"
                + (f" ERROR {row['error']}" if row.get("error") else ""),
                flush=True,
            )

    gguf = args.gguf if args.gguf.is_file() and not args.no_wllama else None
    with serving(args.models, args.web, args.out, gguf) as base_url, sync_playwright() as pw:
        for model in args.model:
            model_dir = args.models / model
            manifest = json.loads((model_dir / "manifest.json").read_text())
            all_prompts = prompt_set(load_tokenizer(model_dir))
            prompts = {name: all_prompts[name] for name in args.prompts}
            dtypes = [d for d in args.dtype if d in manifest["dtypes"]]
            if skipped := [d for d in args.dtype if d not in dtypes]:
                print(f"{model}: no {', '.join(skipped)} in its manifest (export with --all-variants)", flush=True)
            # Threads outermost: each thread count gets its full comparison (browser, native, peer) in a row.
            for threads in args.threads:
                for dtype in dtypes:
                    gguf_dtype = dtype.startswith("gguf")
                    for device in args.device:
                        for options in args.llama_options if gguf_dtype else args.session_options:
                            print(f"edge-chat {model} {device} {dtype} {threads}t {options or ''}…", flush=True)
                            target = browser.Target(model, device, dtype, threads)
                            emit(
                                browser.measure(
                                    pw,
                                    args.chromium,
                                    base_url,
                                    target,
                                    prompts,
                                    args.new_tokens,
                                    args.timeout,
                                    options,
                                    revisit=not args.no_revisit,
                                )
                            )
                    if args.no_native:
                        continue
                    print(f"native {model} {dtype} {threads}t …", flush=True)
                    try:
                        emit(native.measure(model_dir, manifest, dtype, prompts, threads, args.new_tokens))
                    except Exception as err:  # a failed runner is a row, not the end of the run
                        emit(
                            [
                                {
                                    "runner": "native-onnxruntime",
                                    "model": model,
                                    "dtype": dtype,
                                    "threads": threads,
                                    "prompt": "load",
                                    "error": f"error: {err}"[:390],
                                }
                            ]
                        )
                if gguf is not None and (args.peer_every_model or "gguf" in json.dumps(manifest.get("source"))):
                    print(f"wllama {gguf.name} {threads}t …", flush=True)
                    emit(
                        browser.measure_wllama(
                            pw,
                            args.chromium,
                            base_url,
                            GGUF_ROUTE,
                            model,
                            threads,
                            prompts,
                            args.new_tokens,
                            args.timeout,
                            revisit=not args.no_revisit,
                        )
                    )

    items = report.ratios(rows)
    title = f"Edge Chat benchmark · {stamp['run']} · {stamp['cpus']} CPUs"
    (args.out / "report.html").write_text(report.html_report(rows, items, title))
    print()
    print(report.table(rows))
    print()
    print(report.ratio_table(items))
    print(f"\n{results}\n{args.out / 'report.html'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
