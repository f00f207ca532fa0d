"""Which member of a duplicate group is the one the others were made from?

choose_best() ranks the members' Facts:

1. never a member derived from another one: a crop of it, a screenshot or bordered
   copy of it, a greyscale, overlaid or downsized version of it (derived_from, filled
   from pair verdicts by apply_verdicts()); nor one verified as a copy of under half
   as many members as the best connected one (a look-alike joined through one copy);
2. the largest pixel count;
3. not greyscale, not mirrored, no overlay;
4. a camera RAW, else the highest JPEG quality (estimated from the quantisation tables);
5. the earliest capture date; 6. the most EXIF tags; 7. a name that is not a copy's
   ("IMG_1 (1).jpg", "IMG_1 copy.jpg", "IMG_1-edited.jpg"); 8. the first in the list.

File size is not a criterion: a mirrored or captioned copy is often a few hundred
bytes larger than its original.
"""
from __future__ import annotations

import io
import os
import re
from dataclasses import dataclass, field
from typing import Any, Optional

RAW_EXTENSIONS = {".arw", ".cr2", ".cr3", ".crw", ".dng", ".erf", ".kdc", ".mef", ".mos",
                  ".mrw", ".nef", ".nrw", ".orf", ".pef", ".raf", ".raw", ".rw2", ".rwl",
                  ".sr2", ".srf", ".srw", ".x3f", ".3fr", ".iiq"}

# The IJG (libjpeg) luminance quantisation table at quality 50, in natural order.
IJG_LUMINANCE = [16, 11, 10, 16, 24, 40, 51, 61, 12, 12, 14, 19, 26, 58, 60, 55,
                 14, 13, 16, 24, 40, 57, 69, 56, 14, 17, 22, 29, 51, 87, 80, 62,
                 18, 22, 37, 56, 68, 109, 103, 77, 24, 35, 55, 64, 81, 104, 113, 92,
                 49, 64, 78, 87, 103, 121, 120, 101, 72, 92, 95, 98, 112, 100, 103, 99]


@dataclass
class Facts:
    width: Optional[int] = None
    height: Optional[int] = None
    size: Optional[int] = None  # bytes
    path: Optional[str] = None
    format: Optional[str] = None  # "JPEG", "PNG", ... as Pillow names it
    is_grey: bool = False
    is_mirrored: bool = False
    has_overlay: bool = False
    jpeg_quality: Optional[int] = None
    is_raw: bool = False
    taken_at: Optional[str] = None  # EXIF "YYYY:MM:DD HH:MM:SS" (compared as text)
    exif_count: int = 0
    derived_from: set = field(default_factory=set)  # indices of members it was made from
    how: dict = field(default_factory=dict)  # index it was made from -> verdict kind
    copies: int = 0  # members verified as copies of it (or it of them)

    @property
    def pixels(self) -> int:
        return (self.width or 0) * (self.height or 0)


def jpeg_quality(data: bytes) -> Optional[int]:
    """The IJG quality (1-100) whose luminance table is nearest the file's, or None for
    a file that is not a JPEG. Cameras' own tables give the nearest IJG equivalent."""
    from PIL import Image

    try:
        img = Image.open(io.BytesIO(data))
        tables = getattr(img, "quantization", None)
    except Exception:
        return None
    if img.format != "JPEG" or not tables or 0 not in tables or len(tables[0]) != 64:
        return None
    table = list(tables[0])
    best, best_error = None, None
    for quality in range(1, 101):
        scale = 5000 / quality if quality < 50 else 200 - 2 * quality
        ijg = [min(255, max(1, int((q * scale + 50) // 100))) for q in IJG_LUMINANCE]
        error = sum(abs(a - b) for a, b in zip(table, ijg))
        if best_error is None or error < best_error:
            best, best_error = quality, error
    return best


def facts_of(data: bytes, path: Optional[str] = None) -> Facts:
    """Facts read from a file's bytes: dimensions (upright), format, JPEG quality, RAW
    by extension, EXIF capture date and tag count."""
    from PIL import Image

    facts = Facts(size=len(data), path=path)
    facts.is_raw = bool(path) and os.path.splitext(str(path))[1].lower() in RAW_EXTENSIONS
    try:
        img = Image.open(io.BytesIO(data))
        facts.format = img.format
        facts.width, facts.height = img.size
        exif = img.getexif()
        if exif.get(0x0112, 1) in (5, 6, 7, 8):
            facts.width, facts.height = facts.height, facts.width
        sub = exif.get_ifd(0x8769)
        facts.exif_count = len(exif) + len(sub)
        taken = sub.get(0x9003) or exif.get(0x0132)
        facts.taken_at = str(taken).strip("\x00 ") if taken else None
    except Exception:
        return facts
    facts.jpeg_quality = jpeg_quality(data) if facts.format == "JPEG" else None
    return facts


def apply_verdicts(members: list[Facts], verdicts: dict) -> list[Facts]:
    """Fill derived_from and the flags from pair verdicts {(i, j): Verdict} (verify.py's,
    "a" being members[i]). Mirroring is relative: the mirrored member is the one whose
    copies are mostly mirrored; with one pair it stays undecided."""
    mirrored_with = [0] * len(members)
    copies_of = [0] * len(members)
    for (i, j), v in verdicts.items():
        if not getattr(v, "is_copy", False):
            continue
        copies_of[i] += 1
        copies_of[j] += 1
        if v.mirrored:
            mirrored_with[i] += 1
            mirrored_with[j] += 1
        if v.grey:
            members[i if v.grey == "a" else j].is_grey = True
        if v.edited:
            members[i if v.edited == "a" else j].has_overlay = True
        if v.which_is_source:
            source, copy = (i, j) if v.which_is_source == "a" else (j, i)
            members[copy].derived_from.add(source)
            members[copy].how[source] = v.kind
    for k, m in enumerate(members):
        m.copies = copies_of[k]
        if copies_of[k] >= 2 and mirrored_with[k] * 2 > copies_of[k]:
            m.is_mirrored = True
    return members


def _rank(m: Facts, index: int) -> tuple:
    # A lossless PNG is most often an export or screenshot: no better than a JPEG.
    quality = 101 if m.is_raw else (m.jpeg_quality or 0)
    return (m.pixels, not m.is_grey, not m.is_mirrored, not m.has_overlay, quality,
            _date_key(m.taken_at), m.exif_count, not copy_name(m.path), -index)


def copy_name(path: Optional[str]) -> bool:
    """A file name a copy gets: "IMG_1 (1).jpg", "IMG_1 copy.jpg", "IMG_1-edited.jpg"."""
    stem = os.path.splitext(os.path.basename(str(path or "")))[0].lower()
    return bool(re.search(r"(\(\d+\)|copy|kopie|copie|edited|bearbeitet)$", stem))


def _date_key(taken: Optional[str]) -> tuple:
    # Earlier is better; an unknown date is worse than any known one.
    if not taken:
        return (0, "")
    return (1, "".join(chr(0x10FFFF - ord(c)) for c in taken))


def choose_best(members: list[Facts]) -> tuple[int, str]:
    """(index of the best copy, why, in words)."""
    if not members:
        raise ValueError("no members")
    if len(members) == 1:
        return 0, "the only copy"
    originals = [i for i, m in enumerate(members) if not (m.derived_from - {i})]
    pool = originals or list(range(len(members)))
    # The original is a copy relation of nearly every member; a look-alike joined to the
    # group through one of them (a burst frame matching a crop) is of few.
    most = max(members[i].copies for i in pool)
    pool = [i for i in pool if members[i].copies * 2 >= most]
    ranked = sorted(pool, key=lambda i: _rank(members[i], i), reverse=True)
    best = ranked[0]
    rivals = [i for i in range(len(members)) if i != best]
    derived = [i for i in rivals if best in members[i].derived_from]
    if derived and len(ranked) == 1:
        return best, _original_reason(members, best, derived)
    rival = ranked[1] if len(ranked) > 1 else rivals[0]
    return best, _why(members[best], members[rival], best, rival)


def _original_reason(members, best, derived) -> str:
    kinds = sorted({members[i].how.get(best, "copy") for i in derived})
    if "crop" in kinds or "screenshot/border" in kinds:
        head = "largest, uncropped original"
    elif "greyscale copy" in kinds:
        head = "the colour original"
    elif "overlay" in kinds:
        head = "the original without overlay"
    else:
        head = "the largest original"
    return f"{head} (the others are: {', '.join(kinds)})"


def _why(b: Facts, r: Facts, bi: int, ri: int) -> str:
    if b.pixels != r.pixels:
        return (f"largest ({b.width}x{b.height} vs {r.width}x{r.height})"
                + (", uncropped original" if bi in r.derived_from else ""))
    if b.is_grey != r.is_grey:
        return "in colour (the other is greyscale)"
    if b.is_mirrored != r.is_mirrored:
        return "not mirrored (the other is a mirror image)"
    if b.has_overlay != r.has_overlay:
        return "without overlay (the other has a caption or overlay)"
    if b.is_raw and not r.is_raw:
        return "camera RAW"
    if (b.jpeg_quality or 0) != (r.jpeg_quality or 0):
        if b.jpeg_quality is None:
            return f"lossless {b.format or 'file'} (vs JPEG q{r.jpeg_quality})"
        return f"highest JPEG quality (q{b.jpeg_quality} vs q{r.jpeg_quality})"
    if b.taken_at != r.taken_at:
        return f"earliest capture ({b.taken_at} vs {r.taken_at or 'no date'})"
    if b.exif_count != r.exif_count:
        return f"most EXIF ({b.exif_count} tags vs {r.exif_count})"
    if copy_name(r.path) and not copy_name(b.path):
        return f"not named as a copy ({os.path.basename(str(r.path))} is)"
    return "first of equals (same size, quality, date and EXIF)"


def describe(members: list[Facts], best: int) -> list[str]:
    """Per member, what it is to the best copy, in words (for the review list)."""
    out = []
    for i, m in enumerate(members):
        if i == best:
            out.append("best copy")
        elif best in m.how:
            out.append(m.how[best])
        else:
            notes = [w for w, on in (("greyscale", m.is_grey), ("mirror image", m.is_mirrored),
                                     ("overlay", m.has_overlay)) if on]
            out.append(", ".join(notes) or "copy")
    return out


def to_dict(m: Any) -> dict:
    return {k: (sorted(v) if isinstance(v, set) else v) for k, v in vars(m).items()}
