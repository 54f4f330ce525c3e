"""Every file a run writes fails the same way: one sentence naming the file, why, and the free space.

A full disk rarely fails where a test injects it: on a real one the first write to fail may be a log
line, a PNG, the lock's PID or config.json. `writing(path)` turns the OSError of any of them into a
`WriteError` whose message says which file, the OS's reason and how much space is left there, so the
command line prints one `error:` line instead of a traceback. What the write left half-done (a
`.tmp`) is removed by the caller, and by the next start (`run_dir.RunLock`) before it writes anything.
"""
from __future__ import annotations

import contextlib
import errno
import os
import re
import shutil


class WriteError(OSError):
    """A run's file could not be written; the message names it and the free space where it lives."""

    def __str__(self) -> str:   # the sentence alone, without OSError's "[Errno 28]" prefix
        return self.strerror or super().__str__()


def free_space(path: str) -> str:
    """Free space of the file system holding `path` (or its nearest existing parent), e.g. '0.0 MB'."""
    folder = os.path.abspath(path)
    while folder and not os.path.exists(folder):
        folder = os.path.dirname(folder)
    try:
        return f"{shutil.disk_usage(folder).free / 2**20:.1f} MB"
    except OSError:
        return "unknown"


def write_error(path: str, error: OSError) -> WriteError:
    reason = error.strerror or str(error)
    return WriteError(error.errno, f"writing {path} failed: {reason} ({free_space(path)} free there); "
                                   "free some space (or fix the folder) and run the same command with --resume")


def as_os_error(error: BaseException) -> OSError | None:
    """The OSError behind `error`: itself, or the "(os error 28)" that safetensors' Rust writer reports
    inside a SafetensorError (not an OSError); None for anything else."""
    if isinstance(error, OSError):
        return error
    found = re.search(r"(.*?)\s*\(os error (\d+)\)", str(error))
    if found:
        code = int(found.group(2))
        return OSError(code, os.strerror(code))
    return None


@contextlib.contextmanager
def writing(path: str, cleanup: str | None = None):
    """Run the block; an OSError (or a library's report of one) becomes a WriteError naming `path`.
    `cleanup` (a .tmp file or folder) is removed first, so nothing half-written stays behind."""
    try:
        yield
    except WriteError:
        if cleanup:
            remove_quietly(cleanup)
        raise
    except Exception as e:
        os_error = as_os_error(e)
        if os_error is None and _nearly_full(path):
            # torch.save's zip writer reports a full disk as "RuntimeError: [enforce fail at
            # inline_container.cc] unexpected pos ...", without an errno: the free space tells
            os_error = OSError(errno.ENOSPC, f"{os.strerror(errno.ENOSPC)} ({type(e).__name__}: "
                                             f"{str(e).splitlines()[0][:120] if str(e) else ''})")
        if cleanup:
            remove_quietly(cleanup)
        if os_error is None:
            raise
        raise write_error(path, os_error) from e


FULL_BELOW = 1 << 20   # a write that failed with less than 1 MiB free there failed for want of space


def _nearly_full(path: str) -> bool:
    folder = os.path.abspath(path)
    while folder and not os.path.exists(folder):
        folder = os.path.dirname(folder)
    try:
        return shutil.disk_usage(folder).free < FULL_BELOW
    except OSError:
        return False


def remove_quietly(path: str) -> None:
    if os.path.isdir(path) and not os.path.islink(path):
        shutil.rmtree(path, ignore_errors=True)
    else:
        with contextlib.suppress(OSError):
            os.remove(path)
