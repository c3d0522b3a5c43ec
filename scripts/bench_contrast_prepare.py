"""What preparing a large SEAM_Contrast corpus costs: embedding time and FAISS index memory.

    python scripts/bench_contrast_prepare.py [--texts 2000] [--index-vectors 100000] [--target 1000000]

``ContrastSource.prepare`` (rank 0 only under DDP, the other ranks waiting up to
``SeamCallback(prepare_timeout_minutes=…)``) embeds every corpus instruction with the
sentence encoder, caches the embeddings (float32 ``.npy``), and for more than 50k
entries trains an IVF index (``IndexIVFFlat``, nlist ≈ 4·√n) and caches it.

Measured here, in this run:
- encoder throughput (texts/s) on demo SFT instructions and on longer texts (demo
  responses), with the bundled all-MiniLM-L6-v2 on this machine's CPU threads;
- IVF training + adding time and serialized size for ``--index-vectors`` random unit
  vectors of the encoder's width, through the same ``build_index`` the source uses.

Then extrapolated to ``--target`` corpus entries: embedding time scales with the number
of texts; k-means training with n·nlist (nlist = 4·√n), adding with n; index and
embedding-file bytes with n. The last line is ``target=… embed_s=… index_s=… index_gb=… embeddings_gb=…``.
"""

from __future__ import annotations

import argparse
import math
import time

import numpy as np
import torch

from seam_lightning.data.records import DataSource, load_records
from seam_lightning.models.encoder import SentenceEncoder
from seam_lightning.seam.sources.contrast import _nlist, build_index


def texts_per_second(encoder: SentenceEncoder, texts: list[str]) -> float:
    encoder.encode(texts[:64])  # warm-up: first-call allocations are not throughput
    start = time.perf_counter()
    encoder.encode(texts)
    return len(texts) / (time.perf_counter() - start)


def index_cost(n: int, d: int) -> tuple[float, float, int]:
    """(train seconds, add seconds, serialized bytes) of an IVF index over n random unit vectors."""
    import faiss

    rng = np.random.default_rng(0)
    vectors = rng.standard_normal((n, d), dtype=np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    start = time.perf_counter()
    index = build_index(vectors, "ivf")  # trains and adds
    total = time.perf_counter() - start
    ivf = faiss.extract_index_ivf(index)
    # Adding alone, timed on a second empty copy of the trained index.
    empty = faiss.clone_index(ivf)
    empty.reset()
    start = time.perf_counter()
    empty.add(vectors)
    add = time.perf_counter() - start
    return total - add, add, faiss.serialize_index(index).nbytes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--texts", type=int, default=2000, help="texts embedded per measurement")
    parser.add_argument("--index-vectors", type=int, default=100_000, help="vectors in the measured IVF index")
    parser.add_argument("--target", type=int, default=1_000_000, help="corpus size to extrapolate to")
    args = parser.parse_args()

    records = load_records(DataSource("demo://sft_train"), ["instruction", "response"])
    encoder = SentenceEncoder("bundled:all-MiniLM-L6-v2")
    # Distinct texts: the encoder embeds each distinct text once.
    short = [f"{r.text['instruction']} ({i})" for i, r in enumerate(records * 2)][:args.texts]
    long = [f"{r.text['response']} ({i})" for i, r in enumerate(records * 2)][:args.texts]
    fast, slow = texts_per_second(encoder, short), texts_per_second(encoder, long)
    tokens = encoder.tokenizer(long[:200])["input_ids"]
    print(f"encoder bundled:all-MiniLM-L6-v2 on {torch.get_num_threads()} CPU threads: "
          f"{fast:.0f} texts/s (demo instructions), {slow:.0f} texts/s (demo responses, "
          f"{np.mean([len(t) for t in tokens]):.0f} tokens on average)")

    d = encoder.encode(short[:1]).shape[1]
    n = args.index_vectors
    train_s, add_s, size = index_cost(n, d)
    print(f"IVF index over {n:,} x {d} vectors (nlist {_nlist(n)}): train {train_s:.1f} s, add {add_s:.1f} s, "
          f"{size / 1e6:.0f} MB serialized")

    target = args.target
    train_scale = (target * _nlist(target)) / (n * _nlist(n))
    embed_s = target / slow
    index_s = train_s * train_scale + add_s * target / n
    index_gb = size * target / n / 1e9
    embeddings_gb = target * d * 4 / 1e9
    print(f"extrapolated to {target:,} entries: embedding {embed_s / 60:.0f} min at the long-text rate "
          f"({target / fast / 60:.0f} min at the short), IVF {index_s / 60:.1f} min (nlist {_nlist(target)}), "
          f"index {index_gb:.2f} GB in memory and on disk, embeddings cache {embeddings_gb:.2f} GB")
    print(f"target={target} embed_s={embed_s:.0f} index_s={index_s:.0f} index_gb={index_gb:.2f} "
          f"embeddings_gb={embeddings_gb:.2f}")
    if math.isfinite(embed_s) and embed_s + index_s > 240 * 60:
        print("note: longer than SeamCallback's default prepare_timeout_minutes=240; raise it, or prepare "
              "the cache once beforehand (ContrastSource(...).prepare() in a plain process)")


if __name__ == "__main__":
    main()
