"""Train a LoRA adapter with AttnRL (or the GRPO / TreeRL baselines).

    python train.py                                   # the toy world on a CPU, in minutes
    python train.py --model Qwen2.5-Math-1.5B         # one 24 GB GPU (preset qwen2.5-math-1.5b-24gb)
    python train.py --algo treerl --steps 40 --out runs/treerl
    python train.py --out runs/toy --resume           # continue a killed run exactly

Precedence: the paper's defaults (config.py) < the preset < the --algo switches < explicit flags.
Every field of attnrl_mini.config.Config is a flag (--lora-rank 32, --one-step-stale false, ...).
"""
from __future__ import annotations

import argparse
import dataclasses
import sys

from attnrl_mini.config import MODEL_ALIASES, PRESETS, Config, algo_overrides, make_config


def _bool(s: str) -> bool:
    if s.lower() in ("1", "true", "yes", "on"):
        return True
    if s.lower() in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {s!r}")


def parse_args(argv=None) -> tuple[Config, bool]:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", choices=sorted(PRESETS), default=None,
                   help="default: 'toy' for the toy model, 'qwen2.5-math-1.5b-24gb' for Qwen2.5-Math-1.5B, "
                        "otherwise the paper's defaults")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its latest checkpoint")
    defaults = Config()
    for f in dataclasses.fields(Config):
        kind = type(getattr(defaults, f.name))
        p.add_argument("--" + f.name.replace("_", "-"), dest=f.name, default=None,
                       type=_bool if kind is bool else kind, metavar=kind.__name__.upper(),
                       help=f"(paper default: {getattr(defaults, f.name)!r})")
    args = p.parse_args(argv)
    explicit = {f.name: getattr(args, f.name) for f in dataclasses.fields(Config) if getattr(args, f.name) is not None}
    preset = args.preset
    if preset is None:
        model = explicit.get("model", "toy")
        if model in ("toy", "toy-plan"):    # the built-in worlds have presets of their names
            preset = model
        elif MODEL_ALIASES.get(model, model) == "Qwen/Qwen2.5-Math-1.5B":
            preset = "qwen2.5-math-1.5b-24gb"
    base = dict(PRESETS[preset]) if preset else {}
    algo = explicit.get("algo", base.get("algo", "attnrl"))
    cfg = make_config(None, **{**base, **algo_overrides(algo), **explicit})
    return cfg, args.resume


def main(argv=None) -> None:
    cfg, resume = parse_args(argv)
    from attnrl_mini.policy import ModelNotFoundError, resolve_model
    try:  # before the heavy imports, so a missing model fails within seconds
        resolve_model(cfg.model)
    except ModelNotFoundError as e:
        sys.exit(f"error: {e}")
    from attnrl_mini.trainer import train
    history = train(cfg, resume=resume)
    evals = [m["eval_accuracy"] for m in history if "eval_accuracy" in m]
    if evals:
        print(f"[attnrl] done: {len(history)} steps this session; last held-out accuracy {evals[-1]:.3f}; "
              f"metrics in {cfg.out}/metrics.jsonl, curves in {cfg.out}/curves.png")


if __name__ == "__main__":
    main()
