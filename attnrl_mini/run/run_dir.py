"""A run directory's identity and ownership: the lock on --out, and config.json across resumes.

- One process per run directory: `RunLock` holds an exclusive `flock` on `<out>/.lock`, which also
  holds the owner's PID. The kernel drops the flock when its process dies, so a lock file left by a
  killed run is taken over (with a warning naming the dead PID), never waited on. A clean release
  removes the lock file (and the run directory, when the run wrote nothing else into it).
- `--resume` continues the same run: `resume_config` starts from the run's config.json, and an
  explicit flag may only change a field of `config.MAY_CHANGE_ON_RESUME`; any other difference is
  refused, each one listed. `write_config` records every accepted change with the step it took
  effect at, under config.json's "resume_changes".
"""
from __future__ import annotations

import dataclasses
import fcntl
import json
import os

from attnrl_mini.run.config import MAY_CHANGE_ON_RESUME, Config, ConfigError, flag

LOCK_FILE = ".lock"
CONFIG_FILE = "config.json"
CHANGES_KEY = "resume_changes"


class RunLock:
    """Exclusive ownership of a run directory for this process's lifetime (or until release())."""

    def __init__(self, out_dir: str, warn=print):
        self._made_dir = not os.path.isdir(out_dir)
        os.makedirs(out_dir, exist_ok=True)
        self.out_dir, self.path = out_dir, os.path.join(out_dir, LOCK_FILE)
        while True:
            self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                owner = os.pread(self._fd, 32, 0).decode(errors="replace").strip() or "unknown"
                os.close(self._fd)
                raise ConfigError(f"--out {out_dir} is in use by another process (PID {owner}, lock file {self.path}); "
                                  "wait for it to finish or choose another --out") from None
            try:   # the file we locked is still the one at the path (not one a releasing owner just removed)
                if os.stat(self.path).st_ino == os.fstat(self._fd).st_ino:
                    break
            except FileNotFoundError:
                pass
            os.close(self._fd)
        previous = os.pread(self._fd, 32, 0).decode(errors="replace").strip()
        if previous and previous != str(os.getpid()):
            warn(f"[attnrl] warning: took over the stale lock {self.path} of process {previous}, which is gone")
        os.ftruncate(self._fd, 0)
        os.pwrite(self._fd, str(os.getpid()).encode(), 0)

    def release(self) -> None:
        if self._fd is not None:
            os.unlink(self.path)        # while still holding the lock: a newcomer then locks a new file
            os.close(self._fd)
            self._fd = None
            if self._made_dir and not os.listdir(self.out_dir):
                os.rmdir(self.out_dir)  # a run that failed before writing anything leaves no empty folder


def has_config(out_dir: str) -> bool:
    return os.path.isfile(os.path.join(out_dir, CONFIG_FILE))


def read_config(out_dir: str) -> dict:
    """The run's config.json as a dict of Config fields (without its change history)."""
    path = os.path.join(out_dir, CONFIG_FILE)
    try:
        with open(path) as f:
            stored = json.load(f)
    except FileNotFoundError:
        raise ConfigError(f"--resume: {path} does not exist; is {out_dir} a run directory?") from None
    except (ValueError, UnicodeDecodeError) as e:
        raise ConfigError(f"--resume: {path} is not valid JSON ({e})") from None
    stored.pop(CHANGES_KEY, None)
    return stored


def resume_config(out_dir: str, explicit: dict) -> Config:
    """The run's own config with the explicit flags applied; refuses flags that would change the run.

    A field missing from an older config.json keeps its current default (and may then be set)."""
    stored = read_config(out_dir)
    known = {f.name for f in dataclasses.fields(Config)}
    values = {k: v for k, v in stored.items() if k in known}
    refused = [f"{flag(k)} {v!r} (the run has {values[k]!r})" for k, v in sorted(explicit.items())
               if k in values and v != values[k] and k not in MAY_CHANGE_ON_RESUME and k != "out"]
    if refused:
        raise ConfigError(f"--resume continues the run in {out_dir} exactly, and these flags would change it: "
                          f"{'; '.join(refused)}. Start a new run with another --out instead.")
    return Config(**{**values, **explicit, "out": out_dir})


def write_config(cfg: Config, step: int | None = None) -> list[dict]:
    """Write config.json; on resume (`step` = the checkpoint's step) append each changed field to its
    "resume_changes" and return those new changes."""
    path = os.path.join(cfg.out, CONFIG_FILE)
    record, history, new = dataclasses.asdict(cfg), [], []
    if step is not None and os.path.exists(path):
        with open(path) as f:
            stored = json.load(f)
        history = stored.get(CHANGES_KEY, [])
        new = [{"step": step, "field": name, "from": stored[name], "to": value} for name, value in record.items()
               if name in stored and stored[name] != value and name != "out"]
    if history + new:
        record[CHANGES_KEY] = history + new
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(record, f, indent=1)
    os.replace(tmp, path)
    return new
