"""What the READMEs say about the API and the experiment scripts matches the code."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import bitsearch.train as train

ROOT = Path(__file__).resolve().parents[1]


def test_readme_calls_into_bitsearch_train_work() -> None:
    """Every inline-code call of a ``bitsearch.train`` function in README.md runs as written."""
    spans = re.findall(r"`([^`\n]+)`", (ROOT / "README.md").read_text())
    calls = [s for s in spans if re.fullmatch(r"(\w+)\(.*\)", s) and s.split("(")[0] in train.__all__]
    assert any(c.startswith("fp8_recipes(") for c in calls), calls
    for call in calls:
        eval(compile(ast.parse(call, mode="eval"), "README.md", "eval"), vars(train))


def test_experiments_readme_gives_neon_a53_model_defaults() -> None:
    """experiments/README.md states the shape neon_a53_model.py runs by default (and with --table)."""
    source = (ROOT / "experiments" / "neon_a53_model.py").read_text()
    shapes = re.findall(r"args\.m or (\d+), args\.n or (\d+), args\.k or (\d+)", source)
    assert len(shapes) == 2, shapes  # the --table branch, then the default
    (table, default) = ("x".join(s) for s in shapes)
    row = next(line for line in (ROOT / "experiments" / "README.md").read_text().splitlines()
               if "experiments/neon_a53_model.py" in line)
    assert f"default {default}" in row, row
    assert table not in row or re.search(rf"--table`?[^|]*{table}", row), row
