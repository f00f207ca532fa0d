"""Issue #17: which cnn embedding finds copies of wide, tall, bordered and heavily
degraded photos, without losing same-scene search; and what it costs to index.

    python bench/copydetect_hard.py              # the README's variants, results table, costs
    python bench/copydetect_hard.py --method     # also the shipped cnn method, v1 and v2, end to end
    python bench/copydetect_hard.py --all        # every variant tried
    python bench/copydetect_hard.py --standard   # v1 and v2 on bench/copydetect.py's set
    python bench/copydetect_hard.py --no-cache   # rebuild the set, recompute every view

The set (bench/hardset.py): the photographs of Debian's wallpaper packages cut to 16:9,
21:9, 9:16 and 3:2 (27 originals), indexed beside 96 distractors; every original is queried under
34 transforms in 10 families (copies) and as 6 other shots of the same scene (bursts and
viewpoint changes cut from the full photo, not copies of the indexed one). Every file is
a JPEG decoded as the indexer decodes it (images.load_image with the method's min_size,
so reduced-scale DCT decoding). recall@1: the share of queries whose nearest indexed
picture (cosine) is their original.

Each variant is a sum of L2-normalised pooled vectors of some views of the picture, one
forward pass of EfficientNet-Lite0 per view: C the centre crop (224/256 of the shorter
side; today's embedding, "v1"), S the whole picture squashed to 224x224, P the whole
picture padded to a square (Q: at 160 px), TL/TR the squares at the two ends of the long
side; suffixes: f mirrored, b/B/s Gaussian blur (sigma 1.2/2/0.8 px), g greyscale, l
through 96 px; pools: gap (average, today's), gem (generalised mean, p=3), rmac
(regional max, 14 regions of the 7x7 map). "trim" first removes uniform borders
(letterbox, pillarbox, mount) from the decoded picture. "method cnn v1/v2" rows run the
shipped extract functions end to end (no cache). The set and the view features are
cached in bench/out (hard_set_*.pkl, hard_cache.pkl): a cold run takes ~10 minutes on 2
busy cores, a warm one under a minute (plus ~4 with --method).
"""
from __future__ import annotations

import argparse
import collections
import hashlib
import os
import pickle
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import hardset  # noqa: E402

CACHE = hardset.OUT / "hard_cache.pkl"
MIN_SIZE = 256
SIZE = 224


# --- views -------------------------------------------------------------------------------

def _resize(img, size=SIZE):
    import cv2

    h, w = img.shape[:2]
    interpolation = cv2.INTER_AREA if min(h, w) >= size else cv2.INTER_LINEAR
    return cv2.resize(np.ascontiguousarray(img), (size, size), interpolation=interpolation)


def view(img: np.ndarray, name: str) -> np.ndarray:
    from datasette_imgsim.methods.cnn import runtime

    if name.endswith("f"):
        return np.ascontiguousarray(view(img, name[:-1])[:, ::-1])
    if name.endswith("g"):  # greyscale
        import cv2

        grey = cv2.cvtColor(view(img, name[:-1]), cv2.COLOR_RGB2GRAY)
        return np.ascontiguousarray(np.repeat(grey[:, :, None], 3, axis=2))
    if name.endswith("l"):  # low resolution: through 96 px and back
        import cv2

        small = cv2.resize(view(img, name[:-1]), (96, 96), interpolation=cv2.INTER_AREA)
        return cv2.resize(small, (SIZE, SIZE), interpolation=cv2.INTER_LINEAR)
    if name[-1] in "bBs":  # Gaussian blur, sigma 1.2 (b), 2 (B) or 0.8 (s) px at 224
        import cv2

        return cv2.GaussianBlur(view(img, name[:-1]), (0, 0), {"b": 1.2, "B": 2.0, "s": 0.8}[name[-1]])
    h, w = img.shape[:2]
    if name == "C":
        return runtime.centre_crop(img)
    if name == "S":
        return _resize(img)
    if name == "P":
        side = max(h, w)
        canvas = np.full((side, side, 3), 127, np.uint8)
        top, left = (side - h) // 2, (side - w) // 2
        canvas[top:top + h, left:left + w] = img
        return _resize(canvas)
    if name in ("Q", "Qb"):  # padded to a square at 160 px (blurred: sigma 0.85 px)
        import cv2

        small = cv2.resize(view(img, "P"), (160, 160), interpolation=cv2.INTER_AREA)
        return cv2.GaussianBlur(small, (0, 0), 0.85) if name == "Qb" else small
    if name in ("TL", "TR"):
        side = min(h, w)
        far = name == "TR"
        if w >= h:
            left = w - side if far else 0
            return _resize(img[:, left:left + side])
        top = h - side if far else 0
        return _resize(img[top:top + side])
    raise ValueError(name)


def trim(img: np.ndarray) -> np.ndarray:
    from datasette_imgsim.methods.cnn import runtime

    return runtime.trim_borders(img)


VIEWS = ["C", "S", "Sf", "Cf", "P", "TL", "TR", "Sg", "Sl", "Slg", "Sb", "Pb", "Cb", "Plg", "PB", "CB", "Ps",
         "Cs", "Pbf", "Cbf", "Q", "Qb"]
POOLS = ["gap", "gem", "rmac"]


def _regions(s=7):
    """R-MAC regions of an s x s map: the whole map, then 2x2 and 3x3 overlapping squares."""
    out = [(0, 0, s)]
    for side, steps in ((max(2, s * 5 // 7), 2), (max(2, s * 4 // 7), 3)):
        for i in np.linspace(0, s - side, steps).round().astype(int):
            for j in np.linspace(0, s - side, steps).round().astype(int):
                out.append((i, j, side))
    return out


REGIONS = _regions()


def pools(features: np.ndarray) -> dict:
    """features (n, 1280, 7, 7), non-negative -> {pool: (n, 1280)}."""
    x = features.astype(np.float64)
    gap = x.mean(axis=(2, 3))
    gem = np.cbrt((np.maximum(x, 1e-6) ** 3).mean(axis=(2, 3)))
    rmac = np.zeros_like(gap)
    for i, j, side in (REGIONS if x.shape[-1] == 7 else _regions(x.shape[-1])):
        m = x[:, :, i:i + side, j:j + side].max(axis=(2, 3))
        rmac += m / np.maximum(np.linalg.norm(m, axis=1, keepdims=True), 1e-12)
    return {"gap": gap.astype(np.float32), "gem": gem.astype(np.float32), "rmac": rmac.astype(np.float32)}


class Network:
    """EfficientNet-Lite0 with its feature-map output, one session per input size."""

    def __init__(self):
        self.sessions = {}

    def session(self, size: int):
        if size not in self.sessions:
            import onnxruntime

            from datasette_imgsim.methods.cnn import graph, weights

            model = graph.build_onnx_model(
                weights.read_legacy_torch_weights(weights.default_weights_path()), size, feature_map=True)
            options = onnxruntime.SessionOptions()
            options.log_severity_level = 3
            self.sessions[size] = onnxruntime.InferenceSession(model.SerializeToString(), options,
                                                               providers=["CPUExecutionProvider"])
        return self.sessions[size]

    def features(self, views: list) -> np.ndarray:
        batch = np.stack(views).astype(np.float32).transpose(0, 3, 1, 2)
        batch = (batch - 127.0) / 128.0
        (features,) = self.session(batch.shape[-1]).run(["features"], {"input": np.ascontiguousarray(batch)})
        return features


def decode(data: bytes) -> np.ndarray:
    from datasette_imgsim.images import load_image

    return load_image(data, MIN_SIZE)


def embed_all(items: list, net: Network, cache: dict, views=None) -> list:
    """items: JPEG bytes -> for each, {view or 't'+view: {pool: vector}}, cached by hash;
    only the views missing from the cache are computed."""
    views = views or VIEWS
    keys, pending = [], []  # pending: (key, view name, view array)
    for data in items:
        key = hashlib.sha1(data).hexdigest()
        keys.append(key)
        entry = cache.get(key)
        if entry is not None:
            missing = [v for v in views if v not in entry]
            missing += ["t" + v for v in views if entry["_trimmed"] and "t" + v not in entry]
            if not missing:
                continue
        img = decode(data)
        trimmed = trim(img)
        if entry is None:
            entry = cache[key] = {"_trimmed": trimmed.shape != img.shape, "_shape": img.shape}
            missing = list(views) + (["t" + v for v in views] if entry["_trimmed"] else [])
        for v in missing:
            pending.append((key, v, view(trimmed, v[1:]) if v.startswith("t") else view(img, v)))
        while len(pending) >= 64:
            _flush(pending[:64], net, cache)
            del pending[:64]
    _flush(pending, net, cache)
    result = []
    for key in keys:
        entry = cache[key]
        if not entry["_trimmed"]:
            for v in views:
                entry["t" + v] = entry[v]
        result.append(entry)
    return result


def _flush(pending, net, cache):
    for size in sorted({p[2].shape[0] for p in pending}):
        group = [p for p in pending if p[2].shape[0] == size]
        pooled = pools(net.features([p[2] for p in group]))
        for n, (key, v, _) in enumerate(group):
            cache[key][v] = {pool: pooled[pool][n].astype(np.float16) for pool in POOLS}


# --- variants ----------------------------------------------------------------------------

def _n(x):
    x = np.asarray(x, np.float32)
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


# name -> (list of (view, pool, weight), number of forward passes per image)
VARIANTS = {
    "a v1: centre crop, gap": [("C", "gap", 1)],
    "b squash, gap": [("S", "gap", 1)],
    "b' pad to square, gap": [("P", "gap", 1)],
    "c squash + crop, gap": [("S", "gap", 1), ("C", "gap", 1)],
    "c' pad + crop, gap": [("P", "gap", 1), ("C", "gap", 1)],
    "c'' squash + ends (TL, TR), gap": [("S", "gap", 1), ("TL", "gap", 1), ("TR", "gap", 1)],
    "c''' squash + crop + ends, gap": [("S", "gap", 1), ("C", "gap", 1), ("TL", "gap", 1), ("TR", "gap", 1)],
    "d squash, gem": [("S", "gem", 1)],
    "d squash + crop, gem": [("S", "gem", 1), ("C", "gem", 1)],
    "e squash, rmac": [("S", "rmac", 1)],
    "e squash + crop, rmac": [("S", "rmac", 1), ("C", "rmac", 1)],
    "f squash + flip, gap": [("S", "gap", 1), ("Sf", "gap", 1)],
    "f squash + crop + flips, gap": [("S", "gap", 1), ("C", "gap", 1), ("Sf", "gap", 1), ("Cf", "gap", 1)],
    "f squash + crop + flips, gem": [("S", "gem", 1), ("C", "gem", 1), ("Sf", "gem", 1), ("Cf", "gem", 1)],
    "h squash + crop + grey, gap": [("S", "gap", 1), ("C", "gap", 1), ("Sg", "gap", 1)],
    "h squash + crop + low-res, gap": [("S", "gap", 1), ("C", "gap", 1), ("Sl", "gap", 1)],
    "h squash + crop + grey low-res, gap": [("S", "gap", 1), ("C", "gap", 1), ("Slg", "gap", 1)],
    "h pad + crop + grey low-res, gap": [("P", "gap", 1), ("C", "gap", 1), ("Plg", "gap", 1)],
    "h pad + crop + grey low-res squash, gap": [("P", "gap", 1), ("C", "gap", 1), ("Slg", "gap", 1)],
    "h squash + crop + grey low-res, gem": [("S", "gem", 1), ("C", "gem", 1), ("Slg", "gem", 1)],
    "i blurred squash + crop, gap": [("Sb", "gap", 1), ("Cb", "gap", 1)],
    "i blurred pad + crop, gap": [("Pb", "gap", 1), ("Cb", "gap", 1)],
    "i blurred pad + crop, gem": [("Pb", "gem", 1), ("Cb", "gem", 1)],
    "i blurred squash + crop, gem": [("Sb", "gem", 1), ("Cb", "gem", 1)],
    "i pad + crop + squash, gap": [("P", "gap", 1), ("C", "gap", 1), ("S", "gap", 1)],
    "j blurred pad, gem": [("Pb", "gem", 1)],
    "j blurred pad + sharp crop, gem": [("Pb", "gem", 1), ("C", "gem", 1)],
    "j sharp pad + blurred crop, gem": [("P", "gem", 1), ("Cb", "gem", 1)],
    "j pad + crop, gem": [("P", "gem", 1), ("C", "gem", 1)],
    "j blurred pad + crop, rmac": [("Pb", "rmac", 1), ("Cb", "rmac", 1)],
    "j blurred pad + crop + flips, gem": [("Pb", "gem", 1), ("Cb", "gem", 1), ("Pbf", "gem", 1), ("Cbf", "gem", 1)],
    "j blurred pad 2:1 crop, gem": [("Pb", "gem", 2), ("Cb", "gem", 1)],
    "j blurred pad 1:2 crop, gem": [("Pb", "gem", 1), ("Cb", "gem", 2)],
    "j blurred pad + crop + squash, gem": [("Pb", "gem", 1), ("Cb", "gem", 1), ("Sb", "gem", 1)],
    "j blurred pad + crop + grey low-res, gem": [("Pb", "gem", 1), ("Cb", "gem", 1), ("Slg", "gem", 1)],
    "k pad + crop blur 2, gem": [("PB", "gem", 1), ("CB", "gem", 1)],
    "k pad + crop blur 0.8, gem": [("Ps", "gem", 1), ("Cs", "gem", 1)],
    "k pad + crop blur 2, gap": [("PB", "gap", 1), ("CB", "gap", 1)],
    "l blurred pad x1.5 + crop, gem": [("Pb", "gem", 1.5), ("C", "gem", 1)],
    "l blurred pad + crop, gem": [("Pb", "gem", 1), ("C", "gem", 1)],
    "m blurred pad at 160 x1.5 + crop, gem (v2 with trim)": [("Qb", "gem", 1.5), ("C", "gem", 1)],
    "m pad at 160 x1.5 + crop, gem": [("Q", "gem", 1.5), ("C", "gem", 1)],
    "m blurred pad at 160 + crop, gem": [("Qb", "gem", 1), ("C", "gem", 1)],
}
for _name, _parts in list(VARIANTS.items()):
    if not _name.startswith("a "):
        VARIANTS["t" + _name.split(" ", 1)[0] + " trim + " + _name.split(" ", 1)[1]] = [
            ("t" + v, p, w) for v, p, w in _parts]
VARIANTS["a' trim + centre crop, gap"] = [("tC", "gap", 1)]
VARIANTS["g trim + squash gap + crop gem"] = [("tS", "gap", 1), ("tC", "gem", 1)]
VARIANTS["g' trim + squash 2:1 crop, gem"] = [("tS", "gem", 2), ("tC", "gem", 1)]


# The variants of the README table (prefixes of VARIANTS' names).
DEFAULT_VARIANTS = [
    "a v1", "b squash, gap", "b' pad", "c squash + crop, gap", "c' pad", "c'' squash", "d squash",
    "e squash", "f squash + crop + flips, gem", "tc' trim + pad + crop, gap",
    "h squash + crop + grey low-res, gem", "i blurred pad + crop, gem", "l blurred pad x1.5",
    "m blurred pad at 160 x1.5", "tl trim + blurred pad x1.5", "tm trim + blurred pad at 160 x1.5",
]


def vectors(entries: list, parts) -> np.ndarray:
    total = 0
    for v, pool, weight in parts:
        total = total + weight * _n(np.stack([e[v][pool] for e in entries]))
    return _n(total)


def views_of(parts) -> int:
    return len({v.lstrip("t") for v, _, _ in parts})


# --- the run -----------------------------------------------------------------------------

def build(root, use_cache: bool = True):
    """The gallery and queries as JPEG bytes, cached in bench/out by hardset.py's hash."""
    digest = hashlib.sha1(open(hardset.__file__, "rb").read() + b"shapes").hexdigest()[:12]
    path = hardset.OUT / f"hard_set_{digest}.pkl"
    if use_cache and path.exists():
        return pickle.loads(path.read_bytes())
    out = _build(root)
    path.write_bytes(pickle.dumps(out))
    return out


def _build(root):
    sources, originals, distractors = hardset.photo_sets(root)
    gallery_names = list(originals) + list(distractors)
    gallery = [hardset.jpeg(p, 92) for p in list(originals.values()) + list(distractors.values())]
    queries = []  # (original, transform, kind, family, bytes)
    for name, pixels in originals.items():
        for tname, (family, transform, quality) in hardset.TRANSFORMS.items():
            queries.append((name, tname, "copy", family, hardset.jpeg(transform(pixels), quality)))
        full, box = sources[name]
        for sname, family, shift, scale, transform in hardset.SAME_SCENE:
            shot = hardset.same_scene_shot(full, box, shift, scale, transform)
            queries.append((name, sname, "scene", family, hardset.jpeg(shot, 90)))
    shapes = {name: p.shape for name, p in originals.items()}
    return shapes, {name: p.shape for name, p in distractors.items()}, gallery_names, gallery, queries


def evaluate(gallery_entries, query_entries, queries, gallery_names, parts):
    g = vectors(gallery_entries, parts)
    q = vectors(query_entries, parts)
    sims = q @ g.T
    want = np.array([gallery_names.index(name) for name, *_ in queries])
    best = sims.argmax(axis=1)
    hit = best == want
    right = sims[np.arange(len(q)), want]
    sims_wrong = sims.copy()
    sims_wrong[np.arange(len(q)), want] = -np.inf
    return hit, 1 - right, 1 - sims_wrong.max(axis=1)


def cost(root, rounds: int = 6, batch: int = 16) -> dict:
    """Seconds per 12 MP photo (4000x3000 JPEG, q90) as the indexer spends them: reduced
    decode (images.load_image at the method's min_size) plus the shipped extract, for
    embedding versions 1 and 2; batches of 16, rounds interleaved so that other load
    on the machine falls on both alike. Medians over rounds."""
    from PIL import Image

    from datasette_imgsim.images import load_image
    from datasette_imgsim.methods.cnn import cnn_method, extract_v1, extract_v2

    path = hardset.OUT / "cost_12mp.jpg"
    if not path.exists():
        _, originals, _ = hardset.photo_sets(root)
        first = next(iter(originals.values()))
        big = Image.fromarray(first).resize((4000, 3000), Image.BICUBIC)
        rng = np.random.default_rng(0)
        noisy = np.clip(np.asarray(big) + rng.normal(0, 3, (3000, 4000, 3)), 0, 255).astype(np.uint8)
        Image.fromarray(noisy).save(path, "JPEG", quality=90)
    data = path.read_bytes()
    min_size = cnn_method().min_size
    images = [load_image(data, min_size)] * batch
    extract_v1(images), extract_v2(images)  # build the model, warm up
    times = collections.defaultdict(list)
    for _ in range(rounds):
        t = time.perf_counter()
        for _ in range(batch):
            load_image(data, min_size)
        times["decode"].append((time.perf_counter() - t) / batch)
        for name, fn in (("v1 extract", extract_v1), ("v2 extract", extract_v2)):
            t = time.perf_counter()
            fn(images)
            times[name].append((time.perf_counter() - t) / batch)
    out = {k: float(np.median(v)) for k, v in times.items()}
    out["shape"] = images[0].shape
    return out


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--no-cache", action="store_true")
    parser.add_argument("--method", action="store_true", help="also run the shipped cnn method (v1 and v2)")
    parser.add_argument("--variants", default="", help="comma-separated prefixes of variants to show "
                        "(default: those of the README table)")
    parser.add_argument("--all", action="store_true", help="every variant tried (22 views; ~15 min cold)")
    parser.add_argument("--no-cost", action="store_true")
    parser.add_argument("--standard", action="store_true",
                        help="instead: the shipped method, v1 and v2, on bench/copydetect.py's set "
                             "(the project's own benchmark: transforms and hard transforms)")
    args = parser.parse_args(argv)

    if args.standard:
        return standard()
    root = hardset.fetch()
    if root is None:
        sys.exit("could not fetch the wallpaper packages (apt-get download)")
    t0 = time.perf_counter()
    originals, distractors, gallery_names, gallery, queries = build(root, not args.no_cache)
    print(f"{len(originals)} originals ({collections.Counter(_aspect(p) for p in originals.values())}), "
          f"{len(distractors)} distractors, {sum(q[2] == 'copy' for q in queries)} copies, "
          f"{sum(q[2] == 'scene' for q in queries)} same-scene shots; built in {time.perf_counter() - t0:.0f} s",
          file=sys.stderr)
    cache = {} if args.no_cache or not CACHE.exists() else pickle.loads(CACHE.read_bytes())
    net = Network()
    t0 = time.perf_counter()
    wanted = [p for p in args.variants.split(",") if p] or (None if args.all else DEFAULT_VARIANTS)
    selected = {name: parts for name, parts in VARIANTS.items()
                if wanted is None or any(name.startswith(p) for p in wanted)}
    views = sorted({v[1:] if v.startswith("t") else v for parts in selected.values() for v, _, _ in parts})
    gallery_entries = embed_all(gallery, net, cache, views)
    query_entries = embed_all([q[4] for q in queries], net, cache, views)
    CACHE.write_bytes(pickle.dumps(cache))
    print(f"views {', '.join(views)} embedded in {time.perf_counter() - t0:.0f} s", file=sys.stderr)

    results = {}
    for name, parts in selected.items():
        results[name] = (evaluate(gallery_entries, query_entries, queries, gallery_names, parts),
                         views_of(parts))
    if args.method:
        results.update(method_results(gallery, queries, gallery_names))
    report(results, queries, {name: _aspect(shape) for name, shape in originals.items()})
    if not args.no_cost:
        c = cost(root)
        print(f"\nCost per 12 MP JPEG (4000x3000, q90, decoded at {c['shape'][1]}x{c['shape'][0]}), "
              f"{os.cpu_count()} cores, batches of 16:")
        v1, v2 = c["decode"] + c["v1 extract"], c["decode"] + c["v2 extract"]
        print(f"  decode {c['decode'] * 1000:.1f} ms; v1 extract {c['v1 extract'] * 1000:.1f} ms; "
              f"v2 extract {c['v2 extract'] * 1000:.1f} ms")
        print(f"  decode + v1: {v1 * 1000:.1f} ms; decode + v2: {v2 * 1000:.1f} ms = {v2 / v1:.2f}x")


def method_results(gallery, queries, gallery_names):
    """The shipped method end to end: extract at its min_size, for each version it offers."""
    from datasette_imgsim.images import load_image
    from datasette_imgsim.methods.cnn import cnn_method, embed

    method = cnn_method()
    out = {}
    for version in sorted({1, getattr(method, "version", 1)}):
        def run(items):
            vecs = []
            for start in range(0, len(items), 16):
                images = [load_image(d, method.min_size) for d in items[start:start + 16]]
                vecs.append(embed(images, version))
            return np.concatenate(vecs)
        t = time.perf_counter()
        g, q = run(gallery), run([x[4] for x in queries])
        sims = q @ g.T
        want = np.array([gallery_names.index(name) for name, *_ in queries])
        hit = sims.argmax(axis=1) == want
        right = 1 - sims[np.arange(len(q)), want]
        sims[np.arange(len(q)), want] = -np.inf
        out[f"method cnn v{version}"] = ((hit, right, 1 - sims.max(axis=1)), 0)
        print(f"method v{version}: {time.perf_counter() - t:.0f} s", file=sys.stderr)
    return out


def standard():
    """v1 and v2 on bench/copydetect.py's originals, distractors and transforms."""
    import copydetect

    workdir = hardset.OUT / "mate"
    workdir.mkdir(parents=True, exist_ok=True)
    originals, distractors = copydetect.photo_sets(workdir=str(workdir))
    names = list(originals) + list(distractors)
    gallery = [copydetect.jpeg(p, 92) for p in list(originals.values()) + list(distractors.values())]
    queries = []
    for transforms in (copydetect.TRANSFORMS, copydetect.HARD_TRANSFORMS):
        for name, pixels in originals.items():
            for tname, (family, transform, quality) in transforms.items():
                queries.append((name, tname, "copy", family,
                                copydetect.jpeg(np.ascontiguousarray(transform(pixels)), quality)))
    print(f"{len(originals)} originals, {len(distractors)} distractors, {len(queries)} copies", file=sys.stderr)
    results = method_results(gallery, queries, names)
    families = list(dict.fromkeys(q[3] for q in queries))
    fam = np.array([q[3] for q in queries])
    standard_set = np.array([q[1] in copydetect.TRANSFORMS for q in queries])
    print("| version | standard transforms | hard transforms | " + " | ".join(families) + " |")
    print("|" + "---|" * (len(families) + 3))
    for name, ((hit, _, _), _) in results.items():
        print(f"| {name} | {hit[standard_set].mean():.3f} | {hit[~standard_set].mean():.3f} | "
              + " | ".join(f"{hit[fam == f].mean():.3f}" for f in families) + " |")


def _aspect(shape):
    r = shape[1] / shape[0]
    return min(["16:9", "21:9", "9:16", "3:2"], key=lambda k: abs(eval(k.replace(":", "/")) - r))


def report(results, queries, aspects: dict):
    kinds = np.array([q[2] for q in queries])
    families = np.array([q[3] for q in queries])
    copy_families = hardset.FAMILIES
    scene_families = ["burst", "viewpoint"]
    aspect = np.array([aspects.get(q[0], "") for q in queries])
    aspect_names = ["16:9", "21:9", "9:16", "3:2"]
    headers = (["variant", "views", "copies", *copy_families, "scene", *scene_families,
                *[f"copies {a}" for a in aspect_names], "d copy", "d scene", "d other"])
    print("\n| " + " | ".join(headers) + " |")
    print("|" + "---|" * len(headers))
    for name, ((hit, right, wrong), nviews) in results.items():
        copy = kinds == "copy"
        scene = kinds == "scene"
        cells = [name, str(nviews), f"**{hit[copy].mean():.3f}**"]
        cells += [f"{hit[families == f].mean():.3f}" for f in copy_families]
        cells += [f"**{hit[scene].mean():.3f}**"]
        cells += [f"{hit[families == f].mean():.3f}" for f in scene_families]
        cells += [f"{hit[copy & (aspect == a)].mean():.3f}" for a in aspect_names]
        mild = copy & (families != "strong")
        cells += [f"{np.median(right[mild]):.3f}", f"{np.median(right[scene]):.3f}",
                  f"{np.percentile(wrong[copy | scene], 5):.3f}"]
        print("| " + " | ".join(cells) + " |")
    counts = collections.Counter(families)
    print("\nqueries per family: " + ", ".join(f"{f} {counts[f]}" for f in copy_families + scene_families))
    print("d copy / d scene: median cosine distance to the original (copies excluding 'strong'; "
          "same-scene shots); d other: 5th percentile of the distance to the nearest wrong picture.")


if __name__ == "__main__":
    main()
