"""URLs of the plugin's pages for one table: the one place query strings are built."""
from __future__ import annotations

from typing import Optional
from urllib.parse import urlencode

from datasette.utils import tilde_encode


def with_query(url: str, **args) -> str:
    """url with the arguments that are not None as its query string."""
    query = urlencode({k: v for k, v in args.items() if v is not None})
    return url + (f"?{query}" if query else "")


class Urls:
    def __init__(self, datasette, database: str, table: str):
        self.datasette, self.database, self.table = datasette, database, table
        self.base = datasette.urls.table(database, table)

    def similar(self, pk, suffix: str = "", **args) -> str:
        return with_query(f"{self.base}/-/similar/{tilde_encode(str(pk))}{suffix}", **args)

    def upload(self, **args) -> str:
        return with_query(f"{self.base}/-/similar", **args)

    def duplicates(self, suffix: str = "", **args) -> str:
        return with_query(f"{self.base}/-/duplicates{suffix}", **args)

    def compare(self, a, b, suffix: str = "", **args) -> str:
        return with_query(f"{self.base}/-/compare/{tilde_encode(str(a))}/"
                          f"{tilde_encode(str(b))}{suffix}", **args)

    def thumbnail(self, pk, size: int, method: Optional[str] = None) -> str:
        return with_query(f"{self.base}/-/thumbnail/{tilde_encode(str(pk))}", size=size,
                          method=method or None)

    def image(self, pk, method: Optional[str] = None) -> str:
        return with_query(f"{self.base}/-/image/{tilde_encode(str(pk))}", method=method or None)

    def gallery(self, query: str = "", **args) -> str:
        """The gallery, with a table page's own query string (filters, sort) kept."""
        url = with_query(f"{self.base}/-/gallery", **args)
        if query:
            url += ("&" if "?" in url else "?") + query
        return url

    def strip(self, pk) -> str:
        return f"{self.base}/-/strip/{tilde_encode(str(pk))}"

    def row(self, row_path: Optional[str], pk_column: str, pk) -> str:
        if row_path is not None:
            return self.datasette.urls.row(self.database, self.table, row_path)
        # Views have no row pages: a filter on the key column finds the row.
        return with_query(self.base, **{pk_column: pk})
