"""What a photo is called and when it was taken, from the right columns; its labels as chips.

Caption: the plugin config's `caption_column` for the table, else the index's own (an app
preset's query names one), else the first non-empty title-like column (title, name,
caption, description), else the file name from the image column, else the key.
Date: `date_column` from the config or the preset, else the first date-like column.
"""
from __future__ import annotations

import os
import re
from typing import Any, Optional

TITLE_COLUMNS = ("title", "name", "caption", "description", "label", "filename", "file_name")
DATE_COLUMNS = ("taken_at", "date_taken", "datetaken", "taken", "creationdate", "capture_time",
                "date", "datetime", "created_at", "created", "timestamp", "modified")
MAX_CAPTION = 80
MAX_LABELS = 3
MIN_LABEL_PROBABILITY = 0.05


def _by_name(row: dict, wanted) -> Optional[str]:
    """The first column of row whose lower-cased name is in wanted (in wanted's order)."""
    lowered = {name.lower(): name for name in row}
    for name in wanted:
        if name.lower() in lowered:
            return lowered[name.lower()]
    return None


def _text(value: Any) -> str:
    if value is None or isinstance(value, (bytes, bytearray, memoryview, dict)):
        return ""
    return str(value).strip()


class Describer:
    """Captions and dates of one index's rows, with the table's plugin config."""

    def __init__(self, spec, settings: Optional[dict] = None):
        settings = settings or {}
        self.spec = spec
        self.caption_column = settings.get("caption_column") or spec.source.get("caption_column")
        self.date_column = settings.get("date_column") or spec.source.get("date_column")

    def caption(self, row: dict, pk: Any = None) -> str:
        if self.caption_column and _text(row.get(self.caption_column)):
            return _text(row[self.caption_column])[:MAX_CAPTION]
        for name in TITLE_COLUMNS:
            column = _by_name(row, [name])
            if column and column not in (self.spec.column, self.spec.pk) and _text(row[column]):
                return _text(row[column])[:MAX_CAPTION]
        value = row.get(self.spec.column)
        if isinstance(value, str) and value.strip():
            name = os.path.basename(value.strip().replace("\\", "/"))
            if name:
                return name[:MAX_CAPTION]
        key = pk if pk is not None else row.get(self.spec.pk)
        return "" if key is None else f"{self.spec.table} {key}"

    def date(self, row: dict) -> str:
        column = self.date_column if self.date_column in row else _by_name(row, DATE_COLUMNS)
        if not column:
            return ""
        value = row.get(column)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            if value > 10**11:  # milliseconds
                value /= 1000
            if 0 < value < 10**10:
                import datetime

                stamp = datetime.datetime.fromtimestamp(value, datetime.timezone.utc)
                return stamp.strftime("%Y-%m-%d %H:%M")
            return ""
        text = _text(value)
        # "2021-06-03T10:20:30.000" reads better as "2021-06-03 10:20".
        found = re.match(r"^(\d{4}[-:]\d\d[-:]\d\d)(?:[T ](\d\d:\d\d))?", text)
        if found:
            time = found.group(2) if found.group(2) not in (None, "00:00") else ""
            return found.group(1).replace(":", "-") + (f" {time}" if time else "")
        return text[:40]


def file_name(value: Any, fallback: str) -> str:
    """A download name for an image column value: the path's last part, or fallback."""
    if isinstance(value, str) and value.strip():
        name = os.path.basename(value.strip().replace("\\", "/"))
        if name:
            return name
    return fallback


def shown_labels(labels) -> list[str]:
    """The few labels worth a chip: the most probable ones, not the long tail."""
    return [label for label, probability in labels[:MAX_LABELS]
            if probability is None or probability >= MIN_LABEL_PROBABILITY]


def labels_for(images, table: str, pks) -> dict:
    """{pk: [label, ...]} for the rows with these keys (ImageIndex.labels per key)."""
    return {pk: shown_labels(images.labels(table, pk)) for pk in pks}
