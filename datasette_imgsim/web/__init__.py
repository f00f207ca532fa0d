"""The plugin's pages, one module each; every route is listed here."""
from __future__ import annotations

SEGMENT = r"[^/]+"
TABLE = rf"^/(?P<database>{SEGMENT})/(?P<table>{SEGMENT})/-"


def routes() -> list:
    from .duplicates_page import duplicates_view
    from .similar_page import similar_row_view
    from .thumbnail_page import thumbnail_view
    from .upload_page import similar_upload_view

    return [
        (rf"{TABLE}/similar/(?P<pk>[^/]+?)(?P<format>\.json)?$", similar_row_view),
        (rf"{TABLE}/similar(?P<format>\.json)?$", similar_upload_view),
        (rf"{TABLE}/thumbnail/(?P<pk>{SEGMENT})$", thumbnail_view),
        (rf"{TABLE}/duplicates(?P<format>\.json)?$", duplicates_view),
    ]
