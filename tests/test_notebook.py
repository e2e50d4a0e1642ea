"""The results notebook executes top to bottom on the committed records and shows every experiment's tables."""

import nbformat
from nbclient import NotebookClient

from hedgehog.paths import project_root


def test_results_notebook_executes_and_shows_every_table():
    root = project_root()
    notebook = nbformat.read(root / "notebooks" / "results.ipynb", as_version=4)
    NotebookClient(
        notebook, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(root)}}
    ).execute()
    outputs = [o for cell in notebook.cells if cell.cell_type == "code" for o in cell.get("outputs", [])]
    assert not [o for o in outputs if o.get("output_type") == "error"]
    assert any("run records of associative_recall, bert_glue" in o.get("text", "") for o in outputs)
    shown = "".join(o.get("data", {}).get("text/markdown", "") for o in outputs)
    images = sum("image/png" in o.get("data", {}) for o in outputs)
    tables = sorted((root / "experiments").glob("*/tables/*/*.md"))
    assert tables and all(t.read_text().splitlines()[0] in shown for t in tables), (
        "a committed table is not shown"
    )
    assert images == len(list((root / "experiments").glob("*/tables/*/*.png")))
