"""How `train.py` and `eval.py` report a user's error: one `error:` line, no traceback (`--debug` keeps it).

A user error is one whose message already says what to fix (a flag, a file, a server, the free
space): bad settings, data, checkpoints, model or adapter files, a device, a tracker, the vLLM
server, a write that failed. Anything else is a bug and keeps its traceback. A message of several
lines (the sidecar adds the end of the server's log) prints those lines first, indented, so the last
line is always the `error:` one.
"""
from __future__ import annotations

import errno
import sys

# (module, class): only modules already imported can have raised their error, so none is imported here
USER_ERRORS = [("attnrl_mini.config", "ConfigError"), ("attnrl_mini.worlds.data", "DataError"),
               ("attnrl_mini.run.checkpoint", "CheckpointError"), ("attnrl_mini.run.writes", "WriteError"),
               ("attnrl_mini.models.policy", "ModelNotFoundError"), ("attnrl_mini.models.policy", "ModelLoadError"),
               ("attnrl_mini.models.policy", "AdapterError"), ("attnrl_mini.models.policy", "DeviceError"),
               ("attnrl_mini.models.precision", "PrecisionError"),
               ("attnrl_mini.run.tracking", "TrackerError"), ("attnrl_mini.generation.vllm_sidecar", "SidecarError")]
_DISK = (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES)


def is_user_error(e: BaseException) -> bool:
    kinds = [getattr(sys.modules[m], name, None) for m, name in USER_ERRORS if m in sys.modules]
    kinds = [k for k in kinds if k is not None]
    disk = isinstance(e, OSError) and e.errno in _DISK
    return disk or isinstance(e, (FileExistsError, FileNotFoundError, *kinds))


def exit_with(e: BaseException) -> None:
    """Print `e` as the last stderr line `error: ...` (details of a long message before it) and exit 1."""
    lines = str(e).strip().splitlines() or [type(e).__name__]
    for line in lines[1:]:
        print(f"  | {line}", file=sys.stderr)
    sys.exit(f"error: {lines[0]}")
