"""Evaluate a model, with or without a trained LoRA adapter: `python eval.py --help`.

The command line lives in attnrl_mini/cli/eval.py (so an installed copy has it as `attnrl-eval`);
the scoring itself is attnrl_mini/tools/evaluate.py.
"""
from attnrl_mini.cli.eval import (default_max_new_tokens, format_table, main, output_paths,  # noqa: F401
                                  parse_args, resolve_adapter, run)

if __name__ == "__main__":
    run()
