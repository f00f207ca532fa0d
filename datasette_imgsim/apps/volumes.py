"""Find where a filesystem volume (by UUID or label) is mounted, the way digiKam's Solid lookup does.

Linux only: /dev/disk/by-uuid/<UUID> (or by-label/<LABEL>) is a symlink to the block device, and
/proc/mounts says where that device is mounted. Both locations are parameters so tests (and other
systems) can point them elsewhere; callers can bypass the lookup entirely with an explicit map.
"""
from __future__ import annotations

import os
import re
from typing import Optional


def _unescape_mount_field(field: str) -> str:
    # /proc/mounts writes space, tab, newline and backslash as octal escapes (\040 ...).
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), field)


def parse_mounts(text: str) -> list[tuple[str, str]]:
    """[(device, mount point)] from the text of /proc/mounts (or /etc/mtab)."""
    mounts = []
    for line in text.splitlines():
        fields = line.split()
        if len(fields) >= 2:
            mounts.append((_unescape_mount_field(fields[0]), _unescape_mount_field(fields[1])))
    return mounts


def _udev_name(label: str) -> str:
    # udev escapes characters unsafe in file names in by-label links, e.g. a space as \x20.
    return "".join(c if c.isalnum() or c in "#+-.:=@_" else "\\x%02x" % ord(c) for c in label)


def mount_point(volume: str, by_dir: str = "/dev/disk/by-uuid", mounts_file: str = "/proc/mounts") -> Optional[str]:
    """Mount point of the volume whose udev link in `by_dir` is `volume`, or None if it is not mounted."""
    if not volume or "/" in volume or volume in (".", ".."):
        return None
    try:
        names = os.listdir(by_dir)
    except OSError:
        return None
    wanted = {volume.lower(), _udev_name(volume).lower()}
    links = [name for name in names if name.lower() in wanted]  # digiKam compares UUIDs case-insensitively
    if not links:
        return None
    device = os.path.realpath(os.path.join(by_dir, links[0]))
    try:
        with open(mounts_file, encoding="utf-8", errors="surrogateescape") as f:
            mounts = parse_mounts(f.read())
    except OSError:
        return None
    for source, target in mounts:
        if source.startswith("/") and os.path.realpath(source) == device:
            return target
    return None
