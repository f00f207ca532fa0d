"""Videos: one representative frame, read through OpenCV's bundled FFmpeg.

The frame is the first that is not near-black at or after 10 % of the duration
(past fades in from black and most title cards); a few frames are read at most, at
three positions at most, and never more than TIME_BUDGET seconds of decoding, so a
long video costs about as much as a photo. FFmpeg rotates frames by the video's
display matrix (phones record portrait videos as rotated landscape).
"""
from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path
from typing import Union

from PIL import Image

from . import KIND_KEY, PATH_KEY, record

POSITIONS = (0.10, 0.30, 0.50)  # fractions of the duration tried in turn
FRAMES_PER_POSITION = 3
BLACK = 16.0  # mean luminance (0-255) under which a frame counts as black
TIME_BUDGET = 5.0  # seconds of decoding, at most, per video
OPEN_TIMEOUT_MS = 5000


def video_frame(source: Union[bytes, str, os.PathLike], max_pixels: int, error: type) -> Image.Image:
    """An RGB frame of a video given as bytes (written to a temporary file, which
    OpenCV needs) or as a path."""
    if isinstance(source, (bytes, bytearray, memoryview)):
        handle, name = tempfile.mkstemp(prefix="imgsim-", suffix=".video")
        try:
            with os.fdopen(handle, "wb") as f:
                f.write(source)
            return video_frame(name, max_pixels, error)
        finally:
            os.unlink(name)
    try:
        import cv2
    except ImportError:
        raise error("video file: install opencv-python-headless to read it") from None
    cap = cv2.VideoCapture(str(Path(source)), cv2.CAP_FFMPEG,
                           [cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, OPEN_TIMEOUT_MS,
                            cv2.CAP_PROP_READ_TIMEOUT_MSEC, OPEN_TIMEOUT_MS])
    try:
        if not cap.isOpened():
            raise error("cannot open video: no video stream, or a container FFmpeg does not read")
        width, height = int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)), int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT))
        if width <= 0 or height <= 0:
            raise error("video has no video stream")
        if width * height > max_pixels:
            raise error(f"video frame too large: {width}x{height} pixels (limit {max_pixels:,})")
        frame = _representative(cap, cv2, int(cap.get(cv2.CAP_PROP_FRAME_COUNT)))
    except cv2.error as e:
        raise error(f"corrupt video: {str(e).strip().splitlines()[-1]}") from None
    finally:
        cap.release()
    if frame is None:
        raise error("video has no decodable frames")
    img = Image.fromarray(cv2.cvtColor(frame, cv2.COLOR_BGR2RGB), "RGB")
    record("video", "frame")
    img.info[KIND_KEY], img.info[PATH_KEY] = "video", "frame"
    return img


def _representative(cap, cv2, count: int):
    """The first non-black frame from the positions tried, else the brightest read."""
    start = time.monotonic()
    best, best_level = None, -1.0
    targets = sorted({int(count * p) for p in POSITIONS}) if count > 1 else [0]
    for target in targets:
        if target and not cap.set(cv2.CAP_PROP_POS_FRAMES, target):
            continue
        for _ in range(FRAMES_PER_POSITION):
            ok, frame = cap.read()
            if not ok or frame is None or frame.size == 0:
                break
            level = float(frame[::8, ::8].mean())
            if level >= BLACK:
                return frame
            if level > best_level:
                best, best_level = frame, level
            if time.monotonic() - start > TIME_BUDGET:
                return best
        if time.monotonic() - start > TIME_BUDGET:
            break
    if best is None and targets != [0]:
        # A seek that the container cannot do: the first frames, from the start.
        cap.set(cv2.CAP_PROP_POS_FRAMES, 0)
        ok, frame = cap.read()
        if ok and frame is not None and frame.size:
            best = frame
    return best


def video_size(source, error: type) -> tuple[int, int]:
    """Width and height of a video's frames."""
    img = video_frame(source, 1 << 62, error)
    return img.size
