"""The second toy world, "toy-plan": an early decision that later steps read back (problems.py),
its tokenizer, and the shipped model in model/ (rebuilt by `python -m attnrl_mini.worlds.toy_plan.pretrain`).
Selected everywhere by its name: `python train.py --model toy-plan`, `eval.py --model toy-plan`,
`python -m attnrl_mini.tools.inspect --model toy-plan`, `bench/compare_methods.py --world toy-plan`."""
