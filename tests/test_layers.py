"""The package's layers: a module imports only from its own layer or the ones below it."""
import ast

from ost.runs import paths

LAYERS = ["runs", "data", "models", "method", "baselines", "report", "experiments"]
RANK = {"runs": 0, "data": 1, "models": 2, "method": 3, "baselines": 4, "report": 4, "experiments": 5}


def _imports(path):
    """Every `ost.<layer>` a module imports, at its top or inside a function."""
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "ost":
            parts = node.module.split(".")
            if len(parts) > 1:
                yield parts[1]
            else:                       # from ost import runs, baselines
                yield from (a.name for a in node.names)
        elif isinstance(node, ast.Import):
            for alias in node.names:
                parts = alias.name.split(".")
                if parts[0] == "ost" and len(parts) > 1:
                    yield parts[1]


def test_every_module_sits_in_a_layer():
    package = paths.ROOT / "ost"
    loose = sorted(p.name for p in package.glob("*.py"))
    assert loose == ["__init__.py", "__main__.py", "cli.py"], loose
    assert sorted(p.name for p in package.iterdir() if p.is_dir() and p.name != "__pycache__") == sorted(LAYERS)


def test_no_module_imports_a_higher_layer():
    wrong = []
    for layer in LAYERS:
        for path in sorted((paths.ROOT / "ost" / layer).glob("*.py")):
            for used in _imports(path):
                if used in RANK and RANK[used] > RANK[layer]:
                    wrong.append(f"ost/{layer}/{path.name} imports ost.{used}")
    assert not wrong, wrong


def test_the_layer_check_sees_a_violation(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text("def f():\n    from ost.experiments import transfer\n")
    assert list(_imports(bad)) == ["experiments"]


def test_the_users_command_imports_no_experiment():
    """`ost` on your own data runs the method's stages: it needs nothing of the paper's experiments."""
    used = set(_imports(paths.ROOT / "ost" / "cli.py"))
    assert "method" in used and "experiments" not in used and "report" not in used, used
