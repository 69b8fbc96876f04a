"""examples/notebook.ipynb runs top to bottom in a real Jupyter kernel (ddl.distributed.launch
with a function defined in the notebook)."""
import os

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.timeout(240)
def test_notebook_executes(tmp_path):
    nbformat = pytest.importorskip("nbformat", reason="install the test extra: pip install -e .[test]")
    nbclient = pytest.importorskip("nbclient", reason="install the test extra")
    nb = nbformat.read(os.path.join(ROOT, "examples", "notebook.ipynb"), as_version=4)
    client = nbclient.NotebookClient(nb, timeout=200, kernel_name="python3",
                                     resources={"metadata": {"path": str(tmp_path)}})
    client.execute()
    outputs = "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code"
                      for o in c.get("outputs", []))
    assert "2 ranks, held-out accuracy" in outputs
