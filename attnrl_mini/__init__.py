"""attnrl-mini: AttnRL (arXiv 2509.26628) on one GPU, readable next to the paper.

    algorithm/   the paper's pieces, in reading order (steps, FCI, branching, trees, adaptive sampling,
                 loss); depends on torch and transformers only, never on the rest of this package
    trainer.py   one training step (§3.3) that puts them together, like the paper's algorithm box
    config.py    every hyperparameter with the release's default, and the presets
    worlds/      what is trained on: the built-in toy worlds, the math data, its prompt template and grader
    models/      loading the policy (LoRA, 4-bit, dtype per device); tokenizers rebuilt offline
    generation/  sampling: the in-process HF backend and the vLLM sidecar
    run/         the run around the steps (driver.py: set up, resume, loop), run directory, checkpoints,
                 metrics log, trackers, error reporting
    tools/       what people run besides training: evaluate, inspect, tree pictures, disruption, export
    assignment/  the course assignment built from this code
    cli/         the command lines of train.py, eval.py and the console scripts
"""
