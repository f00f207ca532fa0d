"""review: the CSV review list and the terminal lines."""
from __future__ import annotations

import csv
import io

from datasette_imgsim.duplicates import Duplicates, Group, Member
from datasette_imgsim.review import COLUMNS, rows, summary, to_csv, to_text


def found():
    copies = Group([Member(1, 0.0, "best copy", "a/IMG_1.jpg", 2000, 40, 30,
                           "largest, uncropped original", {"file": "/p/a/IMG_1.jpg",
                                                          "format": "JPEG", "jpeg_quality": 92}),
                    Member(2, 0.1, "crop", "a/IMG_1 (1).jpg", 900, 20, 15,
                           "crop of 25 % of the original", {"format": "JPEG"})],
                   [{"pk": 3, "of": 1, "reason": "similar shot: the subject moved"}])
    versions = Group([Member(4, None, "version", "b/IMG_2.CR2", 9000, 60, 40, "RAW+JPG pair"),
                      Member(5, None, "version", "b/IMG_2.JPG", 3000, 60, 40, "RAW+JPG pair")],
                     kind="versions")
    return Duplicates("cnn", "cosine", 0.3, 10, [copies], 1.5, True, [versions],
                      {"cnn": 0.3}, {"candidates": 4, "cached": 0, "settled": 1, "verified": 2,
                                     "skipped": 1}, 0, [])


def test_csv_rows_say_what_to_keep_and_what_is_a_version():
    table = list(csv.DictReader(io.StringIO(to_csv(found()))))
    assert list(table[0]) == list(COLUMNS)
    assert [(r["group"], r["action"], r["pk"], r["best_copy"]) for r in table] == [
        ("1", "keep", "1", "1"), ("1", "duplicate", "2", "1"),
        ("2", "version", "4", ""), ("2", "version", "5", "")]
    assert table[1]["path"] == "a/IMG_1 (1).jpg" and table[1]["reason"].startswith("crop of 25")
    assert table[0]["file"] == "/p/a/IMG_1.jpg" and table[0]["jpeg_quality"] == "92"
    assert rows(found())[2]["bytes"] == 9000


def test_text_and_summary():
    lines = to_text(found())
    assert any("crop of 25 %" in line for line in lines)
    assert any("kept apart: 3" in line for line in lines)
    assert any(line.strip().startswith("4 + 5") for line in lines)
    text = summary(found())
    assert text.startswith("1 groups of copies among 10 images") and "2 verified" in text
