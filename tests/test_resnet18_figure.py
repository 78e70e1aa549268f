"""experiments/resnet18_figure.py and its peers (experiments/_peers.py).

- The peers (numpy float32, PyTorch float32 / int8 fbgemm, TVM bit-serial) against ``bs.reference``
  on small convolutions, asymmetric SAME padding and all-maximal values included; a peer handed a
  wrong reference must refuse to be timed. Peers that are not installed are skipped.
- SMOKE TEST (slow-ish, ~15-25 s): the script itself, end to end, on one small layer (C11) with a
  one-trial budget, one thread, two timing rounds; checks its CSV/JSON/PNG and that the studies it
  stored make a rerun a no-op (resume).
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import bitsearch as bs

EXPERIMENTS = Path(__file__).resolve().parent.parent / "experiments"
sys.path.insert(0, str(EXPERIMENTS))
import _peers  # noqa: E402


def _load_script() -> object:
    spec = importlib.util.spec_from_file_location("resnet18_figure", EXPERIMENTS / "resnet18_figure.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def _has(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


INSTALLED = ["numpy-f32"] + (["torch-f32", "torch-int8"] if _has("torch") else []) + (
    ["tvm-bitserial"] if _has("tvm") else [])


def _operands(cv: bs.Conv2d, rng: np.random.Generator, kind: str) -> tuple[np.ndarray, np.ndarray]:
    if kind == "max":
        return np.full(cv.x_shape, cv.amax, np.uint8), np.full(cv.w_shape, cv.wmax, np.uint8)
    return (rng.integers(0, cv.amax + 1, cv.x_shape, dtype=np.uint8),
            rng.integers(0, cv.wmax + 1, cv.w_shape, dtype=np.uint8))


def _check_peers(cv: bs.Conv2d, x: np.ndarray, w: np.ndarray) -> dict[str, str]:
    want = bs.reference(cv, x, w)
    ready, skipped = _peers.build_peers(cv, x, w, want, names=tuple(INSTALLED))
    for c in ready:  # independently of the builders' own checks
        got = c.to_numpy(c.run())
        assert got.shape == want.shape, c.name
        if c.name.startswith("torch-int8"):  # requantized to 8 bits: within one output step
            step = max(1, cv.gemm_k * int(x.max()) * int(w.max())) / 255
            assert np.abs(got - want).max() <= step * 1.001, c.name
        else:
            assert np.array_equal(got.astype(np.int64), want.astype(np.int64)), c.name
    return skipped


@pytest.mark.parametrize("kind", ["random", "max"])
@pytest.mark.parametrize("geometry", [
    dict(h=9, w=7, cin=32, cout=5, kernel=3, stride=2, padding="SAME"),  # asymmetric SAME (0 / 1)
    dict(h=8, w=5, cin=32, cout=4, kernel=1, stride=2, padding="VALID"),
    dict(h=5, w=5, cin=32, cout=2, kernel=3, stride=1, padding=2),
])
def test_peers_match_reference(geometry: dict, kind: str) -> None:
    cv = bs.Conv2d(**geometry, abits=2, wbits=2)
    x, w = _operands(cv, np.random.default_rng(1), kind)
    assert _check_peers(cv, x, w) == {}


@settings(max_examples=5, deadline=None)
@given(h=st.integers(1, 8), w=st.integers(1, 8), cin=st.sampled_from([32, 64]),
       kernel=st.sampled_from([1, 3]), stride=st.integers(1, 2),
       padding=st.sampled_from(["SAME", "VALID", 1]), bits=st.sampled_from([(1, 1), (2, 1), (2, 2)]),
       cout=st.integers(1, 6), seed=st.integers(0, 2**16))
def test_peers_random_geometries(h: int, w: int, cin: int, kernel: int, stride: int, padding: object,
                                 bits: tuple[int, int], cout: int, seed: int) -> None:
    try:
        cv = bs.Conv2d(h=h, w=w, cin=cin, cout=cout, kernel=kernel, stride=stride, padding=padding,
                       abits=bits[0], wbits=bits[1])
    except ValueError:  # the kernel does not fit the padded input
        return
    x, wt = _operands(cv, np.random.default_rng(seed), "random")
    assert _check_peers(cv, x, wt) == {}


def test_peers_refuse_a_wrong_answer_and_odd_channels() -> None:
    cv = bs.Conv2d(h=6, w=6, cin=32, cout=4, kernel=3, stride=2, padding="SAME", abits=2, wbits=2)
    x, w = _operands(cv, np.random.default_rng(2), "random")
    wrong = bs.reference(cv, x, w).copy()
    wrong[0, 1, 2, 3] += 100  # one output off: exact peers must notice; int8 too (one step is ~10 here)
    ready, skipped = _peers.build_peers(cv, x, w, wrong, names=tuple(INSTALLED))
    assert ready == [] and set(skipped) == set(INSTALLED)
    assert all("disagrees" in r or "off by" in r for r in skipped.values())
    if _has("tvm"):
        odd = bs.Conv2d(h=4, w=4, cin=20, cout=2, kernel=3, abits=1, wbits=1)
        xo, wo = _operands(odd, np.random.default_rng(3), "random")
        _, skipped = _peers.build_peers(odd, xo, wo, bs.reference(odd, xo, wo), names=("tvm-bitserial",))
        assert "multiple of TVM's 32-bit" in skipped["tvm-bitserial"]
    with pytest.raises(ValueError, match="'and' mode"):
        bip = bs.Conv2d(h=4, w=4, cin=32, cout=2, kernel=3, mode="bipolar")
        _peers.build_peers(bip, *_operands(bip, np.random.default_rng(0), "random"), wrong)
    with pytest.raises(ValueError, match="unknown peers"):
        _peers.build_peers(cv, x, w, wrong, names=("mkl",))


def _conv_tuning() -> bool:
    """bs.tune of a Conv2d arrived with the conv work (another engineer, in parallel)."""
    try:
        bs.Space(bs.Conv2d(h=4, w=4, cin=32, cout=2, kernel=3))
    except (ValueError, TypeError, KeyError):
        return False
    return True


@pytest.mark.skipif(not _conv_tuning(), reason="bs.tune does not take bs.Conv2d yet")
def test_smoke_script_one_layer_tiny_budget(tmp_path: Path) -> None:
    """SMOKE TEST: the real script, one small layer, 1 trial per study, every installed peer."""
    storage = f"sqlite:///{tmp_path / 'r18.db'}"
    argv = ["--layers", "C11", "--precisions", "A1W1", "--trials", "1", "--int16-trials", "1",
            "--threads", "1", "--repeats", "2", "--min-time", "0.002", "--out", str(tmp_path),
            "--name", "fig", "--storage", storage, "--study-prefix", "smoke", "--json"]
    done = subprocess.run([sys.executable, str(EXPERIMENTS / "resnet18_figure.py"), *argv],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    last = json.loads(done.stdout.strip().splitlines()[-1])
    report = json.loads((tmp_path / "fig.json").read_text())
    assert (tmp_path / "fig-1t.png").stat().st_size > 1000
    rows = report["results"]
    impls = {r["impl"] for r in rows}
    expected = {"ours", "ours-int16", "numpy-f32"}
    expected |= {"torch-f32", "torch-int8-fbgemm"} if _has("torch") else set()
    expected |= {"tvm-bitserial"} if _has("tvm") else set()
    assert impls == expected, report["layers"][0]["skipped"]
    assert all(r["layer"] == "C11" and r["precision"] == "A1W1" and r["threads"] == 1 for r in rows)
    assert all(r["median_ms"] > 0 for r in rows)
    assert next(r for r in rows if r["impl"] == "ours")["ours_speedup"] == 1.0
    assert set(last["geomean_speedup"]["A1W1"]["1"]) == expected - {"ours"}
    assert report["checks"]["ours"].startswith("exact") and report["checks"]["ours-int16"].startswith("exact")
    csv_lines = (tmp_path / "fig.csv").read_text().splitlines()
    assert csv_lines[0].startswith("layer,precision,threads,impl") and len(csv_lines) == len(rows) + 1
    assert "geomean over layers" in done.stdout

    # Resume: both studies hold their budget, so a rerun would tune nothing more.
    script = _load_script()
    args = script.parse_args(argv)
    jobs = script.plan_jobs(args)
    assert [j.study for j in jobs] == ["smoke-C11-int16-x86_64-avx2", "smoke-C11-A1W1-x86_64-avx2"]
    assert [script.finished_trials(j.study, args.storage_url) for j in jobs] == [1, 1]


def test_script_rejects_bad_flags(capsys: pytest.CaptureFixture[str]) -> None:
    script = _load_script()
    for argv, message in ((["--layers", "C13"], "unknown layers"), (["--trials", "-1"], "--trials"),
                          (["--threads", "0"], "--threads")):
        with pytest.raises(SystemExit):
            script.parse_args(argv)
        assert message in capsys.readouterr().err


def test_peers_doctest() -> None:
    import doctest

    assert doctest.testmod(_peers).failed == 0
