"""notebooks/tour.ipynb runs top to bottom on the CPU (nbclient, a real kernel) and is stored without outputs.

The tour runs the toy model through every stage and six real training steps; its wall time is printed
(run with -s to see it; not asserted, as it depends on the machine's load). Its temporary run directory goes to this test's tmp_path (TMPDIR).
"""
import time
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat", reason="nbformat is not installed (requirements.txt pins it)")
nbclient = pytest.importorskip("nbclient", reason="nbclient is not installed (requirements.txt pins it)")
pytest.importorskip("ipykernel", reason="ipykernel is not installed (requirements.txt pins it)")

NOTEBOOK = Path(__file__).resolve().parents[1] / "notebooks" / "tour.ipynb"


def test_the_tour_is_stored_without_outputs():
    nb = nbformat.read(NOTEBOOK, as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert len(code) >= 9
    assert all(c.outputs == [] and c.execution_count is None for c in code), "clear the outputs before committing"


def test_the_tour_runs_top_to_bottom(tmp_path, monkeypatch):
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    nb = nbformat.read(NOTEBOOK, as_version=4)
    t0 = time.time()
    nbclient.NotebookClient(nb, timeout=600, kernel_name="python3",
                            resources={"metadata": {"path": str(NOTEBOOK.parent)}}).execute()
    seconds = time.time() - t0
    print(f"\nnotebooks/tour.ipynb: {seconds:.0f} s wall time")
    text = "\n".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.outputs)
    assert "gold answer:" in text and "training sequences" in text and "wrote " in text
    images = sum("image/png" in o.get("data", {}) for c in nb.cells if c.cell_type == "code" for o in c.outputs)
    assert images >= 3                                    # α map, the training curve, the tree picture
    # The target is under 5 minutes on the 2-core machine (measured: see the note in docs); the wall time is
    # printed, not asserted, since it grows with whatever else shares the cores.
