"""Offline, deterministic demo RLHF data set built from stdlib docstrings.

Every item is a documented public function, class or method of an allowlisted,
side-effect free standard-library module: the instruction asks what it does, the
golden response is a cleaned summary of its docstring.  Items are shuffled with a
fixed seed and split disjointly into SFT, preference and RL splits.  Nothing uses
Python's salted ``hash()``, so the bytes are identical across processes.
"""
from __future__ import annotations

import argparse
import difflib
import hashlib
import importlib
import inspect
import json
import random
import re
import subprocess
import sys
import types
import warnings
from pathlib import Path
from typing import NamedTuple

DEMO_SCHEME = "demo://"
DEMO_SPLITS = ("sft_train", "sft_val", "preference_train", "preference_val", "rl_train", "rl_val")
# Docstrings change between Python releases, so each interpreter gets its own copy.
DEMO_VERSION = f"demo-v1-py{'.'.join(map(str, sys.version_info[:3]))}"
SEED = 20240531
SPLIT_SIZES = {"rl_train": 500, "rl_val": 100, "sft_val": 200}  # the rest is sft_train
MAX_CHARS = 600
MIN_CHARS = 32  # 40 drops too many good one-liners ("Return the base 2 logarithm of x.")

# Fixed and sorted.  Each imports without side effects (no GUI, browser, readline or
# network; no deprecation warning on 3.11).  ~200 modules, because ~80 yield too
# few documented objects for 3000 training items.
MODULES = tuple("""
abc argparse array ast asyncio base64 bdb binascii bisect builtins bz2 cProfile calendar
cmath cmd code codecs codeop collections collections.abc colorsys compileall
concurrent.futures configparser contextlib contextvars copy csv ctypes dataclasses
datetime dbm decimal difflib dis doctest email.base64mime email.charset email.encoders
email.errors email.feedparser email.generator email.header email.headerregistry
email.iterators email.message email.parser email.policy email.quoprimime email.utils
enum faulthandler fcntl filecmp fileinput fnmatch fractions ftplib functools gc getopt
gettext glob graphlib grp gzip hashlib heapq hmac html html.parser http.client
http.cookiejar http.cookies http.server imaplib importlib importlib.abc
importlib.metadata importlib.resources importlib.util inspect io ipaddress itertools
json keyword linecache locale logging logging.config logging.handlers lzma mailbox
marshal math mimetypes mmap modulefinder multiprocessing.connection
multiprocessing.managers multiprocessing.pool multiprocessing.process
multiprocessing.shared_memory netrc ntpath numbers opcode operator optparse os os.path
pathlib pdb pickle pickletools pkgutil platform plistlib poplib pprint profile pstats
pty pwd py_compile pyclbr pydoc queue quopri random re reprlib runpy sched secrets
select selectors shelve shlex shutil signal smtplib socket socketserver sqlite3 ssl stat
statistics string stringprep struct subprocess symtable sysconfig tabnanny tarfile
tempfile termios textwrap threading time timeit tokenize tomllib trace traceback
tracemalloc types typing unicodedata unittest unittest.mock urllib.error urllib.parse
urllib.request urllib.response urllib.robotparser uuid venv warnings wave weakref
wsgiref.handlers wsgiref.headers wsgiref.simple_server wsgiref.util xml.dom
xml.dom.expatbuilder xml.dom.minidom xml.etree.ElementTree xml.parsers.expat xml.sax
xml.sax.handler xml.sax.saxutils xml.sax.xmlreader xmlrpc.client xmlrpc.server zipapp
zipfile zipimport zlib zoneinfo
""".split())
# C modules whose objects a public module re-exports as its own API.
ACCELERATORS = {"os": ("posix",), "os.path": ("genericpath",)}

PHRASINGS = (
    "What does `{q}` do?",
    "Explain what the `{q}` {kind} is for.",
    "In Python, what is the purpose of the `{q}` {kind}?",
    "Describe the `{q}` {kind}.",
    "What is the {kind} `{q}` used for?",
)

# A leading "name(args) -> result" line; long signatures wrap, hence DOTALL.
_SIGNATURE = re.compile(r"[\w.]+\(.*\)\s*(?:-+>.*)?", re.DOTALL)
# Old C style "D.insert(index, object) -- insert object before index".
_SIGNATURE_DASHES = re.compile(r"[\w.]+\(.*\)\s+--\s+(\S.*)")
_SENTENCE_END = re.compile(r"[.!?](?=\s|$)")
# "msg: The error message" / "fp -- a file object": a field list, not prose.
_FIELD = re.compile(r"\w[\w ]*(?::|\s--)\s")


class Item(NamedTuple):
    """One documented object: the unit that is split and turned into records."""

    qualname: str  # public dotted name: "json.dumps", "json.JSONEncoder.encode", "str.join"
    module: str  # allowlist module it was found in
    parent: str  # module or class qualname, used to find "related" siblings
    kind: str  # "function" | "class" | "method"
    response: str


def _stable_int(text: str) -> int:
    """Process-independent integer hash (``hash()`` is salted per process)."""
    return int.from_bytes(hashlib.sha256(text.encode("utf-8")).digest()[:8], "big")


def _strip_signature(lines: list[str]) -> list[str]:
    """Drop leading signature lines such as ``dumps(obj, *, skipkeys=False)``."""
    while lines and re.match(r"[\w.]+\(", lines[0].strip()):
        dashes = _SIGNATURE_DASHES.fullmatch(lines[0].strip())
        if dashes:
            text = dashes.group(1)
            return [text[0].upper() + text[1:]] + lines[1:]
        end, text = 0, ""
        while end < len(lines) and (end == 0 or text.count("(") > text.count(")")):
            text, end = text + " " + lines[end].strip(), end + 1  # wrapped signature
        if not _SIGNATURE.fullmatch(text.strip()):
            break
        lines = lines[end:]
    return lines


def _cut_sentences(text: str, limit: int = MAX_CHARS) -> str:
    """Longest prefix of ``text`` within ``limit`` chars ending at a sentence end."""
    ends = [m.end() for m in _SENTENCE_END.finditer(text) if m.end() <= limit]
    return text[: ends[-1]] if ends else ""


def _is_prose(paragraph: str) -> bool:
    """False for code blocks, doctests, lists, field lists, directives, underlines."""
    lines = paragraph.splitlines()
    if sum(bool(_FIELD.match(line)) for line in lines) >= 2:
        return False
    return not any(
        line[:1].isspace() or line.startswith((">>>", "..", "- ", "* ", "+ "))
        or (line.strip() and not re.search(r"\w", line))  # reST underline "-----"
        for line in lines)


def summarize_docstring(doc: str) -> str:
    """Clean a docstring into a short prose answer, or "" if it is unusable."""
    # rstrip("\\"): Argument Clinic docstrings keep a stray line continuation.
    lines = _strip_signature([ln.rstrip("\\") for ln in inspect.cleandoc(doc).splitlines()])
    kept: list[str] = []
    for para in re.split(r"\n\s*\n", "\n".join(lines).strip()):
        if not _is_prose(para):
            # Prose before an example often runs into it ("so the expression"): end
            # on a full sentence, but keep a lone summary line without a period.
            if kept:
                last = kept.pop()
                last = _cut_sentences(last) or ("" if kept else last)
                kept += [last] if last else []
            break
        text = " ".join(para.split())
        if sum(len(p) + 2 for p in kept) + len(text) > MAX_CHARS:
            if not kept:  # a long first paragraph: keep whole sentences only
                kept.append(_cut_sentences(text))
            break
        kept.append(text)
    # A trailing "as follows:" sentence announces a list or code block we dropped.
    while kept and kept[-1].endswith(":"):
        kept[-1] = _cut_sentences(kept[-1][:-1])
        if kept[-1]:
            break
        kept.pop()
    summary = "\n\n".join(p for p in kept if p)
    return summary if len(summary) >= MIN_CHARS else ""


def _belongs(obj: object, module: types.ModuleType, name: str) -> bool:
    """True if ``module`` (its C accelerator or a submodule of the package) defines
    ``obj``: skips re-exports, which would duplicate items."""
    owner = getattr(obj, "__module__", None)
    if not isinstance(owner, str):
        return False
    own = {name, module.__name__, "_" + name.rsplit(".", 1)[-1], *ACCELERATORS.get(name, ())}
    is_package = hasattr(module, "__path__")
    return owner in own or (is_package and owner.startswith(module.__name__ + "."))


def _method_function(value: object) -> object | None:
    """The function behind a class attribute if it is a method, else None."""
    if isinstance(value, (classmethod, staticmethod)):
        value = value.__func__
    method_types = (types.FunctionType, types.BuiltinFunctionType,
                    types.MethodDescriptorType, types.ClassMethodDescriptorType)
    return value if isinstance(value, method_types) else None


def _make_item(qualname: str, module: str, parent: str, kind: str, obj: object) -> Item | None:
    """Item for ``obj`` if it has a usable docstring of its own."""
    doc = getattr(obj, "__doc__", None)
    response = summarize_docstring(doc) if isinstance(doc, str) else ""
    return Item(qualname, module, parent, kind, response) if response else None


def _module_items(name: str) -> list[Item]:
    """Documented public functions, classes and methods of one allowlisted module."""
    try:
        module = importlib.import_module(name)
    except Exception:  # e.g. a missing optional C extension: skip the module
        return []
    prefix = "" if name == "builtins" else name + "."  # "str.join", not "builtins.str.join"
    # __all__ forces lazily created attributes (unittest, concurrent.futures) to
    # exist, so the names do not depend on what the process touched before.
    names = sorted(n for n in set(vars(module)) | set(getattr(module, "__all__", ()))
                   if not n.startswith("_"))
    items = []
    for attr in names:
        obj = getattr(module, attr, None)
        is_function = inspect.isfunction(obj) or (  # not bound methods like random.random
            inspect.isbuiltin(obj) and isinstance(getattr(obj, "__self__", None), types.ModuleType))
        if not (is_function or inspect.isclass(obj)) or not _belongs(obj, module, name):
            continue
        kind = "class" if inspect.isclass(obj) else "function"
        items.append(_make_item(prefix + attr, name, name, kind, obj))
        for meth_name in sorted(vars(obj)) if kind == "class" else ():
            func = _method_function(vars(obj)[meth_name])
            # The qualname check rejects aliases such as ``x = other_function``.
            if meth_name.startswith("_") or func is None or not getattr(
                    func, "__qualname__", "").endswith(f"{obj.__name__}.{meth_name}"):
                continue
            items.append(_make_item(f"{prefix}{attr}.{meth_name}", name, prefix + attr,
                                    "method", func))
    return [item for item in items if item is not None]


def collect_items() -> list[Item]:
    """All items of this process, sorted by qualified name, responses unique."""
    by_name: dict[str, Item] = {}
    with warnings.catch_warnings():  # deprecated attributes (typing.io) warn on access
        warnings.simplefilter("ignore")
        for name in MODULES:
            for item in _module_items(name):
                by_name.setdefault(item.qualname, item)
    seen: set[str] = set()
    items = []
    for item in sorted(by_name.values()):
        if item.response not in seen:  # every golden answer must be unique
            seen.add(item.response)
            items.append(item)
    return items


def load_items() -> list[Item]:
    """``collect_items()`` run in a fresh, isolated interpreter.

    torch and lightning monkeypatch stdlib functions on import (``inspect.getfile``,
    ``warnings.formatwarning``); collecting in the caller's process would make the
    bytes depend on what it imported.  -I -S: no env vars, no site .pth hooks.
    """
    cmd = [sys.executable, "-I", "-S", str(Path(__file__).resolve()), "--dump-items"]
    try:
        proc = subprocess.run(cmd, capture_output=True, check=True, timeout=300)
        return [Item(*fields) for fields in json.loads(proc.stdout)]
    except (OSError, subprocess.SubprocessError, ValueError, TypeError) as err:
        warnings.warn(f"isolated demo build failed ({err}); collecting in-process", stacklevel=2)
        return collect_items()


def instruction_for(item: Item) -> str:
    """Deterministically phrased question about ``item``."""
    template = PHRASINGS[_stable_int("phrase:" + item.qualname) % len(PHRASINGS)]
    return template.format(q=item.qualname, kind=item.kind)


def _closest_sibling(item: Item, siblings: list[Item]) -> Item | None:
    """Sibling whose short name is most similar (ties broken by qualname)."""
    name = item.qualname.rsplit(".", 1)[-1]
    candidates = [s for s in siblings if s.qualname != item.qualname]
    return min(candidates, default=None, key=lambda s: (-difflib.SequenceMatcher(
        None, name, s.qualname.rsplit(".", 1)[-1]).ratio(), s.qualname))


def preference_pairs(items: list[Item], pool: list[Item]) -> list[dict]:
    """One pair per item; the rejected answer comes from ``pool`` only, so training
    pairs never contain held-out golden answers."""
    by_parent: dict[str, list[Item]] = {}
    by_module: dict[str, list[Item]] = {}
    for p in pool:
        by_parent.setdefault(p.parent, []).append(p)
        by_module.setdefault(p.module, []).append(p)
    pairs = []
    for item in items:
        kind, rejected = "related", None
        if _stable_int("kind:" + item.qualname) % 2 == 0:
            rejected = (_closest_sibling(item, by_parent.get(item.parent, []))
                        or _closest_sibling(item, by_module.get(item.module, [])))
        if rejected is None:  # odd hash, or an item without siblings
            kind, rng = "random", random.Random(f"{SEED}:{item.qualname}")  # str seed: stable
            while rejected is None or rejected.module == item.module:
                rejected = rng.choice(pool)
        pairs.append({"instruction": instruction_for(item), "chosen": item.response,
                      "rejected": rejected.response, "rejected_source": rejected.qualname,
                      "rejected_kind": kind, "source": item.qualname})
    return pairs


def build_records() -> dict[str, list[dict]]:
    """Records of every split, in memory."""
    items = load_items()
    random.Random(SEED).shuffle(items)
    splits, start = {}, 0
    for split, size in SPLIT_SIZES.items():
        splits[split], start = items[start:start + size], start + size
    splits["sft_train"] = items[start:]
    records = {split: [{"instruction": instruction_for(i), "response": i.response,
                        "source": i.qualname} for i in splits[split]]
               for split in ("sft_train", "sft_val", "rl_train", "rl_val")}
    train, val = splits["sft_train"], splits["sft_val"]
    records["preference_train"] = preference_pairs(train, train)
    records["preference_val"] = preference_pairs(val, train + val)
    return {split: records[split] for split in DEMO_SPLITS}


def build_demo_data(out_dir: Path) -> dict[str, Path]:
    """Write the six JSONL files <split>.jsonl into out_dir, each atomically; return {split: path}."""
    # Imported here: this file also runs alone in a bare interpreter (python -I -S) to list the items.
    from seam_lightning.files import write_text_atomic
    from seam_lightning.jsonl import json_line

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {}
    for split, records in build_records().items():
        # Atomic: concurrent readers (other ranks) never see a half-written file,
        # and concurrent builders write identical bytes.
        paths[split] = write_text_atomic(out_dir / f"{split}.jsonl", "".join(
            json_line(r, sort_keys=True) for r in records))
    return paths


def demo_path(split: str) -> Path:
    """Path of one split under cache_root()/"demo-v1", building all files first if
    any is missing. Unknown split -> ValueError listing DEMO_SPLITS."""
    if split not in DEMO_SPLITS:
        raise ValueError(f"unknown demo split {split!r}; expected one of {DEMO_SPLITS}")
    # Imported here, not at the top: this file also runs as a bare stdlib script (load_items).
    from seam_lightning.cache import cache_root

    root = cache_root() / DEMO_VERSION
    if not all((root / f"{s}.jsonl").is_file() for s in DEMO_SPLITS):
        build_demo_data(root)
    return root / f"{split}.jsonl"


def resolve_demo_uri(uri: str) -> Path:
    """"demo://sft_train" -> demo_path("sft_train"); anything not starting with
    DEMO_SCHEME -> ValueError."""
    if not isinstance(uri, str) or not uri.startswith(DEMO_SCHEME):
        raise ValueError(f"not a demo URI (expected {DEMO_SCHEME}<split>): {uri!r}")
    return demo_path(uri[len(DEMO_SCHEME):])


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="Build the offline demo RLHF data set.")
    parser.add_argument("out_dir", nargs="?", type=Path, help="output directory (default: the cache)")
    # Internal: load_items() runs this file with --dump-items in a clean interpreter.
    parser.add_argument("--dump-items", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.dump_items:
        json.dump([list(item) for item in collect_items()], sys.stdout)
        sys.exit(0)
    paths = build_demo_data(args.out_dir) if args.out_dir else {s: demo_path(s) for s in DEMO_SPLITS}
    for split, path in paths.items():
        with path.open(encoding="utf-8") as f:
            print(f"{split:18s} {sum(1 for _ in f):6d}  {path}")
