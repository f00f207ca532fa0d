"""files.py: which stored paths the pages may read."""
from __future__ import annotations

import os

import pytest

from datasette_imgsim.errors import MissingImage, OutsideRoot, SourceError
from datasette_imgsim.files import allowed_file, check_root, covering_folders


@pytest.fixture
def root(tmp_path):
    folder = tmp_path / "root"
    (folder / "sub").mkdir(parents=True)
    (folder / "sub" / "a.jpg").write_bytes(b"x")
    (tmp_path / "secret.jpg").write_bytes(b"s")
    return folder


def test_paths_inside_a_root(root):
    expected = root / "sub" / "a.jpg"
    assert allowed_file("sub/a.jpg", root, [root]) == expected
    assert allowed_file(str(expected), "/elsewhere", [root]) == expected
    assert allowed_file("sub/../sub/a.jpg", root, [root]) == expected


@pytest.mark.parametrize("value", ["../secret.jpg", "sub/../../secret.jpg", "/etc/passwd",
                                   "sub/../../root-evil/x.jpg", "~/x.jpg"])
def test_paths_escaping_every_root_are_refused(root, value):
    with pytest.raises(OutsideRoot):
        allowed_file(value, root, [root])


def test_symlinks_inside_a_root_are_followed(root, tmp_path):
    """The library's owner put the link there (a folder on another disk): it is served."""
    (root / "link.jpg").symlink_to(tmp_path / "secret.jpg")
    (root / "other-disk").symlink_to(tmp_path)
    assert allowed_file("link.jpg", root, [root]).read_bytes() == b"s"
    assert allowed_file("other-disk/secret.jpg", root, [root]).read_bytes() == b"s"
    # ... but a stored path cannot climb out through it.
    with pytest.raises(OutsideRoot):
        allowed_file("other-disk/../../etc/passwd", root, [root])


def test_a_root_reached_through_a_symlink(root, tmp_path):
    (tmp_path / "Pictures").symlink_to(root)
    # Stored through the link, root given as its target, and the other way round.
    assert allowed_file(str(tmp_path / "Pictures" / "sub" / "a.jpg"), "/", [root]).name == "a.jpg"
    assert allowed_file(str(root / "sub" / "a.jpg"), "/", [tmp_path / "Pictures"]).name == "a.jpg"


def test_only_regular_files(root):
    os.mkfifo(root / "fifo.jpg")
    for value in ["sub", "fifo.jpg", "missing.jpg", "a\x00b.jpg"]:
        with pytest.raises(MissingImage):
            allowed_file(value, root, [root])
    with pytest.raises(OutsideRoot):
        allowed_file("sub/a.jpg", root, [])


def test_check_root(tmp_path):
    assert check_root(tmp_path / "x" / "..") == str(tmp_path)
    with pytest.raises(SourceError, match="not found"):
        check_root(tmp_path / "nope")
    with pytest.raises(SourceError, match="any file"):
        check_root("/")


def test_covering_folders():
    paths = ["/a/b/1.jpg", "/a/b/c/2.jpg", "/a/d/3.jpg", "/x/4.jpg", "relative.jpg", "/5.jpg"]
    assert covering_folders(paths) == ("/a/b", "/a/d", "/x")
