"""A run directory's identity and ownership: the lock on --out, and config.json across resumes.

- One process per run directory: `RunLock` holds an exclusive `flock` on `<out>/.lock`, which also
  holds the owner's PID. The kernel drops the flock when its process dies, so a lock file left by a
  killed run is taken over (with a warning naming the dead PID), never waited on. A clean release
  removes the lock file (and the run directory, when the run wrote nothing else into it).
- `--resume` continues the same run: `resume_config` starts from the run's config.json, and an
  explicit flag may only change a field of `config.MAY_CHANGE_ON_RESUME`; any other difference is
  refused, each one listed. `write_config` records every accepted change with the step it took
  effect at, under config.json's "resume_changes".
- config.json is checked on --resume with the command line's rules: an object, every field of its
  type (`"lora_rank": "16"` or `"zero_adv_filter": "false"` is refused, not read as another run),
  then `config.validate`. A run with checkpoints or metrics but no config.json is refused unless
  `--rebuild-config` says to rebuild it from the command line (recorded in "resume_changes").
- A run's identity includes its data: the SHA-256 of the training and evaluation files is recorded
  under "data_sha256" at the start and compared on --resume; changed content is refused naming the
  file, unless `--accept-changed-data` (then recorded in "resume_changes").
- The start cleans up first: with the lock held and before it writes anything, it removes what an
  interrupted write left (`step_N.tmp/`, `*.tmp` files), so a --resume on a still-full disk can free
  that space; every write failure is one line naming the file and the free space (writes.py).
"""
from __future__ import annotations

import dataclasses
import fcntl
import hashlib
import json
import os

from attnrl_mini.config import MAY_CHANGE_ON_RESUME, Config, ConfigError, flag, validate
from attnrl_mini.run.writes import remove_quietly, write_error, writing

LOCK_FILE = ".lock"
CONFIG_FILE = "config.json"
CHANGES_KEY = "resume_changes"
DATA_KEY = "data_sha256"          # {"train_data": sha256 or None, "eval_data": ...}
DATA_FIELDS = ("train_data", "eval_data")


class RunLock:
    """Exclusive ownership of a run directory for this process's lifetime (or until release())."""

    def __init__(self, out_dir: str, warn=print):
        if os.path.exists(out_dir) and not os.path.isdir(out_dir):
            raise ConfigError(f"--out {out_dir} is a file, not a folder")
        self._made_dir = not os.path.isdir(out_dir)
        with writing(out_dir):
            os.makedirs(out_dir, exist_ok=True)
        self.out_dir, self.path = out_dir, os.path.join(out_dir, LOCK_FILE)
        while True:
            with writing(self.path):
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
        for stale in remove_interrupted_writes(out_dir):   # first, so a full disk gets that space back
            warn(f"[attnrl] removed {stale}: left by a write that never finished")
        try:
            os.ftruncate(self._fd, 0)
            os.pwrite(self._fd, str(os.getpid()).encode(), 0)
        except OSError as e:
            os.close(self._fd)
            self._fd = None
            raise write_error(self.path, e) from e

    def release(self) -> None:
        if self._fd is not None:
            try:
                os.unlink(self.path)    # while still holding the lock: a newcomer then locks a new file
            except FileNotFoundError:
                pass                    # the run folder was removed under us: the run's own error is the news
            os.close(self._fd)
            self._fd = None
            if self._made_dir and os.path.isdir(self.out_dir) and not os.listdir(self.out_dir):
                os.rmdir(self.out_dir)  # a run that failed before writing anything leaves no empty folder


def remove_interrupted_writes(out_dir: str) -> list[str]:
    """`step_N.tmp/` checkpoints and `*.tmp` files (config.json.tmp, metrics.jsonl.tmp) of a run
    interrupted mid-write; call while holding the run's lock."""
    candidates = [os.path.join(out_dir, n) for n in os.listdir(out_dir) if n.endswith(".tmp")]
    root = os.path.join(out_dir, "checkpoints")
    if os.path.isdir(root):
        candidates += [os.path.join(root, n) for n in os.listdir(root) if n.endswith(".tmp")]
    for path in candidates:
        remove_quietly(path)
    return candidates


def has_config(out_dir: str) -> bool:
    return os.path.isfile(os.path.join(out_dir, CONFIG_FILE))


def holds_a_run(out_dir: str) -> bool:
    """Does `out_dir` hold a run's work (metrics or checkpoints), whatever its config.json?"""
    metrics = os.path.join(out_dir, "metrics.jsonl")
    checkpoints = os.path.join(out_dir, "checkpoints")
    return (os.path.isfile(metrics) and os.path.getsize(metrics) > 0) or \
        (os.path.isdir(checkpoints) and any(not n.endswith(".tmp") for n in os.listdir(checkpoints)))


def _load(out_dir: str) -> dict:
    path = os.path.join(out_dir, CONFIG_FILE)
    try:
        with open(path, encoding="utf-8") as f:
            stored = json.load(f)
    except FileNotFoundError:
        raise ConfigError(f"--resume: {path} does not exist; is {out_dir} a run directory?") from None
    except (ValueError, UnicodeDecodeError) as e:
        raise ConfigError(f"--resume: {path} is not valid JSON ({e})") from None
    except OSError as e:
        raise ConfigError(f"--resume: {path} cannot be read ({e.strerror or e})") from None
    if not isinstance(stored, dict):
        raise ConfigError(f"--resume: {path} holds a JSON {type(stored).__name__}, not an object of config fields")
    return stored


def _type_problem(name: str, value, default) -> str | None:
    """The command line's type rule for one stored field: bool, int, float (an int is fine) or str."""
    kind = type(default)
    ok = (isinstance(value, bool) if kind is bool else
          isinstance(value, int) and not isinstance(value, bool) if kind is int else
          isinstance(value, (int, float)) and not isinstance(value, bool) if kind is float else
          isinstance(value, kind))
    return None if ok else f'"{name}": {json.dumps(value)} is not a {kind.__name__}'


def read_config(out_dir: str) -> dict:
    """The run's config.json as a dict of Config fields (without its change history and data hashes),
    each of its field's type; ConfigError naming the file and every bad field otherwise."""
    stored = _load(out_dir)
    stored.pop(CHANGES_KEY, None)
    stored.pop(DATA_KEY, None)
    defaults = Config()
    problems = [p for name, value in stored.items() if hasattr(defaults, name)
                for p in [_type_problem(name, value, getattr(defaults, name))] if p]
    if problems:
        raise ConfigError(f"--resume: {os.path.join(out_dir, CONFIG_FILE)} was edited into another run or damaged: "
                          f"{'; '.join(problems)}")
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
    try:
        cfg = Config(**{**values, **explicit, "out": out_dir})
    except TypeError as e:
        raise ConfigError(f"--resume: {os.path.join(out_dir, CONFIG_FILE)}: {e}") from None
    try:
        validate(cfg)
    except ConfigError as e:
        raise ConfigError(f"--resume: {os.path.join(out_dir, CONFIG_FILE)} holds values the command line refuses: "
                          f"{e}") from None
    return cfg


# ---- the data a run trains and evaluates on ---------------------------------------------------
def data_hashes(cfg: Config) -> dict:
    """SHA-256 of the training and evaluation files (None for a built-in world or the default set)."""
    from attnrl_mini.worlds.data import resolve_path   # a bundled name ("dapo_math_train") is its file
    out = {}
    for name in DATA_FIELDS:
        path = str(resolve_path(getattr(cfg, name))) if getattr(cfg, name) else ""
        if path and os.path.isfile(path):
            h = hashlib.sha256()
            with open(path, "rb") as f:
                for block in iter(lambda: f.read(1 << 20), b""):
                    h.update(block)
            out[name] = h.hexdigest()
        else:
            out[name] = None
    return out


def changed_data(cfg: Config) -> list[tuple[str, str, str]]:
    """(field, recorded sha256, current sha256) for each data file whose content differs from the
    run's record; a run recorded before hashes existed has none to compare."""
    recorded = _load(cfg.out).get(DATA_KEY) or {}
    now = data_hashes(cfg)
    return [(name, recorded[name], now[name]) for name in DATA_FIELDS
            if isinstance(recorded, dict) and name in recorded and recorded[name] != now[name]]


def check_data_unchanged(cfg: Config, accept: bool) -> list[tuple[str, str, str]]:
    """Before any work on --resume: ConfigError naming each data file whose content changed since the
    run started, unless `accept` (--accept-changed-data); returns the changes accepted."""
    changes = changed_data(cfg)
    if changes and not accept:
        listed = "; ".join(f"{flag(name)} {getattr(cfg, name)} (sha256 {old[:12]}... at the start, now "
                           f"{(new or 'missing')[:12]}...)" for name, old, new in changes)
        raise ConfigError(f"--resume: the run's data changed on disk: {listed}. The run would go on with other "
                          "problems; restore the file, or pass --accept-changed-data to go on with it on purpose "
                          "(recorded in config.json's resume_changes)")
    return changes


def write_config(cfg: Config, step: int | None = None, note: list[dict] | None = None) -> list[dict]:
    """Write config.json with the data files' hashes; on resume (`step` = the checkpoint's step) append
    each changed field (and changed data content) to its "resume_changes" and return those new changes.
    `note`: extra change records (a config rebuilt from the command line)."""
    path = os.path.join(cfg.out, CONFIG_FILE)
    record, history, new = dataclasses.asdict(cfg), [], []
    hashes = data_hashes(cfg)
    if os.path.exists(path):
        try:
            stored = _load(cfg.out)
        except ConfigError:
            stored = {}
        history = stored.get(CHANGES_KEY, []) if isinstance(stored.get(CHANGES_KEY), list) else []
        if step is not None:
            new = [{"step": step, "field": name, "from": stored[name], "to": value} for name, value in record.items()
                   if name in stored and stored[name] != value and name != "out"]
            old_hashes = stored.get(DATA_KEY) if isinstance(stored.get(DATA_KEY), dict) else {}
            new += [{"step": step, "field": f"{name} content (sha256)", "from": old_hashes[name], "to": hashes[name]}
                    for name in DATA_FIELDS if name in old_hashes and old_hashes[name] != hashes[name]]
    new += note or []
    record[DATA_KEY] = hashes
    if history + new:
        record[CHANGES_KEY] = history + new
    tmp = path + ".tmp"
    with writing(path, cleanup=tmp):
        with open(tmp, "w") as f:
            json.dump(record, f, indent=1)
        os.replace(tmp, path)
    return new


def rebuild_config(cfg: Config) -> None:
    """--resume --rebuild-config on a run without config.json: write it from the command line, saying so."""
    write_config(cfg, note=[{"step": None, "field": CONFIG_FILE, "from": None,
                             "to": "rebuilt from the command line (--rebuild-config): its flags are trusted to be "
                                   "the run's own"}])
