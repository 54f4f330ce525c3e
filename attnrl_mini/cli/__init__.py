"""The command lines. train.py and eval.py at the repository root call cli/train.py and cli/eval.py;
an installed copy (pyproject.toml) has them, and inspect and the assignment, as console scripts:

    attnrl-train ...        = python train.py ...
    attnrl-eval ...         = python eval.py ...
    attnrl-inspect ...      = python -m attnrl_mini.tools.inspect ...
    attnrl-assignment ...   = python -m attnrl_mini.assignment ...

A console script exits with what its function returns, so these return nothing (or an exit code). Their
names end in _main so that none hides a submodule (attnrl_mini.cli.train is the module).
"""
import sys


def train_main() -> None:
    from attnrl_mini.cli.train import main
    main()


def eval_main() -> None:
    from attnrl_mini.cli.eval import run
    run()


def inspect_main() -> None:
    from attnrl_mini.tools.inspect import main
    main()


def assignment_main() -> None:
    from attnrl_mini.assignment.__main__ import main
    sys.exit(main())
