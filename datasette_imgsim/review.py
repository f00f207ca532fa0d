"""The review list of duplicate groups: one row per member, what a user feeds to their
photo manager or a script (`duplicates --format csv`, the page's download)."""
from __future__ import annotations

import csv
import io

# path: the image column's value as the database holds it; file: the file it names.
COLUMNS = ("group", "action", "pk", "kind", "reason", "best_copy", "path", "file", "width",
           "height", "bytes", "format", "jpeg_quality", "taken_at")


def rows(found) -> list[dict]:
    """Copy groups first (action "keep" for the best copy, "duplicate" for the others),
    then versions of one photo (action "version": not duplicates to delete)."""
    out = []
    for number, group in enumerate(list(found.groups) + list(found.versions), start=1):
        best = group.members[0].pk
        for m in group.members:
            if group.kind == "versions":
                action = "version"
            else:
                action = "keep" if m.kind == "best copy" else "duplicate"
            out.append({"group": number, "action": action, "pk": m.pk, "kind": m.kind,
                        "reason": m.reason, "best_copy": best if group.kind == "copies" else "",
                        "path": m.image if m.image is not None else "",
                        "file": m.facts.get("file") or "", "width": m.width,
                        "height": m.height, "bytes": m.size,
                        "format": m.facts.get("format"), "jpeg_quality": m.facts.get("jpeg_quality"),
                        "taken_at": m.facts.get("taken_at")})
    return out


def to_csv(found) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, COLUMNS, lineterminator="\n")
    writer.writeheader()
    for row in rows(found):
        writer.writerow({k: "" if v is None else v for k, v in row.items()})
    return buffer.getvalue()


def to_text(found) -> list[str]:
    """The groups as lines for a terminal."""
    lines = []
    for number, group in enumerate(found.groups, start=1):
        lines.append(f"\nGroup {number}")
        for m in group.members:
            lines.append("  " + _member_line(m))
        for shot in group.similar_shots:
            lines.append(f"  (kept apart: {shot['pk']}, {shot['reason']}, of {shot['of']})")
    if found.versions:
        lines.append("\nVersions of one photo (not duplicates)")
        for group in found.versions:
            lines.append("  " + " + ".join(str(m.pk) for m in group.members)
                         + f"\t{group.members[0].reason}")
    return lines


def _member_line(m) -> str:
    dims = f"{m.width}x{m.height}" if m.width else "?"
    size = f"{m.size:,} B" if m.size is not None else "?"
    image = m.image if m.image is not None else "<BLOB>"
    reason = f"\t{m.reason}" if m.reason else ""
    return f"{m.pk}\t{m.kind:<16}\t{dims}\t{size}\t{image}{reason}"


def summary(found) -> str:
    if not found.verified:
        return (f"{len(found.groups)} groups of near-duplicates among {found.indexed} images "
                f"({found.method}, threshold {found.threshold:g}, unverified, "
                f"{found.seconds:.1f}s)")
    c = found.counts
    bounds = ", ".join(f"{m} <= {b:g}" for m, b in found.candidates.items())
    text = (f"{len(found.groups)} groups of copies among {found.indexed} images "
            f"({c.get('candidates', 0)} candidate pairs ({bounds}): {c.get('cached', 0)} "
            f"known, {c.get('settled', 0)} settled by signatures, {c.get('verified', 0)} "
            f"verified, {c.get('skipped', 0)} decided by their groups; {found.seconds:.1f}s)")
    if found.unverified:
        text += f"; {found.unverified} pairs not verified in the time allowed"
    if found.unreadable:
        text += f"; {len(found.unreadable)} images could not be read"
    return text
