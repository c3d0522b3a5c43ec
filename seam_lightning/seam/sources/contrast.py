"""SEAM_Contrast: candidates r* are golden responses of *similar but different* instructions.

For an RL instruction I the source retrieves from an SFT corpus the instructions
I* whose cosine similarity to I lies in the band [lo, hi] (paper: [0.8, 0.9]) and
returns their golden responses. Close enough to look plausible to the policy,
far enough that the answer is to another question, hence worse than r.

Both band bounds are enforced. The official SEAM code forgets the lower bound
and silently falls back to unfiltered neighbours when the band is empty; here a
prompt simply gets fewer candidates, and `last_stats` and the log say how many.

The paper searches a corpus of over 1 million pairs (§7.1), where exact search
gets slow: ``index="auto"`` switches to an approximate IVF index at
IVF_THRESHOLD (50k) entries. An approximate index may miss in-band neighbours,
so its recall of in-band neighbours against exact search is measured on a
seeded sample of corpus instructions (`check_index_recall`) and a warning is
logged below MIN_RECALL (0.95).
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Literal, NamedTuple, Sequence

import numpy as np

from seam_lightning.cache import cache_root
from seam_lightning.data.records import DataSource, load_records
from seam_lightning.files import write_cache_file
from seam_lightning.models.encoder import (
    DEFAULT_ENCODER,
    POOLINGS,
    Pooling,
    SentenceEncoder,
    embedding_key,
    encode_cached,
)
from seam_lightning.seam.sources.base import CandidateSource, CandidateStats, check_request, normalise_whitespace

log = logging.getLogger(__name__)

IndexKind = Literal["auto", "flat", "ivf"]
IVF_THRESHOLD = 50_000  # "auto" switches from exact search to IVF at this corpus size
SELF_SIMILARITY = 0.9999  # at or above: the query itself (maybe re-worded by whitespace only)
_SEARCH_CHUNK = 4096  # queries per faiss call, bounds the [queries, k] result arrays
RECALL_SAMPLE = 200  # corpus instructions used as queries to measure an IVF index's recall
RECALL_SEED = 0
MIN_RECALL = 0.95  # in-band recall below this: warn (raise nprobe or use index="flat")


class Match(NamedTuple):
    """One retrieved neighbour: the corpus row, its instruction I*, its response r*, cos(I, I*)."""

    row: int
    instruction: str
    response: str
    similarity: float


def _nlist(n: int) -> int:
    """IVF cells: about 4*sqrt(n), but at least 39 training points per cell (faiss' minimum)."""
    return max(1, min(int(4 * math.sqrt(n)), n // 39))


def resolve_index_kind(kind: IndexKind, n: int) -> str:
    """'auto' -> exact search below IVF_THRESHOLD entries, IVF above."""
    if kind == "auto":
        return "flat" if n < IVF_THRESHOLD else "ivf"
    return kind


def build_index(vectors: np.ndarray, kind: IndexKind = "auto", nprobe: int = 32, nlist: int | None = None):
    """A faiss inner-product index over unit vectors (inner product = cosine similarity).

    IVF: ``nlist`` cells (default `_nlist`), ``nprobe`` of them visited per query.
    """
    import faiss

    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    n, d = vectors.shape
    if resolve_index_kind(kind, n) == "flat":
        index = faiss.IndexFlatIP(d)
    else:
        if nlist is not None and not 1 <= nlist <= n:
            raise ValueError(f"nlist must be in [1, {n}] (the corpus size), got {nlist}")
        nlist = nlist or _nlist(n)
        index = faiss.IndexIVFFlat(faiss.IndexFlatIP(d), d, nlist, faiss.METRIC_INNER_PRODUCT)
        index.train(vectors)  # k-means on the corpus itself, fixed faiss seed
        index.nprobe = min(nprobe, nlist)
    index.add(vectors)
    return index


class BandRecall(NamedTuple):
    """Recall of in-band neighbours of an index against exact search, over sampled queries.

    ``exact``: in-band neighbours among each query's exact top k, summed over the
    queries; ``found``: how many of those the index under test returned too;
    ``recall`` = found / exact (pooled over queries; nan when ``exact`` is 0).
    """

    recall: float
    found: int
    exact: int
    queries: int


def sample_queries(n: int, size: int = RECALL_SAMPLE, seed: int = RECALL_SEED) -> np.ndarray:
    """min(size, n) distinct row ids of an n-row corpus, drawn with ``seed``, ascending."""
    if size < 0:
        raise ValueError(f"size must be >= 0, got {size}")
    return np.sort(np.random.default_rng(seed).choice(n, size=min(size, n), replace=False))


def _in_band(sims: np.ndarray, ids: np.ndarray, band: tuple[float, float]) -> list[set[int]]:
    """Per query, the rows a search returned within the band (below SELF_SIMILARITY, as `_pick`)."""
    lo, hi = band
    keep = (ids >= 0) & (sims >= lo) & (sims <= hi) & (sims < SELF_SIMILARITY)
    return [set(row[mask].tolist()) for row, mask in zip(ids, keep)]


def band_recall(index, vectors: np.ndarray, queries: np.ndarray, band: tuple[float, float], k: int) -> BandRecall:
    """Recall of `index`'s in-band top-k neighbours against an exact (brute-force) top-k search.

    The band is the paper's similarity interval (§7.1, [0.8, 0.9]): only the
    neighbours SEAM_Contrast can return count, not the whole top k.
    """
    import faiss

    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    queries = np.ascontiguousarray(queries, dtype=np.float32)
    k = min(k, len(vectors))
    if not len(queries) or k < 1:
        return BandRecall(float("nan"), 0, 0, len(queries))
    exact = _in_band(*faiss.knn(queries, vectors, k, metric=faiss.METRIC_INNER_PRODUCT), band)
    approx = _in_band(*index.search(queries, k), band)
    found = sum(len(a & e) for a, e in zip(approx, exact))
    total = sum(map(len, exact))
    return BandRecall(found / total if total else float("nan"), found, total, len(queries))


def check_index_recall(
    index, vectors: np.ndarray, band: tuple[float, float], k: int,
    sample: int = RECALL_SAMPLE, seed: int = RECALL_SEED, min_recall: float = MIN_RECALL,
) -> BandRecall:
    """Measure `band_recall` on ``sample`` corpus rows used as queries; log it, warn below ``min_recall``.

    Corpus instructions stand in for the RL prompts (unknown when the index is
    built); each finds itself at similarity 1, outside any band SEAM uses.
    """
    result = band_recall(index, vectors, vectors[sample_queries(len(vectors), sample, seed)], band, k)
    where = _describe(index)
    if not result.exact:
        log.info("contrast index %s: none of %d sampled queries has a neighbour in band [%g, %g]; "
                 "recall not measured", where, result.queries, *band)
    elif result.recall < min_recall:
        log.warning(
            "contrast index %s: recall of in-band neighbours %.3f (%d of %d, %d sampled queries, band [%g, %g], "
            "top %d) is below %.2f; raise nprobe or use index: flat",
            where, result.recall, result.found, result.exact, result.queries, *band, k, min_recall,
        )
    else:
        log.info("contrast index %s: recall of in-band neighbours %.3f (%d of %d, %d sampled queries, "
                 "band [%g, %g], top %d)", where, result.recall, result.found, result.exact, result.queries, *band, k)
    return result


def _describe(index) -> str:
    """``IVF nprobe=8/nlist=100`` for an IVF index, else the faiss class name."""
    import faiss

    try:
        ivf = faiss.extract_index_ivf(index)
    except RuntimeError:  # not an IVF index
        return type(index).__name__
    return f"IVF nprobe={ivf.nprobe}/nlist={ivf.nlist}"


def _load_index(path: Path, n: int, d: int):
    """A cached trained faiss index, or None (with a warning) if the file is unusable."""
    import faiss

    if not path.is_file():
        return None
    try:
        index = faiss.read_index(str(path))
        if index.ntotal == n and index.d == d and index.is_trained:
            return index
        reason = f"holds {index.ntotal} vectors of dim {index.d}, expected {n} of dim {d}"
    except Exception as e:  # faiss raises RuntimeError on truncated files
        reason = f"{type(e).__name__}: {e}"
    log.warning("corrupt contrast index cache %s (%s); rebuilding it", path, reason)
    return None


class ContrastSource(CandidateSource):
    """SEAM_Contrast candidates: golden responses of corpus instructions within the similarity band.

    Args:
        corpus: SFT corpus with fields ``instruction`` and ``response`` (mapped through ``corpus.fields``).
        encoder: sentence encoder name (``bundled:...``, hub id or local path); see `SentenceEncoder`.
        band: (lo, hi) cosine-similarity bounds, both inclusive.
        index: "flat" exact search, "ivf" approximate (IndexIVFFlat, nlist ~ 4*sqrt(n)),
            "auto" = flat below IVF_THRESHOLD (50k) corpus entries, IVF from there on. An
            IVF index's recall of in-band neighbours is measured on 200 sampled corpus
            instructions (`check_index_recall`, result in ``index_recall``); below 0.95
            a warning says so.
        nprobe: IVF cells visited per query (ignored by flat); more = higher recall, slower.
        search_k: neighbours fetched per query before the band filter.
        cache_dir: where corpus embeddings (and trained IVF indexes) are kept;
            default ``cache_root()/"contrast"``.
        batch_size, max_length, device: passed to `SentenceEncoder`.
        pooling: "cls", "mean", "pooler" or "auto", passed to `SentenceEncoder`. The paper
            (§7.1) embeds with SimCSE, whose sentence vector is built from [CLS]; "auto"
            follows the model's sentence-transformers pooling config (the bundled
            all-MiniLM-L6-v2: mean), for a SimCSE model the rule of its authors' tool
            (sup: "pooler", unsup: "cls"), else mean.
    """

    def __init__(
        self,
        corpus: DataSource = DataSource("demo://sft_train"),
        encoder: str = DEFAULT_ENCODER,
        band: tuple[float, float] = (0.8, 0.9),
        index: IndexKind = "auto",
        nprobe: int = 32,
        search_k: int = 256,
        cache_dir: str | None = None,
        batch_size: int = 64,
        max_length: int = 128,
        device: str | None = None,
        pooling: Pooling = "auto",
    ) -> None:
        self.band = _check_band(band)
        if index not in ("auto", "flat", "ivf"):
            raise ValueError(f"index must be 'auto', 'flat' or 'ivf', got {index!r}")
        for name, value in (("nprobe", nprobe), ("search_k", search_k)):
            if value < 1:
                raise ValueError(f"{name} must be >= 1, got {value}")
        self.corpus, self.encoder_name, self.index_kind = corpus, encoder, index
        self.nprobe, self.search_k, self.cache_dir = nprobe, search_k, cache_dir
        if pooling not in POOLINGS:
            raise ValueError(f"pooling must be one of {list(POOLINGS)}, got {pooling!r}")
        self.encoder_args = {"batch_size": batch_size, "max_length": max_length, "device": device, "pooling": pooling}
        # Per prompt, the neighbours behind the latest candidates (same order as the candidates).
        self.last_matches: list[list[Match]] = []
        # Measured recall of an IVF index (`check_index_recall`); None for exact search.
        self.index_recall: BandRecall | None = None
        # Built on the first `candidates` call: constructing a source (e.g. from YAML) stays cheap.
        self._encoder: SentenceEncoder | None = None
        self._index = None
        self._instructions: list[str] = []
        self._responses: list[str] = []

    def candidates(self, instructions: list[str], responses: list[str], num_candidates: int) -> list[list[str]]:
        """Up to num_candidates in-band corpus responses per example, most similar instruction first."""
        check_request(instructions, responses, num_candidates)
        self.prepare()
        k = min(max(self.search_k, num_candidates), self._index.ntotal)
        queries = self._encoder.encode(instructions) if instructions else np.zeros((0, 1), np.float32)
        matches, truncated = [], 0
        for start in range(0, len(instructions), _SEARCH_CHUNK):
            sims, ids = self._index.search(queries[start:start + _SEARCH_CHUNK], k)
            for i, sim, idx in zip(range(start, start + len(sims)), sims, ids):
                matches.append(self._pick(instructions[i], responses[i], sim, idx, num_candidates))
                # The k-th neighbour still in the band: more in-band entries may lie beyond k.
                truncated += len(matches[-1]) < num_candidates and k < self._index.ntotal and sim[-1] >= self.band[0]
        result = [[m.response for m in ms] for ms in matches]
        self.last_matches = matches
        self.last_stats = CandidateStats.of(result, num_candidates)
        _log_stats(self.last_stats, num_candidates, self.band, truncated, k)
        return result

    def _pick(self, query: str, golden: str, sims: np.ndarray, ids: np.ndarray, n: int) -> list[Match]:
        """Walk the neighbours by decreasing similarity; keep in-band, non-self, non-duplicate ones."""
        lo, hi = self.band
        own, seen, out = normalise_whitespace(query), {normalise_whitespace(golden)}, []
        # Re-sort by (-similarity, corpus row): ties break the same way on every rank and run.
        for j in np.lexsort((ids, -sims)):
            s, c = float(sims[j]), int(ids[j])
            if c < 0 or s > hi or s >= SELF_SIMILARITY:  # c < 0: IVF found fewer than k
                continue
            if s < lo:
                break
            if normalise_whitespace(self._instructions[c]) == own:
                continue
            key = normalise_whitespace(self._responses[c])
            if key in seen:
                continue
            seen.add(key)
            out.append(Match(c, self._instructions[c], self._responses[c], s))
            if len(out) == n:
                break
        return out

    def prepare(self) -> None:
        """Load the corpus, the encoder and the index (from the cache when valid); idempotent.

        `candidates` calls it on first use. Under DDP, call it on rank 0 first and
        then on the others after a barrier, so the corpus is encoded only once.
        """
        if self._index is not None:
            return
        records = load_records(self.corpus, ["instruction", "response"])
        self._instructions = [r.text["instruction"] for r in records]
        self._responses = [r.text["response"] for r in records]
        self._encoder = SentenceEncoder(self.encoder_name, **self.encoder_args)
        key = embedding_key(self._encoder, self._instructions)
        root = Path(self.cache_dir) if self.cache_dir else cache_root() / "contrast"
        big = len(self._instructions) > 10_000
        vectors = encode_cached(self._encoder, self._instructions, root / f"{key}.emb.npy", progress=big)
        self._index = self._build_or_load_index(root, key, vectors)

    def _build_or_load_index(self, root: Path, key: str, vectors: np.ndarray):
        """Flat indexes are rebuilt (milliseconds); trained IVF indexes are cached."""
        import faiss

        n, d = vectors.shape
        if resolve_index_kind(self.index_kind, n) == "flat":
            return build_index(vectors, "flat")
        path = root / f"{key}.ivf{_nlist(n)}.faiss"
        index = _load_index(path, n, d)
        if index is None:
            index = build_index(vectors, "ivf", self.nprobe)
            write_cache_file(path, lambda tmp: faiss.write_index(index, str(tmp)))
        ivf = faiss.extract_index_ivf(index)
        ivf.nprobe = min(self.nprobe, ivf.nlist)
        self.index_recall = check_index_recall(index, vectors, self.band, self.search_k)
        return index


def _check_band(band: Sequence[float]) -> tuple[float, float]:
    """(lo, hi) with 0 <= lo <= hi <= 1, else ValueError naming the band."""
    try:
        lo, hi = (float(b) for b in band)
    except (TypeError, ValueError):
        raise ValueError(f"band must be two numbers (lo, hi), got band={band!r}") from None
    if not 0.0 <= lo <= hi <= 1.0:
        raise ValueError(f"band must satisfy 0 <= lo <= hi <= 1, got band={band!r}")
    return lo, hi


def _log_stats(stats: CandidateStats, n: int, band: tuple[float, float], truncated: int, k: int) -> None:
    log.info(
        "contrast: %d/%d prompts got fewer than %d candidates in band [%g, %g] (%d got none); %d candidates",
        stats.short, stats.prompts, n, *band, stats.empty, stats.candidates,
    )
    if truncated:
        log.warning(
            "contrast: for %d prompts all %d fetched neighbours were at or above the band's lower bound; "
            "raise search_k to find more in-band candidates", truncated, k,
        )
