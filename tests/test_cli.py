"""The ``bitsearch`` command, run as a subprocess (``python -m bitsearch``) against SQLite studies
under a temporary directory. ``demo`` (a 1024^3 kernel timed beside numpy) is too slow to run here.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import bitsearch as bs

ROOT = Path(__file__).resolve().parents[1]
DENSE = ["dense", "--m", "64", "--n", "64", "--k", "256"]
SMALL = ["dense", "--m", "16", "--n", "24", "--k", "300", "--abits", "2", "--wbits", "1"]


def run(*args: str, cwd: Path, timeout: float = 180) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    return subprocess.run([sys.executable, "-m", "bitsearch", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=timeout, check=False)


def last_json(proc: subprocess.CompletedProcess[str]) -> dict:
    lines = proc.stdout.strip().splitlines()
    assert lines, proc.stderr
    obj = json.loads(lines[-1])
    assert isinstance(obj, dict)
    return obj


def assert_one_line_error(proc: subprocess.CompletedProcess[str], *needles: str) -> None:
    assert proc.returncode != 0, proc.stdout
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("bitsearch: error:"), proc.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]


@pytest.fixture(scope="module")
def tuned(tmp_path_factory) -> tuple[Path, str, dict]:
    """One study tuned through the command line: (working directory, storage URL, JSON summary)."""
    cwd = tmp_path_factory.mktemp("cli")
    url = f"sqlite:///{cwd / 'studies.db'}"
    proc = run("tune", *DENSE, "--trials", "6", "--storage", url, "--study", "s", "--json", cwd=cwd)
    assert proc.returncode == 0, proc.stderr
    return cwd, url, last_json(proc)


# ---- tune / best / export ----------------------------------------------------------------------
def test_tune_json_last_line_is_the_result(tuned) -> None:
    cwd, url, summary = tuned
    assert summary["study"] == "s"
    assert summary["storage"] == url
    assert summary["trials"] == 6
    assert summary["workload"] == bs.Dense(64, 64, 256).to_dict()
    assert summary["best_seconds"] > 0
    schedule = bs.Schedule.from_dict(summary["best_schedule"])
    schedule.check(bs.Dense(64, 64, 256))
    assert sum(summary["outcomes"].values()) == 6
    assert not (cwd / "studies" ).exists()  # the default storage was not touched


def test_best_json_and_text(tuned) -> None:
    cwd, url, summary = tuned
    proc = run("best", "--study", "s", "--storage", url, "--json", cwd=cwd)
    assert proc.returncode == 0, proc.stderr
    best = last_json(proc)
    assert best["study"] == "s"
    assert best["best_schedule"] == summary["best_schedule"]
    assert best["best_seconds"] == summary["best_seconds"]
    assert best["best_trial"] == summary["best_trial"]
    assert best["workload"] == summary["workload"]
    assert best["target"] == "x86_64-avx2"
    assert best["bit_macs_per_s"] > 0
    text = run("best", "--study", "s", "--storage", url, cwd=cwd)
    assert text.returncode == 0, text.stderr
    assert "best of" in text.stdout and f"#{summary['best_trial']}" in text.stdout


def test_export_of_a_study_writes_object_header_and_sources(tuned, tmp_path) -> None:
    cwd, url, summary = tuned
    out = tmp_path / "out"
    proc = run("export", "--study", "s", "--storage", url, "--out", str(out), cwd=cwd)
    assert proc.returncode == 0, proc.stderr
    for ext in ("o", "h", "S", "s", "json"):
        path = out / f"bitsearch.{ext}"
        assert path.is_file() and path.stat().st_size > 0, ext
        assert str(path) in proc.stdout
    assert (out / "bitsearch.o").read_bytes()[:4] == b"\x7fELF"
    meta = json.loads((out / "bitsearch.json").read_text())
    assert meta["schedule"] == summary["best_schedule"]
    assert meta["workload"] == summary["workload"]


def test_export_of_one_schedule(tmp_path) -> None:
    schedule = json.dumps({"mr": 1, "nr": 2, "popcount": "scalar"})
    proc = run("export", *SMALL, "--schedule", schedule, "--out", str(tmp_path), "--prefix", "k",
               cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert sorted(p.name for p in tmp_path.glob("k.*")) == ["k.S", "k.h", "k.json", "k.o", "k.s"]
    meta = json.loads((tmp_path / "k.json").read_text())
    assert meta["schedule"]["popcount"] == "scalar" and meta["schedule"]["nr"] == 2


def test_tune_text_form_resumes_and_refuses_another_workload(tmp_path) -> None:
    url = f"sqlite:///{tmp_path / 'r.db'}"
    args = ["dense", "--m", "32", "--n", "32", "--k", "128", "--storage", url, "--study", "r",
            "--sampler", "random", "--seed", "0"]
    first = run("tune", *args, "--trials", "5", "--quiet", cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    assert "study r" in first.stdout and "5 trials" in first.stdout
    assert "Traceback" not in first.stderr
    again = run("tune", *args, "--trials", "2", "--json", "--quiet", cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    assert last_json(again)["trials"] == 7
    other = run("tune", *[a if a != "128" else "256" for a in args], "--trials", "1", "--quiet",
                cwd=tmp_path)
    assert_one_line_error(other, "study 'r'")


def test_tune_with_fixed_knobs(tmp_path) -> None:
    url = f"sqlite:///{tmp_path / 'f.db'}"
    proc = run("tune", *SMALL, "--trials", "3", "--storage", url, "--study", "f", "--quiet", "--json",
               "--fix", "popcount=csa", "--fix", "layout=interleaved", "--sampler", "random", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    best = last_json(proc)["best_schedule"]
    assert best["popcount"] == "csa" and best["layout"] == "interleaved"


def test_tune_without_a_valid_schedule_exits_non_zero(tmp_path) -> None:
    url = f"sqlite:///{tmp_path / 'n.db'}"
    # 16-bit accumulators overflow: K*(2^a-1)*(2^w-1) = 2048*15*15 >= 2^16
    args = ["dense", "--m", "16", "--n", "16", "--k", "2048", "--abits", "4", "--wbits", "4"]
    proc = run("tune", *args, "--trials", "2", "--storage", url, "--study", "n", "--quiet",
               "--fix", "popcount=lut", "--fix", "acc_bits=16", cwd=tmp_path)
    assert proc.returncode == 1, proc.stderr
    assert "no valid schedule" in proc.stdout
    assert_one_line_error(run("best", "--study", "n", "--storage", url, cwd=tmp_path), "no successful trial")


# ---- space and measure -------------------------------------------------------------------------
def test_space_json_and_text(tmp_path) -> None:
    proc = run("space", *DENSE, "--json", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    info = last_json(proc)
    assert len(proc.stdout.strip().splitlines()) == 1
    space = bs.Space(bs.Dense(64, 64, 256))
    assert info == json.loads(json.dumps(space.describe()))
    assert info["size"]["valid"] > 0
    text = run("space", *DENSE, cwd=tmp_path)
    assert text.returncode == 0, text.stderr
    for knob in info["knobs"]:
        assert knob["name"] in text.stdout
    assert f"size: {info['size']['total']} distinct schedules, {info['size']['valid']} valid" in text.stdout


def test_space_with_fixed_knobs(tmp_path) -> None:
    proc = run("space", "dense", "--m", "256", "--n", "256", "--k", "512", "--json",
               "--fix", "popcount=lut", "--fix", "acc_bits=8", "--fix", "loop_order=mn", "--fix", "nc=0",
               cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    info = last_json(proc)
    fixed = {k["name"]: k["fixed"] for k in info["knobs"] if "fixed" in k}
    assert fixed == {"popcount": "lut", "acc_bits": 8, "loop_order": "mn", "nc": 0}
    assert info["size"]["valid"] >= 300
    text = run("space", *DENSE, "--fix", "popcount=lut", "--fix", "nibble_split=true", cwd=tmp_path)
    assert text.returncode == 0, text.stderr
    assert "fixed = True" in text.stdout


def test_measure_json_and_text(tmp_path) -> None:
    proc = run("measure", *SMALL, "--json", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    res = last_json(proc)
    assert res["error"] == "NONE"
    assert res["schedule"] == bs.default_schedule(bs.Dense(16, 24, 300, abits=2)).to_dict()
    assert res["repeats"] >= 10 and 0 < res["min_s"] <= res["median_s"]
    text = run("measure", *SMALL, "--schedule", '{"mr": 1, "nr": 3, "popcount": "csa"}', cwd=tmp_path)
    assert text.returncode == 0, text.stderr
    assert "G bit-MAC/s" in text.stdout


def test_measure_of_an_invalid_schedule_is_a_classified_failure(tmp_path) -> None:
    proc = run("measure", *SMALL, "--schedule", '{"mr": 8, "nr": 8}', "--json", cwd=tmp_path)
    assert proc.returncode == 1
    res = last_json(proc)
    assert res["error"] == "INVALID_SCHEDULE" and "registers" in res["message"]


# ---- help and errors ---------------------------------------------------------------------------
@pytest.mark.parametrize("command", [[], ["demo"], ["tune"], ["space"], ["best"], ["export"], ["measure"]],
                         ids=lambda c: c[0] if c else "main")
def test_help(command: list[str], tmp_path) -> None:
    proc = run(*command, "--help", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("usage: bitsearch")


ERRORS = {
    "bad-abits": (["tune", *DENSE, "--abits", "9", "--trials", "1", "--quiet"], "abits"),
    "bad-wbits": (["measure", *DENSE, "--wbits", "0"], "wbits"),
    "bad-shape": (["space", "dense", "--m", "0", "--n", "4", "--k", "64"], "m must be"),
    "int32-overflow": (["space", "dense", "--m", "4", "--n", "4", "--k", "40000000", "--abits", "8",
                        "--wbits", "8"], "int32"),
    "unknown-study-best": (["best", "--study", "nope"], "nope"),
    "unknown-study-export": (["export", "--study", "nope", "--out", "OUT"], "nope"),
    "schedule-not-json": (["measure", *DENSE, "--schedule", "{mr: 2"], "--schedule"),
    "schedule-not-object": (["measure", *DENSE, "--schedule", "[2, 4]"], "--schedule"),
    "schedule-unknown-knob": (["measure", *DENSE, "--schedule", '{"warp": 2}'], "warp"),
    "fix-no-equals": (["space", *DENSE, "--fix", "popcount"], "--fix"),
    "fix-unknown-knob": (["space", *DENSE, "--fix", "warp=2"], "warp"),
    "fix-bad-value": (["space", *DENSE, "--fix", "popcount=avx512"], "avx512"),
    "tune-fix-bad-value": (["tune", *DENSE, "--trials", "1", "--quiet", "--fix", "k_unroll=3"], "k_unroll"),
    "tune-zero-trials": (["tune", *DENSE, "--trials", "0", "--quiet"], "trials"),
    "export-study-and-dense": (["export", *DENSE, "--study", "s", "--out", "OUT"], "not both"),
    "export-neither": (["export", "--out", "OUT"], "--study"),
    "export-dense-without-shape": (["export", "dense", "--m", "8", "--out", "OUT"], "--k"),
}


@pytest.mark.parametrize("case", list(ERRORS))
def test_errors_are_one_line_on_stderr(case: str, tmp_path) -> None:
    args, needle = ERRORS[case]
    url = f"sqlite:///{tmp_path / 'e.db'}"
    args = [str(tmp_path / "out") if a == "OUT" else a for a in args]
    if args[0] in ("tune", "best", "export"):
        args += ["--storage", url]
    proc = run(*args, cwd=tmp_path)
    assert_one_line_error(proc, needle)
    assert not (tmp_path / "out").exists()
    assert not (tmp_path / "studies").exists()


# ---- regressions: bugs found while writing these tests, since fixed ---------------------------
def test_regression_float_fix_value_is_a_one_line_error(tmp_path) -> None:
    proc = run("space", *DENSE, "--fix", "acc_bits=16.0", cwd=tmp_path)
    assert_one_line_error(proc)


def test_regression_reading_an_unknown_study_creates_no_storage(tmp_path) -> None:
    db = tmp_path / "nowhere" / "x.db"
    proc = run("best", "--study", "s", "--storage", str(db), cwd=tmp_path)
    assert_one_line_error(proc, "no study")
    assert not db.parent.exists()


def test_tune_int_dense_json(tmp_path) -> None:
    url = f"sqlite:///{tmp_path / 's.db'}"
    proc = run("tune", "int-dense", "--m", "48", "--n", "32", "--k", "96", "--dtype", "int8",
               "--trials", "3", "--storage", url, "--study", "i8", "--json", "--quiet", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    out = last_json(proc)
    assert out["workload"]["op"] == "int_dense"
    assert out["best_schedule"]["formulation"] in ("broadcast", "dot")
    assert out["best_macs_per_s"] > 0
