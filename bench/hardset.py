"""A harder copy-detection set (issue #17): real photos the project never tuned on, at
the aspect ratios users meet (16:9, 21:9, 9:16, 3:2), copied under borders, screenshots,
crops, colour shifts and strong combinations, plus same-scene pairs (bursts, viewpoint
changes) cut from the same source photo.

Photos: the photographs among Debian's wallpaper packages, fetched with
`apt-get download` and unpacked into bench/out/wallpapers (gitignored) at bench time,
never stored in the repository:

- lomiri-wallpapers-16.04 / -20.04 (photos by Sander Klootwijk, Bolly, Aury88, Lukas
  Baubkus, freespace, Jakkub Mede, Aitzol Berasategi, Peter Nerlich, Clements
  Engelhardt; CC-BY-4.0 / CC-BY-SA-3.0 / CC-BY-SA-4.0 / CC0, see the package's
  copyright file);
- plasma-workspace-wallpapers (KDE, GPL-2+).

Distractors (indexed beside the originals, never queried): the non-photographic
wallpapers of those packages and of ukui-wallpapers (CC-BY-SA-3.0), gnome-backgrounds
and mate-backgrounds (GPL-2+), mate's nature photographs, and scikit-image's photos.
"""
from __future__ import annotations

import glob
import io
import shutil
import subprocess
from pathlib import Path
from typing import Callable, Optional

import numpy as np
from PIL import Image, ImageDraw, ImageEnhance, ImageFilter, ImageOps

OUT = Path(__file__).resolve().parent / "out"
WALLPAPERS = OUT / "wallpapers"
PACKAGES = ["lomiri-wallpapers-16.04", "lomiri-wallpapers-20.04", "plasma-workspace-wallpapers",
            "ukui-wallpapers", "gnome-backgrounds", "mate-backgrounds"]

# Photographs (queried), as paths under usr/share.
PHOTOS = [
    "backgrounds/Bridge_by_Sander_Klootwijk.jpg", "backgrounds/Dragonfly_by_Bolly.jpg",
    "backgrounds/Infinite-Sea_by_Aury88.jpg", "backgrounds/Kleiber_by_Lukas_Baubkus.jpg",
    "backgrounds/Picture_0B_by_freespace.jpg", "backgrounds/Picture_1A_by_freespace.jpg",
    "backgrounds/Wine_by_Jakkub_Mede.jpg", "backgrounds/aitzgorri_by_Aitzol_Berasategi.jpg",
    "backgrounds/friends_by_Aitzol_Berasategi.jpg", "backgrounds/picosdeeuropa_by_Aitzol_Berasategi.jpg",
    "backgrounds/seeding_by_Clements_Engelhardt.jpg", "backgrounds/sunset_by_Aitzol_Berasategi.jpg",
    "backgrounds/free_by_Peter_Nerlich.jpg", "backgrounds/greentock_by_Peter_Nerlich.jpg",
    "backgrounds/life_by_Aitzol_Berasategi.jpg",
] + [f"wallpapers/{name}/contents/images/{size}" for name, size in [
    ("BytheWater", "2560x1600.jpg"), ("ColdRipple", "2560x1600.jpg"), ("ColorfulCups", "2560x1600.jpg"),
    ("DarkestHour", "2560x1600.jpg"), ("EveningGlow", "2560x1600.jpg"), ("FallenLeaf", "2560x1600.jpg"),
    ("Grey", "2560x1600.jpg"), ("Kite", "2560x1600.jpg"), ("OneStandsOut", "2560x1600.jpg"),
    ("Path", "2560x1600.jpg"), ("Volna", "5120x2880.jpg"), ("summer_1am", "2560x1600.jpg"),
]]

DISTRACTOR_GLOBS = [
    "backgrounds/*.png", "backgrounds/2004default.jpg", "backgrounds/Fossa_by_Jasper_Roks.jpg",
    "backgrounds/Painting-Colors_by__herobrine7gamer.jpg", "backgrounds/analogpattern_by_Peter_Nerlich.jpg",
    "backgrounds/umang_by_Abhishek_Mudgal.jpg", "backgrounds/firstgeneration.jpg", "backgrounds/string.jpg",
    "backgrounds/the-mouse.jpg", "backgrounds/rhythm.jpg",
    "backgrounds/gnome/*-l.webp", "backgrounds/gnome/*-d.webp",
    "backgrounds/mate/nature/*.jpg", "backgrounds/mate/abstract/[A-Z][a-z]*.png",
    "backgrounds/mate/abstract/Elephants.jpg", "backgrounds/mate/desktop/*",
    "wallpapers/*/contents/images/5120x2880.*", "wallpapers/*/contents/images/3840x2160.png",
    "wallpapers/*/contents/images/2560x1600.png", "wallpapers/PastelHills/contents/images/3200x2000.jpg",
]
SKIMAGE_DISTRACTORS = ["astronaut", "camera", "chelsea", "coffee", "coins", "hubble_deep_field",
                       "rocket", "motorcycle", "retina", "grass", "gravel", "brick", "clock",
                       "immunohistochemistry", "horse", "colorwheel"]

# Aspect (width / height) of each original, in turn: wide, ultra-wide, phone, camera.
ASPECTS = [16 / 9, 21 / 9, 9 / 16, 3 / 2, 16 / 9]
LONG_SIDE = 1600  # originals are stored at this long side (JPEG q92)
WINDOW = 0.82     # the original is this share of the largest window of its aspect


def fetch(folder: Path = WALLPAPERS) -> Optional[Path]:
    """Unpack the packages into folder/x (once); the usr/share path, or None."""
    root = folder / "x" / "usr" / "share"
    if (root / "wallpapers" / "Path").exists() and (root / "backgrounds").exists():
        return root
    if not shutil.which("apt-get") or not shutil.which("dpkg-deb"):
        return None
    folder.mkdir(parents=True, exist_ok=True)
    try:
        missing = [p for p in PACKAGES if not glob.glob(str(folder / f"{p}_*.deb"))]
        if missing:
            subprocess.run(["apt-get", "download", *missing], cwd=folder, check=True,
                           capture_output=True, timeout=600)
        for deb in glob.glob(str(folder / "*.deb")):
            subprocess.run(["dpkg-deb", "-x", deb, str(folder / "x")], check=True,
                           capture_output=True, timeout=300)
    except (subprocess.SubprocessError, OSError):
        return None
    return root if (root / "backgrounds").exists() else None


def _open(path, long_side: int) -> np.ndarray:
    img = Image.open(path)
    img.draft("RGB", (long_side, long_side))
    img = img.convert("RGBA") if img.mode in ("RGBA", "LA", "P") else img.convert("RGB")
    if img.mode == "RGBA":
        flat = Image.new("RGB", img.size, (255, 255, 255))
        flat.paste(img, mask=img.getchannel("A"))
        img = flat
    img.thumbnail((long_side, long_side), Image.LANCZOS)
    return np.asarray(img)


def _skimage(name: str) -> np.ndarray:
    import skimage.data as data

    pixels = data.stereo_motorcycle()[0] if name == "motorcycle" else getattr(data, name)()
    if pixels.dtype == bool:
        pixels = pixels.astype(np.uint8) * 255
    elif pixels.dtype != np.uint8:
        pixels = (pixels * 255 if pixels.max() <= 1 else pixels).astype(np.uint8)
    if pixels.ndim == 2:
        pixels = np.stack([pixels] * 3, axis=-1)
    return np.ascontiguousarray(pixels[..., :3])


def window(shape, aspect: float, scale: float = WINDOW, centre=(0.5, 0.5)) -> tuple[int, int, int, int]:
    """(top, left, height, width) of a window of the given aspect, scale times the largest
    that fits, centred at centre (fractions of the frame), clamped inside it."""
    h, w = shape[:2]
    if w / h > aspect:
        wh, ww = h, h * aspect
    else:
        wh, ww = w / aspect, w
    wh, ww = int(wh * scale), int(ww * scale)
    top = int(np.clip(centre[1] * h - wh / 2, 0, h - wh))
    left = int(np.clip(centre[0] * w - ww / 2, 0, w - ww))
    return top, left, wh, ww


def cut(source: np.ndarray, box, long_side: int = LONG_SIDE) -> np.ndarray:
    top, left, h, w = box
    img = Image.fromarray(np.ascontiguousarray(source[top:top + h, left:left + w]))
    img.thumbnail((long_side, long_side), Image.LANCZOS)
    return np.asarray(img)


def photo_sets(root: Path):
    """(sources, originals, distractors): sources name -> (full photo, original's box);
    originals and distractors name -> RGB array."""
    sources, originals = {}, {}
    for i, rel in enumerate(PHOTOS):
        path = root / rel
        if not path.exists():
            continue
        full = _open(path, 2400)
        aspect = ASPECTS[i % len(ASPECTS)]
        if full.shape[0] > full.shape[1]:   # tall sources stay tall
            aspect = 9 / 16
        box = window(full.shape, aspect)
        name = rel.split("/")[1] if rel.startswith("wallpapers/") else Path(rel).stem.split("_by_")[0]
        sources[name] = (full, box)
        originals[name] = cut(full, box)
    distractors = {}
    seen = set()
    for pattern in DISTRACTOR_GLOBS:
        for path in sorted(glob.glob(str(root / pattern))):
            key = path.split("/contents/")[0] if "/contents/" in path else path
            if key in seen or "_" in Path(path).stem and Path(path).stem.split("_")[-1][:1].isdigit():
                continue
            seen.add(key)
            try:
                distractors["d-" + Path(key).name + "-" + Path(path).stem] = _open(path, 1280)
            except OSError:
                continue
    for name in SKIMAGE_DISTRACTORS:
        distractors["sk-" + name] = _skimage(name)
    return sources, originals, distractors


def jpeg(pixels: np.ndarray, quality: int = 90) -> bytes:
    out = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(pixels)).save(out, "JPEG", quality=quality)
    return out.getvalue()


# --- transforms ------------------------------------------------------------------------

def _pil(p):
    return Image.fromarray(np.ascontiguousarray(p))


def resize(scale: float):
    def apply(p):
        img = _pil(p)
        return np.asarray(img.resize((max(8, int(img.width * scale)), max(8, int(img.height * scale))),
                                     Image.LANCZOS))
    return apply


def to_long_side(n: int):
    def apply(p):
        img = _pil(p)
        img.thumbnail((n, n), Image.LANCZOS)
        return np.asarray(img)
    return apply


def crop(area: float, at=(0.5, 0.5)):
    def apply(p):
        h, w = p.shape[:2]
        s = np.sqrt(area)
        ch, cw = int(h * s), int(w * s)
        top, left = int((h - ch) * at[1]), int((w - cw) * at[0])
        return p[top:top + ch, left:left + cw]
    return apply


def crop_aspect(aspect: float, at=(0.5, 0.5)):
    """The largest window of another aspect (a square for a feed, 4:3 for a print)."""
    def apply(p):
        top, left, h, w = window(p.shape, aspect, 1.0, at)
        return p[top:top + h, left:left + w]
    return apply


def stretch(aspect: float):
    """Resize to another aspect without cropping (a careless export)."""
    def apply(p):
        h, w = p.shape[:2]
        return np.asarray(_pil(p).resize((int(round(h * aspect)), h), Image.LANCZOS))
    return apply


def border(aspect: float, colour=(0, 0, 0)):
    """Letterbox / pillarbox: fit the photo into a canvas of aspect, borders of colour."""
    def apply(p):
        h, w = p.shape[:2]
        if w / h > aspect:
            cw, ch = w, int(round(w / aspect))
        else:
            cw, ch = int(round(h * aspect)), h
        canvas = Image.new("RGB", (cw, ch), colour)
        canvas.paste(_pil(p), ((cw - w) // 2, (ch - h) // 2))
        return np.asarray(canvas)
    return apply


def frame(pad: float, colour=(255, 255, 255)):
    """An even border of pad times the shorter side all round (a mount / passe-partout)."""
    def apply(p):
        h, w = p.shape[:2]
        b = int(min(h, w) * pad)
        return np.asarray(ImageOps.expand(_pil(p), b, fill=colour))
    return apply


def screenshot_desktop(p):
    """The photo in an image viewer on a 1920x1080 desktop: title bar, toolbar, sidebar."""
    W, H = 1920, 1080
    canvas = Image.new("RGB", (W, H), (236, 236, 236))
    d = ImageDraw.Draw(canvas)
    d.rectangle([0, 0, W, 36], fill=(48, 48, 52))
    d.text((20, 12), "IMG_2041.jpg - Image Viewer", fill=(230, 230, 230))
    d.rectangle([0, 36, W, 84], fill=(250, 250, 250))
    for i in range(8):
        d.rectangle([16 + i * 52, 46, 52 + i * 52, 74], fill=(200, 205, 215))
    d.rectangle([0, 84, 300, H], fill=(245, 245, 247))
    for i in range(14):
        d.text((24, 110 + i * 34), f"Folder {i + 1}", fill=(60, 60, 60))
    area = (300, 84, W, H - 40)
    img = _pil(p)
    img.thumbnail((area[2] - area[0] - 40, area[3] - area[1] - 40), Image.LANCZOS)
    canvas.paste(img, (area[0] + (area[2] - area[0] - img.width) // 2,
                       area[1] + (area[3] - area[1] - img.height) // 2))
    d.rectangle([0, H - 40, W, H], fill=(220, 220, 224))
    d.text((320, H - 28), f"{p.shape[1]} x {p.shape[0]}   100%", fill=(40, 40, 40))
    return np.asarray(canvas)


def screenshot_phone(p):
    """The photo in a phone gallery app, 1080x2340: status bar, fitted to the width."""
    W, H = 1080, 2340
    canvas = Image.new("RGB", (W, H), (0, 0, 0))
    d = ImageDraw.Draw(canvas)
    d.text((40, 30), "12:41", fill=(255, 255, 255))
    d.rectangle([900, 30, 1040, 60], fill=(255, 255, 255))
    img = _pil(p)
    img.thumbnail((W, H - 400), Image.LANCZOS)
    canvas.paste(img, ((W - img.width) // 2, (H - img.height) // 2))
    for i in range(4):
        d.ellipse([120 + i * 240, H - 170, 180 + i * 240, H - 110], fill=(200, 200, 200))
    return np.asarray(canvas)


def rotate(degrees: float, expand: bool = False):
    from copydetect import rotate as crop_rotate

    if not expand:
        return crop_rotate(degrees)
    return lambda p: np.asarray(_pil(p).rotate(degrees, resample=Image.BICUBIC, expand=True))


def hue(shift: float):
    def apply(p):
        hsv = np.asarray(_pil(p).convert("HSV")).copy()
        hsv[..., 0] = (hsv[..., 0].astype(int) + int(shift * 255)) % 256
        return np.asarray(Image.fromarray(hsv, "HSV").convert("RGB"))
    return apply


def saturation(f: float):
    return lambda p: np.asarray(ImageEnhance.Color(_pil(p)).enhance(f))


def gains(r: float, g: float, b: float):
    return lambda p: np.clip(p * np.array([r, g, b]), 0, 255).astype(np.uint8)


def gamma(g: float):
    return lambda p: (255 * (p / 255.0) ** g).astype(np.uint8)


def brightness(f):
    return lambda p: np.asarray(ImageEnhance.Brightness(_pil(p)).enhance(f))


def contrast(f):
    return lambda p: np.asarray(ImageEnhance.Contrast(_pil(p)).enhance(f))


def greyscale(p):
    return np.asarray(_pil(p).convert("L").convert("RGB"))


def sepia(p):
    grey = np.asarray(_pil(p).convert("L"), np.float32)
    return np.clip(np.stack([grey * 1.07, grey * 0.74, grey * 0.43], -1) + [20, 14, 0], 0, 255).astype(np.uint8)


def blur(r):
    return lambda p: np.asarray(_pil(p).filter(ImageFilter.GaussianBlur(r)))


def noise(sigma, seed=1):
    def apply(p):
        rng = np.random.default_rng(seed)
        return np.clip(p + rng.normal(0, sigma, p.shape), 0, 255).astype(np.uint8)
    return apply


def jpeg_pass(q):
    return lambda p: np.asarray(Image.open(io.BytesIO(jpeg(p, q))).convert("RGB"))


def compose(*steps):
    def apply(p):
        for step in steps:
            p = np.ascontiguousarray(step(p))
        return p
    return apply


# name -> (family, transform, JPEG quality of the query file)
TRANSFORMS: dict[str, tuple[str, Callable, int]] = {
    "jpeg q25": ("jpeg", lambda p: p, 25),
    "jpeg q10": ("jpeg", lambda p: p, 10),
    "resize 50%": ("resize", resize(0.5), 90),
    "thumbnail 320": ("resize", to_long_side(320), 85),
    "stretch to 4:3": ("resize", stretch(4 / 3), 90),
    "crop 80%": ("crop", crop(0.8), 90),
    "crop 60% off-centre": ("crop", crop(0.6, (0.25, 0.35)), 90),
    "crop square centre": ("crop", crop_aspect(1.0), 90),
    "crop 4:3 left": ("crop", crop_aspect(4 / 3, (0.0, 0.5)), 90),
    "letterbox 1:1 black": ("borders", border(1.0), 90),
    "letterbox 4:3 white": ("borders", border(4 / 3, (255, 255, 255)), 90),
    "pillarbox 16:9 black": ("borders", border(16 / 9), 90),
    "phone frame 9:19.5 black": ("borders", border(9 / 19.5), 90),
    "mount 12% white": ("borders", frame(0.12), 90),
    "screenshot desktop": ("screenshot", screenshot_desktop, 90),
    "screenshot phone": ("screenshot", screenshot_phone, 90),
    "screenshot desktop+jpeg": ("screenshot", compose(screenshot_desktop, resize(0.6)), 40),
    "rotate 3": ("rotation", rotate(3), 90),
    "rotate -6": ("rotation", rotate(-6), 90),
    "rotate 5 black corners": ("rotation", rotate(5, expand=True), 90),
    "hue +0.08": ("colour", hue(0.08), 90),
    "saturation 0.4": ("colour", saturation(0.4), 90),
    "warm tint": ("colour", gains(1.15, 1.0, 0.8), 90),
    "gamma 1.6 + contrast": ("colour", compose(gamma(1.6), contrast(1.3)), 90),
    "brighter +40%": ("colour", brightness(1.4), 90),
    "greyscale": ("greyscale", greyscale, 90),
    "sepia": ("greyscale", sepia, 90),
    "grey+down25%+blur+noise+jpeg": ("strong", compose(greyscale, resize(0.25), blur(1.5), noise(10)), 30),
    "grey+down20%+blur2+noise15+jpeg": ("strong", compose(greyscale, resize(0.2), blur(2), noise(15)), 20),
    "grey+crop80%+down30%+noise+jpeg": ("strong", compose(greyscale, crop(0.8, (0.4, 0.5)), resize(0.3),
                                                           blur(1), noise(12)), 25),
    "letterbox+jpeg+resize": ("combined", compose(border(1.0), resize(0.4)), 40),
    "crop+tint+rotate": ("combined", compose(crop(0.7, (0.6, 0.4)), gains(1.1, 1.0, 0.85), rotate(4)), 70),
    "screenshot phone+jpeg+resize": ("combined", compose(screenshot_phone, resize(0.5)), 45),
    "square crop+saturation+jpeg": ("combined", compose(crop_aspect(1.0, (0.4, 0.5)), saturation(1.5)), 35),
}

FAMILIES = ["jpeg", "resize", "crop", "borders", "screenshot", "rotation", "colour", "greyscale",
            "strong", "combined"]


def perspective(strength: float, direction: int = 1):
    def apply(p):
        import cv2

        h, w = p.shape[:2]
        d = strength
        src = np.float32([[0, 0], [w, 0], [w, h], [0, h]])
        if direction > 0:
            dst = np.float32([[w * d, h * d * 0.6], [w, 0], [w, h], [w * d, h * (1 - d * 0.6)]])
        else:
            dst = np.float32([[0, 0], [w * (1 - d), h * d * 0.6], [w * (1 - d), h * (1 - d * 0.6)], [0, h]])
        m = cv2.getPerspectiveTransform(dst, src)  # the inverse, so the frame stays full
        return cv2.warpPerspective(p, m, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
    return apply


# Same-scene shots: (name, family, window centre shift (dx, dy) in window widths/heights,
# scale of the window relative to the original's, extra transform)
SAME_SCENE = [
    ("burst: shift 6%", "burst", (0.06, 0.0), 1.0, compose(brightness(1.06), noise(4, 3))),
    ("burst: zoom in 10%", "burst", (0.0, 0.02), 0.9, noise(4, 4)),
    ("burst: shift+zoom out", "burst", (-0.05, 0.03), 1.08, brightness(0.94)),
    ("viewpoint: pan 25% + perspective", "viewpoint", (0.25, 0.0), 1.0, perspective(0.12)),
    ("viewpoint: pan -20% + tilt", "viewpoint", (-0.2, 0.05), 0.95, perspective(0.15, -1)),
    ("viewpoint: zoom in 30% off-centre", "viewpoint", (0.12, -0.08), 0.7, perspective(0.08)),
]


def same_scene_shot(full: np.ndarray, box, shift, scale, transform) -> np.ndarray:
    top, left, h, w = box
    cx = (left + w / 2 + shift[0] * w) / full.shape[1]
    cy = (top + h / 2 + shift[1] * h) / full.shape[0]
    other = window(full.shape, w / h, WINDOW * scale, (cx, cy))
    return np.ascontiguousarray(transform(cut(full, other)))
