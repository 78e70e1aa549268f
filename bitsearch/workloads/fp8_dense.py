"""``Fp8Dense``: an FP8 dense layer with FP32 accumulation, its float64 reference and the
tolerance a kernel is verified within."""

from __future__ import annotations

from dataclasses import dataclass

import ml_dtypes
import numpy as np

from bitsearch.workloads.base import Case, GemmShape, Operator, check_operand, check_positive_int

FP8_FORMATS: tuple[str, ...] = ("e5m2", "e4m3")


def fp8_dtype(fmt: str) -> np.dtype:
    """The ml_dtypes dtype of an FP8 format name ("e5m2" | "e4m3"; E4M3 is ``float8_e4m3fn``)."""
    if fmt == "e5m2":
        return np.dtype(ml_dtypes.float8_e5m2)
    if fmt == "e4m3":
        return np.dtype(ml_dtypes.float8_e4m3fn)
    raise ValueError(f"FP8 format must be one of {', '.join(FP8_FORMATS)}, got {fmt!r}")


@dataclass(frozen=True)
class Fp8Dense(GemmShape, Operator):
    """An FP8 dense layer: y = a @ b.T as float32 [m, n], a FP8 [m, k] (``afmt``), b FP8 [n, k]
    (``wfmt``), as ml_dtypes arrays (``float8_e5m2`` / ``float8_e4m3fn``); products exact, sums
    accumulated in FP32 (FMA).

    FP32 accumulation is not exact, so kernels are checked against the float64 reference
    within :func:`fp8_tolerance`: ``|y - ref| <= (K * 2**-23 + 2**-40) * sum_k |a_k b_k|``.
    Why: every product of two FP8 values is exact in FP32 (at most 4+4 significant bits; nonzero
    magnitudes within [2**-32, 2**32), and every partial sum is 0 or a multiple of the smallest
    product, so never subnormal), so the only errors are the at most K + (K blocks) <= 2K roundings of
    the running sum, each at most 2**-24 relative to a partial sum bounded by sum_k |a_k b_k|; the
    classical bound gamma_2K = 2K u / (1 - 2K u) <= K * 2**-23 * (1 + tiny) for K < 2**20, and
    2**-40 covers the float64 reference's own rounding. A sum of only exact zeros must be 0.
    Non-finite inputs (E5M2 inf/NaN, E4M3 NaN) follow IEEE: where the reference is NaN or +-inf
    the kernel must give exactly that class.

    Example:
        >>> import numpy as np, ml_dtypes, bitsearch as bs
        >>> wl = bs.Fp8Dense(2, 3, 5, afmt="e5m2", wfmt="e4m3")
        >>> a = np.full((2, 5), 1.5, ml_dtypes.float8_e5m2); b = np.full((3, 5), -2, ml_dtypes.float8_e4m3fn)
        >>> float(wl.reference(a, b)[1, 2])
        -15.0
    """

    m: int
    n: int
    k: int
    afmt: str = "e5m2"
    wfmt: str = "e5m2"

    OP = "fp8_dense"

    def __post_init__(self) -> None:
        for name in ("m", "n", "k"):
            check_positive_int(name, getattr(self, name))
            object.__setattr__(self, name, int(getattr(self, name)))
        for name in ("afmt", "wfmt"):
            if getattr(self, name) not in FP8_FORMATS:
                raise ValueError(
                    f"{name} must be one of {', '.join(FP8_FORMATS)}, got {getattr(self, name)!r}")

    @property
    def x_dtype(self) -> np.dtype:
        return fp8_dtype(self.afmt)

    @property
    def w_dtype(self) -> np.dtype:
        return fp8_dtype(self.wfmt)

    def check_x(self, x: np.ndarray, *, check_range: bool = True) -> np.ndarray:
        """a as a contiguous FP8 [m, k] array of ``x_dtype``, or ``ValueError`` naming the problem."""
        return check_operand("a", x, self.x_shape, self.x_dtype, None)

    def check_w(self, w: np.ndarray) -> np.ndarray:
        return check_operand("b", w, self.w_shape, self.w_dtype, None)

    def check_packed(self, seen: int) -> None:
        """Every FP8 byte is a valid value: nothing to reject."""

    def to_dict(self) -> dict[str, object]:
        return {"op": self.OP, "m": self.m, "n": self.n, "k": self.k,
                "afmt": self.afmt, "wfmt": self.wfmt}

    def __str__(self) -> str:
        return f"fp8_dense {self.m}x{self.n}x{self.k} {self.afmt}x{self.wfmt}"

    def reference(self, x: np.ndarray, w: np.ndarray) -> np.ndarray:
        """float64 [m, n]: the operands decoded by ml_dtypes and summed in float64 (a kernel's
        FP32 sums are compared within :func:`fp8_tolerance`)."""
        return _fp8_reference(self, x, w)

    def verification_inputs(self, seed: int = 0) -> list[Case]:
        return fp8_verification_inputs(self, seed)

    def mismatch(self, x: np.ndarray, w: np.ndarray, got: np.ndarray, want: np.ndarray) -> str | None:
        return fp8_mismatch(self, x, w, got, want)

    def study_name(self, target: str) -> str:
        return f"fp8-dense-{self.m}x{self.n}x{self.k}-{self.afmt}x{self.wfmt}-{target}"


def _fp8_reference(workload: Fp8Dense, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a = workload.check_x(a).astype(np.float64)
    b = workload.check_w(b).astype(np.float64)
    with np.errstate(invalid="ignore", over="ignore"):  # inf - inf, 0 * inf: NaN as in IEEE
        return a @ b.T


def fp8_tolerance(workload: Fp8Dense, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """The allowed |y - reference| of an FP32-accumulating kernel, float64 [m, n] (derivation in
    :class:`Fp8Dense`): ``(K * 2**-23 + 2**-40) * (|a| @ |b|.T)``.

    Example:
        >>> import numpy as np, ml_dtypes
        >>> wl = Fp8Dense(1, 1, 4)
        >>> a = np.ones((1, 4), ml_dtypes.float8_e5m2)
        >>> float(fp8_tolerance(wl, a, a)[0, 0]) == (4 * 2**-23 + 2**-40) * 4
        True
    """
    a = np.abs(workload.check_x(a).astype(np.float64))
    b = np.abs(workload.check_w(b).astype(np.float64))
    with np.errstate(invalid="ignore", over="ignore"):
        return (workload.k * 2.0**-23 + 2.0**-40) * (a @ b.T)


def fp8_mismatch(workload: Fp8Dense, a: np.ndarray, b: np.ndarray, got: np.ndarray,
                 want: np.ndarray | None = None) -> str | None:
    """None if ``got`` (float32 [m, n]) is within :func:`fp8_tolerance` of the reference (and
    equal in class where the reference is NaN or +-inf), else a message naming the first bad
    output."""
    want = _fp8_reference(workload, a, b) if want is None else want
    got64 = np.asarray(got, np.float64)
    finite = np.isfinite(want)
    with np.errstate(invalid="ignore"):
        ok = np.where(finite, np.abs(got64 - want) <= fp8_tolerance(workload, a, b),
                      (np.isnan(want) & np.isnan(got64)) | (want == got64))
    if ok.all():
        return None
    bad = np.argwhere(~ok)
    r, c = (int(v) for v in bad[0])
    return (f"{len(bad)} outputs out of tolerance, first y[{r},{c}] = {float(got64[r, c])!r}, "
            f"expected {float(want[r, c])!r}")


def fp8_verification_inputs(workload: Fp8Dense, seed: int = 0) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """Random finite operands first (every finite FP8 code equally likely: the timed case), then
    adversarial ones: all maximal magnitudes (the largest sums), alternating signs of the maximal
    magnitude (sums cancel to exactly 0), subnormals, +0/-0, and non-finite codes (E5M2 inf and
    NaN, E4M3 NaN) in a few rows and columns (they must propagate as in IEEE)."""
    rng = np.random.default_rng(seed)
    wl = workload
    out = []
    for operand, (shape, fmt) in enumerate(((wl.x_shape, wl.afmt), (wl.w_shape, wl.wfmt))):
        dt = fp8_dtype(fmt)
        codes = np.arange(256, dtype=np.uint8)
        values = codes.view(dt).astype(np.float32)
        finite = codes[np.isfinite(values)]
        fmax = float(np.abs(values[np.isfinite(values)]).max())
        rows, cols = np.indices(shape)
        # a's sign alternates along K, b's per column: every dot product alternates (cancels).
        sign = np.where((rows + (cols if operand == 0 else 0)) % 2 == 1, -1.0, 1.0)
        sub = codes[(codes & 0x7F) < (4 if fmt == "e5m2" else 8)]  # exponent field 0: zeros, subnormals
        special = rng.choice(finite, shape)
        special[::3, ::2] = 0x7F  # NaN (E4M3) / NaN (E5M2, 0x7F is a NaN code too)
        if fmt == "e5m2":
            special[1::4, 1::3] = 0x7C  # +inf
            special[2::5, ::4] = 0xFC  # -inf
        out.append({
            "random": rng.choice(finite, shape).view(dt),
            "all-maximal": np.full(shape, fmax, np.float32).astype(dt),
            "alternating-maximal": (sign * fmax).astype(np.float32).astype(dt),
            "subnormal": rng.choice(sub, shape).view(dt),
            "zeros": np.where(sign > 0, 0.0, -0.0).astype(np.float32).astype(dt),
            "non-finite": special.view(dt),
        })
    return [(name, out[0][name], out[1][name]) for name in out[0]]


__all__ = ["FP8_FORMATS", "Fp8Dense", "fp8_dtype", "fp8_mismatch", "fp8_tolerance", "fp8_verification_inputs"]
