"""List every dotted key of a Hydra YAML config (and the `+key=` additions of a launch script).

    python scripts/config_keys.py verl/trainer/config/_generated_ppo_trainer.yaml > tests/data/verl_config_keys.txt
    python scripts/config_keys.py recipe/attnrl/config/attnrl_trainer.yaml \
        --script recipe/attnrl/run_attnrl_r1_distill_1.5b_8k.sh > tests/data/attnrl_recipe_config_keys.txt

The lists are what `attnrl_mini/tools/export.py`'s emitted keys are checked against (tests/test_export.py):
a `+key` line is a key the recipe's launch script adds (Hydra's `+`), so it may only be emitted with `+`.
"""
from __future__ import annotations

import argparse
import re

import yaml


def dotted_keys(node, prefix: str = "") -> list[str]:
    keys = []
    if isinstance(node, dict):
        for k, v in node.items():
            path = f"{prefix}.{k}" if prefix else str(k)
            keys.append(path)
            keys += dotted_keys(v, path)
    return keys


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("yaml_file")
    ap.add_argument("--script", default=None, help="a launch script whose `+key=value` overrides add keys")
    args = ap.parse_args()
    with open(args.yaml_file) as f:
        keys = sorted(set(dotted_keys(yaml.safe_load(f))))
    if args.script:
        with open(args.script) as f:
            keys += sorted(set(re.findall(r"^\s*(\+[A-Za-z0-9_.]+)=", f.read(), flags=re.M)))
    print("\n".join(keys))


if __name__ == "__main__":
    main()
