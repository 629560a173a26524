"""The on-disk cache of pre-trained zoo weights (``$LORAKIT_CACHE``, default ``~/.cache/lorakit``).

An entry is a directory named ``<kind>-<key>``, where the key hashes every configuration value
that changes the weights, plus the corpus (:func:`lorakit.zoo.text.corpus_hash`), the torch and
transformers versions and :data:`FORMAT`. An entry is built in a temporary sibling directory and
renamed into place, so a concurrent reader (``pytest -n auto``) sees a complete entry or none.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

__all__ = ["FORMAT", "cache_dir", "cache_key", "cached_dir", "read_meta"]

#: Bumped whenever the layout or the training recipe of an entry changes.
FORMAT = 1


def cache_dir() -> Path:
    """``$LORAKIT_CACHE`` if set (and non-empty), else ``~/.cache/lorakit``."""
    root = os.environ.get("LORAKIT_CACHE") or os.path.join("~", ".cache", "lorakit")
    return Path(root).expanduser()


def cache_key(config: dict) -> str:
    """A 16-hex-digit SHA-256 of ``config`` (JSON, sorted keys) and the library versions."""
    import torch
    import transformers

    full = {
        **config,
        "_format": FORMAT,
        "_torch": torch.__version__,
        "_transformers": transformers.__version__,
    }
    blob = json.dumps(full, sort_keys=True, default=str).encode("utf-8")
    return hashlib.sha256(blob).hexdigest()[:16]


def cached_dir(kind: str, config: dict, build: Callable[[Path], None], *, cache: bool = True):
    """The directory of the entry for ``(kind, config)``, building it with ``build(tmp)`` if absent.

    ``build`` writes its files into the empty directory it is given and may return a dict of
    facts (losses, timings) stored with the configuration in ``lorakit.json`` (:func:`read_meta`).
    With ``cache=False`` the entry is built in a fresh temporary directory (removed at interpreter exit) and the cache is
    neither read nor written. Returns the entry's :class:`~pathlib.Path`.
    """
    if not cache:
        tmp = Path(tempfile.mkdtemp(prefix=f"lorakit-{kind}-"))
        _remove_at_exit(tmp)
        _write_meta(tmp, kind, config, build(tmp))
        return tmp
    root = cache_dir()
    final = root / f"{kind}-{cache_key(config)}"
    if (final / "lorakit.json").is_file():
        return final
    root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{kind}-", dir=root))
    try:
        _write_meta(tmp, kind, config, build(tmp))
        try:
            os.replace(tmp, final)
        except OSError:  # another process won the race: its entry is as good as ours
            if not (final / "lorakit.json").is_file():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return final


def read_meta(path) -> dict:
    """The ``lorakit.json`` of an entry: its kind, configuration and the facts its build returned."""
    return json.loads((Path(path) / "lorakit.json").read_text())


def _write_meta(path: Path, kind: str, config: dict, facts) -> None:
    meta = {"kind": kind, "config": config, **(facts or {})}
    (path / "lorakit.json").write_text(json.dumps(meta, indent=1, default=str))


def _remove_at_exit(path: Path) -> None:
    import atexit

    atexit.register(shutil.rmtree, path, ignore_errors=True)
