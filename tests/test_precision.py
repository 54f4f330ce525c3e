"""--dtype auto per GPU generation (mocked device properties), the one-line errors, the FCI kernel
choice below compute capability 8.0, and a real fp16 PPO update on the CPU against an fp32 one."""
from __future__ import annotations

import types

import pytest
import torch

from attnrl_mini.algorithm import fci
from attnrl_mini.models import policy, precision
from attnrl_mini.config import make_config

CUDA = torch.device("cuda", 0)


@pytest.mark.parametrize("gpu, want", [
    (("Tesla P100-PCIE-16GB", (6, 0)), "float16"),
    (("Tesla V100-SXM2-16GB", (7, 0)), "float16"),
    (("Tesla T4", (7, 5)), "float16"),
    (("NVIDIA A100-SXM4-40GB", (8, 0)), "bfloat16"),
    (("NVIDIA GeForce RTX 3090", (8, 6)), "bfloat16"),
    (("NVIDIA L4", (8, 9)), "bfloat16"),
    (("NVIDIA H100 80GB HBM3", (9, 0)), "bfloat16"),
])
def test_auto_dtype_per_compute_capability(gpu, want):
    assert precision.resolve_dtype("auto", CUDA, gpu=gpu) == want
    assert precision.resolve_dtype("float32", CUDA, gpu=gpu) == "float32"   # explicit choices are kept
    assert precision.resolve_dtype("float16", CUDA, gpu=gpu) == "float16"


def test_auto_dtype_reads_the_device_properties(monkeypatch):
    props = {0: types.SimpleNamespace(name="Tesla T4", major=7, minor=5),
             1: types.SimpleNamespace(name="NVIDIA A10G", major=8, minor=6)}
    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda d: props[torch.device(d).index])
    assert precision.resolve_dtype("auto", torch.device("cuda", 0)) == "float16"
    assert precision.resolve_dtype("auto", torch.device("cuda", 1)) == "bfloat16"


def test_cpu_is_float32_unless_asked():
    cpu = torch.device("cpu")
    assert precision.resolve_dtype("auto", cpu) == "float32"
    assert precision.resolve_dtype("bfloat16", cpu) == "bfloat16"
    assert make_config("toy").dtype == "auto" and make_config("t4-16gb").dtype == "auto"


def test_one_line_errors_name_the_flag():
    t4 = ("Tesla T4", (7, 5))
    with pytest.raises(precision.PrecisionError) as e:
        precision.resolve_dtype("bfloat16", CUDA, gpu=t4)
    msg = str(e.value)
    assert "\n" not in msg and msg.startswith("--dtype bfloat16: this GPU (Tesla T4, compute capability 7.5)")
    assert "pass --dtype auto or --dtype float16" in msg
    with pytest.raises(precision.PrecisionError, match=r"^--fci-kernel triton: this GPU \(Tesla T4.*pass --fci-kernel auto"):
        precision.check_fci_kernel("triton", CUDA, gpu=t4)
    precision.check_fci_kernel("triton", CUDA, gpu=("NVIDIA A100", (8, 0)))   # supported: no error
    for kernel in ("auto", "torch"):
        precision.check_fci_kernel(kernel, CUDA, gpu=t4)


def test_fci_auto_kernel_skips_triton_below_capability_8(monkeypatch):
    """two_pass_kernel's auto choice on a (mocked) CUDA fp16 query: chunked torch FCI on a T4."""
    query = types.SimpleNamespace(is_cuda=True, dtype=torch.float16, device=CUDA, shape=(1, 2, 8, 64))
    sentinel = types.SimpleNamespace(supports=lambda q: True)
    monkeypatch.setattr(fci, "_import_fci_triton", lambda: (sentinel, None))
    for cap, want in (((7, 5), None), ((8, 0), sentinel)):
        fci._has_flash_attention.cache_clear()
        monkeypatch.setattr(torch.cuda, "get_device_capability", lambda d, cap=cap: cap)
        assert fci.two_pass_kernel("auto", query) is want
    fci._has_flash_attention.cache_clear()


# ---- a real fp16 update on the CPU -------------------------------------------------------------------------------

def _batch(tok, model):
    """Two toy prompts × 4 responses sampled by the fp32 toy model, old log-probs from it, advantages ±1."""
    from attnrl_mini.algorithm.logprobs import response_logprobs
    from attnrl_mini.algorithm.tree import TrainSequence
    from attnrl_mini.generation import GenRequest, make_generator
    from attnrl_mini.worlds import toy
    gen = make_generator("hf", tokenizer=tok, model_dir=policy.resolve_model("toy"), model=model)
    prompts = [toy.toy_prompt_ids(tok, p) for p in toy.train_problems(2, seed=3)]
    comps = gen.generate([GenRequest(p, 4, 40) for p in prompts], temperature=1.0, seed=0)
    P = [p for p, cs in zip(prompts, comps) for _ in cs]
    R = [list(c.token_ids) for cs in comps for c in cs]
    with torch.no_grad():
        old = response_logprobs(model.eval(), P, R, tok.pad_token_id, 1024)   # [8, R_max] right-aligned
    return [TrainSequence(p, r, [1.0 - 2 * (i % 2)] * len(r), old[i, old.shape[1] - len(r):].tolist(), i // 4,
                          float(i % 2 == 0)) for i, (p, r) in enumerate(zip(P, R))]


def _trainer(dtype: str, tmp_path):
    from attnrl_mini.trainer import Trainer
    cfg = make_config("toy", out=str(tmp_path / dtype), mini_batch_sequences=64, lr=1e-3, kl_coef=0.001)
    model_dir = policy.resolve_model("toy")
    tok = policy.load_tokenizer(model_dir)
    torch.manual_seed(0)   # the same LoRA initialisation for both dtypes
    model = policy.add_lora(policy.load_model(model_dir, dtype=dtype), cfg.lora_rank, cfg.lora_alpha,
                            cfg.lora_target_modules)
    return Trainer(cfg, model, tok, None, None, [], None), tok


def _lora(model) -> torch.Tensor:
    return torch.cat([p.detach().flatten() for p in model.parameters() if p.requires_grad])


def test_fp16_update_matches_fp32_on_cpu(tmp_path):
    t32, tok = _trainer("float32", tmp_path)
    t16, _ = _trainer("float16", tmp_path)
    assert not t32.scaler.is_enabled() and t16.scaler.is_enabled()
    trained = [p for p in t16.model.parameters() if p.requires_grad]
    assert trained and all(p.dtype == torch.float32 for p in trained)          # LoRA weights in fp32 ...
    assert any(p.dtype == torch.float16 for p in t16.model.parameters())       # ... over an fp16 base
    seqs = _batch(tok, t32.model)
    with torch.no_grad():   # the same starting LoRA weights (peft drew fp16's A in fp16, then cast it up)
        for (n32, p32), (n16, p16) in zip(t32.model.named_parameters(), t16.model.named_parameters()):
            if p32.requires_grad:
                assert n32 == n16
                p16.copy_(p32)
    before32, before16 = _lora(t32.model), _lora(t16.model)
    assert torch.equal(before32, before16)
    s32, s16 = t32._update(seqs), t16._update(seqs)
    assert s32["optimizer_steps"] == s16["optimizer_steps"] == 1 and t16.nonfinite_skipped == 0
    assert s16["loss_scale"] == 2.0 ** 16 and "loss_scale" not in s32
    assert all(v.dtype == torch.float32 for st in t16.optimizer.state.values() for v in st.values() if v.dim())
    # the unscaled, clipped gradients (left in .grad by the last mini-batch) point the same way
    g32 = torch.cat([p.grad.flatten() for p in t32.model.parameters() if p.requires_grad])
    g16 = torch.cat([p.grad.flatten() for p in t16.model.parameters() if p.requires_grad])
    cos = torch.nn.functional.cosine_similarity(g32, g16, dim=0)
    assert cos > 0.999, cos
    assert abs(s16["grad_norm"] - s32["grad_norm"]) < 0.02 * s32["grad_norm"]
    d32, d16 = _lora(t32.model) - before32, _lora(t16.model) - before16
    assert d32.abs().max() > 0   # the update moved the weights
    assert torch.nn.functional.cosine_similarity(d32, d16, dim=0) > 0.99
    for k in ("kl", "clip_frac", "ratio_mean"):   # the loss' statistics agree (fp16 noise only)
        if k in s32:
            assert abs(s16[k] - s32[k]) < 1e-2, (k, s16[k], s32[k])


def test_fp16_overflow_is_skipped_counted_and_halves_the_scale(tmp_path):
    t16, tok = _trainer("float16", tmp_path)
    t32, _ = _trainer("float32", tmp_path)
    seqs = _batch(tok, t32.model)
    t16.scaler = torch.amp.GradScaler("cpu", init_scale=2.0 ** 40)   # S·loss overflows fp16 in the backward pass
    before = _lora(t16.model)
    stats = t16._update(seqs)
    assert stats["optimizer_steps"] == 0 and t16.nonfinite_skipped == 1
    assert stats["loss_scale"] == 2.0 ** 39
    assert torch.equal(_lora(t16.model), before)   # the step was skipped: weights untouched


def test_low_ram_warning():
    from attnrl_mini.run import host_ram
    toy = host_ram.needed_gib("toy", "hf", "auto")[0]
    assert host_ram.low_ram_warning("toy", "hf", "auto", available=toy + 0.1) is None
    msg = host_ram.low_ram_warning("toy", "hf", "auto", available=toy / 2)
    assert msg.startswith(f"warning: this machine has {toy / 2:.1f} GiB of RAM free, but the toy trainer peaked at")
    assert "--generator hf" in host_ram.low_ram_warning("toy", "vllm", "float32", available=0.5)
    qwen = host_ram.needed_gib("Qwen/Qwen2.5-Math-1.5B", "hf", "auto")[0]
    assert qwen > toy and host_ram.low_ram_warning("Qwen/Qwen2.5-Math-1.5B", "hf", "float16", available=qwen - 1)
    assert host_ram.needed_gib("/some/other/model", "hf", "float32") is None   # nothing measured: no warning


def test_train_py_warns_before_loading_when_ram_is_short(tmp_path, monkeypatch, capsys):
    import train
    from attnrl_mini.run import driver
    from attnrl_mini.run import host_ram

    def stop(cfg, resume=False):
        raise KeyboardInterrupt   # train.py's own clean exit: nothing loaded
    monkeypatch.setattr(host_ram, "available_gib", lambda: 0.4)
    monkeypatch.setattr(driver, "train", stop)
    with pytest.raises(SystemExit):
        train.main(["--out", str(tmp_path / "run")])
    err = capsys.readouterr().err
    assert "[attnrl] warning: this machine has 0.4 GiB of RAM free, but the toy trainer peaked at 1.1 GiB" in err
