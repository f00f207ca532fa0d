"""Which decoder a file needs, told from its first bytes: camera RAW, HEIF, video or image.

Bytes arrive from files and BLOBs alike, so nothing here looks at a file name.
Decoded images carry ``info[KIND_KEY]`` ("image", "raw", "heif" or "video") and
``info[PATH_KEY]``, how the pixels were obtained: "decode" (a plain image), "preview"
or "demosaic" (RAW), "thumbnail" or "full" (HEIF), "frame" (video). ``paths`` counts
the decodes by (kind, path), for the benchmark and the tests.
"""
from __future__ import annotations

import struct
from collections import Counter

KIND_KEY = "imgsim_kind"
PATH_KEY = "imgsim_path"
HEAD_BYTES = 65536  # enough for every signature and a TIFF's first IFDs

paths: Counter = Counter()

# ISO base media brands of HEIF and AVIF images (a major or a compatible brand).
HEIF_BRANDS = {b"heic", b"heix", b"heim", b"heis", b"hevc", b"hevx", b"mif1", b"msf1",
               b"avif", b"avis", b"mif2"}
# Leading atoms of QuickTime files written without an ftyp box (old cameras).
QUICKTIME_ATOMS = {b"moov", b"mdat", b"wide", b"free", b"skip", b"pnot"}
# TIFF compressions only camera RAW files use (NEF, ARW, SRW, PEF, Kodak, lossy DNG).
RAW_COMPRESSIONS = {262, 32767, 32769, 32770, 32772, 32773, 34713, 34892, 65000, 65535}
RAW_PHOTOMETRICS = {32803, 34892}  # colour filter array, linear raw
# ORF, RW2, RAF, MRW, X3F, ARRIRAW; the rest LibRaw is asked about when Pillow cannot
# read a file (images._last_resort).
RAW_MAGIC = (b"IIRO", b"IIRS", b"MMOR", b"IIU\x00", b"FUJIFILMCCD-RAW", b"\x00MRM", b"FOVb",
             b"ARRI")


def record(kind: str, path: str) -> None:
    paths[(kind, path)] += 1


def sniff(head: bytes) -> str:
    """"raw", "heif", "video" or "image" (anything else: left to Pillow)."""
    if head[4:8] == b"ftyp":
        major = head[8:12]
        size = struct.unpack(">I", head[:4])[0]
        brands = {major} | {head[i:i + 4] for i in range(16, min(size, 64), 4)}
        if major == b"crx ":
            return "raw"  # Canon CR3
        if major in HEIF_BRANDS or (brands & HEIF_BRANDS and not brands & {b"isom", b"mp41", b"mp42", b"qt  "}):
            return "heif"
        return "video"
    if head[4:8] in QUICKTIME_ATOMS:
        return "video"
    if head[:4] == b"RIFF" and head[8:12] in (b"AVI ", b"AVIX"):
        return "video"
    if head[:4] == b"\x1a\x45\xdf\xa3":  # EBML: Matroska, WebM
        return "video"
    if head[:4] in (b"\x00\x00\x01\xba", b"\x00\x00\x01\xb3") or head[:3] == b"FLV" \
            or head[:8] == b"\x30\x26\xb2\x75\x8e\x66\xcf\x11":
        return "video"  # MPEG program stream, FLV, ASF/WMV
    if len(head) > 564 and head[0] == head[188] == head[376] == head[564] == 0x47 \
            and head[:4] != b"GIF8":
        return "video"  # MPEG transport stream (AVCHD .mts)
    if head.startswith(RAW_MAGIC) or head[6:14] == b"HEAPCCDR":
        return "raw"
    if head[:4] in (b"II*\x00", b"MM\x00*") and tiff_is_raw(head):
        return "raw"
    return "image"


def tiff_is_raw(head: bytes) -> bool:
    """Whether a TIFF-structured file is a camera RAW (DNG, CR2, NEF, ARW, PEF, SRW...)."""
    if head[8:10] == b"CR":
        return True  # Canon CR2
    order = "<" if head[:2] == b"II" else ">"
    try:
        first = struct.unpack_from(order + "I", head, 4)[0]
    except struct.error:
        return False
    todo, seen = [first], set()
    while todo and len(seen) < 16:
        offset = todo.pop()
        if offset in seen or not 8 <= offset < len(head) - 2:
            continue
        seen.add(offset)
        tags, following = _ifd(head, offset, order)
        if 50706 in tags:  # DNGVersion
            return True
        if tags.get(262, [0])[0] in RAW_PHOTOMETRICS or tags.get(259, [0])[0] in RAW_COMPRESSIONS:
            return True
        if 330 in tags and 271 in tags:  # SubIFDs in a camera's file
            return True
        todo.extend(tags.get(330, []))
        if following:
            todo.append(following)
    return False


def _ifd(head: bytes, offset: int, order: str) -> tuple[dict, int]:
    """The small integer tags of one IFD (value offsets for the rest) and the next IFD."""
    sizes = {1: 1, 3: 2, 4: 4, 13: 4}
    tags: dict = {}
    try:
        count = struct.unpack_from(order + "H", head, offset)[0]
        for i in range(min(count, 512)):
            tag, kind, n, value = struct.unpack_from(order + "HHI4s", head, offset + 2 + 12 * i)
            if kind not in sizes or n == 0:
                tags[tag] = []
                continue
            width = sizes[kind]
            fmt = {1: "B", 2: "H", 4: "I"}[width]
            if n * width <= 4:
                tags[tag] = list(struct.unpack_from(f"{order}{n}{fmt}", value))
            else:
                at = struct.unpack(order + "I", value)[0]
                tags[tag] = list(struct.unpack_from(f"{order}{min(n, 64)}{fmt}", head, at))
        following = struct.unpack_from(order + "I", head, offset + 2 + 12 * count)[0]
    except struct.error:
        return tags, 0
    return tags, following
