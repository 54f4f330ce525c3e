"""A whole training run, what `python train.py` calls: set up → resume or step 0 → the loop → close.

The algorithm lives in attnrl_mini/trainer.py (`Trainer.train_step`, one policy update); this module is
the schedule around it: building the parts, the held-out evaluations, the run log and the checkpoints.
"""
from __future__ import annotations

import dataclasses
import random
import time
from dataclasses import asdict, dataclass
from typing import Callable

import torch
from tqdm import tqdm

from attnrl_mini.config import Config
from attnrl_mini.trainer import Trainer


def train(cfg: Config, resume: bool = False) -> list[dict]:
    run = _set_up(cfg, resume)
    try:
        if not (resume and _resume(run)):
            _step_zero(run, resume)
        return _loop(run)
    finally:
        run.close()


@dataclass
class _Run:
    """The parts of one run, built once by _set_up."""
    cfg: Config
    trainer: Trainer
    generator: object                       # generation.Generator
    grader: object                          # worlds.reward.Grader
    runlog: object                          # run.runlog.RunLog
    held_out_eval: Callable[[], float]      # the held-out accuracy of the current policy
    log: Callable[[str], None]

    def close(self) -> None:
        self.trainer.close()
        self.generator.close()
        self.grader.close()
        self.runlog.close()


def _set_up(cfg: Config, resume: bool) -> _Run:
    """Model + LoRA (optionally from another adapter), problems, run directory, grader, generator."""
    from attnrl_mini.generation import make_generator
    from attnrl_mini.run import checkpoint
    from attnrl_mini.run.runlog import RunLog
    from attnrl_mini.run.tracking import Trackers, parse_report_to
    from attnrl_mini.tools import evaluate
    from attnrl_mini.worlds import data, run_problems
    from attnrl_mini.worlds.reward import Grader

    log = tqdm.write
    trackers = parse_report_to(cfg.report_to)             # a missing tracker package fails before any work
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    random.seed(cfg.seed)
    torch.manual_seed(cfg.seed)
    from attnrl_mini.models import policy, precision
    device = policy.resolve_device(cfg.device)
    cfg = dataclasses.replace(cfg, dtype=precision.resolve_dtype(cfg.dtype, device))   # auto → what config.json records
    precision.check_fci_kernel(cfg.fci_kernel, device)
    model_dir, tok, model = _load_policy(cfg, device, log)

    train_problems, eval_problems = run_problems(cfg)   # a built-in world's, or the data files'
    encode = lambda p: data.encode_prompt(tok, p)   # noqa: E731  (the toy worlds' own template for their problems)
    n_all = len(train_problems)
    # release: overlong prompts filtered
    train_problems = data.prompts_that_fit(tok, train_problems, cfg.max_prompt_tokens)
    if not train_problems:   # a ConfigError, so train.py prints one line
        from attnrl_mini.config import ConfigError
        raise ConfigError(f"--max-prompt-tokens {cfg.max_prompt_tokens}: none of the {n_all} training problems fits")

    runlog = RunLog(cfg.out)
    if not resume and runlog.has_records():
        raise FileExistsError(f"{cfg.out} already holds a run; pass --resume to continue it or --out for a new one")
    for stale in checkpoint.remove_unfinished(cfg.out):
        log(f"[attnrl] removed {stale}: a checkpoint whose save never finished")
    runlog.trackers = Trackers(trackers, cfg.out, asdict(cfg)) if trackers else None

    grader = Grader(timeout=5.0)
    generator = make_generator(
        cfg.generator, tokenizer=tok, model_dir=model_dir, model=model, dtype=cfg.dtype, device=str(device),
        max_lora_rank=cfg.lora_rank, max_model_len=cfg.max_prompt_tokens + cfg.max_response_tokens,
        gpu_memory_utilization=cfg.gpu_memory_utilization, vllm_url=cfg.vllm_url, seed=cfg.seed, log=log,
        connect_timeout_s=cfg.vllm_connect_timeout,
        load_in_4bit=cfg.load_in_4bit, vocab_guard=cfg.vocab_guard, fast_sampler=cfg.fast_sampler)
    log(f"[attnrl] model {model_dir} | algo {cfg.algo} | generator {generator.name} | device {device} | "
        f"{len(train_problems)}/{n_all} training problems fit | out {cfg.out}")

    def held_out_eval() -> float:
        res = evaluate.evaluate_problems(generator, tok, eval_problems, k=1, temperature=cfg.eval_temperature,
                                         max_new_tokens=cfg.max_response_tokens, grader=grader, seed=cfg.seed + 12345,
                                         encode=encode)
        return res.avg_at_k

    trainer = Trainer(cfg, model, tok, generator, grader, train_problems, encode, log=log)
    return _Run(cfg, trainer, generator, grader, runlog, held_out_eval, log)


def _load_policy(cfg: Config, device, log):
    """(model directory, tokenizer, the LoRA-wrapped model), its adapter optionally from --init-adapter."""
    from attnrl_mini.models import policy
    from attnrl_mini.run import checkpoint
    model_dir = policy.resolve_model(cfg.model)          # fails within seconds when it can't be found
    tok = policy.load_tokenizer(model_dir)
    model = policy.load_model(model_dir, dtype=cfg.dtype, device=device, load_in_4bit=cfg.load_in_4bit)
    model = policy.add_lora(model, cfg.lora_rank, cfg.lora_alpha, cfg.lora_target_modules, cfg.gradient_checkpointing)
    if cfg.init_adapter:   # the starting weights only (--resume restores a whole run)
        try:
            adapter_dir = checkpoint.resolve_adapter(cfg.init_adapter, "--init-adapter")
        except FileNotFoundError as e:
            raise policy.AdapterError(str(e)) from None
        policy.init_from_adapter(model, adapter_dir, cfg.lora_rank, cfg.lora_alpha, cfg.lora_target_modules,
                                 model_dir, log=log)
        log(f"[attnrl] LoRA weights initialised from {adapter_dir}")

    return model_dir, tok, model


def _resume(run: _Run) -> bool:
    """Restore the newest sound checkpoint of cfg.out; False if there is none."""
    from attnrl_mini.run import checkpoint, run_dir
    cfg, trainer, log = run.cfg, run.trainer, run.log
    ckpt = checkpoint.load_latest_checkpoint(trainer, cfg.out, warn=log)
    if not ckpt:
        log(f"[attnrl] --resume: no checkpoint in {cfg.out}/checkpoints, starting from scratch")
        run.runlog.truncate_after(-1, warn=log)  # records of a run killed before its first checkpoint are redone
        return False
    trainer._publish_adapter()
    run.runlog.truncate_after(trainer.step, warn=log)
    for c in run_dir.write_config(cfg, step=trainer.step):
        log(f"[attnrl] --{c['field'].replace('_', '-')} changed from {c['from']!r} to {c['to']!r} at step {c['step']}")
    log(f"[attnrl] resumed from {ckpt} at step {trainer.step}")
    if cfg.one_step_stale and trainer.pending is None and trainer.step < cfg.steps:
        trainer.warmup()  # a finished run extended: its last step sampled no next batch, so sample one now
        log(f"[attnrl] extending a finished run: sampled a fresh batch with the step-{trainer.step} adapter")
    return True


def _step_zero(run: _Run, resume: bool) -> None:
    """A new run: config.json, the base policy's held-out accuracy, and (stale mode) batch 1's initials."""
    from attnrl_mini.run import run_dir
    cfg, trainer = run.cfg, run.trainer
    run_dir.write_config(cfg)
    t0 = time.time()
    record = {"step": 0, "generator": run.generator.name, "eval_accuracy": run.held_out_eval(),
              "seconds_eval": round(time.time() - t0, 3)}
    if cfg.one_step_stale:
        secs = trainer.warmup()
        record.update({f"seconds_{k}": round(v, 3) for k, v in secs.items()})
        record["train_accuracy"] = sum(g.accuracy for g in trainer.pending.groups) / len(trainer.pending.groups)
        record["generated_tokens"] = trainer.cumulative_tokens
    record.update({"cumulative_generated_tokens": trainer.cumulative_tokens, "valid_ratio": None,
                   "seconds": round(time.time() - t0, 3)})
    record.setdefault("train_accuracy", None)
    record.setdefault("generated_tokens", 0)
    summary = f"[attnrl] step 0: held-out accuracy {record['eval_accuracy']:.3f}"
    run.runlog.write_metrics(record, summary)
    run.log(summary)


def _loop(run: _Run) -> list[dict]:
    """Train steps until cfg.steps or the generated-token budget; evaluate, log and save on schedule."""
    from attnrl_mini.run import checkpoint
    cfg, trainer, runlog = run.cfg, run.trainer, run.runlog
    history = []
    for _ in tqdm(range(trainer.step, cfg.steps), initial=trainer.step, total=cfg.steps, desc=cfg.algo, unit="step"):
        t0 = time.time()
        metrics = trainer.train_step()
        m = metrics["step"]
        budget_spent = bool(cfg.max_generated_tokens) and trainer.cumulative_tokens >= cfg.max_generated_tokens
        if m % cfg.eval_every == 0 or m == cfg.steps or budget_spent or _budget_near(cfg, trainer, metrics):
            te = time.time()
            metrics["eval_accuracy"] = run.held_out_eval()
            metrics["seconds_eval"] = round(time.time() - te, 3)
        metrics["seconds"] = round(time.time() - t0, 3)
        metrics["grader_timeouts"] = run.grader.stats()["timeouts"]
        summary = _summary_line(metrics)
        runlog.write_metrics(metrics, summary)
        runlog.write_trees(m, trainer._last_dumps)
        history.append(metrics)
        run.log(summary)
        if m % cfg.save_every == 0 or m == cfg.steps or budget_spent:
            checkpoint.save_checkpoint(trainer, cfg.out)
        if "eval_accuracy" in metrics:
            runlog.plot()
        if budget_spent:
            run.log(f"[attnrl] generated-token budget {cfg.max_generated_tokens} spent at step {m}")
            break
    runlog.plot()
    return history


def _budget_near(cfg, trainer, metrics: dict) -> bool:
    """True at a step after which the next one will probably spend the token budget (this step's tokens,
    with a 1.5x margin, would cross it): evaluating here as well as at the step that crosses the budget
    brackets the budget by two evaluations at most about one step apart, so accuracy AT the budget can
    be interpolated (bench/compare_methods.py) without evaluating every step."""
    if not cfg.max_generated_tokens or trainer.cumulative_tokens >= cfg.max_generated_tokens:
        return False
    return trainer.cumulative_tokens + 1.5 * metrics.get("generated_tokens", 0) >= cfg.max_generated_tokens


def _summary_line(m: dict) -> str:
    ev = f" | eval {m['eval_accuracy']:.3f}" if "eval_accuracy" in m else ""
    phases = " ".join(f"{k[8:]} {v:.1f}s" for k, v in m.items() if k.startswith("seconds_"))
    return (f"step {m['step']:4d} | reward {m['reward']:.3f} | acc {m['train_accuracy']:.3f}{ev} | "
            f"valid {m['valid_ratio']:.2f} | prompts {m['prompts']} | seqs {m['sequences_trained']} | "
            f"gen tok {m['generated_tokens']} | {phases}")
