"""What the plugin does once when a Datasette server starts: decode in killable worker
processes (decoding.py), log a failed SQL call in one line, and bring the index files
into the page cache so that the first query does not meet Datasette's time limit."""
from __future__ import annotations

import os
import sys
import threading
import time
from typing import Optional

from .errors import ImgsimError

PLUGIN = "datasette-imgsim"
WARM_BYTES = 4 * 1024 ** 3  # at most this much of the index files is read ahead
_hooks_installed = False


def under_pytest() -> bool:
    return "PYTEST_CURRENT_TEST" in os.environ


def start(datasette) -> None:
    settings = datasette.plugin_config(PLUGIN) or {}
    workers = settings.get("decode_workers")
    # In a test process, decoding stays in process unless the configuration asks.
    if (workers is None and not under_pytest()) or (workers not in (None, 0, "0")):
        from . import decoding

        decoding.enable(int(workers) if workers not in (None, True) else None,
                        settings.get("decode_seconds"))
    install_one_line_errors()
    watch_shutdown()
    paths = index_files(datasette)
    if paths:
        threading.Thread(target=warm, args=(paths,), name="imgsim-warm", daemon=True).start()


_watching = False


def watch_shutdown(poll: float = 0.2) -> None:
    """When the server is asked to stop (uvicorn's SIGTERM/SIGINT handler has set its
    should_exit), kill the decode workers at once: a request waiting on a decode then
    fails within moments, instead of holding the shutdown up until its decode ends."""
    global _watching
    if _watching:
        return
    _watching = True
    import signal

    def watch():
        while True:
            time.sleep(poll)
            handler = signal.getsignal(signal.SIGTERM)
            server = getattr(handler, "__self__", None)
            if server is not None and getattr(server, "should_exit", False):
                from . import decoding

                decoding.stop()
                return

    threading.Thread(target=watch, name="imgsim-shutdown-watch", daemon=True).start()


def install_one_line_errors() -> None:
    """A plugin SQL function that fails (a user error: no index, a bad k) is logged as
    one line, not as the traceback Datasette's enable_callback_tracebacks prints."""
    global _hooks_installed
    if _hooks_installed:
        return
    _hooks_installed = True
    previous_unraisable = sys.unraisablehook
    previous_except = sys.excepthook

    def one_line(exc) -> bool:
        if isinstance(exc, ImgsimError) or type(exc).__name__ == "ImgsimSQLError":
            print(f"datasette-imgsim: SQL function error: {exc}", file=sys.stderr)
            return True
        return False

    def unraisable(info):
        if not one_line(info.exc_value):
            previous_unraisable(info)

    def excepthook(kind, value, tb):
        if not one_line(value):
            previous_except(kind, value, tb)

    sys.unraisablehook = unraisable
    sys.excepthook = excepthook


def index_files(datasette) -> list:
    """The files of served databases that hold an index, and their sidecars."""
    from .store.sidecar import find_sidecar

    found = []
    for name, db in datasette.databases.items():
        path = getattr(db, "path", None)
        if not path or name == "_internal" or not os.path.isfile(path):
            continue
        configured = (datasette.plugin_config(PLUGIN, database=name) or {}).get("index_db")
        try:
            sidecar = find_sidecar(path, configured)
        except Exception:
            sidecar = None
        for candidate in (sidecar, path):
            if candidate is not None and os.path.isfile(candidate) and _has_index(candidate):
                found.append(str(candidate))
    return list(dict.fromkeys(found))


def _has_index(path) -> bool:
    try:
        with open(path, "rb") as f:
            head = f.read(1 << 20)
    except OSError:
        return False
    return b"_imgsim_indexes" in head or b"_imgsim_" in head


def warm(paths, limit: Optional[int] = None) -> int:
    """Read the files through once (a hint, then sequential reads in the background)."""
    limit = WARM_BYTES if limit is None else limit
    done = 0
    for path in paths:
        try:
            fd = os.open(path, os.O_RDONLY)
        except OSError:
            continue
        try:
            if hasattr(os, "posix_fadvise"):
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_WILLNEED)
            while done < limit:
                chunk = os.read(fd, 8 << 20)
                if not chunk:
                    break
                done += len(chunk)
        except OSError:
            pass
        finally:
            os.close(fd)
    return done
