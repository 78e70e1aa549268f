"""FP8 training library: FP32 gradient checks, the FP8 wiring, loss scaling, master weights, a tiny run."""

from __future__ import annotations

import ml_dtypes
import numpy as np
import pytest

from bitsearch.numerics import dequantize, quantize
from bitsearch.train import (
    FP32,
    SGD,
    Conv2d,
    Dataset,
    Flatten,
    FloorSchedule,
    Linear,
    LossScaler,
    Numerics,
    Param,
    Recipe,
    ReLU,
    Sequential,
    TrainConfig,
    digits,
    fp8_matmul,
    gemm_backend,
    mlp,
    reference_fp8_matmul,
    softmax_cross_entropy,
    train,
)


def grad_check(layer, x: np.ndarray, n_probe: int = 12, eps: float = 1e-2) -> None:
    """Central differences of L = sum(R * layer(x)) against backward, for x and every parameter."""
    rng = np.random.default_rng(1)
    y = layer.forward(x)
    r = rng.standard_normal(y.shape).astype(np.float32)

    def loss() -> float:
        return float((layer.forward(x).astype(np.float64) * r).sum())

    layer.forward(x)
    dx = layer.backward(r)
    targets = [(x, dx)] + [(p.value, p.grad) for p in layer.params()]
    for arr, grad in targets:
        assert grad.shape == arr.shape
        for flat in rng.choice(arr.size, size=min(n_probe, arr.size), replace=False):
            i = np.unravel_index(flat, arr.shape)
            old = arr[i]
            arr[i] = old + eps
            up = loss()
            arr[i] = old - eps
            down = loss()
            arr[i] = old
            num = (up - down) / (2 * eps)
            assert abs(num - grad[i]) <= 2e-2 * max(1.0, abs(num)), (i, num, grad[i])


def test_linear_and_relu_gradients() -> None:
    rng = np.random.default_rng(0)
    grad_check(Linear(7, 5, rng=rng), rng.standard_normal((4, 7)).astype(np.float32))
    x = rng.standard_normal((4, 9)).astype(np.float32)
    x[np.abs(x) < 0.05] = 0.5  # keep finite differences away from the kink
    grad_check(ReLU(), x)
    grad_check(Flatten(), rng.standard_normal((3, 2, 2, 2)).astype(np.float32))


@pytest.mark.parametrize(("kernel", "stride", "padding", "shape"), [
    (3, 1, "SAME", (2, 5, 6, 3)), (3, 2, "SAME", (2, 7, 5, 2)), (2, 2, "VALID", (1, 5, 5, 2)),
    ((1, 5), 2, "SAME", (2, 1, 11, 2)), (3, 1, 1, (1, 4, 4, 1)),
])
def test_conv2d_gradients(kernel, stride, padding, shape) -> None:
    rng = np.random.default_rng(2)
    conv = Conv2d(shape[3], 3, kernel=kernel, stride=stride, padding=padding, rng=rng)
    grad_check(conv, rng.standard_normal(shape).astype(np.float32))


def test_conv2d_matches_direct_convolution() -> None:
    rng = np.random.default_rng(3)
    x = rng.standard_normal((2, 6, 5, 3)).astype(np.float32)
    conv = Conv2d(3, 4, kernel=3, stride=2, padding=1, rng=rng)
    w = conv.w.value.astype(np.float64)
    xp = np.pad(x.astype(np.float64), ((0, 0), (1, 1), (1, 1), (0, 0)))
    ho, wo = (6 + 2 - 3) // 2 + 1, (5 + 2 - 3) // 2 + 1
    want = np.zeros((2, ho, wo, 4))
    for i in range(ho):
        for j in range(wo):
            patch = xp[:, 2 * i:2 * i + 3, 2 * j:2 * j + 3, :]
            want[:, i, j, :] = np.einsum("nhwc,ohwc->no", patch, w)
    assert np.allclose(conv.forward(x), want, atol=1e-5)


def test_softmax_cross_entropy_gradient() -> None:
    rng = np.random.default_rng(4)
    z = rng.standard_normal((5, 4)).astype(np.float64)
    labels = np.array([0, 3, 1, 1, 2])
    _, g = softmax_cross_entropy(z.astype(np.float32), labels)
    for i in range(5):
        for j in range(4):
            zp, zm = z.copy(), z.copy()
            zp[i, j] += 1e-4
            zm[i, j] -= 1e-4
            num = (softmax_cross_entropy(zp, labels)[0] - softmax_cross_entropy(zm, labels)[0]) / 2e-4
            assert abs(num - g[i, j]) < 1e-4
    with pytest.raises(ValueError, match="labels"):
        softmax_cross_entropy(z, labels[:3])


def test_fp8_matmul_fallback_and_backend() -> None:
    rng = np.random.default_rng(5)
    for fa, fb in (("e5m2", "e5m2"), ("e4m3", "e5m2"), ("e4m3", "e4m3")):
        a = quantize(rng.standard_normal((7, 33)).astype(np.float32) * 30, fa)
        b = quantize(rng.standard_normal((5, 33)).astype(np.float32), fb)
        want = a.astype(np.float64) @ b.astype(np.float64).T
        ref = reference_fp8_matmul(a, b)
        assert ref.dtype == np.float32 and np.allclose(ref, want, rtol=1e-6, atol=1e-4)
        got = fp8_matmul(a, b)  # bitsearch.ops when importable: FP32 sums in another order
        assert got.shape == (7, 5) and np.allclose(got, want, rtol=1e-5, atol=1e-3)
    assert gemm_backend() in ("bitsearch.ops", "numpy-fallback")
    with pytest.raises(ValueError, match="FP8"):
        reference_fp8_matmul(np.zeros((2, 3), np.float32), np.zeros((2, 3), np.float32))
    with pytest.raises(ValueError, match=r"\[m, k\]"):
        reference_fp8_matmul(quantize(np.zeros((2, 3)), "e5m2"), quantize(np.zeros((2, 4)), "e5m2"))


@pytest.mark.parametrize("fwd", ["e5m2", "e4m3"])
def test_fp8_linear_quantizes_every_gemm(fwd: str) -> None:
    """With nearest rounding everywhere, an FP8 layer equals FP32 math on quantized operands, re-rounded."""
    recipe = Recipe(fwd=fwd, bwd="e5m2", stochastic_grads=False)
    ctx = Numerics(recipe, seed=0)
    rng = np.random.default_rng(6)
    lin = Linear(19, 6, rng=rng, fp8=True, ctx=ctx, master_fp16=True)
    lin.b.value = rng.standard_normal(6).astype(np.float16)
    x = rng.standard_normal((9, 19)).astype(np.float32)
    fdt = np.dtype(ml_dtypes.float8_e5m2 if fwd == "e5m2" else ml_dtypes.float8_e4m3fn)
    y = lin.forward(x)
    xq, wq = lin._saved
    assert xq.dtype == fdt and wq.dtype == fdt  # what the GEMM sees is FP8
    w32 = lin.w.value.astype(np.float32)
    assert not np.array_equal(dequantize(wq), w32)  # FP16 master weights are not all FP8 values
    assert np.array_equal(dequantize(wq), dequantize(quantize(w32, fwd)))
    # float64 references: FP8 products are exact, so only a sum landing within ~1e-7 of a rounding
    # boundary could differ from the FP32-accumulated GEMM (fixed data: none does).
    qx, qw = (dequantize(quantize(v, fwd)).astype(np.float64) for v in (x, w32))
    want_y = dequantize(quantize((qx @ qw.T + lin.b.value.astype(np.float64)).astype(np.float32), fwd))
    assert np.array_equal(y, want_y)
    g = rng.standard_normal((9, 6)).astype(np.float32) * 1e-3
    dx = lin.backward(g)
    gq = dequantize(quantize(g, "e5m2")).astype(np.float64)
    for got, exact in ((dx, gq @ qw), (lin.w.grad, gq.T @ qx)):
        assert np.array_equal(got, dequantize(quantize(exact.astype(np.float32), "e5m2")))
    assert not np.array_equal(lin.w.grad, dequantize(quantize((gq.T @ x).astype(np.float32), "e5m2")))


def test_fp8_gradients_overflow_to_inf() -> None:
    recipe = Recipe(fwd="e5m2", bwd="e5m2")
    lin = Linear(4, 3, rng=np.random.default_rng(0), fp8=True, ctx=Numerics(recipe), master_fp16=True)
    lin.forward(np.ones((2, 4), np.float32))
    with np.errstate(invalid="ignore", over="ignore"):
        lin.backward(np.full((2, 3), 1e6, np.float32))  # beyond E5M2's 57344: the scaler must see it
    assert not np.isfinite(lin.w.grad).all()


def test_model_precision_layout() -> None:
    recipe = Recipe()
    net = mlp((8, 8, 1), 10, recipe=recipe, ctx=Numerics(recipe), rng=np.random.default_rng(0))
    weights = [layer for layer in net.layers if hasattr(layer, "w")]
    assert [w.fp8 for w in weights] == [False, True, True, False]
    assert [w.w.value.dtype for w in weights] == [np.float32, np.float16, np.float16, np.float32]
    all8 = recipe.replace(first_last_fp32=False, master_fp16=False)
    net = mlp((8, 8, 1), 10, recipe=all8, ctx=Numerics(all8), rng=np.random.default_rng(0))
    assert all(layer.fp8 and layer.w.value.dtype == np.float32 for layer in net.layers if hasattr(layer, "w"))


def test_loss_scaler_dynamic_and_enhanced() -> None:
    s = LossScaler(mode="dynamic", init_scale=1024.0, growth_interval=3)
    assert not s.update(found_inf=True, epoch=0, step=0) and s.scale == 512.0
    assert [s.update(found_inf=False, epoch=0, step=i) for i in (1, 2)] == [True, True] and s.scale == 512.0
    assert s.update(found_inf=False, epoch=0, step=3) and s.scale == 1024.0
    s.update(found_inf=False, epoch=0, step=4)
    s.update(found_inf=True, epoch=0, step=5)  # an overflow resets the clean-step run
    s.update(found_inf=False, epoch=0, step=6)
    s.update(found_inf=False, epoch=0, step=7)
    assert s.scale == 512.0 and s.skipped == 2
    for i in range(20):
        s.update(found_inf=True, epoch=0, step=8 + i)
    assert s.scale < 1.0  # dynamic alone: rare-but-repeated overflows drive the scale down

    floor = FloorSchedule(milestones=((0, 4.0), (2, 64.0), (5, 256.0)))
    e = LossScaler(mode="enhanced", init_scale=32.0, growth_interval=1000, floor=floor)
    for i in range(10):
        e.update(found_inf=True, epoch=1, step=i)
    assert e.scale == 4.0  # halving stops at the floor
    e.update(found_inf=False, epoch=2.5, step=11)
    assert e.scale == 64.0  # the floor schedule raises the minimum
    e.update(found_inf=True, epoch=6, step=12)
    assert e.scale == 256.0 and e.current_floor(epoch=6, step=12) == 256.0
    steps = FloorSchedule(milestones=((100, 8.0),), unit="step")
    assert steps.floor(epoch=50, step=99) == 1.0 and steps.floor(epoch=0, step=100) == 8.0

    n = LossScaler(mode="none", init_scale=1024.0)
    assert n.scale == 1.0 and not n.update(found_inf=True, epoch=0, step=0) and n.scale == 1.0
    with pytest.raises(ValueError, match="mode"):
        LossScaler(mode="static")
    with pytest.raises(ValueError, match="milestones"):
        FloorSchedule(milestones=((5, 2.0), (1, 4.0)))


def test_recipe_validation() -> None:
    with pytest.raises(ValueError, match="fwd"):
        Recipe(fwd="fp16")
    with pytest.raises(ValueError, match="both"):
        Recipe(fwd="e5m2", bwd=None)
    with pytest.raises(ValueError, match="loss_scaling"):
        Recipe(loss_scaling="static")
    with pytest.raises(ValueError, match="model"):
        TrainConfig(model="resnet")
    with pytest.raises(ValueError, match="padding"):
        Conv2d(1, 1, kernel=3, padding="FULL", rng=np.random.default_rng(0))


def test_fp16_master_weights_stochastic_update_keeps_small_steps() -> None:
    """lr*g below half an FP16 ulp: nearest never moves the weight, stochastic rounding does on average."""
    n = 20000
    for sr, moved in ((True, True), (False, False)):
        recipe = Recipe(stochastic_master=sr)
        p = Param(np.ones(n, np.float16), name="w")
        p.grad = np.full(n, 1e-4, np.float32)
        opt = SGD([p], momentum=0.0, ctx=Numerics(recipe, seed=1))
        opt.step(lr=1.0)
        mean = p.value.astype(np.float64).mean()
        assert p.value.dtype == np.float16
        if moved:
            assert abs(mean - (1 - 1e-4)) < 5 * 2**-11 * np.sqrt(0.2 / n)
        else:
            assert mean == 1.0


def _small_digits() -> Dataset:
    d = digits()
    return Dataset(name="digits-small", x_train=d.x_train[:400], y_train=d.y_train[:400],
                   x_test=d.x_test[:200], y_test=d.y_test[:200])


@pytest.mark.parametrize("model", ["mlp", "cnn"])
def test_tiny_fp8_training_run_learns(model: str) -> None:
    data = _small_digits()
    recipe = Recipe(name="fp8", scale_floor=FloorSchedule(milestones=((0, 8.0),)))
    cfg = TrainConfig(model=model, epochs=3, batch_size=32, lr=0.05, seed=0)
    h = train(data, recipe, cfg, progress=False)
    assert h.train_loss[-1] < 0.6 * h.train_loss[0] and h.test_acc[-1] > 70
    assert h.gemm_backend == gemm_backend() and len(h.loss_scale) == 3
    h2 = train(data, recipe, cfg, progress=False)
    assert h2.test_loss == h.test_loss  # seeded stochastic rounding: reproducible runs
    h32 = train(data, FP32, cfg, progress=False)
    assert h32.test_loss != h.test_loss  # FP8 really changes the arithmetic


def test_sequential_params() -> None:
    rng = np.random.default_rng(0)
    net = Sequential([Flatten(), Linear(4, 3, rng=rng), ReLU(), Linear(3, 2, rng=rng)])
    assert [p.name for p in net.params()] == ["linear.w", "linear.b", "linear.w", "linear.b"]
    assert net.forward(np.ones((2, 2, 2), np.float32)).shape == (2, 2)
