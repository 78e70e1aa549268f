"""``bitsearch`` on convolutions, as a subprocess against SQLite studies in a temporary directory."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SMALL = ["conv2d", "--h", "6", "--w", "5", "--cin", "20", "--cout", "6", "--kernel", "3", "--stride", "2",
         "--padding", "SAME", "--batch", "2", "--abits", "2", "--wbits", "1", "--mode", "bipolar"]


def run(*args: str, cwd: Path, timeout: float = 180) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    return subprocess.run([sys.executable, "-m", "bitsearch", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=timeout, check=False)


def last_json(proc: subprocess.CompletedProcess[str]) -> dict:
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_tune_best_export_of_a_conv(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/s.db"
    out = last_json(run("tune", *SMALL, "--trials", "3", "--storage", url, "--study", "cv", "--quiet",
                        "--json", cwd=tmp_path))
    assert out["workload"]["op"] == "conv2d" and out["workload"]["batch"] == 2
    assert out["best_schedule"]["lowering"] in ("im2col", "implicit") and out["best_seconds"] > 0
    best = last_json(run("best", "--study", "cv", "--storage", url, "--json", cwd=tmp_path))
    assert best["best_schedule"] == out["best_schedule"]
    proc = run("export", "--study", "cv", "--storage", url, "--out", str(tmp_path / "o"), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "bitsearch_fix(" in (tmp_path / "o" / "bitsearch.h").read_text()


def test_measure_space_and_the_int16_baseline(tmp_path: Path) -> None:
    res = last_json(run("measure", *SMALL, "--schedule", '{"lowering": "implicit", "mr": 3, "nr": 2}',
                        "--json", cwd=tmp_path))
    assert res["error"] == "NONE" and res["schedule"]["lowering"] == "implicit"
    res = last_json(run("measure", "int-conv2d", "--h", "5", "--w", "5", "--cin", "9", "--cout", "4",
                        "--padding", "1,0,0,1", "--json", cwd=tmp_path))
    assert res["error"] == "NONE" and res["workload"]["padding"] == [1, 0, 0, 1]
    space = last_json(run("space", "conv2d", "--layer", "C3", "--fix", "lowering=implicit", "--json",
                          cwd=tmp_path))
    assert space["workload"]["cin"] == 64 and space["knobs"][0]["fixed"] == "implicit"


@pytest.mark.parametrize("args, needle", [
    (["tune", "conv2d", "--layer", "C13"], "valid: C2, C3"),
    (["tune", "conv2d", "--layer", "C2", "--h", "8"], "not both"),
    (["measure", "conv2d", "--h", "8", "--cin", "4", "--cout", "4"], "missing --w"),
    (["measure", "conv2d", "--h", "8", "--w", "8", "--cin", "4", "--cout", "4", "--kernel", "3x"],
     "--kernel"),
    (["measure", "int-conv2d", "--layer", "C2", "--dtype", "int8"], "int16"),
    (["measure", "dense", "--m", "8"], "--k"),
])
def test_one_line_errors(tmp_path: Path, args: list[str], needle: str) -> None:
    proc = run(*args, cwd=tmp_path)
    assert proc.returncode != 0
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("bitsearch: error:") and needle in lines[0], proc.stderr
