"""A notebook's papermill parameters: read without running it, checked against a config, then executed."""
import functools
import re
from pathlib import Path

from ost.runs import paths

# A number in exponent form without a dot (1e-3, 2E5): YAML 1.1, and so PyYAML, reads it as a string.
_EXPONENT = re.compile(r"^[-+]?(?:\d[\d_]*(?:\.[\d_]*)?|\.\d[\d_]*)[eE][-+]?\d+$")


@functools.cache
def _number_loader():
    """YAML's safe loader that also reads an exponent without a dot as a float (built once)."""
    import yaml

    class Loader(yaml.SafeLoader):
        pass

    Loader.add_implicit_resolver("tag:yaml.org,2002:float", _EXPONENT, list("-+0123456789."))
    return Loader


def parameter_value(text: str):
    """One `-p NAME VALUE` value from the command line: a number when it reads as one (3, -1.5, 1e-3, 2e-5, in a
    list too), true or false, a YAML list or mapping ([0, 1], {a: 1}), a quoted YAML string ("'3'" → "3"), else
    the text itself ("proxy", "", "null", "yes")."""
    import yaml
    try:
        value = yaml.load(text, Loader=_number_loader())
    except yaml.YAMLError:
        return text
    if isinstance(value, bool) and text.strip().lower() not in ("true", "false"):
        return text                                             # YAML 1.1's yes/no/on/off stay words
    return value if isinstance(value, (bool, int, float, list, dict, str)) else text


def notebook_parameters(path) -> dict:
    """{name: default} of a notebook's `parameters` cell (flat literals, read without running it)."""
    import ast

    import nbformat
    nb = nbformat.read(str(path), as_version=4)
    cells = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
    if not cells:
        raise ValueError(f"{path} has no cell tagged 'parameters'")
    out = {}
    for node in ast.parse(cells[0].source).body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
            out[node.targets[0].id] = ast.literal_eval(node.value)
    return out


def check_config(config: dict, notebooks=None) -> None:
    """Refuse a config key no notebook has (a typo would otherwise be ignored) or a value whose type
    differs from the notebooks' default (an int where a float is expected is fine)."""
    notebooks = notebooks or sorted(paths.NOTEBOOKS.glob("[0-9][0-9]_*.ipynb"))
    known = {}
    for nb in notebooks:
        for name, default in notebook_parameters(nb).items():
            known.setdefault(name, []).append((Path(nb).stem, default))
    problems = []
    for key, value in config.items():
        if key not in known:
            problems.append(f"{key!r} is a parameter of no notebook")
            continue
        for notebook, default in known[key]:
            ok = isinstance(value, type(default)) or (isinstance(default, float) and isinstance(value, int))
            if not ok:
                problems.append(f"{key!r}: {notebook} expects {type(default).__name__}, got {value!r}")
    if problems:
        raise ValueError("config rejected: " + "; ".join(problems))


def execute(notebook, output, config=None, parameters=None, progress=True):
    """Run one notebook with papermill after checking every parameter it is given: a `-f` config may
    hold keys of other notebooks (it is shared by the chain; only this notebook's are passed on), but a
    key no notebook has, a wrong type, or an explicit parameter this notebook does not have is refused
    (papermill itself only logs "Passed unknown parameter" and runs on)."""
    import papermill
    import yaml
    notebook = Path(notebook)
    shared = yaml.safe_load(Path(config).read_text()) or {} if config else {}
    check_config(shared)
    own = notebook_parameters(notebook)
    explicit = dict(parameters or {})
    unknown = sorted(set(explicit) - set(own))
    if unknown:
        raise ValueError(f"{notebook.name} has no parameter(s) {unknown}; its parameters: {sorted(own)}")
    params = {**{k: v for k, v in shared.items() if k in own}, **explicit}
    check_config(params, notebooks=[notebook])
    return papermill.execute_notebook(str(notebook), str(output), parameters=params, kernel_name="python3",
                                      progress_bar=progress)


def main(argv=None):
    import argparse

    import yaml
    parser = argparse.ArgumentParser(description="check a config against the notebooks' parameters, or run "
                                                 "one notebook with checked parameters")
    sub = parser.add_subparsers(dest="command", required=True)
    check = sub.add_parser("check", help="check a configs/*.yaml against every notebook's parameters")
    check.add_argument("config")
    run = sub.add_parser("execute", help="papermill one notebook; unknown parameters are refused")
    run.add_argument("notebook")
    run.add_argument("output")
    run.add_argument("-f", "--config", help="a configs/*.yaml shared by the chain")
    run.add_argument("-p", "--parameter", nargs=2, action="append", default=[], metavar=("NAME", "VALUE"),
                     help="one parameter; VALUE is a number when it reads as one (3 → int, 1e-3 → float), "
                          "YAML for true/false, [0, 1] → list, else the text")
    args = parser.parse_args(argv)
    if args.command == "check":
        config = yaml.safe_load(Path(args.config).read_text()) or {}
        check_config(config)
        print(f"{len(config)} keys, each a parameter of a notebook with a matching type")
    else:
        params = {name: parameter_value(value) for name, value in args.parameter}
        execute(args.notebook, args.output, args.config, params)
