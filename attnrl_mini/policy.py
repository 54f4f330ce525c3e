"""The policy: a causal LM with a LoRA adapter; its adapter-disabled self is the reference policy.

- `resolve_model` turns "toy", a short alias, a local directory or a hub id into a local directory,
  and fails within seconds with a sentence saying what to pass when none of them works.
- `load_model` + `add_lora`: optional 4-bit base (QLoRA via bitsandbytes), gradient checkpointing.
- `response_logprobs`: token log-probs of response tokens, with the LM head applied in chunks so the
  [T, vocab] logits of a long sequence are never held at once (vocab is 151,936 for Qwen2.5).
The reference policy is `with model.disable_adapter(): ...` — no second copy of the weights.
"""
from __future__ import annotations

import os
import socket

import torch
from torch import nn

from attnrl_mini.config import MODEL_ALIASES
from attnrl_mini.logprobs import token_logprobs_from_hidden


class ModelNotFoundError(RuntimeError):
    pass


def _hub_reachable(timeout: float = 3.0) -> bool:
    if os.environ.get("HF_HUB_OFFLINE", "0") not in ("", "0", "false", "False"):
        return False
    try:
        with socket.create_connection(("huggingface.co", 443), timeout=timeout):
            return True
    except OSError:
        return False


def resolve_model(name: str) -> str:
    """Local directory holding config.json + weights for `name` ("toy", alias, directory or hub id)."""
    from attnrl_mini.worlds import WORLD_NAMES, get_world
    if name in WORLD_NAMES:   # "toy", "toy-plan"
        return get_world(name).model_dir
    if os.path.isdir(name):
        if not os.path.isfile(os.path.join(name, "config.json")):
            raise ModelNotFoundError(f"{name!r} is a directory but has no config.json; "
                                     "pass a directory saved with save_pretrained (config.json + weights + tokenizer).")
        return os.path.abspath(name)
    repo_id = MODEL_ALIASES.get(name, name)
    if repo_id.count("/") != 1:
        raise ModelNotFoundError(f"model {name!r} is neither 'toy', a local directory, nor a hub id like "
                                 f"'Qwen/Qwen2.5-Math-1.5B'; known short names: {', '.join(MODEL_ALIASES)}.")
    from huggingface_hub import snapshot_download
    try:  # already in the local hub cache?
        return snapshot_download(repo_id, local_files_only=True)
    except Exception:
        pass
    if not _hub_reachable():
        raise ModelNotFoundError(
            f"model {repo_id!r} is not in the local Hugging Face cache and the hub is unreachable "
            "(or HF_HUB_OFFLINE=1). Pass --model with a local directory that holds the model "
            f"(e.g. one made with `huggingface-cli download {repo_id} --local-dir DIR` on a machine "
            "with network access), or make the hub reachable.")
    return snapshot_download(repo_id, allow_patterns=["*.json", "*.safetensors", "*.txt", "*.model", "*.jinja"])


def resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise RuntimeError("--device cuda was asked for but no CUDA GPU is visible to torch; "
                           "pass --device cpu (or auto), or install a CUDA build of torch.")
    return torch.device(device)


def load_tokenizer(model_dir: str):
    from transformers import AutoTokenizer
    tok = AutoTokenizer.from_pretrained(model_dir, padding_side="left")
    if tok.pad_token_id is None:  # Qwen base models define one; others may not
        tok.pad_token = tok.eos_token
    return tok


def load_model(model_dir: str, *, dtype: str = "float32", device: str | torch.device = "cpu",
               attn_implementation: str = "sdpa", load_in_4bit: bool = False) -> nn.Module:
    from transformers import AutoModelForCausalLM
    torch_dtype = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[dtype]
    kwargs = dict(dtype=torch_dtype, attn_implementation=attn_implementation)
    if load_in_4bit:  # QLoRA: nf4 base with double quantisation, compute in the run's dtype
        from transformers import BitsAndBytesConfig
        kwargs["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=torch_dtype)
        kwargs["device_map"] = {"": str(device)}
    model = AutoModelForCausalLM.from_pretrained(model_dir, **kwargs)
    if not load_in_4bit:
        model.to(device)
    return model


def add_lora(model: nn.Module, rank: int, alpha: int, target_modules: str | list[str],
             gradient_checkpointing: bool = False) -> nn.Module:
    from peft import LoraConfig, get_peft_model
    if isinstance(target_modules, str):
        target_modules = [m.strip() for m in target_modules.split(",") if m.strip()]
    for p in model.parameters():
        p.requires_grad_(False)
    if gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        model.enable_input_require_grads()
    cfg = LoraConfig(r=rank, lora_alpha=alpha, target_modules=target_modules, lora_dropout=0.0,
                     bias="none", task_type="CAUSAL_LM")
    return get_peft_model(model, cfg)


def load_adapter(model: nn.Module, adapter_dir: str, trainable: bool = False) -> nn.Module:
    from peft import PeftModel
    return PeftModel.from_pretrained(model, adapter_dir, is_trainable=trainable)


def decoder_and_head(model: nn.Module) -> tuple[nn.Module, nn.Module]:
    """(the inner transformer that returns hidden states, the LM head), through peft wrappers."""
    from peft import PeftModel
    base = model.get_base_model() if isinstance(model, PeftModel) else model
    return base.model, base.lm_head


def pad_batch(prompts: list[list[int]], responses: list[list[int]], pad_id: int, device) -> tuple[torch.Tensor, torch.Tensor, int]:
    """Left-pad prompt+response rows. Returns input_ids [B, L], attention_mask [B, L], L."""
    rows = [p + r for p, r in zip(prompts, responses)]
    L = max(len(r) for r in rows)
    ids = torch.full((len(rows), L), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), L), dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, L - len(r):] = torch.tensor(r, dtype=torch.long)
        mask[i, L - len(r):] = 1
    return ids.to(device), mask.to(device), L


def response_logprobs(model: nn.Module, prompts: list[list[int]], responses: list[list[int]],
                      pad_id: int, chunk: int = 1024) -> torch.Tensor:
    """log π(response token | prefix) for a batch, as a right-aligned [B, R_max] tensor (0 on padding).

    Differentiable when called with grad enabled (the PPO update). Rows are left-padded, so the
    responses are right-aligned: response token j of row i sits at column R_max - R_i + j.
    """
    device = next(model.parameters()).device
    ids, mask, L = pad_batch(prompts, responses, pad_id, device)
    decoder, head = decoder_and_head(model)
    position_ids = (mask.cumsum(-1) - 1).clamp(min=0)
    hidden = decoder(input_ids=ids, attention_mask=mask, position_ids=position_ids).last_hidden_state  # [B, L, D]
    R = max(len(r) for r in responses)
    # hidden at position t predicts token t+1: the R response tokens are predicted from positions L-R-1 .. L-2
    h = hidden[:, L - R - 1:L - 1, :]                                    # [B, R, D]
    targets = ids[:, L - R:]                                             # [B, R]
    logp, _ = token_logprobs_from_hidden(h.reshape(-1, h.shape[-1]), head, targets.reshape(-1), chunk=chunk)
    logp = logp.view(len(responses), R)
    valid = torch.zeros_like(logp, dtype=torch.bool)
    for i, r in enumerate(responses):
        valid[i, R - len(r):] = True
    return logp.masked_fill(~valid, 0.0)
