"""fp32 ONNX for text decoders with KV cache (one graph: prefill and decode both go through `model.onnx`)."""

import shutil
from pathlib import Path


def export_decoder(source: Path, out_dir: Path) -> Path:
    """Export `source` (an HF folder) to `out_dir/model.onnx`; returns the graph's path.

    optimum's tied-weight post-processing is skipped: on Qwen3-0.6B it alone lifts peak RSS from 6.5 to 16.7 GB
    (shared/FACTS.md), and the browser loads one merged-with-past graph anyway.
    """
    from optimum.exporters.onnx import main_export

    out_dir.mkdir(parents=True, exist_ok=True)
    main_export(
        str(source),
        output=out_dir,
        task="text-generation-with-past",
        opset=18,
        device="cpu",
        dtype="fp32",
        no_post_process=True,
        do_validation=False,
        local_files_only=True,
    )
    # optimum copies config/tokenizer files next to the graph; layout takes them from the source instead.
    for extra in out_dir.iterdir():
        if extra.suffix not in (".onnx", ".onnx_data") and extra.name != "model.onnx_data":
            if extra.is_dir():
                shutil.rmtree(extra)
            else:
                extra.unlink()
    return out_dir / "model.onnx"
