"""The run around the training steps: a whole run (driver.py: set up → resume or step 0 → loop → close),
the run directory's lock and identity (run_dir.py), exact-resume checkpoints (checkpoint.py), metrics,
plots and tree dumps (runlog.py), copies to experiment trackers (tracking.py), writes that fail naming
their file (writes.py), one-line user errors (errors.py) and the early low-RAM warning (host_ram.py)."""
