"""The run machinery around the loop: every hyperparameter and preset (config.py), the run directory's
lock and identity (run_dir.py), exact-resume checkpoints (checkpoint.py), metrics, plots and tree dumps
(runlog.py), and copies to experiment trackers (tracking.py)."""
