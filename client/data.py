"""Local text: the caller's own files (:func:`load_texts`: plain text, JSON Lines, or a
``datasets`` dataset saved to disk), or for simulated clients Python's standard-library
docstrings, split non-IID.

The text is on every machine that runs Python, needs no download, and is deterministic for a
given interpreter. Documents are listed family by family (text processing, maths, networking,
...), so each client's contiguous slice covers few families: a non-IID federation. The held-out
corpus comes from modules that no client slice contains.
"""

from __future__ import annotations

import importlib
import inspect
import json
import os
import types
import warnings
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, Final

import torch

from client._training_errors import InvalidTrainingConfig
from client.models import TokenizerLike

__all__ = [
    "HELD_OUT_MODULES",
    "STDLIB_FAMILIES",
    "held_out_corpus",
    "load_texts",
    "local_text_corpus",
    "module_documents",
    "tokenize_blocks",
]

_FAMILY_TABLE: Final[tuple[tuple[str, str], ...]] = (
    ("text", "codecs difflib re string textwrap unicodedata"),
    (
        "data_types",
        "array bisect calendar collections copy datetime enum graphlib heapq pprint types "
        "weakref zoneinfo",
    ),
    ("numeric", "cmath decimal fractions math numbers random statistics"),
    ("functional", "functools itertools operator"),
    ("files", "filecmp fileinput fnmatch glob linecache os.path pathlib shutil stat tempfile"),
    (
        "persistence",
        "bz2 copyreg dbm gzip lzma marshal pickle shelve sqlite3 tarfile zipfile zlib",
    ),
    ("formats_crypto", "configparser csv hashlib hmac netrc plistlib secrets tomllib"),
    ("os_services", "argparse ctypes errno getpass io logging os platform time"),
    (
        "concurrency",
        "concurrent.futures contextvars multiprocessing queue sched subprocess threading",
    ),
    ("networking", "asyncio mmap select selectors signal socket ssl"),
    ("internet_data", "base64 binascii email json mailbox mimetypes quopri"),
    ("markup", "html html.parser xml.dom.minidom xml.etree.ElementTree xml.sax"),
    (
        "internet_protocols",
        "ftplib http.client http.cookies http.server imaplib ipaddress poplib smtplib "
        "socketserver urllib.parse urllib.request uuid xmlrpc.client",
    ),
    (
        "dev_tools",
        "cProfile doctest pdb profile pydoc timeit trace tracemalloc typing unittest unittest.mock",
    ),
    (
        "runtime",
        "abc atexit builtins contextlib dataclasses gc inspect site sys sysconfig traceback "
        "warnings",
    ),
    (
        "language",
        "ast compileall dis importlib keyword modulefinder pickletools pkgutil py_compile "
        "pyclbr runpy symtable tabnanny token tokenize zipimport",
    ),
)

#: Fixed, ordered module families; a module that fails to import on this platform is skipped.
STDLIB_FAMILIES: Final[tuple[tuple[str, tuple[str, ...]], ...]] = tuple(
    (family, tuple(modules.split())) for family, modules in _FAMILY_TABLE
)

#: Modules in no family: the held-out corpus.
HELD_OUT_MODULES: Final[tuple[str, ...]] = (
    "cmd",
    "code",
    "codeop",
    "colorsys",
    "getopt",
    "gettext",
    "locale",
    "optparse",
    "reprlib",
    "shlex",
    "struct",
    "wave",
    "webbrowser",
    "zipapp",
)


def _own_doc(obj: object) -> str | None:
    """``obj``'s own docstring, cleaned; never one inherited from a base class."""
    raw = vars(obj).get("__doc__") if isinstance(obj, type) else getattr(obj, "__doc__", None)
    if not isinstance(raw, str):
        return None
    doc = inspect.cleandoc(raw).strip()
    return doc or None


def module_documents(module_name: str) -> list[str]:
    """The module's docstring, then its public classes' and functions' docstrings by name.

    Only objects defined in the module itself count, so re-exports are not duplicated.
    Returns ``[]`` for a module that does not import here.
    """
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            module = importlib.import_module(module_name)
    except Exception:
        return []
    docs: list[str] = []
    head = _own_doc(module)
    if head:
        docs.append(head)
    for name, obj in sorted(vars(module).items()):
        if name.startswith("_") or getattr(obj, "__module__", None) != module.__name__:
            continue
        if not isinstance(obj, type | types.FunctionType | types.BuiltinFunctionType):
            continue
        doc = _own_doc(obj)
        if doc:
            docs.append(doc)
    return docs


def _documents(modules: Iterable[str]) -> list[str]:
    return [doc for m in modules for doc in module_documents(m)]


def local_text_corpus(slice_index: int, n_slices: int) -> list[str]:
    """Client ``slice_index`` of ``n_slices``: a contiguous run of the family-ordered documents.

    Slices are disjoint and together cover every family document; neighbours in family order
    land in the same slice, so slices differ in topic (non-IID).
    """
    if isinstance(n_slices, bool) or not isinstance(n_slices, int) or n_slices < 1:
        raise InvalidTrainingConfig(f"n_slices must be a positive int, got {n_slices!r}")
    if isinstance(slice_index, bool) or not isinstance(slice_index, int):
        raise InvalidTrainingConfig(f"slice_index must be an int, got {slice_index!r}")
    if not 0 <= slice_index < n_slices:
        raise InvalidTrainingConfig(f"slice_index {slice_index} is outside [0, {n_slices})")
    docs = _documents(m for _, family in STDLIB_FAMILIES for m in family)
    if n_slices > len(docs):
        raise InvalidTrainingConfig(f"only {len(docs)} documents for {n_slices} slices")
    lo = slice_index * len(docs) // n_slices
    hi = (slice_index + 1) * len(docs) // n_slices
    return docs[lo:hi]


def held_out_corpus() -> list[str]:
    """Documents of :data:`HELD_OUT_MODULES`, which no client slice contains."""
    return _documents(HELD_OUT_MODULES)


def tokenize_blocks(
    texts: Sequence[str],
    tokenizer: TokenizerLike,
    block_size: int,
    *,
    max_blocks: int | None = None,
) -> torch.Tensor:
    """Token blocks ``(n_blocks, block_size)`` of int64: documents joined by eos, cut evenly.

    Every block is full (the remainder is dropped), so each training record is one
    fixed-length sequence and no padding enters the loss. ``max_blocks`` keeps the first ones.
    """
    if isinstance(block_size, bool) or not isinstance(block_size, int) or block_size < 2:
        raise InvalidTrainingConfig(f"block_size must be an int >= 2, got {block_size!r}")
    if max_blocks is not None and max_blocks < 1:
        raise InvalidTrainingConfig("max_blocks must be >= 1")
    eos = tokenizer.eos_token_id
    stream: list[int] = []
    limit = None if max_blocks is None else max_blocks * block_size
    for text in texts:
        stream.extend(tokenizer.encode(text, add_special_tokens=False))
        if eos is not None:
            stream.append(eos)
        if limit is not None and len(stream) >= limit:
            break
    n = len(stream) // block_size
    if max_blocks is not None:
        n = min(n, max_blocks)
    return torch.tensor(stream[: n * block_size], dtype=torch.long).reshape(n, block_size)


#: Bytes of local text :func:`load_texts` reads at most (a device's own corpus, not a crawl).
MAX_TEXT_BYTES: Final[int] = 1 << 30
_TEXT_SUFFIXES: Final[tuple[str, ...]] = (".txt", ".text", ".md")


def _jsonl(path: Path, text_field: str) -> list[str]:
    docs: list[str] = []
    with path.open(encoding="utf-8") as f:
        for number, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except ValueError as exc:
                raise InvalidTrainingConfig(f"{path}:{number}: not JSON: {exc}") from None
            if isinstance(row, str):
                text = row
            elif isinstance(row, dict) and isinstance(row.get(text_field), str):
                text = row[text_field]
            else:
                raise InvalidTrainingConfig(
                    f"{path}:{number}: want a string or an object with a string {text_field!r}"
                )
            if text.strip():
                docs.append(text)
    return docs


def _saved_dataset(path: Path, text_field: str) -> list[str]:
    try:
        import datasets
    except ImportError:
        raise InvalidTrainingConfig(
            f"{path} is a `datasets` folder: pip install 'secagg-dplora[data]'"
        ) from None
    loaded: Any = datasets.load_from_disk(str(path))
    if isinstance(loaded, datasets.DatasetDict):
        if "train" not in loaded:
            raise InvalidTrainingConfig(f"{path} has splits {list(loaded)} but no 'train'")
        loaded = loaded["train"]
    if text_field not in loaded.column_names:
        raise InvalidTrainingConfig(
            f"{path} has columns {loaded.column_names}, not {text_field!r} (text_field=...)"
        )
    return [t for t in loaded[text_field] if isinstance(t, str) and t.strip()]


def load_texts(path: str | os.PathLike[str], *, text_field: str = "text") -> list[str]:
    """Documents from a local dataset, in file order; what :func:`tokenize_blocks` takes.

    * ``*.jsonl`` / ``*.json`` (JSON Lines): one document per line, either a JSON string or an
      object whose ``text_field`` is a string (other keys are ignored);
    * a folder written by ``datasets``' ``save_to_disk`` (its ``train`` split if it has
      several; needs the ``data`` extra): the ``text_field`` column;
    * any other file (``.txt``, ``.md``, ...): plain UTF-8 text, one document per file;
    * a folder of such files: every ``.txt``/``.text``/``.md``/``.jsonl`` file, sorted by name.

    Empty documents are dropped. Raises :class:`InvalidTrainingConfig` on a missing path,
    malformed JSON, a missing field, more than :data:`MAX_TEXT_BYTES`, or no text at all.
    """
    root = Path(path)
    if not root.exists():
        raise InvalidTrainingConfig(f"no dataset at {root}")
    if root.is_dir() and (
        (root / "dataset_info.json").is_file() or (root / "dataset_dict.json").is_file()
    ):
        docs = _saved_dataset(root, text_field)
    else:
        if root.is_dir():
            files = sorted(
                p
                for p in root.iterdir()
                if p.is_file() and p.suffix.lower() in (*_TEXT_SUFFIXES, ".jsonl")
            )
        else:
            files = [root]
        if sum(p.stat().st_size for p in files) > MAX_TEXT_BYTES:
            raise InvalidTrainingConfig(f"{root} holds more than {MAX_TEXT_BYTES} bytes of text")
        docs = []
        for p in files:
            if p.suffix.lower() in (".jsonl", ".json"):
                docs.extend(_jsonl(p, text_field))
            else:
                text = p.read_text(encoding="utf-8")
                if text.strip():
                    docs.append(text)
    if not docs:
        raise InvalidTrainingConfig(f"{root} holds no text")
    return docs
