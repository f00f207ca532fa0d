"""App presets: recognise a photo manager's SQLite database and list the photos to index.

Each preset is a small pure module (one per app) exposing an object with ``name``, ``title``,
``description``, ``detect(conn)`` and ``photo_list(conn, options)``. Presets only ever *read* the
app database: ``photo_list`` runs a few SELECTs on sqlite_master/the app tables and returns a
:class:`PhotoList` whose ``sql`` the indexer runs on a read-only connection. Adding an app is
adding one module here and one line to ``APPS``.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Protocol, runtime_checkable

from ..errors import ImgsimError


@dataclass(frozen=True)
class PhotoList:
    app: str
    name: str
    sql: str
    key_column: str
    image_column: str
    caption_column: Optional[str]
    date_column: Optional[str]
    roots: tuple[str, ...]
    versions_sql: Optional[str] = None
    notes: tuple[str, ...] = ()


@runtime_checkable
class App(Protocol):
    name: str
    title: str
    description: str

    def detect(self, conn) -> bool: ...

    def photo_list(self, conn, options: Optional[dict] = None) -> PhotoList: ...


class UnknownApp(ImgsimError):
    """Raised by get_app() for a name that is not a preset."""


from . import darktable, digikam, dogsheep, generic, lightroom, shotwell  # noqa: E402

# Detection order: the app-specific fingerprints first; generic last, because any app database
# with a single path-like table would also match it.
APPS: list = [digikam.APP, shotwell.APP, darktable.APP, lightroom.APP, dogsheep.APP, generic.APP]


def list_apps() -> list:
    return list(APPS)


def get_app(name: str):
    for app in APPS:
        if app.name == (name or "").strip().lower():
            return app
    raise UnknownApp(f"unknown app {name!r}; choose one of: {', '.join(app.name for app in APPS)}")


def detect_app(conn):
    """The first preset whose schema fingerprint matches, or None."""
    for app in APPS:
        if app.detect(conn):
            return app
    return None


__all__ = ["APPS", "App", "PhotoList", "UnknownApp", "detect_app", "get_app", "list_apps"]
