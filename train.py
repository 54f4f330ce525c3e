"""Train a LoRA adapter with AttnRL (or the GRPO / TreeRL baselines): `python train.py --help`.

The command line lives in attnrl_mini/cli/train.py (so an installed copy has it as `attnrl-train`);
the loop itself is attnrl_mini/trainer.py.
"""
from attnrl_mini.cli.train import build_parser, main, parse_args  # noqa: F401  (tests and scripts import them from here)

if __name__ == "__main__":
    main()
