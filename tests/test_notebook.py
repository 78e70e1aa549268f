"""notebooks/explore_space.ipynb runs headless (nbclient) on a tiny budget, in this venv's python.

The kernel is this interpreter (``sys.executable``): a kernelspec written to a temporary
JUPYTER_PATH, so it works in a fresh venv with no registered kernel. Parameters go in through the
environment variables its parameter cell reads; the study lives in a temporary SQLite file.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")
pytest.importorskip("ipykernel")

import optuna  # noqa: E402

NOTEBOOK = Path(__file__).resolve().parent.parent / "notebooks" / "explore_space.ipynb"
KERNEL = "bitsearch-test-venv"


@pytest.fixture
def kernel_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    spec_dir = tmp_path / "jupyter" / "kernels" / KERNEL
    spec_dir.mkdir(parents=True)
    (spec_dir / "kernel.json").write_text(json.dumps({
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "bitsearch test venv", "language": "python",
    }))
    monkeypatch.setenv("JUPYTER_PATH", str(tmp_path / "jupyter"))
    monkeypatch.delenv("MPLBACKEND", raising=False)  # ipykernel then renders figures inline as PNG
    return tmp_path


def _run(env: dict[str, str], monkeypatch: pytest.MonkeyPatch,
         cells: int | None = None) -> nbformat.NotebookNode:
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    nb = nbformat.read(NOTEBOOK, as_version=4)
    nb.cells = nb.cells[:cells]
    client = nbclient.NotebookClient(nb, kernel_name=KERNEL, timeout=120,
                                     resources={"metadata": {"path": str(NOTEBOOK.parent)}})
    client.execute()
    return nb


def _text(nb: nbformat.NotebookNode) -> str:
    return "\n".join(out.get("text", "") for cell in nb.cells if cell.cell_type == "code"
                     for out in cell.get("outputs", []) if out.get("output_type") == "stream")


def _images(nb: nbformat.NotebookNode) -> int:
    return sum("image/png" in out.get("data", {}) for cell in nb.cells if cell.cell_type == "code"
               for out in cell.get("outputs", []))


def _finished(storage: str) -> int:
    study = optuna.load_study(study_name="nb-test", storage=storage)
    return len(study.get_trials(states=(optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.FAIL)))


def test_committed_notebook_has_no_outputs() -> None:
    nb = nbformat.read(NOTEBOOK, as_version=4)
    nbformat.validate(nb)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert code and all(not c.outputs and c.execution_count is None for c in code)
    assert "parameters" in code[0].metadata.get("tags", [])


def test_notebook_creates_then_reopens_a_study(kernel_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    storage = f"sqlite:///{kernel_env / 'nb.db'}"
    env = {"BITSEARCH_NB_STORAGE": storage, "BITSEARCH_NB_STUDY": "nb-test", "BITSEARCH_NB_TRIALS": "4"}

    nb = _run(env, monkeypatch)  # no such study: the notebook tunes one with 4 trials
    text = _text(nb)
    assert "created study 'nb-test' with 4 trials" in text
    assert "random: (256, 256) outputs equal bs.reference bit for bit" in text
    assert "all-max: (256, 256) outputs equal bs.reference bit for bit (max 1024)" in text
    assert "--- pack:" in text and "--- gemm:" in text  # the best kernel's assembly listing
    assert "k_unroll=" in text and "<- best schedule" in text
    assert _images(nb) >= 2  # history + sweep (importances need >= 2 distinct completed trials)
    assert _finished(storage) == 4

    # Exists now: opened, not tuned again (up to the cell that opens it: the rest ran above).
    opening = next(i for i, c in enumerate(nbformat.read(NOTEBOOK, as_version=4).cells)
                   if "load_study(STUDY, STORAGE)" in c.source)
    nb = _run({**env, "BITSEARCH_NB_TRIALS": "50"}, monkeypatch, cells=opening + 1)
    assert "opened study 'nb-test'" in _text(nb)
    assert _finished(storage) == 4
