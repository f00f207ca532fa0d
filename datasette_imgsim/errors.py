"""One error type for everything a user can get wrong; each surface translates it once.

An ImgsimError carries a message written for the user and the HTTP status a page answers
with. The CLI prints the message (click.ClickException), SQL functions raise it with the
message, pages answer with it and the status (web/render.py). Any other exception is a
bug and shows as one.
"""
from __future__ import annotations


class ImgsimError(Exception):
    """A problem with the user's input or environment; str(e) is the message for them."""

    status = 400

    def __init__(self, message: str = "", status: int = None):
        super().__init__(message)
        if status is not None:
            self.status = status

    @property
    def message(self) -> str:
        return str(self)


class NotFound(ImgsimError, LookupError):
    """A request for an index, row or file that is not there."""

    status = 404


class InvalidName(ImgsimError):
    """A table, column or index name that cannot reach SQL (empty, not text, NUL bytes)."""


class ExtensionUnavailable(ImgsimError):
    """This Python's sqlite3 cannot load sqlite-vec."""

    status = 500


class SourceError(ImgsimError):
    """A table, column or key the user named that cannot be used."""


class SourceLocked(SourceError):
    """A photo database another program holds locked."""

    status = 503


class SearchError(ImgsimError):
    """Bad arguments to a search (k, rerank)."""


class RerankError(SearchError):
    """An unknown re-ranking option."""


class UnknownMethod(ImgsimError):
    """A feature method name that no plugin registered."""


class DuplicatesError(ImgsimError):
    """A bad threshold or neighbour count."""


class ImageError(ImgsimError):
    """An input that cannot be turned into pixels."""


class ThumbnailError(ImgsimError):
    """A row's image that cannot be served."""

    status = 404


class OutsideRoot(ThumbnailError):
    status = 403


class MissingImage(ThumbnailError):
    status = 404


class UploadError(ImgsimError):
    """An upload that is too large, malformed, interrupted or fails the CSRF check."""
