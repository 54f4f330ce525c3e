"""Train a LoRA adapter with AttnRL (or the GRPO / TreeRL baselines).

    python train.py                                   # the toy world on a CPU, in minutes
    python train.py --world toy-plan                  # the second built-in world (= --model toy-plan)
    python train.py --print-config                    # the resolved config, then exit
    python train.py --model Qwen2.5-Math-1.5B         # one 24 GB GPU (preset qwen2.5-math-1.5b-24gb)
    python train.py --model DeepSeek-R1-Distill-Qwen-1.5B   # the paper's model (docs/models.md)
    python train.py --algo treerl --steps 40 --out runs/treerl
    python train.py --out runs/toy --resume           # continue a killed run exactly
    python train.py --out runs/toy --resume --steps 90   # extend a finished run

Precedence: the paper's defaults (config.py) < the preset < the --algo switches < explicit flags.
Each flag below shows the value this command line would use next to the paper's default; add
--model / --preset / --algo before --help to see another preset's values.
Every field of attnrl_mini.config.Config is a flag (--lora-rank 32, --one-step-stale false, ...).
With --resume the run's own config.json replaces all of that, and explicit flags may change only
how long it runs, how often it evaluates and saves, the learning rate and speed/memory knobs.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import warnings

from attnrl_mini.cli.quiet import quiet_libraries
from attnrl_mini.config import (MAY_CHANGE_ON_RESUME, MODEL_ALIASES, MODEL_PRESETS, PRESETS, Config, algo_overrides,
                                    check_limits, make_config, validate)
from attnrl_mini.worlds import WORLD_NAMES

RESUME_HELP = ("continue the run in --out from its newest finished checkpoint: the same run exactly, with its own "
               "config.json (same flags, same data order, optimiser and random state; --init-adapter instead "
               "starts a new run from an adapter's weights); only these flags may change: "
               + ", ".join("--" + n.replace("_", "-") for n in sorted(MAY_CHANGE_ON_RESUME)))


def _bool(s: str) -> bool:
    if s.lower() in ("1", "true", "yes", "on"):
        return True
    if s.lower() in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {s!r}")


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, not argparse's usage block
        sys.exit(f"error: {message} (python train.py --help describes every flag)")


def build_parser(argv=None) -> argparse.ArgumentParser:
    """One flag per Config field; its help and choices come from the field (config.opt). The help shows
    the value that `argv`'s preset and --algo give each field next to the paper's default."""
    p = _Parser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", choices=sorted(PRESETS), default=None,
                   help="default: the world's own preset for a built-in world (toy, toy-plan), the model's own "
                        "preset for the models of docs/models.md (e.g. 'r1-distill-qwen-1.5b-24gb'), otherwise "
                        "the paper's defaults")
    p.add_argument("--world", choices=list(WORLD_NAMES), default=None,
                   help=f"a built-in world ({', '.join(WORLD_NAMES)}): the same as --model NAME")
    p.add_argument("--resume", action="store_true", help=RESUME_HELP)
    p.add_argument("--print-config", action="store_true", help="print the resolved config as JSON and exit")
    p.add_argument("--verbose", action="store_true",
                   help="show the libraries' start-up chatter (transformers' loading bar, bitsandbytes notices)")
    p.add_argument("--debug", action="store_true", help="show the full traceback of an error")
    p.add_argument("--rebuild-config", action="store_true",
                   help="with --resume on a run that has lost its config.json: rebuild it from this command line "
                        "(you vouch that its flags are the run's own; recorded in config.json's resume_changes)")
    p.add_argument("--accept-changed-data", action="store_true",
                   help="with --resume: go on although the training or evaluation file's content changed since the "
                        "run started (recorded in config.json's resume_changes)")
    defaults = Config()
    preset, effective = _effective(argv)
    for f in dataclasses.fields(Config):
        kind = type(getattr(defaults, f.name))
        choices = f.metadata.get("choices") or None
        paper, here = getattr(defaults, f.name), getattr(effective, f.name)
        value = f"paper default: {paper!r}" if here == paper else f"{preset}: {here!r}; paper default: {paper!r}"
        text = f"{f.metadata['help']} ({value})".replace("%", "%%")
        p.add_argument("--" + f.name.replace("_", "-"), dest=f.name, default=None, choices=choices,
                       type=_bool if kind is bool else kind, metavar=None if choices else kind.__name__.upper(),
                       help=text)
    return p


def _effective(argv) -> tuple[str, Config]:
    """(what sets the values, the config) for the preset and --algo that argv chooses, before any other flag."""
    pre = argparse.ArgumentParser(add_help=False)
    for name in ("--preset", "--model", "--world", "--algo"):
        pre.add_argument(name)
    known, _ = pre.parse_known_args(argv)
    chosen = {k: v for k, v in (("model", known.world or known.model), ("algo", known.algo)) if v}
    preset = _preset_for(known.preset, chosen.get("model", "toy"))
    base = dict(PRESETS[preset]) if preset in PRESETS else {}
    algo = chosen.get("algo", base.get("algo", "attnrl"))
    algo = algo if algo in ("attnrl", "treerl", "grpo") else "attnrl"
    try:
        cfg = make_config(None, **{**base, **algo_overrides(algo), **chosen})
    except Exception:   # a bad value is reported by the real parse; the help falls back to the preset alone
        cfg = make_config(None, **base)
    label = f"preset {preset}" if preset else "this command"
    return label + (f" --algo {algo}" if "algo" in chosen else ""), cfg


def _preset_for(preset: str | None, model: str) -> str | None:
    if preset is not None:
        return preset
    if model in WORLD_NAMES:    # the built-in worlds ("toy", "toy-plan") have presets of their names
        return model
    return MODEL_PRESETS.get(MODEL_ALIASES.get(model, model))   # the models of docs/models.md; else the paper's


def parse_args(argv=None) -> tuple[Config, bool]:
    cfg, resume, _, _ = _parse(argv)
    return cfg, resume


def _parse(argv=None) -> tuple[Config, bool, argparse.Namespace, dict]:
    """(config, --resume, the parsed arguments, the explicitly given fields)."""
    args = build_parser(argv).parse_args(argv)
    explicit = {f.name: getattr(args, f.name) for f in dataclasses.fields(Config) if getattr(args, f.name) is not None}
    if args.world is not None:
        if explicit.get("model", args.world) != args.world:
            raise SystemExit(f"error: --world {args.world} and --model {explicit['model']} name different models; "
                             "pass one of them")
        explicit["model"] = args.world
    preset = _preset_for(args.preset, explicit.get("model", "toy"))
    base = dict(PRESETS[preset]) if preset else {}
    algo = explicit.get("algo", base.get("algo", "attnrl"))
    if algo not in ("attnrl", "treerl", "grpo"):
        algo = "attnrl"   # the parser's choices already refused it; keep argparse's message
    cfg = make_config(None, **{**base, **algo_overrides(algo), **explicit})
    return cfg, args.resume, args, explicit


def main(argv=None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    debug = "--debug" in argv
    lock = None
    try:
        cfg, resume, args, explicit = _parse(argv)
        debug = args.debug
        quiet_libraries(verbose=args.verbose)
        validate(cfg)   # every value, before any work or any file is written
        if args.print_config:
            from attnrl_mini.run import run_dir
            if resume and run_dir.has_config(cfg.out):
                cfg = run_dir.resume_config(cfg.out, explicit)
            print(json.dumps(dataclasses.asdict(cfg), indent=2))
            return
        from attnrl_mini.run.tracking import parse_report_to
        parse_report_to(cfg.report_to)   # a missing tracker package: before the run directory exists
        from attnrl_mini.run import run_dir
        from attnrl_mini.config import ConfigError
        lock = run_dir.RunLock(cfg.out, warn=lambda m: print(m, file=sys.stderr))   # also cleans up .tmp files
        if resume and run_dir.has_config(cfg.out):
            cfg = run_dir.resume_config(cfg.out, explicit)   # config.json checked with the command line's rules
            validate(cfg)
            for name, _, _ in run_dir.check_data_unchanged(cfg, accept=args.accept_changed_data):
                print(f"[attnrl] warning: --accept-changed-data: {cfg.out} goes on with the changed content of "
                      f"{getattr(cfg, name)}", file=sys.stderr)
        elif resume and run_dir.holds_a_run(cfg.out):
            if not args.rebuild_config:
                raise ConfigError(f"--resume: {cfg.out} holds a run but no config.json, so nothing says which flags "
                                  "are the run's own; restore config.json, or pass --rebuild-config with the run's "
                                  "exact flags to rebuild it from this command line")
            run_dir.rebuild_config(cfg)
        from attnrl_mini.run.host_ram import low_ram_warning
        ram = low_ram_warning(cfg.model, cfg.generator, cfg.dtype)   # before loading: an OOM kill says nothing
        if ram:
            print(f"[attnrl] {ram}", file=sys.stderr)
        from attnrl_mini.worlds import data
        with warnings.catch_warnings():   # the trainer reads the files again and warns then
            warnings.simplefilter("ignore")
            for path in {cfg.train_data, cfg.eval_data} - {"", *WORLD_NAMES}:
                data.load_problems(path)  # a bad row fails now, not after the model is loaded
        from attnrl_mini.models.policy import context_length, resolve_model
        model_dir = resolve_model(cfg.model)  # before the heavy imports, so a missing model fails within seconds
        check_limits(cfg, context_length(model_dir), eval_problems_available(cfg), physical_memory())
        if resume:
            from attnrl_mini.run.checkpoint import check_any_verifies
            check_any_verifies(cfg.out)  # all checkpoints damaged: say so now, not after loading the model
        from attnrl_mini.run.driver import train
        history = train(cfg, resume=resume)
    except KeyboardInterrupt:
        sys.stderr.write("interrupted: the same command with --resume continues from the last checkpoint\n")
        sys.exit(130)
    except Exception as e:
        from attnrl_mini.run.errors import exit_with, is_user_error
        if debug or not is_user_error(e):
            raise
        exit_with(e)
    finally:
        if lock is not None:
            lock.release()
    evals = [m["eval_accuracy"] for m in history if "eval_accuracy" in m]
    if evals:
        print(f"[attnrl] done: {len(history)} steps this session; last held-out accuracy {evals[-1]:.3f}; "
              f"metrics in {cfg.out}/metrics.jsonl, curves in {cfg.out}/curves.png")


def eval_problems_available(cfg: Config) -> int | None:
    """How many held-out problems the run's evaluation can draw (None: unknown, e.g. the default set)."""
    from attnrl_mini.worlds import get_world
    if cfg.train_data in WORLD_NAMES:
        return get_world(cfg.train_data).max_test_problems
    if cfg.eval_data:
        from attnrl_mini.worlds import data
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return len(data.load_problems(cfg.eval_data))
    return None


def physical_memory() -> int | None:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return None


if __name__ == "__main__":
    main()
