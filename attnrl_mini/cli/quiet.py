"""A quiet start: the libraries' chatter hidden unless --verbose, and no progress bars in a piped log.

Hidden by default (none of it needs the user's attention):
- transformers' "Loading weights" bar (HF_HUB_DISABLE_PROGRESS_BARS, read when transformers is imported);
- bitsandbytes' "pip install kernels" notice on CPUs with AVX512-BF16 (an optional faster kernel; the
  default one is what every test here ran with).
Progress bars (tqdm, read from TQDM_DISABLE by every bar) are off when stdout or stderr is not a
terminal: through `| tee` a bar's carriage returns would interleave with the step lines.
Warnings and errors of our own code are printed either way. Call before the heavy imports.
"""
import logging
import os
import sys


def quiet_libraries(verbose: bool = False) -> None:
    if not (sys.stdout.isatty() and sys.stderr.isatty()):
        os.environ.setdefault("TQDM_DISABLE", "1")
    if verbose:
        return
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    if "transformers" in sys.modules:   # imported already (in-process use): the variable was read
        sys.modules["transformers"].utils.logging.disable_progress_bar()
    logging.getLogger("bitsandbytes.backends.cpu.ops").setLevel(logging.ERROR)
