"""The matched pair of worlds "early" and "late" (problems.py: one generator, one placement switch),
their tokenizer, and a shipped model per world in model_early/ and model_late/ (rebuilt by
`python -m attnrl_mini.worlds.compass.pretrain --placement early|late`). Selected everywhere by name:
`python train.py --model late`, `eval.py --model late --benchmarks late`, `python -m
attnrl_mini.tools.inspect --model late`, `bench/branch_outcomes.py --worlds early,late`.
docs/compass.md: why the pair, what it should show."""
