"""Helper processes that die with the process they work for.

A `kill -9` of an index run or of the server gives it no chance to stop its helpers,
so each helper watches for itself: PR_SET_PDEATHSIG (Linux) kills a process when its
parent dies, and a watcher thread polls the real owner's pid (a pool worker's parent
is the multiprocessing forkserver, not the process that uses it). The forkserver
itself, a direct child of its owner, imports this module as a preload; the owner's
pid in IMGSIM_OWNER_PID tells it to take the parent-death signal too.
"""
from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
import time
import types

OWNER_ENV = "IMGSIM_OWNER_PID"
POLL_SECONDS = 0.5


def set_parent_death_signal(sig: int = signal.SIGKILL) -> bool:
    """Ask the kernel to send sig to this process when its parent exits (Linux only)."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        PR_SET_PDEATHSIG = 1
        return libc.prctl(PR_SET_PDEATHSIG, int(sig), 0, 0, 0) == 0
    except Exception:
        return False


def _start_time(pid: int):
    """A process's start time (from /proc), to tell it from a later process given its pid."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return f.read().rsplit(b")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def alive(pid: int, started=None) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    if started is not None and _start_time(pid) not in (None, started):
        return False  # the pid was reused
    try:  # a zombie (killed, not yet reaped) is dead for our purpose
        with open(f"/proc/{pid}/stat", "rb") as f:
            if f.read().rsplit(b")", 1)[1].split()[0] == b"Z":
                return False
    except (OSError, IndexError):
        pass
    return True


def exit_with(owner_pid: int, poll: float = POLL_SECONDS) -> None:
    """In a helper process: exit as soon as owner_pid is gone (a daemon thread)."""
    started = _start_time(owner_pid)

    def watch():
        while alive(owner_pid, started) and os.getppid() != 1:
            time.sleep(poll)
        os._exit(1)

    threading.Thread(target=watch, name="imgsim-exit-with-owner", daemon=True).start()


@contextlib.contextmanager
def without_main_script():
    """Start processes, within this block, without re-running the parent's __main__
    script (multiprocessing does so for forkserver and spawn children, so that functions
    defined there unpickle): for Datasette that is its console script, the whole app.
    Only for children that need nothing from __main__."""
    main = sys.modules["__main__"]
    sys.modules["__main__"] = types.ModuleType("__main__")
    try:
        yield
    finally:
        sys.modules["__main__"] = main


def init_worker(owner_pid: int = 0) -> None:
    """In a pool worker: die with the process that uses the pool, even killed with -9
    (the kernel signals us when our parent, the forkserver, dies, and a thread watches
    the owner itself); one thread of OpenCV and numpy's methods per process."""
    set_parent_death_signal()
    exit_with(owner_pid or os.getppid())
    from .methods import base

    base.threads_per_process = 1
    try:
        import cv2

        # One process per core already; OpenCV's own threads would oversubscribe.
        cv2.setNumThreads(1)
    except Exception:
        pass


def process_pool(workers: int, initializer, initargs: tuple = (), preload: tuple = ()):
    """A ProcessPoolExecutor of workers started by a forkserver that dies with us (spawn
    where there is none). Never plain fork: a parent that has run OpenCV or onnxruntime
    holds thread pools whose locks a forked child inherits mid-use and deadlocks on."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    if "forkserver" in multiprocessing.get_all_start_methods():
        context = multiprocessing.get_context("forkserver")
        # The forkserver imports this module first: it then dies with this process.
        mark_owner()
        context.set_forkserver_preload(["datasette_imgsim.procs", *preload])
    else:
        context = multiprocessing.get_context("spawn")
    # Processes start on submit: submit inside without_main_script() where the parent's
    # __main__ is a program (Datasette's console script) the children must not re-run.
    return ProcessPoolExecutor(workers, mp_context=context, initializer=initializer,
                               initargs=initargs)


def mark_owner() -> None:
    """In the owning process, before a forkserver is started: it will die with us."""
    os.environ[OWNER_ENV] = str(os.getpid())


def _as_forkserver_preload() -> None:
    owner = os.environ.get(OWNER_ENV)
    if owner and owner.isdigit() and int(owner) == os.getppid() and int(owner) != os.getpid() \
            and sys.argv[:1] == ["-c"] and "multiprocessing.forkserver" in sys.modules:
        import multiprocessing

        if multiprocessing.parent_process() is None:  # the forkserver (not a pool worker)
            set_parent_death_signal()
            exit_with(int(owner))


_as_forkserver_preload()
