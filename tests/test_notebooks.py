"""The notebooks in notebooks/ run end to end headless, and are committed without outputs."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
CELL_TIMEOUT = 600
KERNEL = "python3"
WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"


def _ids(path: Path) -> str:
    return path.name


def test_the_notebooks_are_there():
    assert {"quickstart.ipynb", "teaching_lab.ipynb", "colab.ipynb"} <= {p.name for p in NOTEBOOKS}


@pytest.mark.parametrize("path", NOTEBOOKS, ids=_ids)
def test_committed_without_outputs(path):
    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    dirty = [i for i, c in enumerate(nb.cells)
             if c.cell_type == "code" and (c.get("outputs") or c.get("execution_count") is not None)]
    assert not dirty, f"{path.name}: cells {dirty} have outputs or execution counts; clear them before committing"
    assert "widgets" not in nb.metadata, f"{path.name}: saved widget state in the metadata; clear it"


@pytest.fixture(scope="session")
def venv_kernel(tmp_path_factory):
    """A kernelspec named python3 that runs this interpreter (the venv's python) with the repository importable.

    It lives in a temporary directory put first on JUPYTER_PATH, so it wins over any user-wide python3 kernel and
    nothing is installed into the environment.
    """
    root = tmp_path_factory.mktemp("jupyter")
    spec_dir = root / "kernels" / KERNEL
    spec_dir.mkdir(parents=True)
    pythonpath = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p)
    (spec_dir / "kernel.json").write_text(json.dumps({
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "Python 3 (lmtt-widgets tests)",
        "language": "python",
        "env": {"PYTHONPATH": pythonpath, "MPLBACKEND": "agg"},
    }))
    mp = pytest.MonkeyPatch()
    mp.setenv("JUPYTER_PATH", os.pathsep.join(p for p in (str(root), os.environ.get("JUPYTER_PATH", "")) if p))
    yield KERNEL
    mp.undo()


def _execute(nb, kernel, cwd):
    from nbclient import NotebookClient

    NotebookClient(nb, kernel_name=kernel, timeout=CELL_TIMEOUT, allow_errors=False,
                   resources={"metadata": {"path": str(cwd)}}).execute()
    return nb


def test_kernel_is_this_interpreter(venv_kernel, tmp_path):
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("import sys, lmtt_widgets; print(sys.executable)")])
    out = _execute(nb, venv_kernel, tmp_path).cells[0].outputs
    assert out and Path(out[0]["text"].strip()).resolve() == Path(sys.executable).resolve()


@pytest.mark.smollm2
@pytest.mark.parametrize("path", NOTEBOOKS, ids=_ids)
def test_notebook_runs(path, venv_kernel, tmp_path):
    """Every cell runs without error (nbclient raises CellExecutionError with the traceback otherwise)."""
    nb = _execute(nbformat.read(path, as_version=4), venv_kernel, tmp_path)
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs if o.get("output_type") == "error"]
    assert not errors
    explorer_cells = [c for c in nb.cells if c.cell_type == "code" and "Explorer(" in c.source]
    if explorer_cells:
        shown = [c for c in explorer_cells if any(WIDGET_VIEW in o.get("data", {}) for o in c.outputs)]
        assert shown, f"{path.name}: no cell that builds an Explorer displayed a widget view"


def _lab():
    return nbformat.read(ROOT / "notebooks" / "teaching_lab.ipynb", as_version=4)


def test_lab_exercises_have_solution_and_check():
    """Each exercise cell is followed by a collapsed reference solution, then a CHECK cell."""
    cells = [c for c in _lab().cells if c.cell_type == "code"]
    exercises = [i for i, c in enumerate(cells) if "# YOUR CODE" in c.source]
    assert len(exercises) >= 6
    for i in exercises:
        solution, check = cells[i + 1], cells[i + 2]
        assert "solution" in solution.metadata.get("tags", []) and solution.metadata["jupyter"]["source_hidden"]
        assert check.source.startswith("# CHECK") and "assert" in check.source


@pytest.mark.smollm2
def test_lab_check_rejects_a_wrong_answer(venv_kernel, tmp_path):
    """A student's wrong answer is graded by the CHECK cell, not overwritten by the reference solution."""
    from nbclient.exceptions import CellExecutionError

    nb = _lab()
    first_check = next(i for i, c in enumerate(nb.cells) if c.cell_type == "code" and c.source.startswith("# CHECK"))
    nb.cells = nb.cells[: first_check + 1]
    exercise = next(c for c in nb.cells if "top_source = None  # YOUR CODE" in c.source)
    exercise.source = exercise.source.replace("top_source = None  # YOUR CODE", "top_source = 0  # a wrong answer")
    for c in nb.cells:  # the widget is not needed here
        c.source = c.source.replace("Explorer(fr)", "")
    with pytest.raises(CellExecutionError, match="top_source"):
        _execute(nb, venv_kernel, tmp_path)
