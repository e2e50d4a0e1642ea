"""The results notebook executes top to bottom on the committed records."""

import nbformat
from nbclient import NotebookClient

from hedgehog.results.records import ROOT


def test_results_notebook_executes():
    notebook = nbformat.read(ROOT / "notebooks" / "results.ipynb", as_version=4)
    NotebookClient(
        notebook, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(ROOT)}}
    ).execute()
    outputs = [o for cell in notebook.cells if cell.cell_type == "code" for o in cell.get("outputs", [])]
    assert not [o for o in outputs if o.get("output_type") == "error"]
    assert any("run records" in o.get("text", "") for o in outputs)
