"""What people run besides training: evaluate.py (avg@k / pass@k, used by eval.py and the trainer's
held-out check), inspect.py (one response's steps, FCI and branch points; a run's trees), tree_picture.py,
disruption.py (the Fig. 3 attention-disruption hook) and export.py (hand a run to verl)."""
