"""The policy: a causal LM with a LoRA adapter; its adapter-disabled self is the reference policy.

- `resolve_model` turns "toy", a short alias, a local directory or a hub id into a local directory,
  and fails within seconds with a sentence saying what to pass when none of them works.
- `load_model` + `add_lora`: optional 4-bit base (QLoRA via bitsandbytes), gradient checkpointing;
  a 4-bit base being trained keeps bitsandbytes' standard weight layout (`keep_4bit_weights_unpacked`).
The reference policy is `with model.disable_adapter(): ...` — no second copy of the weights.
"""
from __future__ import annotations

import os
import socket

import torch
from torch import nn

from attnrl_mini.config import MODEL_ALIASES


class ModelNotFoundError(RuntimeError):
    pass


class ModelLoadError(RuntimeError):
    """The model directory exists but its files cannot be loaded (garbage weights, a broken tokenizer)."""


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
    if name in WORLD_NAMES:   # the built-in worlds' shipped models
        world = get_world(name)
        if not os.path.isfile(os.path.join(world.model_dir, "config.json")):
            raise ModelNotFoundError(f"the {name!r} world's model is not built yet: run `{world.build}`")
        return world.model_dir
    if os.path.isdir(name):
        if not os.path.isfile(os.path.join(name, "config.json")):
            raise ModelNotFoundError(f"{name!r} is a directory but has no config.json; "
                                     "pass a directory saved with save_pretrained (config.json + weights + tokenizer).")
        if not any(f.endswith((".safetensors", ".bin", ".safetensors.index.json")) for f in os.listdir(name)):
            raise ModelNotFoundError(f"{name!r} has a config.json but no weights (*.safetensors or *.bin); "
                                     "pass a directory saved with save_pretrained.")
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


def context_length(model_dir: str) -> int | None:
    """The model's context window (config.json's max_position_embeddings), or None when it does not say."""
    import json
    try:
        with open(os.path.join(model_dir, "config.json"), encoding="utf-8") as f:
            value = json.load(f).get("max_position_embeddings")
    except (OSError, ValueError, AttributeError) as e:
        raise ModelLoadError(f"--model {model_dir}: config.json cannot be read ({e})") from None
    return value if isinstance(value, int) and value > 0 else None


class DeviceError(RuntimeError):
    """The device asked for is not there (a user error: one line, no traceback)."""


def resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise DeviceError("--device cuda was asked for but no CUDA GPU is visible to torch; "
                           "pass --device cpu (or auto), or install a CUDA build of torch.")
    return torch.device(device)


def load_tokenizer(model_dir: str):
    from transformers import AutoTokenizer
    try:
        tok = AutoTokenizer.from_pretrained(model_dir, padding_side="left")
    except (OSError, ValueError, TypeError, KeyError, RuntimeError) as e:   # whatever a broken file raises
        raise ModelLoadError(f"--model {model_dir}: its tokenizer cannot be loaded "
                             f"({type(e).__name__}: {str(e).splitlines()[0][:200] if str(e) else ''})") from e
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
    try:
        model = AutoModelForCausalLM.from_pretrained(model_dir, **kwargs)
    except torch.OutOfMemoryError:
        raise
    except Exception as e:  # safetensors' HeaderTooLarge, a truncated file, a config of another architecture
        if "out of memory" in str(e).lower():
            raise
        raise ModelLoadError(f"--model {model_dir}: its weights cannot be loaded ({type(e).__name__}: "
                             f"{str(e).splitlines()[0][:200] if str(e) else ''})") from e
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
    keep_4bit_weights_unpacked(model)
    if gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        model.enable_input_require_grads()
    full = [name for name, m in model.named_modules()
            if isinstance(m, nn.Linear) or type(m).__name__ in ("Linear4bit", "Linear8bitLt")]
    linear = sorted({name.rsplit(".", 1)[-1] for name in full})
    unknown = [t for t in target_modules if not any(name == t or name.endswith("." + t) for name in full)]
    if unknown:
        raise AdapterError(f"--lora-target-modules: this model has no module named {', '.join(unknown)}; its linear "
                           f"modules are {','.join(linear)}")
    cfg = LoraConfig(r=rank, lora_alpha=alpha, target_modules=target_modules, lora_dropout=0.0,
                     bias="none", task_type="CAUSAL_LM")
    # autocast_adapter_dtype: the LoRA matrices (and so AdamW's state) are fp32 even over a bf16/fp16
    # base; an fp16 update would lose small steps to rounding (models/precision.py)
    model = get_peft_model(model, cfg, autocast_adapter_dtype=True)
    not_fp32 = sorted({str(p.dtype) for p in model.parameters() if p.requires_grad and p.dtype != torch.float32})
    if not_fp32:
        raise RuntimeError(f"LoRA weights came out as {', '.join(not_fp32)}, not float32 (peft changed its casting?)")
    return model


def keep_4bit_weights_unpacked(model: nn.Module) -> int:
    """Stop bitsandbytes from repacking a 4-bit base into its CPU inference layout; returns the layers set.

    bitsandbytes 0.50.2 (the newest release), on a CPU with AVX512-BF16, repacks a `Linear4bit` weight
    the first time the layer runs in eval mode without grad (our scoring and sampling passes) and
    keeps it packed. Its matmul in that layout has no backward: on a layer with a bias the LoRA update
    fails ("a view of a leaf Variable that requires grad ...", `result += bias`), on one without, the
    layer's input silently gets no gradient through the base weight. It also computes in bf16 whatever
    the compute dtype, so old and new log-probs would differ (tests/test_faults_runtime.py prints by
    how much), and its inverse re-quantises the scales, so the frozen base would drift at every
    round trip. So a policy that is trained never packs; a model only used for inference still does.
    """
    import sys
    if "bitsandbytes" not in sys.modules:   # no 4-bit layer can exist without it
        return 0
    from bitsandbytes.nn import Linear4bit
    layers = [m for m in model.modules() if isinstance(m, Linear4bit)]
    for m in layers:
        if getattr(m.weight.quant_state, "packing_format_for_cpu", False):
            raise RuntimeError("a 4-bit layer is already in bitsandbytes' packed CPU format (an eval pass ran "
                               "before add_lora); load the model again and add LoRA before any forward pass")
        m.support_avx512bf16_for_cpu = False   # bitsandbytes packs only when this is true (Linear4bit.forward)
    return len(layers)


class AdapterError(ValueError):
    pass


def check_adapter_files(adapter_dir: str, flag: str = "--adapter") -> None:
    """AdapterError unless `adapter_dir` holds a readable adapter_config.json (a JSON object) and
    adapter weights that load and are all finite: a garbage or NaN adapter is refused before any work
    (vLLM would load NaN weights and sample garbage; HF would die in sampling)."""
    import json

    from peft.utils import load_peft_weights

    config = os.path.join(adapter_dir, "adapter_config.json")
    try:
        with open(config, encoding="utf-8") as f:
            acfg = json.load(f)
    except (OSError, ValueError) as e:
        raise AdapterError(f"{flag} {adapter_dir}: adapter_config.json cannot be read ({e})") from None
    if not isinstance(acfg, dict) or not isinstance(acfg.get("r", 0), int):
        raise AdapterError(f"{flag} {adapter_dir}: adapter_config.json is not a peft LoRA config")
    try:
        weights = load_peft_weights(adapter_dir, device="cpu")
    except Exception as e:
        raise AdapterError(f"{flag} {adapter_dir}: its weights cannot be read ({type(e).__name__}: "
                           f"{str(e).splitlines()[0][:200] if str(e) else ''})") from None
    bad = [k for k, t in weights.items() if t.is_floating_point() and not bool(torch.isfinite(t).all())]
    if bad:
        raise AdapterError(f"{flag} {adapter_dir}: {len(bad)} of its tensors hold NaN or infinity (e.g. {bad[0]})")


def load_adapter(model: nn.Module, adapter_dir: str, trainable: bool = False) -> nn.Module:
    from peft import PeftModel
    check_adapter_files(adapter_dir)
    try:
        return PeftModel.from_pretrained(model, adapter_dir, is_trainable=trainable)
    except Exception as e:   # other target modules, other shapes: an adapter of another model
        raise AdapterError(f"--adapter {adapter_dir}: does not fit this model ({type(e).__name__}: "
                           f"{str(e).strip().splitlines()[-1][:200] if str(e).strip() else ''})") from None


def _targets(value) -> set[str]:
    return {m.strip() for m in value.split(",") if m.strip()} if isinstance(value, str) else set(value or [])


def init_from_adapter(model: nn.Module, adapter_dir: str, rank: int, alpha: int, target_modules: str,
                      model_dir: str, log=print) -> None:
    """--init-adapter: copy a peft LoRA adapter's weights into the run's freshly added adapter.

    The adapter must fit the run: the same rank r, alpha and target modules (one-line error naming
    the flag to pass otherwise), and every one of its LoRA matrices must match a module of this model
    in name and shape (otherwise it was trained on another base model). A differing
    base_model_name_or_path alone is only reported: local copies of one model have different paths.
    """
    import json

    from peft import set_peft_model_state_dict
    from peft.utils import load_peft_weights

    check_adapter_files(adapter_dir, "--init-adapter")
    with open(os.path.join(adapter_dir, "adapter_config.json")) as f:
        acfg = json.load(f)
    where = f"--init-adapter {adapter_dir}"
    if acfg.get("peft_type", "LORA") != "LORA":
        raise AdapterError(f"{where}: a {acfg['peft_type']} adapter; only LoRA adapters can be loaded")
    for key, ours, flag in (("r", rank, "--lora-rank"), ("lora_alpha", alpha, "--lora-alpha")):
        if acfg.get(key) != ours:
            raise AdapterError(f"{where}: its {key} is {acfg.get(key)} but this run's {flag} is {ours}; "
                               f"pass {flag} {acfg.get(key)}")
    theirs = acfg.get("target_modules")
    if isinstance(theirs, list) and _targets(theirs) != _targets(target_modules):
        raise AdapterError(f"{where}: it adapts {','.join(sorted(theirs))} but this run's --lora-target-modules "
                           f"is {target_modules}; pass --lora-target-modules {','.join(sorted(theirs))}")
    base = acfg.get("base_model_name_or_path") or "?"
    try:
        result = set_peft_model_state_dict(model, load_peft_weights(adapter_dir))
    except RuntimeError as e:  # size mismatch: same module names, other shapes
        raise AdapterError(f"{where}: its weights do not fit this model's shapes (it was trained on {base}, "
                           f"this run's model is {model_dir}): {str(e).splitlines()[-1].strip()}") from None
    unexpected = [k for k in result.unexpected_keys if "lora_" in k]
    if unexpected:
        raise AdapterError(f"{where}: {len(unexpected)} of its LoRA matrices name modules this model lacks "
                           f"(e.g. {unexpected[0]}); it was trained on {base}, this run's model is {model_dir}")
    # names compared by their last part: "Qwen/Qwen2.5-Math-1.5B", ".../models--Qwen--Qwen2.5-Math-1.5B/snapshots/<hash>"
    hub_cache_name = model_dir.split("models--")[-1].split("/")[0].split("--")[-1]
    if os.path.basename(os.path.normpath(base)) not in (os.path.basename(os.path.normpath(model_dir)), hub_cache_name):
        log(f"[attnrl] note: {where} names base model {base}; its weights fit {model_dir}")
