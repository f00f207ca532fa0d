"""The plugin's pages, one module each; every route is listed here."""
from __future__ import annotations

SEGMENT = r"[^/]+"
TABLE = rf"^/(?P<database>{SEGMENT})/(?P<table>{SEGMENT})/-"


def routes() -> list:
    from .compare_page import compare_view
    from .duplicates_page import duplicates_view
    from .gallery_page import gallery_view
    from .image_page import image_view
    from .similar_page import similar_row_view
    from .strip import strip_view
    from .thumbnail_page import thumbnail_view
    from .upload_page import similar_upload_view

    return [
        (rf"{TABLE}/similar/(?P<pk>[^/]+?)(?P<format>\.json)?$", similar_row_view),
        (rf"{TABLE}/similar(?P<format>\.json)?$", similar_upload_view),
        (rf"{TABLE}/thumbnail/(?P<pk>{SEGMENT})$", thumbnail_view),
        (rf"{TABLE}/duplicates(?P<format>\.json|\.csv)?$", duplicates_view),
        (rf"{TABLE}/compare/(?P<a>{SEGMENT})/(?P<b>[^/]+?)(?P<format>\.json)?$", compare_view),
        (rf"{TABLE}/gallery$", gallery_view),
        (rf"{TABLE}/image/(?P<pk>{SEGMENT})$", image_view),
        (rf"{TABLE}/strip/(?P<pk>{SEGMENT})$", strip_view),
    ]
