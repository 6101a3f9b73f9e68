"""How a model is named wherever a person or another machine reads the name: never by an absolute path.

A model string is a Hub id (``org/name``), a backend or plug-in name (``module:Class``), or a local folder.
Config names, cards, assets, result rows and logs name a local folder ``<folder name>-<content hash>``, so
a repo scored with ``/tmp/x/tiny-clip`` can be published, and the same weights in two places get one name.
This sits at the bottom of the layers because the backends' load logs use it as much as the evaluation.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

from lovr_hf.ids import short_hash

PLUGIN = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$")  # module:Class (no '/', '-': never a Hub id)


def looks_like_path(text: str) -> bool:
    """A local path rather than a Hub id (``org/name``) or a plug-in (``module:Class``)."""
    return text.startswith(("/", "./", "../", "~", ".\\")) or len(Path(text).parts) > 2 or "\\" in text


def folder_digest(folder: Path, small: int = 1 << 20) -> str:
    """Short hash of a model folder's *content*: every file's relative name and size, and the bytes of the
    small ones (configs, tokenizers). The same weights in two places get the same name; a changed config
    gets another. Weight files are not read (sizes only): naming a model must not cost a pass over GBs."""
    h = hashlib.sha256()
    files = sorted(p for p in folder.rglob("*") if p.is_file() and not any(x.startswith(".") for x in
                                                                            p.relative_to(folder).parts))
    for p in files:
        size = p.stat().st_size
        h.update(f"{p.relative_to(folder).as_posix()}\0{size}\0".encode())
        if size <= small:
            h.update(p.read_bytes())
    return h.hexdigest()[:8] if files else short_hash(str(folder.resolve()))  # an empty folder: its place


def model_label(model: str) -> str:
    """How a model is named in config names, cards, assets and logs: never an absolute path.

    Hub ids, backend names and plug-ins stay as they are; a local folder is ``<folder name>-<content
    hash>`` (:func:`folder_digest`); a path that does not exist is ``<last part>-<hash of the path text>``.
    """
    text = model.strip()
    if not text or PLUGIN.match(text):
        return text
    path = Path(text).expanduser()
    if path.exists():
        resolved = path.resolve()
        return f"{resolved.name or 'model'}-{folder_digest(resolved) if resolved.is_dir() else short_hash(str(resolved))}"
    if looks_like_path(text):
        return f"{path.name or 'model'}-{short_hash(text)}"
    return text
