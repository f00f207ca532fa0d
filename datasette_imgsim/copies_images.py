"""The images of one candidate component as duplicate verification reads them: each
row's source looked up once, decoded once into verify's signatures (SIFT keypoints added
only for pairs the signatures cannot settle), its file facts (size, EXIF, JPEG tables)
read from the header; what each stage costs is counted."""
from __future__ import annotations

import os
import time
from collections import OrderedDict
from typing import Any, Callable, Optional

from . import verify
from .bestcopy import Facts, facts_of

DECODE_SIZE = 256  # the shorter side images are decoded at (verify matches at 384 long)
HEAD_BYTES = 2 * 1024 * 1024  # of a file, enough for its header, EXIF and JPEG tables
PREPARED_CACHE = 2000  # images' signatures kept per worker (~0.3 MB each with SIFT)
SOURCE_CACHE = 16  # rows' image sources kept (BLOBs among them)


class Images:
    """Signatures and facts of a component's images, read through load(key) ->
    ImageSource (thumbnails.ImageSource: .data or .path), each once."""

    def __init__(self, load: Callable[[Any], Any]):
        self.load = load
        self.prepared: OrderedDict = OrderedDict()
        self.sources: OrderedDict = OrderedDict()
        self.facts: dict = {}
        self.failed: dict = {}
        # Seconds spent per stage (what bench/duplicates_accuracy.py reports).
        self.seconds = {"decode": 0.0, "settle": 0.0, "features": 0.0, "verify": 0.0,
                        "facts": 0.0}

    def _source(self, key):
        # A pair's images are decoded, then their facts read, moments apart: a few recent
        # sources are kept so each row is looked up (and a BLOB read) once.
        if key in self.sources:
            self.sources.move_to_end(key)
            return self.sources[key]
        source = self.sources[key] = self.load(key)
        if len(self.sources) > SOURCE_CACHE:
            self.sources.popitem(last=False)
        return source

    def signatures(self, key) -> Optional[verify.Prepared]:
        if key in self.failed:
            return None
        if key in self.prepared:
            self.prepared.move_to_end(key)
            return self.prepared[key]
        from .images import load_image

        started = time.perf_counter()
        try:
            source = self._source(key)
            pixels = load_image(source.data if source.data is not None else source.path,
                                DECODE_SIZE)
            found = verify.prepare(pixels, features=False)
        except Exception as e:  # noqa: BLE001 - one unreadable image costs its pairs only
            self.failed[key] = _one_line(e)
            return None
        finally:
            self.seconds["decode"] += time.perf_counter() - started
        self.prepared[key] = found
        if len(self.prepared) > PREPARED_CACHE:
            self.prepared.popitem(last=False)
        return found

    def facts_of(self, key) -> Facts:
        if key not in self.facts:
            started = time.perf_counter()
            self.facts[key] = read_facts(self._source, key)
            self.seconds["facts"] += time.perf_counter() - started
        return self.facts[key]

    def features(self, prepared: verify.Prepared) -> None:
        if prepared.features is None:
            started = time.perf_counter()
            verify.with_features(prepared)
            self.seconds["features"] += time.perf_counter() - started


def read_facts(load, key) -> Facts:
    """bestcopy.Facts of one row's image (load(key) -> its ImageSource)."""
    try:
        source = load(key)
    except Exception:  # noqa: BLE001 - facts are best effort
        return Facts()
    return source_facts(source)


def source_facts(source) -> Facts:
    """bestcopy.Facts of an ImageSource from its header (dimensions, EXIF, JPEG tables)."""
    try:
        if source.data is not None:
            data, path, size = source.data, None, len(source.data)
        else:
            path, size = str(source.path), os.path.getsize(source.path)
            with open(source.path, "rb") as f:
                data = f.read(HEAD_BYTES)
    except Exception:  # noqa: BLE001 - facts are best effort
        return Facts()
    facts = facts_of(data, path)
    facts.size = size
    if facts.width is None:
        from .images import image_size

        try:  # RAW, HEIC, video: what the thumbnails and index read
            facts.width, facts.height = image_size(data)
        except Exception:  # noqa: BLE001
            pass
    return facts


def _one_line(e: BaseException) -> str:
    return " ".join(str(e).split()) or type(e).__name__
