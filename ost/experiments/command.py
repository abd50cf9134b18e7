"""What the experiments' command lines share: the config they read, a grid of settings as options, and the mode
that only renders a measured report into a page's block (`make readme` runs that mode, never a measurement)."""
import argparse
import json
from pathlib import Path

import yaml

from ost import runs


def parser(doc: str, *, config_required: bool = True, readme_page: str | None = None) -> argparse.ArgumentParser:
    """The command's parser, with --config (a configs/*.yaml file) and, for a report a page shows, --readme."""
    p = argparse.ArgumentParser(description=doc.split("\n")[0])
    p.add_argument("--config", type=Path, required=config_required,
                   help="a configs/*.yaml file" + ("" if config_required else "; needed to measure"))
    if readme_page:
        p.add_argument("--readme", type=Path, help=f"only render the measured report into this page ({readme_page})")
    return p


def add_grid(p: argparse.ArgumentParser, grid: dict) -> None:
    """One option per key of `grid` (--warmup-epochs for warmup_epochs; a list takes several values), its default
    the grid's value."""
    for key, value in grid.items():
        kind = type(value[0]) if isinstance(value, list) else type(value)
        p.add_argument(f"--{key.replace('_', '-')}", type=kind, nargs="+" if isinstance(value, list) else None,
                       default=value)


def read_config(path) -> dict:
    """A config file's keys (an empty file: none)."""
    return yaml.safe_load(Path(path).read_text()) or {}


def render_block(page, block: str, name: str) -> None:
    """Fill the page's `<!-- name:start -->` … `<!-- name:end -->` block."""
    from ost.report.render import fill_block
    fill_block(page, block, f"<!-- {name}:start -->", f"<!-- {name}:end -->")


def save_report(path, report: dict) -> None:
    runs.replace_text(path, json.dumps(report, indent=1))
