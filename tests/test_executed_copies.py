"""The executed notebooks a reader opens under results/main/ run the code of notebooks/ as it is: cell for cell,
bar the parameters cell papermill injects. `make reproduce` rewrites them; a notebook changed without it fails here."""
import json

import pytest

from ost.runs import paths

SOURCES = sorted((paths.ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))


def _code(path) -> list:
    cells = json.loads(path.read_text())["cells"]
    return ["".join(c["source"]) for c in cells
            if c["cell_type"] == "code" and "injected-parameters" not in c.get("metadata", {}).get("tags", [])]


@pytest.mark.parametrize("source", SOURCES, ids=lambda p: p.stem)
def test_the_executed_copy_runs_its_source_cell_for_cell(source):
    copy = paths.RESULTS / "main" / source.name
    assert copy.exists(), f"{copy} is missing: `make reproduce` writes it"
    ran, now = _code(copy), _code(source)
    changed = [k for k, (a, b) in enumerate(zip(ran, now)) if a != b]
    assert len(ran) == len(now) and not changed, (
        f"{copy.name} ran other code than {source.name} holds (code cells {changed or 'count'}): `make reproduce`")
