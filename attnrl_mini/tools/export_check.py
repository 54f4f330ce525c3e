"""`export verl --check`: compose the exported launch scripts' overrides against the real configs.

    python -m attnrl_mini.tools.export verl --run runs/toy --out export/toy --check   # export, then check
    python -m attnrl_mini.tools.export_check export/toy [--gpus 8]                     # check an export

Each script's `key=value` lines are applied, as its launcher's Hydra does, to a pinned copy of the
composed config it runs with (attnrl_mini/tools/verl_config/, versions and sources in its README):
  run_verl_grpo.sh      verl 0.9.1's `_generated_ppo_trainer.yaml`: `ppo_trainer.yaml` with its whole
                        defaults list, composed by verl's own CI (verl.trainer.main_ppo)
  run_attnrl_recipe.sh  the AttnRL recipe's `attnrl_trainer.yaml`, self-contained (recipe.attnrl.main_attnrl)
Both are plain YAML, so no Hydra here (hydra-core 1.3.8 pins antlr4 4.9, Math-Verify needs 4.13).
Values are read by the subset of Hydra's override grammar the export writes (`parse_value`); anything
outside it is refused, not guessed. As Hydra's struct mode: a plain key must be in the config and a
`+key` must not. Stricter than Hydra (which lets the last one win, or replaces the scalar): a key set
twice, and a `+key` under a scalar. On top, each value must have its default's kind (a bool stays a bool, a number a
number, a list a list, a mapping a mapping; a null or `???` default takes anything; the YAML defaults
are all there is without verl's Python dataclasses, so an int and a float count as one kind), and
train_batch_size × rollout.n must divide by the GPU count (n_gpus_per_node × nnodes): the recipe
asserts it always (its verl/trainer/ppo/ray_trainer.py, even with dynamic batch size), verl 0.9.1
when use_dynamic_bsz is off (verl/utils/config.py). Shell defaults `${VAR:-x}` in the scripts are
read as x unless VAR is set (--gpus sets NGPUS_PER_NODE). Every failure names the key.
"""
from __future__ import annotations

import argparse
import copy
import os
import re
import shlex

import yaml

HERE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "verl_config")
# script -> (what it runs against, the composed config file)
TARGETS = {
    "run_verl_grpo.sh": ("verl 0.9.1 ppo_trainer.yaml",
                         os.path.join(HERE, "verl-0.9.1", "_generated_ppo_trainer.yaml")),
    "run_attnrl_recipe.sh": ("AttnRL recipe attnrl_trainer.yaml (378c38e)",
                             os.path.join(HERE, "attnrl-378c38e", "attnrl_trainer.yaml")),
}
ABSENT = object()

# Hydra 1.3's override lexer (hydra/grammar/OverrideLexer.g4), the tokens a whole value can be:
_INT_UNSIGNED = r"(?:0|[1-9](?:_?[0-9])*)"
_POINT_FLOAT = rf"(?:{_INT_UNSIGNED}\.|{_INT_UNSIGNED}?\.[0-9](?:_?[0-9])*)"
HYDRA_INT = re.compile(rf"[+-]?{_INT_UNSIGNED}")
_EXPONENT_FLOAT = rf"(?:{_POINT_FLOAT}|{_INT_UNSIGNED})[eE][+-]?[0-9](?:_?[0-9])*"
HYDRA_FLOAT = re.compile(rf"[+-]?(?:{_POINT_FLOAT}|{_EXPONENT_FLOAT}|inf|nan)", re.IGNORECASE)
HYDRA_BOOL = re.compile(r"true|false", re.IGNORECASE)
HYDRA_NULL = re.compile(r"null", re.IGNORECASE)
UNQUOTED = re.compile(r"[A-Za-z0-9_/+.%*@?|:-]+")   # Hydra's ID and UNQUOTED_CHARs, less `$` and `\`
QUOTED = re.compile(r"'[^'\\]*'|\"[^\"\\]*\"")          # a quoted string without escapes
KEY = re.compile(r"(\+?)([A-Za-z_][A-Za-z0-9_-]*(?:\.[A-Za-z_][A-Za-z0-9_-]*)*)")


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


def parse_scalar(text: str):
    """One unquoted or quoted value as Hydra types it: null, bool, int, float (`1e-06` too), else a string.
    Raises ValueError outside the subset."""
    if QUOTED.fullmatch(text):
        return text[1:-1]
    if HYDRA_NULL.fullmatch(text):
        return None
    if HYDRA_BOOL.fullmatch(text):
        return text.lower() == "true"
    if HYDRA_INT.fullmatch(text):
        return int(text)         # Python's int() reads Hydra's `1_000` too
    if HYDRA_FLOAT.fullmatch(text):
        return float(text)
    if UNQUOTED.fullmatch(text):
        return text
    raise ValueError(f"value {text!r} is outside what the check reads")


def parse_value(text: str):
    """An override's value, read as Hydra reads the subset of its override grammar that the export writes:
    null, true/false (any case), ints, floats, unquoted strings of letters, digits and `_/+.%*@?|:-`,
    strings in '...' or "..." without backslashes, and flat lists `[a,b]` of those. Outside it (sweeps
    `a,b`, interpolations `${...}`, mappings `{...}`, functions `choice(...)`, escapes, nested lists, an
    empty value) it raises ValueError rather than guess. Not yaml.safe_load: YAML 1.1 reads `1e-06` as a
    string and `yes`, `off` as bools, where Hydra reads a float and strings."""
    if "${" in text:
        raise ValueError(f"value {text!r} is an interpolation; the check does not resolve those")
    if text.startswith("[") and text.endswith("]"):
        inner = text[1:-1].strip()
        items = [item.strip() for item in inner.split(",")] if inner else []
        if any(item.startswith("[") or "]" in item for item in items):
            raise ValueError(f"value {text!r} is a nested list; the check reads flat lists only")
        return [parse_scalar(item) for item in items]
    return parse_scalar(text)


def parse_override(override: str) -> tuple[str, bool, object]:
    """`key=value` or `+key=value` -> (dotted key, added with '+', typed value); ExportCheckError for forms
    outside the subset (`~key` deletion, `++key`, `key@package`, config-group `a/b=`, no `=`)."""
    key, eq, text = override.partition("=")
    m = KEY.fullmatch(key)
    if not eq or m is None:
        raise ExportCheckError(f"{key or override}: not a `key=value` or `+key=value` override (the check reads "
                               f"no `~key`, `++key`, `key@package` or config-group forms)")
    try:
        value = parse_value(text)
    except ValueError as e:
        raise ExportCheckError(f"{m.group(2)}: {e}") from None
    return m.group(2), m.group(1) == "+", value


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


class ConfigLoader(yaml.SafeLoader):
    """YAML as OmegaConf (the launchers' loader) reads it: `1e-6` is a float (YAML 1.1 wants `1.0e-6`), and a
    date stays a string."""


ConfigLoader.add_implicit_resolver("tag:yaml.org,2002:float",
                                   re.compile(r"^[-+]?[0-9]+(?:_[0-9]+)*(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
                                   list("-+0123456789"))
ConfigLoader.yaml_implicit_resolvers = {
    first: [(tag, rx) for tag, rx in resolvers if tag != "tag:yaml.org,2002:timestamp"]
    for first, resolvers in ConfigLoader.yaml_implicit_resolvers.items()}


def load_config(path: str) -> dict:
    """A pinned composed config (plain YAML, no defaults list), interpolations left as their `${...}` text."""
    with open(path) as f:
        config = yaml.load(f, Loader=ConfigLoader)
    if not isinstance(config, dict) or "defaults" in config:
        raise ExportCheckError(f"{path}: not a composed config (a mapping without a defaults list)")
    return config


def _set(tree: dict, key: str, value) -> None:
    """Set a dotted key; a `+key` adds its missing parents, as Hydra does. ExportCheckError where a parent
    is there but not a mapping."""
    *parents, last = key.split(".")
    node = tree
    for i, part in enumerate(parents):
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise ExportCheckError(f"{key}: {'.'.join(parents[:i + 1])} is {node!r} in the config, not a mapping")
    node[last] = value


def check_overrides(overrides: list[str], config_path: str, what: str) -> dict:
    """Apply `overrides` to the config; ExportCheckError listing each refused key. Returns the composed
    config as a plain dict (interpolations unresolved), as the launcher's Hydra would build it."""
    base = load_config(config_path)
    composed = copy.deepcopy(base)
    problems, seen = [], set()
    for ov in overrides:
        key, added, value = parse_override(ov)
        default = _lookup(base, key)
        if key in seen:
            problems.append(f"{key}: set twice")
        elif added and default is not ABSENT:
            problems.append(f"{key}: already in {what}; set it without '+'")
        elif not added and default is ABSENT:
            problems.append(f"{key}: no such key in {what}")
        elif not added and (why := type_problem(default, value)):
            problems.append(f"{key}: {why}")
        else:
            try:
                _set(composed, key, value)
            except ExportCheckError as e:
                problems.append(str(e))
        seen.add(key)
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
    for script, (what, config_path) in TARGETS.items():
        path = os.path.join(out, script)
        overrides = script_overrides(path, env)
        try:
            composed = check_overrides(overrides, config_path, what)
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
