"""The edges of a saved HNSW graph's base layer, read in place from its file.

Duplicate grouping at scale needs, for every row, the rows within a threshold of it,
and only to join them into connected groups. Searching the graph once per row costs a
million searches at 1M rows (~0.25 ms each here: over four minutes on 2 cores); the
graph's base layer already holds, for every row, up to 2M links to its nearest rows,
chosen so that a near row is dropped only when it is nearer still to a row kept (it
is reached through that one). The links shorter than a threshold therefore join the
same groups as every pair within it would (single linkage), at ~32 distances a row.
Not quite always: a build leaves some rows poorly linked, so rows with few short links
are searched too (WEAK_LINKS), as are the rows changed since the file was saved.

hnswlib saves the base layer as one block of fixed-size records (links, vector,
label), which is memory-mapped here: nothing is loaded, and the OS pages it in and
out. The layout is checked against the header; any other layout (another hnswlib)
reads as None and the caller searches instead.
"""
from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Optional

import numpy as np

# hnswlib's HierarchicalNSW::saveIndex header: offsetLevel0, max_elements,
# cur_element_count, size_data_per_element, label_offset, offsetData (size_t each),
# maxlevel (int), enterpoint_node (uint32), maxM, maxM0, M (size_t), mult (double),
# ef_construction (size_t).
HEADER = struct.Struct("<QQQQQQiIQQQdQ")
# A row with fewer links within the bound than this is searched as well. A graph's
# build leaves some rows of a tight burst linked past their own burst (its search at
# insertion missed them); at 1M clustered cnn rows (bound 0.05) the links alone keep
# 0.9985 of the exact pairs together, and searching the 8 % of rows with at most one
# link 0.9999, as much as searching every row, in a third of that time.
WEAK_LINKS = 2
# Those rows are searched for their few nearest only, at a low search ef: joining a
# row to its group takes one link within the bound. On 1M rows of which nearly all are
# unique (bench/duplicates_speed.py -n 1000000), 967k rows have too few short links:
# their search at k 2, ef 8 took 94 s and kept 0.9976 of the planted pairs within the
# bound together (links alone 0.9967), at k 20, ef 32 240-300 s and 0.9983.
SEARCH_NEAREST = 2
SEARCH_EF = 8
# Base-layer records per block of distance work: 1024 x 32 gathered 1280-d vectors
# are 168 MB.
BLOCK = 1024


@dataclass(frozen=True)
class BaseLayer:
    """Views into a saved graph's file: for each of its n entries, its label (the item
    id), whether it is marked deleted, and its links (entry numbers, -1 past its count);
    vectors as the graph holds them (unit length in cosine space)."""
    labels: np.ndarray  # (n,) int64
    deleted: np.ndarray  # (n,) bool
    links: np.ndarray  # (n, maxM0) int64, -1 where unused
    vectors: np.ndarray  # (n, dims) float32, a strided view of the file

    @property
    def size(self) -> int:
        return len(self.labels)


def read(path: Path, dims: int) -> Optional[BaseLayer]:
    """The base layer of a graph saved by hnswlib, or None if the file is not laid out
    as expected (or cannot be read)."""
    try:
        with open(path, "rb") as f:
            head = f.read(HEADER.size)
        if len(head) < HEADER.size:
            return None
        (offset_level0, _, count, record, label_offset, data_offset, _, _, _, max_m0, m, _,
         _) = HEADER.unpack(head)
        links_size = 4 + 4 * max_m0
        if (offset_level0 != 0 or data_offset != links_size or max_m0 != 2 * m
                or label_offset != data_offset + 4 * dims or record != label_offset + 8
                or path.stat().st_size < HEADER.size + count * record):
            return None
        raw = np.memmap(path, dtype=np.uint8, mode="r", offset=HEADER.size,
                        shape=(count, record))
    except (OSError, ValueError, struct.error):
        return None
    head_words = np.ndarray((count,), dtype="<u4", buffer=raw, offset=0, strides=(record,))
    used = (head_words & 0xFFFF).astype(np.int64)  # the low two bytes: links in use
    deleted = ((head_words >> 16) & 0xFF) & 1 == 1  # the third: hnswlib's DELETE_MARK
    links = np.ndarray((count, max_m0), dtype="<u4", buffer=raw, offset=4,
                       strides=(record, 4)).astype(np.int64)
    links[np.arange(max_m0)[None, :] >= used[:, None]] = -1
    labels = np.ndarray((count,), dtype="<u8", buffer=raw, offset=label_offset,
                        strides=(record,)).astype(np.int64)
    vectors = np.ndarray((count, dims), dtype="<f4", buffer=raw, offset=data_offset,
                         strides=(record, 4))
    return BaseLayer(labels, deleted, links, vectors)


def short_links(layer: BaseLayer, metric: str, bound: float, skip: np.ndarray
                ) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """(item ids a, item ids b, distances) of the links no longer than bound, a block
    at a time, each link once (a < b), leaving out deleted entries and the item ids in
    skip (sorted: rows changed since the file was saved)."""
    limit = bound + 1e-6
    gone = layer.deleted | np.isin(layer.labels, skip)
    for start in range(0, layer.size, BLOCK):
        rows = np.arange(start, min(start + BLOCK, layer.size))
        targets = layer.links[rows]
        keep = (targets >= 0) & ~gone[rows][:, None]
        keep &= ~gone[np.maximum(targets, 0)]
        # Each link once: from its smaller entry (a link both ways is seen from there too,
        # a one-way link from the larger entry is kept as well).
        keep &= (targets > rows[:, None]) | ~_links_back(layer, targets, rows)
        r, c = np.nonzero(keep)
        if not len(r):
            continue
        a, b = rows[r], targets[r, c]
        d = _distances(np.asarray(layer.vectors[rows])[r], np.asarray(layer.vectors[b]), metric)
        near = d <= limit
        yield layer.labels[a[near]], layer.labels[b[near]], d[near]


def _links_back(layer: BaseLayer, targets: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """Whether each target entry links back to its row."""
    back = layer.links[np.maximum(targets, 0)]  # (rows, maxM0, maxM0)
    return (back == rows[:, None, None]).any(axis=2)


def _distances(a: np.ndarray, b: np.ndarray, metric: str) -> np.ndarray:
    """Row-wise distances of two equal-length stacks, as the graph measures them (its
    cosine vectors are unit length)."""
    if metric == "cosine":
        return 1.0 - np.einsum("ij,ij->i", a, b)
    return np.sqrt(np.maximum(np.einsum("ij,ij->i", a - b, a - b), 0.0))


@dataclass
class SavedPairs:
    """What a saved graph gives for grouping within a bound: its base-layer links within
    the bound among rows unchanged since it was saved (item ids a, b, distances), and
    the rows to search for their near rows instead, a batch at a time (to_search):
    those changed since (their stored vectors), then those with fewer than WEAK_LINKS
    links within the bound (their vectors read from the file as they are searched: at
    1M mostly unique rows that is 5 GB that need not be held at once)."""
    a: np.ndarray
    b: np.ndarray
    distances: np.ndarray
    changed_ids: np.ndarray
    changed_vectors: np.ndarray
    layer: BaseLayer
    weak: np.ndarray  # base-layer entries

    @property
    def searches(self) -> int:
        return len(self.changed_ids) + len(self.weak)

    def to_search(self, batch: int = 20_000) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """(item ids, float32 vectors) of the rows to search, `batch` at a time."""
        for start in range(0, len(self.changed_ids), batch):
            yield (self.changed_ids[start:start + batch],
                   self.changed_vectors[start:start + batch])
        for start in range(0, len(self.weak), batch):
            entries = self.weak[start:start + batch]
            yield self.layer.labels[entries], np.asarray(self.layer.vectors[entries])


def saved_pairs(conn, spec, bound: float) -> Optional[SavedPairs]:
    """From the newest saved graph the log can bring forward: its links within bound and
    the rows to search besides (SavedPairs). None when no saved file serves."""
    from .ann_graph import folder, saved_files
    from .ann_log import changed_ids, database_file, log_bounds, read_rows, row_count

    db_file = database_file(conn, spec.vec_table)
    if db_file is None:
        return None
    conn.execute("begin")  # one snapshot: the generation, the rows changed since the file
    try:
        oldest, generation = log_bounds(conn, spec)
        for saved, _, path in saved_files(folder(db_file), spec):
            if saved > generation or (oldest and saved < oldest - 1):
                continue
            layer = read(path, spec.dims)
            if layer is None:
                return None
            if saved == generation and int((~layer.deleted).sum()) != row_count(conn, spec):
                continue  # does not match the rows (a database restored from a backup)
            break
        else:
            return None
        changed = np.array(sorted(changed_ids(conn, spec, saved, generation)), dtype=np.int64)
        ids, vectors, _ = read_rows(conn, spec, changed.tolist())
    finally:
        conn.execute("rollback")
    parts = list(short_links(layer, spec.metric, bound, changed))
    a, b, d = (np.concatenate(p) for p in zip(*parts)) if parts else \
        (np.empty(0, np.int64), np.empty(0, np.int64), np.empty(0, np.float32))
    return SavedPairs(a, b, d, np.asarray(ids, np.int64), vectors, layer,
                      _weakly_linked(layer, a, b, changed))


def _weakly_linked(layer: BaseLayer, a: np.ndarray, b: np.ndarray, changed: np.ndarray
                   ) -> np.ndarray:
    """Entries (live, unchanged) with fewer than WEAK_LINKS of the links found."""
    order = np.argsort(layer.labels)
    at = order[np.searchsorted(layer.labels[order], np.concatenate([a, b]))]
    links = np.bincount(at, minlength=layer.size)
    live = ~layer.deleted & ~np.isin(layer.labels, changed)
    return np.flatnonzero(live & (links < WEAK_LINKS))
