"""`export verl --check`: compose the exported launch scripts' overrides with Hydra against the real configs.

    python -m attnrl_mini.tools.export verl --run runs/toy --out export/toy --check   # export, then check
    python -m attnrl_mini.tools.export_check export/toy [--gpus 8]                     # check an export

Each script's `key=value` lines are composed, as its launcher does, against a pinned copy of the
config it runs with (attnrl_mini/tools/verl_config/, versions and sources in its README):
  run_verl_grpo.sh      verl 0.9.1's `ppo_trainer.yaml` with its defaults list (verl.trainer.main_ppo)
  run_attnrl_recipe.sh  the AttnRL recipe's `attnrl_trainer.yaml` (recipe.attnrl.main_attnrl)
Hydra's struct mode refuses a key the config lacks (and a `+key` it already has). On top, each value
must have its default's kind (a bool stays a bool, a number a number, a list a list, a mapping a
mapping; a null or `???` default takes anything; the YAML defaults are all there is without verl's
Python dataclasses, so an int and a float count as one kind), and train_batch_size × rollout.n must divide by the
GPU count (n_gpus_per_node × nnodes): the recipe asserts it always (its verl/trainer/ppo/ray_trainer.py,
even with dynamic batch size), verl 0.9.1 when use_dynamic_bsz is off (verl/utils/config.py). Shell
defaults `${VAR:-x}` in the scripts are read as x unless VAR is set (--gpus sets NGPUS_PER_NODE).
Every failure names the key.
"""
from __future__ import annotations

import argparse
import os
import re
import shlex

HERE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "verl_config")
# script -> (what it runs against, config directory, config name)
TARGETS = {
    "run_verl_grpo.sh": ("verl 0.9.1 ppo_trainer.yaml", os.path.join(HERE, "verl-0.9.1"), "ppo_trainer"),
    "run_attnrl_recipe.sh": ("AttnRL recipe attnrl_trainer.yaml (378c38e)", os.path.join(HERE, "attnrl-378c38e"),
                             "attnrl_trainer"),
}
ABSENT = object()


class ExportCheckError(ValueError):
    """An override the target config refuses; the message names the script and the key."""


def script_overrides(path: str, env: dict[str, str] | None = None) -> list[str]:
    """The `key=value` arguments after `python3 -m <module>` in a launch script, shell quoting removed and
    `${VAR:-default}` replaced by env[VAR] or the default."""
    env = os.environ if env is None else env
    text = open(path).read().replace("\\\n", " ")
    command = next((line for line in text.splitlines() if re.match(r"\s*python3? -m \S+", line)), None)
    if command is None:
        raise ExportCheckError(f"{path}: no `python3 -m ...` line")
    args = shlex.split(command)[3:]
    return [re.sub(r"\$\{(\w+):-([^}]*)\}", lambda m: env.get(m.group(1), m.group(2)), a) for a in args]


def compose(config_dir: str, config_name: str, overrides: list[str]):
    from hydra import compose as hydra_compose, initialize_config_dir
    with initialize_config_dir(config_dir=config_dir, version_base=None):
        return hydra_compose(config_name=config_name, overrides=overrides)


def _lookup(tree, key: str):
    """The value at a dotted key of a plain (unresolved) container, or ABSENT."""
    node = tree
    for part in key.split("."):
        if not isinstance(node, dict) or part not in node:
            return ABSENT
        node = node[part]
    return node


def type_problem(default, value) -> str | None:
    """Why `value` cannot replace `default` (None when it can)."""
    if default is None or default == "???" or (isinstance(default, str) and default.startswith("${")) or value is None:
        return None
    if isinstance(default, bool):
        ok = isinstance(value, bool)
    elif isinstance(default, (int, float)):   # one kind: the YAML files write 1 for a float 1.0 (rollout.top_p)
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    elif isinstance(default, (list, dict)):
        ok = isinstance(value, type(default))
    else:   # a string takes scalars, and a list where verl's field is str-or-list (model.target_modules)
        ok = not isinstance(value, dict)
    return None if ok else f"is {type(default).__name__} in the config ({default!r}), got {value!r}"


def check_overrides(overrides: list[str], config_dir: str, config_name: str, what: str) -> dict:
    """Compose `overrides` against the config; ExportCheckError listing each refused key. Returns the
    composed config as a plain dict (interpolations unresolved)."""
    from omegaconf import OmegaConf
    base = OmegaConf.to_container(compose(config_dir, config_name, []), resolve=False)
    problems = []
    for ov in overrides:
        key = ov.split("=", 1)[0]
        if key.startswith("+"):
            if _lookup(base, key[1:]) is not ABSENT:
                problems.append(f"{key[1:]}: already in {what}; set it without '+'")
        elif _lookup(base, key) is ABSENT:
            problems.append(f"{key}: no such key in {what}")
    if problems:
        raise ExportCheckError("; ".join(problems))
    try:
        composed = OmegaConf.to_container(compose(config_dir, config_name, overrides), resolve=False)
    except Exception as e:   # Hydra's own refusal (an unparsable value, ...): its message quotes the key
        cause = " ".join(str(e.__cause__ or e).split())
        raise ExportCheckError(f"{what} refuses the overrides: {cause}") from None
    for ov in overrides:
        key = ov.split("=", 1)[0]
        if key.startswith("+"):
            continue
        why = type_problem(_lookup(base, key), _lookup(composed, key))
        if why:
            problems.append(f"{key}: {why}")
    if problems:
        raise ExportCheckError("; ".join(problems))
    return composed


def check_batch_divisible(composed: dict, always: bool) -> None:
    """train_batch_size × n must divide by the GPU count (module docstring)."""
    if not always and _lookup(composed, "actor_rollout_ref.actor.use_dynamic_bsz") is True:
        return
    tbs, n = _lookup(composed, "data.train_batch_size"), _lookup(composed, "actor_rollout_ref.rollout.n")
    gpus = int(_lookup(composed, "trainer.n_gpus_per_node")) * int(_lookup(composed, "trainer.nnodes"))
    if (tbs * n) % gpus:
        raise ExportCheckError(
            f"data.train_batch_size: {tbs} prompts × actor_rollout_ref.rollout.n {n} = {tbs * n} sequences do not "
            f"divide by the {gpus} GPUs (trainer.n_gpus_per_node × trainer.nnodes); train with a --prompts-per-step "
            f"that makes {n}·B a multiple of {gpus}, or launch on another GPU count (NGPUS_PER_NODE, --gpus)")


def check_export(out: str, gpus: int | None = None, log=print) -> None:
    """Check both launch scripts of an export directory; ExportCheckError naming the script and key."""
    env = dict(os.environ, **({"NGPUS_PER_NODE": str(gpus)} if gpus else {}))
    for script, (what, config_dir, name) in TARGETS.items():
        path = os.path.join(out, script)
        overrides = script_overrides(path, env)
        try:
            composed = check_overrides(overrides, config_dir, name, what)
            check_batch_divisible(composed, always=script == "run_attnrl_recipe.sh")
        except ExportCheckError as e:
            raise ExportCheckError(f"{script}: {e}") from None
        log(f"[export --check] {script}: {len(overrides)} overrides compose against {what}")


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out", help="an `export verl` output directory (run_verl_grpo.sh, run_attnrl_recipe.sh)")
    ap.add_argument("--gpus", type=int, default=None, help="GPUs per node to check for (default: the scripts' "
                                                           "NGPUS_PER_NODE, else 8)")
    args = ap.parse_args(argv)
    try:
        check_export(args.out, args.gpus)
    except (ExportCheckError, FileNotFoundError) as e:
        raise SystemExit(f"error: {e}") from None


if __name__ == "__main__":
    main()
