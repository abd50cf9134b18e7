"""Every benchmark script still imports and parses its arguments: a script that fell behind the package (a renamed
function, a moved module) fails here, not months later when someone reruns a recorded measurement."""
import subprocess
import sys

from ost.runs.paths import ROOT

SCRIPTS = sorted(p for p in (ROOT / "benchmarks").glob("*.py") if not p.name.startswith("_"))

# one interpreter for all of them: each script runs as __main__ with --help, which argparse answers with exit 0
PROBE = """
import runpy, sys
sys.path.insert(0, {folder!r})
for script in {scripts!r}:
    sys.argv = [script, "--help"]
    try:
        runpy.run_path(script, run_name="__main__")
    except SystemExit as stop:
        if stop.code not in (0, None):
            raise
    else:
        raise AssertionError(script + " ran without answering --help")
    print("ok", script)
"""


def test_every_benchmark_script_answers_help():
    assert len(SCRIPTS) >= 8
    code = PROBE.format(folder=str(ROOT / "benchmarks"), scripts=[str(p) for p in SCRIPTS])
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    assert run.stdout.count("\nok ") + run.stdout.startswith("ok ") == len(SCRIPTS), run.stdout[-2000:]
