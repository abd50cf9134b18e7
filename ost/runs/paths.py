"""Every folder the project reads or writes, anchored once at the repository root."""
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]    # ost/runs/paths.py → the repository
DATA = ROOT / "data"            # generated pools and cached base models (gitignored)
RESULTS = ROOT / "results"      # results/<run>/ per run; results/main/ is committed
CONFIGS = ROOT / "configs"
NOTEBOOKS = ROOT / "notebooks"
FIXTURES = ROOT / "tests" / "fixtures"
