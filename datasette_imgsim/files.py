"""Which files the plugin may read: paths as stored, resolved, kept inside the allowed roots.

Every page and search that reads an image file by a stored path asks allowed_file() first.
The rule: a path, made absolute and normalised (so `..` cannot climb out), must lie under
one of the roots, either as written or with its symlinks resolved; a symlink inside a
root is followed (the library's owner put it there), but a stored path that names a
place outside every root is refused. Only regular files are read (no FIFOs, devices or
folders).
"""
from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Iterable, Union

from .errors import MissingImage, OutsideRoot, SourceError

PathLike = Union[str, os.PathLike]


def absolute(value: str, base: PathLike) -> str:
    """A stored path made absolute against base (the index's root), normalised, `~` expanded."""
    path = os.path.expanduser(value)
    if not os.path.isabs(path):
        path = os.path.join(os.fspath(base), path)
    return os.path.normpath(path)


def _forms(root: str) -> set[str]:
    """A root as written and with its symlinks resolved (a library reached through a link)."""
    forms = {os.path.normpath(root)}
    try:
        forms.add(os.path.realpath(root))
    except (OSError, ValueError):
        pass
    return forms


def _inside(path: str, roots: set[str]) -> bool:
    return any(path == root or path.startswith(root.rstrip(os.sep) + os.sep) for root in roots)


def allowed_file(value: str, base: PathLike, roots: Iterable[PathLike]) -> Path:
    """The file a stored path names, if it lies under an allowed root and is a regular file.

    OutsideRoot (403) for a path outside every root, MissingImage (404) for one that is not
    there or not a regular file."""
    if "\x00" in value:
        raise MissingImage("the image path contains a NUL byte")
    forms: set[str] = set()
    for root in roots:
        if root:
            forms |= _forms(os.fspath(root))
    if not forms:
        raise OutsideRoot("this index has no root directory to serve files from")
    try:
        path = absolute(value, base)
        real = os.path.realpath(path)
    except (OSError, ValueError):
        raise MissingImage("the image path cannot be resolved") from None
    if not (_inside(path, forms) or _inside(real, forms)):
        raise OutsideRoot("the image path is outside the indexed root folders "
                          "(datasette imgsim roots DB --table T --add DIR allows another)")
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        raise MissingImage("image file not found") from None
    except OSError:
        raise MissingImage("image file cannot be read") from None
    if not stat.S_ISREG(mode):
        raise MissingImage("image path is not a regular file")
    return Path(path)


def check_root(folder: PathLike) -> str:
    """A folder the user offers as a root: it must exist, and be narrower than the whole
    filesystem. Returned absolute and normalised."""
    path = os.path.normpath(os.path.abspath(os.path.expanduser(os.fspath(folder))))
    if not os.path.isdir(path):
        raise SourceError(f"root folder not found: {path}")
    if os.path.dirname(path) == path:
        raise SourceError(f"{path} cannot be a root: it would let the pages read any file; "
                          "name the folder that holds the photos")
    return path


def covering_folders(paths: Iterable[str]) -> tuple[str, ...]:
    """The fewest folders that hold every absolute path: each file's folder, less those
    inside another one (so the server may read exactly the folders the photos are in)."""
    folders = sorted({os.path.dirname(os.path.normpath(p)) for p in paths
                      if p and os.path.isabs(p)})
    kept: list[str] = []
    for folder in folders:  # sorted: a parent comes before its children
        if os.path.dirname(folder) == folder:
            continue  # never the filesystem root
        if not _inside(folder, set(kept)):
            kept.append(folder)
    return tuple(kept)
