"""A copy-detection set from real photos: originals, distractors and transformed copies.

Originals: scikit-image's bundled photographs, plus (when apt-get is available) the
nature photographs of Debian's mate-backgrounds package (GPL-2+), fetched with
`apt-get download` and unpacked into a temporary folder at bench time, never stored in
the repository; plus any folder of photos given with --photos.
Distractors: unrelated pictures indexed beside the originals (mate's abstract and
desktop backgrounds, scikit-image's non-photographic images, the right-hand view of
the stereo motorcycle pair as a hard negative for the left-hand original).
Queries: every original under every transform below, encoded as JPEG (quality 90
unless the transform itself is a JPEG re-encode).
"""
from __future__ import annotations

import glob
import io
import os
import shutil
import subprocess
import tempfile
from typing import Callable, Optional

import numpy as np
from PIL import Image, ImageDraw, ImageEnhance, ImageFilter

SKIMAGE_PHOTOS = ["astronaut", "camera", "chelsea", "coffee", "coins", "hubble_deep_field",
                  "moon", "rocket", "motorcycle", "retina", "grass", "gravel", "brick",
                  "clock", "immunohistochemistry", "page", "text"]
SKIMAGE_DISTRACTORS = ["colorwheel", "logo", "horse", "checkerboard", "motorcycle_right"]


def _skimage(name: str) -> np.ndarray:
    import skimage.data as data

    if name == "motorcycle":
        pixels = data.stereo_motorcycle()[0]
    elif name == "motorcycle_right":
        pixels = data.stereo_motorcycle()[1]
    else:
        pixels = getattr(data, name)()
    if pixels.dtype == bool:
        pixels = (pixels * 255).astype(np.uint8)
    if pixels.ndim == 2:
        pixels = np.stack([pixels] * 3, axis=-1)
    if pixels.shape[2] == 4:
        alpha = pixels[..., 3:4].astype(np.float32) / 255
        pixels = (pixels[..., :3] * alpha + 255 * (1 - alpha)).astype(np.uint8)
    return np.ascontiguousarray(pixels[..., :3])


def debian_backgrounds(folder: str) -> Optional[str]:
    """Unpack mate-backgrounds into folder; the path of its backgrounds, or None."""
    if not shutil.which("apt-get") or not shutil.which("dpkg-deb"):
        return None
    try:
        subprocess.run(["apt-get", "download", "mate-backgrounds"], cwd=folder, check=True,
                       capture_output=True, timeout=300)
        (deb,) = glob.glob(os.path.join(folder, "mate-backgrounds_*.deb"))
        subprocess.run(["dpkg-deb", "-x", deb, os.path.join(folder, "x")], check=True,
                       capture_output=True, timeout=300)
    except (subprocess.SubprocessError, ValueError, OSError):
        return None
    return os.path.join(folder, "x", "usr", "share", "backgrounds", "mate")


def _load(path: str, long_side: int = 1024) -> np.ndarray:
    img = Image.open(path).convert("RGB")
    img.thumbnail((long_side, long_side), Image.LANCZOS)
    return np.asarray(img)


def _zero_hog(pixels) -> bool:
    from datasette_imgsim.images import load_image
    from datasette_imgsim.methods.hog import hog_vector

    return not np.any(hog_vector(load_image(jpeg(pixels), 128)))


def photo_sets(extra: tuple = (), fetch: bool = True, workdir: Optional[str] = None):
    """(originals, distractors): dicts name -> RGB uint8 array."""
    originals = {name: _skimage(name) for name in SKIMAGE_PHOTOS}
    distractors = {name: _skimage(name) for name in SKIMAGE_DISTRACTORS}
    if fetch:
        workdir = workdir or tempfile.mkdtemp(prefix="imgsim-photos-")
        mate = debian_backgrounds(workdir)
        if mate:
            for path in sorted(glob.glob(os.path.join(mate, "nature", "*.jpg"))):
                originals["mate-" + os.path.basename(path)[:-4].lower()] = _load(path)
            for path in sorted(glob.glob(os.path.join(mate, "desktop", "*"))
                               + glob.glob(os.path.join(mate, "abstract", "*"))):
                name = os.path.basename(path).rsplit(".", 1)[0].lower()
                if "_" in name and name.split("_")[-1][0].isdigit():
                    continue  # the same picture at other resolutions
                pixels = _load(path)
                if _zero_hog(pixels):
                    # Smooth gradients whose HOG vector is all zeros: sqlite-vec returns
                    # their cosine distance as NULL, which Store.knn cannot take (reported).
                    continue
                distractors[name if name.startswith("mate") else "mate-" + name] = pixels
    for folder in extra:
        for path in sorted(glob.glob(os.path.join(folder, "*"))):
            if path.lower().endswith((".jpg", ".jpeg", ".png", ".webp")):
                originals["extra-" + os.path.basename(path).rsplit(".", 1)[0]] = _load(path)
    return originals, distractors


def jpeg(pixels: np.ndarray, quality: int = 90) -> bytes:
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, "JPEG", quality=quality)
    return out.getvalue()


# --- transforms --------------------------------------------------------------------------


def crop(fraction_area: float, at: tuple = (0.5, 0.5)):
    def apply(p):
        h, w = p.shape[:2]
        side = np.sqrt(fraction_area)
        ch, cw = max(8, int(h * side)), max(8, int(w * side))
        top = int((h - ch) * at[1])
        left = int((w - cw) * at[0])
        return p[top:top + ch, left:left + cw]
    return apply


def rotate(degrees: float, expand: bool = False):
    def apply(p):
        img = Image.fromarray(p)
        if degrees % 90 == 0:
            return np.asarray(img.rotate(degrees, expand=True))
        turned = img.rotate(degrees, resample=Image.BICUBIC, expand=expand, fillcolor=(0, 0, 0))
        if expand:
            return np.asarray(turned)
        # Crop to the largest centred rectangle without black corners.
        w, h = img.size
        a = np.radians(abs(degrees) % 180)
        sin, cos = abs(np.sin(a)), abs(np.cos(a))
        long_, short = max(w, h), min(w, h)
        if short <= 2 * sin * cos * long_:
            x = 0.5 * short
            wr, hr = (x / sin, x / cos) if w >= h else (x / cos, x / sin)
        else:
            cos2 = cos * cos - sin * sin
            wr, hr = (w * cos - h * sin) / cos2, (h * cos - w * sin) / cos2
        left, top = (w - wr) / 2, (h - hr) / 2
        return np.asarray(turned.crop((int(left), int(top), int(left + wr), int(top + hr))))
    return apply


def flip(p):
    return np.ascontiguousarray(p[:, ::-1])


def brightness(factor: float):
    return lambda p: np.asarray(ImageEnhance.Brightness(Image.fromarray(p)).enhance(factor))


def contrast(factor: float):
    return lambda p: np.asarray(ImageEnhance.Contrast(Image.fromarray(p)).enhance(factor))


def greyscale(p):
    return np.asarray(Image.fromarray(p).convert("L").convert("RGB"))


def blur(radius: float):
    return lambda p: np.asarray(Image.fromarray(p).filter(ImageFilter.GaussianBlur(radius)))


def noise(sigma: float, seed: int = 1):
    def apply(p):
        rng = np.random.default_rng(seed)
        return np.clip(p + rng.normal(0, sigma, p.shape), 0, 255).astype(np.uint8)
    return apply


def resize(scale: float):
    def apply(p):
        img = Image.fromarray(p)
        return np.asarray(img.resize((max(8, int(img.width * scale)), max(8, int(img.height * scale))),
                                     Image.LANCZOS))
    return apply


def overlay(cover: float = 0.15, seed: int = 2):
    """A caption banner, a logo box and text: cover is the banner's share of the height."""
    def apply(p):
        img = Image.fromarray(p).copy()
        w, h = img.size
        draw = ImageDraw.Draw(img, "RGBA")
        band = int(h * cover)
        draw.rectangle([0, h - band, w, h], fill=(20, 20, 20, 220))
        draw.text((int(w * 0.05), h - band + band // 3), "SHARED via photos app  #copy",
                  fill=(255, 255, 255, 255))
        box = max(8, int(min(w, h) * 0.12))
        draw.ellipse([w - box - 8, 8, w - 8, 8 + box], fill=(230, 40, 40, 230))
        draw.text((8, 8), "(c) someone", fill=(255, 255, 0, 255))
        return np.asarray(img)
    return apply


def perspective(strength: float):
    def apply(p):
        import cv2

        h, w = p.shape[:2]
        d = strength
        src = np.float32([[0, 0], [w, 0], [w, h], [0, h]])
        dst = np.float32([[w * d, h * d * 0.5], [w * (1 - d * 0.3), 0],
                          [w, h], [w * d * 0.6, h * (1 - d)]])
        matrix = cv2.getPerspectiveTransform(src, dst)
        return cv2.warpPerspective(p, matrix, (w, h), borderMode=cv2.BORDER_CONSTANT)
    return apply


def compose(*steps):
    def apply(p):
        for step in steps:
            p = step(p)
        return np.ascontiguousarray(p)
    return apply


# name -> (family, transform, JPEG quality of the query)
TRANSFORMS: dict[str, tuple[str, Callable, int]] = {
    "crop 70%": ("crop", crop(0.7), 90),
    "crop 50% off-centre": ("crop", crop(0.5, (0.2, 0.3)), 90),
    "rotate 90": ("rotation", rotate(90), 90),
    "rotate 8": ("rotation", rotate(8), 90),
    "flip": ("flip", flip, 90),
    "jpeg q15": ("jpeg", lambda p: p, 15),
    "brighter +40%": ("brightness", brightness(1.4), 90),
    "darker -40%": ("brightness", brightness(0.6), 90),
    "contrast +50%": ("brightness", contrast(1.5), 90),
    "greyscale": ("greyscale", greyscale, 90),
    "blur r3": ("blur", blur(3), 90),
    "noise s20": ("noise", noise(20), 90),
    "overlay": ("overlay", overlay(0.15), 90),
    "resize 25%": ("resize", resize(0.25), 90),
    "crop+bright+jpeg": ("combined", compose(crop(0.7, (0.3, 0.6)), brightness(1.3)), 30),
    "flip+grey+crop": ("combined", compose(flip, greyscale, crop(0.8)), 70),
    "rotate+noise+overlay": ("combined", compose(rotate(6), noise(12), overlay(0.12)), 50),
    "resize+contrast+blur": ("combined", compose(resize(0.4), contrast(1.3), blur(1.5)), 60),
}

# The harsher cases of issue #7, for geometric re-ranking.
HARD_TRANSFORMS: dict[str, tuple[str, Callable, int]] = {
    "crop 30%": ("hard crop", crop(0.3, (0.4, 0.45)), 90),
    "crop 25% corner": ("hard crop", crop(0.25, (0.15, 0.2)), 90),
    "crop 20%": ("hard crop", crop(0.2, (0.6, 0.5)), 90),
    "rotate 30 expand": ("hard rotation", rotate(30, expand=True), 90),
    "rotate 45 crop": ("hard rotation", rotate(45), 90),
    "perspective 0.2": ("perspective", perspective(0.2), 90),
    "perspective 0.3": ("perspective", perspective(0.3), 85),
    "overlay 40%": ("heavy overlay", overlay(0.4), 90),
    "crop 30%+rotate 15+jpeg": ("hard combined", compose(crop(0.3, (0.5, 0.4)), rotate(15)), 50),
    "perspective+crop 40%+bright": ("hard combined",
                                    compose(perspective(0.2), crop(0.4), brightness(1.3)), 70),
}


def similar_shots(originals: dict) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """Pairs that are similar shots, not copies: the real stereo pair (two cameras a few
    centimetres apart), and for every original a 'panned' pair, the left and right 65%
    of the frame (30% shared)."""
    pairs = [("motorcycle stereo pair", _skimage("motorcycle"), _skimage("motorcycle_right"))]
    for name, p in originals.items():
        w = p.shape[1]
        pairs.append((f"{name} panned", np.ascontiguousarray(p[:, : int(w * 0.65)]),
                      np.ascontiguousarray(p[:, int(w * 0.35):])))
    return pairs
