"""The index: catalogue tables and vectors, behind one Store per index database.

connection.py  connect, sqlite-vec, pragmas, memory map
schema.py      _imgsim_ DDL, IndexSpec, ItemResult
quantize.py    sign-bit codes (pure numpy)
catalog.py     Store: indexes, items, labels, errors, KNN by key
backend.py     the VectorBackend protocol; vec0.py (sqlite-vec) and memory.py (numpy)
sidecar.py     index databases beside an app's database
ann.py         the HNSW graph derived from vec0 rows, beside the index database
verdicts.py    _imgsim_verdicts, the pair verdicts of duplicate finding
milvus.py      MilvusBackend (optional extra); factory.py picks a backend from index_db
"""
from ..errors import ExtensionUnavailable, NotFound
from . import ann
from .backend import VectorBackend
from .catalog import MAX_K, Store, key_candidates
from .connection import (EXTENSION_HELP, MEMORY, connect, file_uri, load_sqlite_vec,
                         map_indexes, map_into_memory, quote_identifier, quote_literal)
from .factory import backend_for, catalogue_path
from .memory import MemoryBackend
from .milvus import is_milvus
from .quantize import choose_centring, projection, sign_bits
from .schema import ERRORS_VIEW, IndexSpec, ItemResult, is_internal
from .vec0 import MEAN_SAMPLE_ROWS, Vec0Backend

__all__ = [
    "ERRORS_VIEW", "EXTENSION_HELP", "ExtensionUnavailable", "IndexSpec", "ItemResult", "MAX_K", "MEAN_SAMPLE_ROWS",
    "MEMORY", "MemoryBackend", "ann", "backend_for", "catalogue_path", "is_milvus", "NotFound", "Store", "Vec0Backend", "VectorBackend", "choose_centring",
    "connect", "file_uri", "key_candidates", "load_sqlite_vec", "map_indexes", "map_into_memory",
    "is_internal", "projection", "quote_identifier", "quote_literal", "sign_bits",
]
