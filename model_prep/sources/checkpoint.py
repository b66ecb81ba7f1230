"""An HF checkpoint's tensors, one at a time: for the exporter, and for torch's fp32 reference model."""

import json
from pathlib import Path

import numpy as np

from ..errors import SourceCorrupt, SourceMissing


class SafetensorsReader:
    """Tensors of an HF checkpoint (single file or sharded), read one at a time as fp32 numpy arrays."""

    def __init__(self, source: Path) -> None:
        index = source / "model.safetensors.index.json"
        if index.is_file():
            weight_map = json.loads(index.read_text())["weight_map"]
            self.files = {name: source / file for name, file in weight_map.items()}
        elif (source / "model.safetensors").is_file():
            from safetensors import safe_open

            with safe_open(source / "model.safetensors", "pt") as f:
                self.files = dict.fromkeys(f.keys(), source / "model.safetensors")
        else:
            raise SourceMissing(f"{source} has no model.safetensors (nor a sharded index)")

    def read(self, candidates: list[str]) -> np.ndarray:
        import torch
        from safetensors import safe_open

        name = next((n for n in candidates if n in self.files), None)
        if name is None:
            raise SourceCorrupt(f"the checkpoint lacks {candidates[0]}: the weights do not match config.json")
        try:
            with safe_open(self.files[name], "pt") as f:
                return f.get_tensor(name).to(torch.float32).numpy()
        except Exception as err:  # safetensors raises its own error types for truncated files
            raise SourceCorrupt(f"cannot read {name} from {self.files[name].name}: {err}") from err


def parameter_aliases(model) -> dict[int, list[str]]:
    """id(parameter) → every name it has (a tied embedding is also lm_head.weight): the checkpoint may use any."""
    aliases: dict[int, list[str]] = {}
    for name, param in model.named_parameters(remove_duplicate=False):
        aliases.setdefault(id(param), []).append(name)
    return aliases


def load_causal_lm_fp32(source: Path):
    """`AutoModelForCausalLM` in fp32, filled one checkpoint tensor at a time.

    from_pretrained(dtype=float32) keeps the mapped bf16 checkpoint beside the fp32 copy while it loads: 3.7 GB
    peak RSS for Qwen3-0.6B's 2.4 GB of weights, which made the verify stage the pipeline's peak.
    """
    import torch
    from accelerate import init_empty_weights
    from accelerate.utils import set_module_tensor_to_device
    from transformers import AutoConfig, AutoModelForCausalLM, GenerationConfig

    config = AutoConfig.from_pretrained(source)
    with init_empty_weights():  # parameters on the meta device; buffers (rotary inv_freq) are made for real
        model = AutoModelForCausalLM.from_config(config, dtype=torch.float32, attn_implementation="sdpa")
    model.tie_weights()
    aliases = parameter_aliases(model)
    reader = SafetensorsReader(source)
    for name, param in list(model.named_parameters()):  # a tied parameter once
        value = torch.from_numpy(reader.read(aliases[id(param)]))
        if tuple(value.shape) != tuple(param.shape):
            raise SourceCorrupt(
                f"{name} has shape {tuple(value.shape)} in the checkpoint, config.json says {tuple(param.shape)}"
            )
        set_module_tensor_to_device(model, name, "cpu", value=value)
    model.tie_weights()
    if (source / "generation_config.json").is_file():  # generate()'s eos ids, as from_pretrained would set them
        model.generation_config = GenerationConfig.from_pretrained(source)
    return model.eval()
