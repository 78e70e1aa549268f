"""Convolution peers of the ResNet-18 figure: other implementations of the same NHWC convolution.

Each builder takes the ``bs.Conv2d``, the operands (AND mode: the value domain *is* the stored values)
and the exact int32 reference, checks the peer's answer once, and returns a :class:`Contender`
ready to be timed -- or raises :class:`PeerUnavailable` with the reason (not installed, layout not
supported, or a wrong answer: a peer that disagrees with the reference is never timed).

- ``numpy-f32``: im2col (padding included) + one float32 matmul (OpenBLAS). Exact: every operand
  and partial sum is an integer below 2^24.
- ``torch-f32``: ``torch.nn.functional.conv2d`` on channels_last float32 tensors (oneDNN). Exact,
  for the same reason.
- ``torch-int8``: PyTorch's quantized ``Conv2d`` (fbgemm engine), weights prepacked once. The
  activations are our uint8 values reinterpreted as quint8 (scale 1, zero point 0, no copy and
  nothing to quantize: not timed); the output stays quint8 (dequantization not timed). It requantizes
  its int32 sums to 8 bits, a different operator: checked to within one output quantization step.
- ``tvm-bitserial``: TVM's generic ``topi.nn.bitserial_conv2d_nhwc`` (AND form, ``unipolar=False``;
  its unipolar form is wrong in 0.27), int32 output, weights bit-packed once outside the timed call,
  activation packing inside it (as ours). Schedule: TVM's default loop nest with the output rows
  parallel. Checked bit for bit.

Example:
    >>> import numpy as np, bitsearch as bs
    >>> cv = bs.Conv2d(h=5, w=5, cin=3, cout=2, kernel=3, stride=2, padding="SAME", abits=2)
    >>> x = np.full(cv.x_shape, 3, np.uint8); w = np.ones(cv.w_shape, np.uint8)
    >>> c = numpy_f32(cv, x, w, bs.reference(cv, x, w))
    >>> c.run().shape, c.check
    ((1, 3, 3, 2), 'exact (integer sums < 2^24)')
"""

from __future__ import annotations

import functools
import os
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

import bitsearch as bs
from bitsearch.workloads import im2col

FLOAT32_EXACT = 2**24  # integers (and sums of them) below this are exact in float32


class PeerUnavailable(Exception):
    """A peer that cannot be timed here; ``str(exc)`` says why."""


def _pad(cv: bs.Conv2d, x: np.ndarray) -> np.ndarray:
    top, bottom, left, right = cv.pads
    return np.pad(x, ((0, 0), (top, bottom), (left, right), (0, 0)))


@dataclass(frozen=True, kw_only=True)
class Contender:
    """One implementation ready to time: ``run()`` computes the layer once; ``set_threads(n)`` is
    called before each round (numpy is limited by threadpoolctl around the round instead);
    ``to_numpy(run())`` is the result as a numpy [batch, oh, ow, cout] array (values, not codes)."""

    name: str
    run: Callable[[], object]
    check: str  # how the answer was verified before timing
    note: str = ""
    set_threads: Callable[[int], None] = field(default=lambda n: None)
    to_numpy: Callable[[object], np.ndarray] = field(default=np.asarray)


def _check_exact(name: str, got: np.ndarray, want: np.ndarray) -> None:
    if got.shape != want.shape:
        raise PeerUnavailable(f"{name} returned shape {got.shape}, expected {want.shape}")
    if not np.array_equal(got, want):
        bad = int(np.count_nonzero(got != want))
        raise PeerUnavailable(f"{name} disagrees with the exact reference in {bad} of {want.size} outputs")


def _float_exact(cv: bs.Conv2d, x: np.ndarray, w: np.ndarray) -> None:
    bound = cv.gemm_k * int(x.max(initial=0)) * int(w.max(initial=0))
    if bound >= FLOAT32_EXACT:
        raise PeerUnavailable(f"sums up to {bound} are not exact in float32")


def numpy_f32(cv: bs.Conv2d, x: np.ndarray, w: np.ndarray, want: np.ndarray) -> Contender:
    """im2col + float32 matmul; the timed call pads, gathers the patches and multiplies."""
    _float_exact(cv, x, w)
    xf = x.astype(np.float32)
    wt = np.ascontiguousarray(w.reshape(cv.cout, -1).astype(np.float32).T)

    def run() -> np.ndarray:
        return (im2col(cv, xf) @ wt).reshape(cv.y_shape)

    _check_exact("numpy-f32", run().astype(np.int32), want)
    return Contender(name="numpy-f32", run=run, check="exact (integer sums < 2^24)",
                     note="im2col + matmul, padding and patch gathering timed")


def _torch() -> object:
    try:
        import torch
    except ImportError:
        raise PeerUnavailable("torch not installed (pip install -e '.[peers]')") from None
    return torch


def _torch_input(cv: bs.Conv2d, x: np.ndarray) -> tuple[np.ndarray, tuple[int, int], str]:
    """torch pads symmetrically only: asymmetric SAME padding is applied to the input beforehand."""
    top, bottom, left, right = cv.pads
    if top == bottom and left == right:
        return x, (top, left), ""
    return _pad(cv, x), (0, 0), "asymmetric SAME padding applied to the input beforehand (not timed)"


def torch_f32(cv: bs.Conv2d, x: np.ndarray, w: np.ndarray, want: np.ndarray) -> Contender:
    """``F.conv2d`` on channels_last float32 tensors (NHWC memory, NCHW logical shape)."""
    torch = _torch()
    _float_exact(cv, x, w)
    xin, padding, note = _torch_input(cv, x)
    xt = torch.from_numpy(xin.astype(np.float32)).permute(0, 3, 1, 2)  # channels_last view, no copy
    wt = torch.from_numpy(w.astype(np.float32)).permute(0, 3, 1, 2)
    conv2d = torch.nn.functional.conv2d

    def run() -> object:
        with torch.inference_mode():
            return conv2d(xt, wt, stride=cv.strides, padding=padding)

    def to_numpy(y: object) -> np.ndarray:
        return y.permute(0, 2, 3, 1).numpy()

    _check_exact("torch-f32", to_numpy(run()).astype(np.int32), want)
    return Contender(name="torch-f32", run=run, check="exact (integer sums < 2^24)", note=note,
                     set_threads=torch.set_num_threads, to_numpy=to_numpy)


def torch_int8(cv: bs.Conv2d, x: np.ndarray, w: np.ndarray, want: np.ndarray,
               *, engine: str = "fbgemm") -> Contender:
    """PyTorch's quantized conv: quint8 activations x qint8 weights (prepacked), quint8 output."""
    torch = _torch()
    if engine not in torch.backends.quantized.supported_engines:
        raise PeerUnavailable(f"quantized engine {engine!r} not in this torch build")
    if int(x.max(initial=0)) > 127 or int(w.max(initial=0)) > 127:
        raise PeerUnavailable("values do not fit u7 x s8")
    torch.backends.quantized.engine = engine
    xin, padding, note = _torch_input(cv, x)
    with warnings.catch_warnings():  # "quantized tensor creation is deprecated"
        warnings.simplefilter("ignore", UserWarning)
        # quint8 with scale 1, zero point 0 *is* our uint8 data: a reinterpretation, no quantization.
        xq = torch._make_per_tensor_quantized_tensor(torch.from_numpy(np.ascontiguousarray(xin)), 1.0, 0)
        xq = xq.permute(0, 3, 1, 2)  # channels_last
        wf = torch.from_numpy(w.astype(np.float32)).permute(0, 3, 1, 2).contiguous()
        wq = torch.quantize_per_tensor(wf, 1.0, 0, torch.qint8)
        conv = torch.ao.nn.quantized.Conv2d(cv.cin, cv.cout, (cv.kh, cv.kw), stride=cv.strides,
                                            padding=padding, bias=False)
        conv.set_weight_bias(wq, None)  # prepacks the weights for the engine
    bound = max(1, cv.gemm_k * int(x.max(initial=0)) * int(w.max(initial=0)))
    conv.scale, conv.zero_point = bound / 255, 0  # AND mode: outputs >= 0; nothing saturates

    def run() -> object:
        torch.backends.quantized.engine = engine
        with torch.inference_mode():
            return conv(xq)

    def to_numpy(y: object) -> np.ndarray:
        return y.dequantize().permute(0, 2, 3, 1).numpy()

    got = to_numpy(run()).astype(np.float64)
    if got.shape != want.shape:
        raise PeerUnavailable(f"torch-int8 returned shape {got.shape}, expected {want.shape}")
    err = np.abs(got - want)
    if err.max(initial=0) > conv.scale * 1.001 or err.mean() > conv.scale * 0.5:
        raise PeerUnavailable(f"torch-int8 is off by up to {err.max():.1f} "
                              f"(one output step is {conv.scale:.2f})")
    note = "; ".join(filter(None, [note, "activations reinterpreted as quint8 and output left quint8 "
                                   "(neither quantize nor dequantize timed)"]))
    return Contender(name=f"torch-int8-{engine}", run=run, note=note, set_threads=torch.set_num_threads,
                     to_numpy=to_numpy,
                     check="within one 8-bit output step (bound/255): it requantizes its sums")


# --- TVM ------------------------------------------------------------------------------------------

TVM_PACK = 32  # uint32 words: TVM's default pack_dtype


def _tvm() -> object:
    # The worker pool is sized once from TVM_NUM_THREADS; set_threads() then picks 1..that many.
    os.environ.setdefault("TVM_NUM_THREADS", str(os.cpu_count() or 1))
    try:
        import tvm
        from tvm import te, topi  # noqa: F401
    except ImportError:
        raise PeerUnavailable("apache-tvm not installed (pip install -e '.[peers]')") from None
    return tvm


class _PackedFilter:
    """TVM 0.27's ``bitserial_conv2d_nhwc`` takes a prepacked 5-d filter but reads its output
    channel count from the wrong axis (``shape[4]``, the bit axis of the layout it indexes,
    [kh, kw, cin/32, cout, wbits]). This view reports the shape it expects and forwards indexing
    to the real tensor, so the filter is packed once (not in the timed call), in the very layout
    TVM's own in-function packing produces."""

    def __init__(self, tensor: object) -> None:
        self.tensor = tensor
        kh, kw, cq, cout, bits = tensor.shape
        self.shape = (kh, kw, cq, bits, cout)

    def __getitem__(self, index: object) -> object:
        return self.tensor[index]


def _tvm_set_threads(tvm: object) -> Callable[[int], None]:
    config = tvm.get_global_func("runtime.config_threadpool")

    def set_threads(n: int) -> None:
        mask = os.sched_getaffinity(0)
        config(1, n)  # 1 = "big cores" mode; it pins the calling thread too: undo that
        os.sched_setaffinity(0, mask)

    return set_threads


@functools.lru_cache(maxsize=8)
def _tvm_compile(cv: bs.Conv2d, mcpu: str) -> tuple[object, object, tuple[int, ...]]:
    """The compiled conv and weight-packing functions of ``cv`` and the packed filter's shape."""
    tvm = _tvm()
    from tvm import te, topi
    from tvm.topi.nn.bitserial_util import bitpack

    data = te.placeholder(cv.x_shape, dtype="uint8", name="data")
    kernel = te.placeholder((cv.kh, cv.kw, cv.cin, cv.cout), dtype="uint8", name="kernel")
    packed = bitpack(kernel, cv.wbits, pack_axis=2, bit_axis=4, pack_type=f"uint{TVM_PACK}")
    shape = tuple(int(s) for s in packed.shape)
    filt = te.placeholder(shape, dtype=f"uint{TVM_PACK}", name="filter_q")
    top, bottom, left, right = cv.pads
    pads = (top, left, bottom, right)  # TVM's order
    out = topi.nn.bitserial_conv2d_nhwc(
        data, _PackedFilter(filt), cv.strides, pads, cv.abits, cv.wbits, pack_dtype=f"uint{TVM_PACK}",
        out_dtype="int32", unipolar=False)
    target = tvm.target.Target({"kind": "llvm", "mcpu": mcpu})
    sch = tvm.s_tir.Schedule(tvm.IRModule({"main": te.create_prim_func([data, filt, out])}))
    loops = sch.get_loops(sch.get_sblock("Conv2dOutput"))
    sch.parallel(sch.fuse(loops[0], loops[1], loops[2]))  # batch x rows x columns
    conv = tvm.compile(sch.mod, target=target)["main"]
    pack_w = tvm.compile(tvm.IRModule({"main": te.create_prim_func([kernel, packed])}), target=target)["main"]
    return conv, pack_w, shape


def tvm_bitserial(cv: bs.Conv2d, x: np.ndarray, w: np.ndarray, want: np.ndarray, *,
                  mcpu: str | None = None) -> Contender:
    """TVM's generic bit-serial NHWC conv (AND form), compiled with LLVM for ``mcpu`` (default:
    this machine's CPU)."""
    tvm = _tvm()
    mcpu = mcpu or tvm.target.codegen.llvm_get_system_cpu()
    if cv.cin % TVM_PACK:
        raise PeerUnavailable(f"cin={cv.cin} is not a multiple of TVM's {TVM_PACK}-bit packing word")
    conv, pack_w, packed_shape = _tvm_compile(cv, mcpu)

    dev = tvm.cpu()
    wq = tvm.runtime.tensor(np.zeros(packed_shape, np.uint32), dev)
    w_hwio = np.ascontiguousarray(w.transpose(1, 2, 3, 0))  # TVM's filter is [kh, kw, cin, cout]
    pack_w(tvm.runtime.tensor(w_hwio, dev), wq)
    xa = tvm.runtime.tensor(np.ascontiguousarray(x), dev)
    ya = tvm.runtime.tensor(np.zeros(cv.y_shape, np.int32), dev)

    def run() -> object:
        conv(xa, wq, ya)
        return ya

    run()
    _check_exact("tvm-bitserial", ya.numpy(), want)
    return Contender(name="tvm-bitserial", run=run, check="exact", set_threads=_tvm_set_threads(tvm),
                     to_numpy=lambda y: y.numpy(),
                     note=f"llvm -mcpu={mcpu}, weights packed once, activation packing timed")


PEERS = ("numpy-f32", "torch-f32", "torch-int8", "tvm-bitserial")


def build_peers(cv: bs.Conv2d, x: np.ndarray, w: np.ndarray, want: np.ndarray, *,
                names: tuple[str, ...] = PEERS, mcpu: str | None = None,
                ) -> tuple[list[Contender], dict[str, str]]:
    """The peers in ``names`` that work here (answers checked), and the reasons of those that do
    not. ``cv`` must be an AND-mode ``bs.Conv2d``: the peers multiply the stored values."""
    builders: dict[str, Callable[[], Contender]] = {
        "numpy-f32": lambda: numpy_f32(cv, x, w, want),
        "torch-f32": lambda: torch_f32(cv, x, w, want),
        "torch-int8": lambda: torch_int8(cv, x, w, want),
        "tvm-bitserial": lambda: tvm_bitserial(cv, x, w, want, mcpu=mcpu),
    }
    unknown = sorted(set(names) - set(builders))
    if unknown:
        raise ValueError(f"unknown peers {unknown}; available: {', '.join(PEERS)}")
    if cv.mode != "and":
        raise ValueError(f"the peers compute the 'and' mode (x @ w as stored), not {cv.mode!r}")
    ready: list[Contender] = []
    skipped: dict[str, str] = {}
    for name in names:
        try:
            ready.append(builders[name]())
        except PeerUnavailable as exc:
            skipped[name] = str(exc)
    return ready, skipped
