"""The server's decodes, in worker processes it can kill.

A decoder is C code that no thread can interrupt: a hostile upload (a scan bomb, a
decoder bug) would hold a server thread for as long as it likes, and keep the server
from stopping. With enable() (the plugin's startup hook), every images.open_image /
load_image of the server process (uploads, thumbnails, re-ranking) runs in one of a few
worker processes: a decode is given SECONDS, then its worker is killed (and replaced on
the next decode); a decode whose caller gives up (an abandoned upload, see decode())
kills its worker at once; the workers die with the server, even killed with -9, and
are killed when it exits, before Python waits for its threads.

IMGSIM_DECODE_WORKERS=0 in the environment decodes in the server process instead.
"""
from __future__ import annotations

import asyncio
import multiprocessing
import os
import threading
import time
from typing import Optional

from . import procs
from .errors import ImageError

WORKERS = max(1, min(4, os.cpu_count() or 1))
SECONDS = 20.0
_idle: list = []
_all: set = set()
_lock = threading.Lock()
_slots: Optional[threading.BoundedSemaphore] = None
_closed = False


class DecodeBusy(ImageError):
    status = 503


class _Worker:
    def __init__(self):
        context = multiprocessing.get_context(
            "forkserver" if "forkserver" in multiprocessing.get_all_start_methods() else "spawn")
        if context.get_start_method() == "forkserver":
            procs.mark_owner()
            context.set_forkserver_preload(["datasette_imgsim.procs", "datasette_imgsim.decoding"])
        self.conn, child = context.Pipe()
        self.process = context.Process(target=_serve, args=(child, os.getpid()), daemon=True,
                                       name="imgsim-decoder")
        with procs.without_main_script():
            self.process.start()
        child.close()

    def kill(self):
        try:
            self.process.kill()
        except Exception:
            pass
        try:
            self.conn.close()
        except Exception:
            pass


def _serve(conn, owner_pid: int) -> None:
    """Worker main: decode what arrives, answer (mode, size, pixels, info) or an error."""
    procs.set_parent_death_signal()
    procs.exit_with(owner_pid)
    from . import images

    images._delegate = None
    while True:
        try:
            source, min_size = conn.recv()
        except (EOFError, OSError):
            return
        try:
            img = images.open_image(source, min_size)
            info = {k: v for k, v in img.info.items() if isinstance(k, str) and k.startswith("imgsim_")}
            answer = ("ok", img.mode, img.size, img.tobytes(), info)
        except ImageError as e:
            answer = ("error", str(e), type(e).__name__)
        except Exception as e:  # a decoder bug costs this image, not the worker
            answer = ("error", f"cannot read image: {e.__class__.__name__}: {str(e)[:200]}",
                      "ImageError")
        try:
            conn.send(answer)
        except (OSError, ValueError):
            return


def enable(workers: Optional[int] = None, seconds: Optional[float] = None) -> bool:
    """Decode in worker processes from now on (this process only). Idempotent; False when
    IMGSIM_DECODE_WORKERS=0 says not to."""
    global WORKERS, SECONDS, _slots, _closed
    setting = os.environ.get("IMGSIM_DECODE_WORKERS", "")
    if setting.strip() == "0":
        return False
    from . import images

    with _lock:
        if setting.strip().isdigit():
            WORKERS = int(setting)
        if workers:
            WORKERS = int(workers)
        if seconds:
            SECONDS = float(seconds)
        if _slots is None:
            _slots = threading.BoundedSemaphore(WORKERS)
            _register_exit()
        _closed = False
        images._delegate = decode_sync
    return True


def disable() -> None:
    """Decode in this process again, and stop the workers."""
    from . import images

    images._delegate = None
    shutdown()


def shutdown() -> None:
    """Kill every worker (a decode in progress fails at once)."""
    with _lock:
        workers = list(_all)
        _all.clear()
        _idle.clear()
    for worker in workers:
        worker.kill()


def stop() -> None:
    """The server is stopping: decodes in progress fail now, new ones are refused."""
    global _closed
    _closed = True
    shutdown()


def _register_exit() -> None:
    # Python joins executor threads (threading._shutdown) before atexit handlers run: a
    # thread waiting on a decode would hold the exit up. Registered last, run first.
    import atexit
    import concurrent.futures.thread  # noqa: F401 (its exit hook first, so ours runs before it)

    register = getattr(threading, "_register_atexit", None)
    if register is not None:
        try:
            register(stop)
        except RuntimeError:
            pass
    atexit.register(stop)


def _take() -> _Worker:
    with _lock:
        while _idle:
            worker = _idle.pop()
            if worker.process.is_alive():
                return worker
            _all.discard(worker)
            worker.kill()
    worker = _Worker()
    with _lock:
        _all.add(worker)
    return worker


def _give(worker: _Worker) -> None:
    with _lock:
        if worker in _all and not _closed:
            _idle.append(worker)
            return
    worker.kill()


def _retire(worker: _Worker) -> None:
    with _lock:
        _all.discard(worker)
    worker.kill()


def decode_sync(source, min_size: int = 0, seconds: Optional[float] = None,
                cancelled: Optional[threading.Event] = None):
    """images.open_image(source, min_size) in a worker: a PIL image, or ImageError
    (DecodeBusy when every worker stays busy for the whole time allowed)."""
    from PIL import Image

    if _closed:
        raise ImageError("the server is stopping")
    if isinstance(source, (bytearray, memoryview)):
        source = bytes(source)
    elif not isinstance(source, bytes):
        source = os.fspath(source)
    if isinstance(source, bytes) and source[:3] == b"\xff\xd8\xff":
        from .images import MAX_SCANS, jpeg_scans

        # A scan bomb is told from its markers: refused here, without waiting for a worker.
        if jpeg_scans(source) > MAX_SCANS:
            raise ImageError(f"JPEG refused: over {MAX_SCANS} scans would take too long to "
                             "decode (a scan bomb)")
    seconds = SECONDS if seconds is None else seconds
    deadline = time.monotonic() + seconds
    slots = _slots
    while slots is None or not slots.acquire(timeout=0.1):
        if slots is None or time.monotonic() >= deadline:
            raise DecodeBusy("the server is busy decoding other images: try again shortly")
        if _closed:
            raise ImageError("the server is stopping")
        if cancelled is not None and cancelled.is_set():
            raise ImageError("the request was abandoned")
    try:
        worker = _take()
        try:
            worker.conn.send((source, min_size))
            while True:
                if cancelled is not None and cancelled.is_set():
                    _retire(worker)
                    raise ImageError("the request was abandoned")
                left = deadline - time.monotonic()
                if left <= 0:
                    _retire(worker)
                    raise ImageError(f"decoding took longer than {seconds:g} s: refused")
                if worker.conn.poll(min(left, 0.1)):
                    answer = worker.conn.recv()
                    break
        except (EOFError, OSError, BrokenPipeError):
            _retire(worker)
            if _closed:
                raise ImageError("the server is stopping") from None
            raise ImageError("the decoder crashed on this image (out of memory, or a bug "
                             "in a decoding library)") from None
        _give(worker)
    finally:
        slots.release()
    if answer[0] == "error":
        raise ImageError(answer[1])
    _, mode, size, pixels, info = answer
    img = Image.frombytes(mode, size, pixels)
    img.info.update(info)
    return img


_uploads: tuple = (None, None)  # (event loop, its semaphore)


def upload_slots() -> int:
    """Uploads decode in at most this many workers at once: the rest stay free for the
    thumbnails and pages of everyone else, whatever a flood of uploads holds."""
    return max(1, WORKERS - 1) if WORKERS > 2 else 1


async def decode(source, min_size: int = 0, request=None, seconds: Optional[float] = None):
    """decode_sync off the event loop, for an upload: with request, a client that
    disconnects stops the decode (its worker is killed); at most upload_slots() uploads
    decode at once. ImageError as decode_sync."""
    global _uploads
    loop = asyncio.get_running_loop()
    if _uploads[0] is not loop:
        _uploads = (loop, asyncio.Semaphore(upload_slots()))
    cancelled = threading.Event()
    async with _uploads[1]:
        return await _decode(loop, source, min_size, request, seconds, cancelled)


async def _decode(loop, source, min_size, request, seconds, cancelled):
    work = loop.run_in_executor(None, _open, source, min_size, seconds, cancelled)
    work.add_done_callback(lambda f: f.cancelled() or f.exception())  # retrieved: no warning
    watcher = asyncio.ensure_future(_disconnected(request)) if request is not None else None
    try:
        if watcher is None:
            return await work
        done, _ = await asyncio.wait({work, watcher}, return_when=asyncio.FIRST_COMPLETED)
        if work in done:
            return work.result()
        cancelled.set()
        raise ImageError("the upload was abandoned")
    except asyncio.CancelledError:
        cancelled.set()
        raise
    finally:
        if watcher is not None:
            watcher.cancel()


def _open(source, min_size, seconds, cancelled):
    from . import images

    if images._delegate is None:  # not enabled: decode here
        return images.open_image(source, min_size)
    return decode_sync(source, min_size, seconds, cancelled)


async def _disconnected(request) -> None:
    """Returns when the client of request has gone (the body is already read)."""
    while True:
        message = await request.receive()
        if message.get("type") == "http.disconnect":
            return


async def embed(spec, data: bytes, request=None):
    """An uploaded image's vector for an index (search.embed_image), its decode bounded
    and stopped when the client goes away. For web/upload_page.py."""
    import numpy as np

    from .plugins import get_method

    method = get_method(spec.method)
    img = await decode(data, method.min_size, request)
    pixels = np.asarray(img, dtype=np.uint8)

    def vector():
        features = method.extract([pixels])
        return method.vectors_for(features.vectors, spec.metric)[0]

    return await asyncio.get_running_loop().run_in_executor(None, vector)
