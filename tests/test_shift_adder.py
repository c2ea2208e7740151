import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from hwnas.spaces.ops import adder as adder_mod
from hwnas.spaces.ops.adder import AdderConv2d, adder_conv2d, adder_conv2d_reference
from hwnas.spaces.ops.shift import (shift_decompose, shift_exponent_range, shift_quantize,
                                    shift_weight)
from hwnas.utils.memory import peak_memory_bytes

# ---------------------------------------------------------------------------------------- shift


def _log_uniform(n: int, lo: float, hi: float, seed: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    mags = torch.exp2(torch.empty(n).uniform_(lo, hi, generator=gen))
    signs = torch.where(torch.rand(n, generator=gen) < 0.5, -1.0, 1.0)
    return mags * signs


def test_exponent_range():
    assert shift_exponent_range(2) == (0, 0)
    assert shift_exponent_range(3) == (-2, 0)
    assert shift_exponent_range(4) == (-6, 0)
    assert shift_exponent_range(8) == (-126, 0)
    assert shift_exponent_range(16) == shift_exponent_range(32) == (-126, 0)
    with pytest.raises(ValueError):
        shift_exponent_range(1)


@pytest.mark.parametrize("bits", [2, 3, 4, 6, 8, 32])
def test_shift_values_are_signed_powers_of_two(bits):
    w = torch.cat([_log_uniform(20000, -135.0, 3.0, bits), torch.zeros(3), torch.randn(1000)])
    q = shift_quantize(w, bits)
    p_min, p_max = shift_exponent_range(bits)
    nz = q[q != 0]
    mantissa, exponent = torch.frexp(nz)
    assert torch.all(mantissa.abs() == 0.5)  # exactly +-2^p
    p = exponent - 1
    assert int(p.min()) >= p_min and int(p.max()) <= p_max
    assert torch.equal(torch.log2(nz.abs()), torch.log2(nz.abs()).round())
    assert torch.all((torch.sign(nz) == torch.sign(w[q != 0])))
    magnitudes = torch.unique(nz.abs())
    assert len(magnitudes) <= 2 ** (min(bits, 8) - 1) - 1
    assert len(magnitudes) == p_max - p_min + 1  # this wide sample uses every level
    assert bool((q == 0).any())  # and the zero code


def test_shift_hand_made():
    w = torch.tensor([0.3, -0.7, 0.75, 1e-6, 0.0, 3.0, -0.02, 0.01, -0.0])
    expected = torch.tensor([0.25, -0.5, 1.0, 0.0, 0.0, 1.0, -2.0**-6, 0.0, 0.0])
    assert torch.equal(shift_quantize(w, 4), expected)  # p_min = -6: 0.01 -> 2^-6.6 -> 0
    assert torch.equal(shift_quantize(w, 8)[7], torch.tensor(2.0**-7))
    ternary = shift_quantize(torch.tensor([0.3, -0.7, 0.75, -5.0, 0.71]), 2)
    assert torch.equal(ternary, torch.tensor([0.0, 0.0, 1.0, -1.0, 1.0]))


def test_shift_weight_ste_and_forward_bit_exact():
    w = (torch.randn(64, 16, 3, 3) * 0.3).requires_grad_()
    y = shift_weight(w, 4)
    assert torch.equal(y, shift_quantize(w.detach(), 4))
    upstream = torch.randn_like(y)
    y.backward(upstream)
    assert torch.equal(w.grad, upstream)
    with torch.no_grad():
        assert torch.equal(shift_weight(w, 4), y)


@pytest.mark.parametrize("bits", [2, 4, 8])
def test_shift_decompose_reconstructs(bits):
    wq = shift_quantize(torch.cat([_log_uniform(5000, -130.0, 2.0, 7), torch.zeros(2)]), bits)
    sign, exponent = shift_decompose(wq)
    assert sign.dtype == torch.int8 and exponent.dtype == torch.int8
    assert set(sign.unique().tolist()) <= {-1, 0, 1}
    assert torch.equal(sign * 2.0**exponent, wq)
    with pytest.raises(ValueError):
        shift_decompose(torch.tensor([0.3]))


# ---------------------------------------------------------------------------------------- adder

# (N, Cin, Cout, H, W, kernel, stride, padding, groups)
CASES = [
    (2, 4, 6, 7, 8, 3, 1, 1, 1),
    (2, 4, 6, 8, 9, 3, 2, 1, 2),
    (2, 5, 5, 7, 8, 3, 1, 1, 5),  # depthwise
    (2, 6, 12, 7, 7, 3, 2, 1, 6),  # depthwise with channel multiplier 2
    (1, 3, 4, 9, 9, 5, 2, 2, 1),
    (2, 6, 6, 6, 7, 2, 3, 0, 3),
    (2, 4, 4, 5, 5, 1, 1, 0, 1),
    (2, 3, 4, 6, 7, (3, 1), (1, 2), (1, 0), 1),
]


def _make(case, seed=0, dtype=torch.float32):
    n, cin, cout, h, w, k, s, p, g = case
    kh, kw = (k, k) if isinstance(k, int) else k
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(n, cin, h, w, generator=gen, dtype=dtype)
    wt = torch.randn(cout, cin // g, kh, kw, generator=gen, dtype=dtype) * 0.5
    return x, wt, s, p, g


@pytest.mark.parametrize("case", CASES)
def test_adder_forward_matches_reference(case):
    x, w, s, p, g = _make(case)
    out = adder_conv2d(x, w, s, p, g)
    ref = adder_conv2d_reference(x, w, s, p, g)
    assert out.shape == ref.shape
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-6)
    x64, w64 = x.double(), w.double()
    torch.testing.assert_close(adder_conv2d(x64, w64, s, p, g),
                               adder_conv2d_reference(x64, w64, s, p, g), atol=1e-10, rtol=0)


@pytest.mark.parametrize("case", CASES)
def test_adder_chunked_path_agrees(case, monkeypatch):
    x, w, s, p, g = _make(case, seed=1)
    whole = adder_conv2d(x, w, s, p, g)
    xg, wg = x.clone().requires_grad_(), w.clone().requires_grad_()
    gout = torch.randn_like(whole)
    adder_conv2d(xg, wg, s, p, g, eta=None).backward(gout)
    monkeypatch.setattr(adder_mod, "max_chunk_elements", 5)
    torch.testing.assert_close(adder_conv2d(x, w, s, p, g), whole, atol=1e-5, rtol=1e-6)
    xc, wc = x.clone().requires_grad_(), w.clone().requires_grad_()
    adder_conv2d(xc, wc, s, p, g, eta=None).backward(gout)
    torch.testing.assert_close(xc.grad, xg.grad, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(wc.grad, wg.grad, atol=1e-5, rtol=1e-5)


def test_adder_training_and_eval_forward_bit_exact():
    x, w, s, p, g = _make(CASES[0])
    with torch.no_grad():
        fixed = adder_conv2d(x, w, s, p, g)
    trained = adder_conv2d(x.requires_grad_(), w.requires_grad_(), s, p, g)
    assert torch.equal(trained, fixed)


def _grads_by_unfold(x, w, gout, stride, padding, groups, clip=True):
    """AdderNet's gradients (eq. 5 and 6) computed independently, on the full unfolded patches."""
    n, c, h, wd = x.shape
    o, cg, kh, kw = w.shape
    gr, og = groups, o // groups
    cols = F.unfold(x, (kh, kw), padding=padding, stride=stride)  # (N, C*kh*kw, L)
    length = cols.shape[-1]
    cols = cols.view(n, gr, cg * kh * kw, length)
    wf = w.reshape(gr, og, cg * kh * kw)
    gf = gout.reshape(n, gr, og, length)
    diff = cols[:, :, None] - wf[None, :, :, :, None]  # (N, G, Og, M, L): x_patch - w
    grad_w = (gf[:, :, :, None] * diff).sum(dim=(0, 4)).reshape(w.shape)
    d_patch = (-diff).clamp(-1, 1) if clip else -diff  # HardTanh(w - x_patch)
    gcols = (gf[:, :, :, None] * d_patch).sum(dim=2)  # (N, G, M, L)
    grad_x = F.fold(gcols.reshape(n, c * kh * kw, length), (h, wd), (kh, kw),
                    padding=padding, stride=stride)
    return grad_x, grad_w


@pytest.mark.parametrize("case", CASES)
def test_adder_gradients_follow_the_paper(case):
    x, w, s, p, g = _make(case, seed=2, dtype=torch.float64)
    w = w * 4  # |w - x| > 1 in many places, < 1 in others: the HardTanh clipping matters
    xg, wg = x.clone().requires_grad_(), w.clone().requires_grad_()
    out = adder_conv2d(xg, wg, s, p, g, eta=None)
    gout = torch.randn_like(out)
    out.backward(gout)
    grad_x, grad_w = _grads_by_unfold(x, w, gout, s, p, g)
    torch.testing.assert_close(wg.grad, grad_w, atol=1e-9, rtol=1e-9)
    torch.testing.assert_close(xg.grad, grad_x, atol=1e-9, rtol=1e-9)
    unclipped, _ = _grads_by_unfold(x, w, gout, s, p, g, clip=False)
    assert (unclipped - grad_x).abs().max() > 1e-3  # the case did exercise the clipping


@pytest.mark.parametrize("eta", [0.1, 0.02])
def test_adder_adaptive_gradient_scaling(eta):
    x, w, s, p, g = _make(CASES[1], seed=3)
    gout = torch.randn_like(adder_conv2d(x, w, s, p, g))
    grads = {}
    for key in (None, eta):
        wg = w.clone().requires_grad_()
        adder_conv2d(x, wg, s, p, g, eta=key).backward(gout)
        grads[key] = wg.grad
    k = w.numel()
    scaled, raw = grads[eta], grads[None]
    assert math.isclose(float(scaled.norm()), eta * math.sqrt(k), rel_tol=1e-4)
    torch.testing.assert_close(scaled / scaled.norm(), raw / raw.norm(), atol=1e-6, rtol=1e-4)
    wz = w.clone().requires_grad_()
    adder_conv2d(x, wz, s, p, g, eta=0).backward(gout)  # 0 disables the scaling too
    torch.testing.assert_close(wz.grad, raw)


@pytest.mark.parametrize("args", [
    (8, 16, 3, 1, 1, 1), (8, 16, 3, 2, 1, 1), (8, 8, 3, 2, 1, 8), (6, 12, 5, 1, 2, 3),
    (4, 4, 1, 1, 0, 1), (4, 6, (3, 1), (2, 1), (1, 0), 2),
])
def test_adder_module_shape_matches_conv(args):
    cin, cout, k, s, p, g = args
    x = torch.randn(2, cin, 11, 10)
    layer = AdderConv2d(cin, cout, k, stride=s, padding=p, groups=g)
    conv = nn.Conv2d(cin, cout, k, stride=s, padding=p, groups=g, bias=False)
    assert layer.weight.shape == conv.weight.shape
    bound = 1 / math.sqrt(conv.weight[0].numel())  # kaiming_uniform(a=sqrt(5)) bound
    assert float(layer.weight.detach().abs().max()) <= bound
    with torch.no_grad():
        assert layer(x).shape == conv(x).shape
    layer(x).sum().backward()  # the fixed module trains too
    assert layer.weight.grad is not None


def test_adder_rejects_bad_groups():
    with pytest.raises(ValueError):
        adder_conv2d(torch.randn(1, 4, 5, 5), torch.randn(6, 3, 3, 3), groups=1)
    with pytest.raises(ValueError):
        adder_conv2d(torch.randn(1, 4, 5, 5), torch.randn(3, 2, 3, 3), groups=2)


# --------------------------------------------------------------------------------------- memory


def test_peak_memory_counts_tensor_allocations():
    def one():
        a = torch.ones(1_000_000)
        return float(a[0])

    def two_in_sequence():
        a = torch.ones(1_000_000)
        del a
        b = torch.ones(1_000_000)
        return float(b[0])

    single = peak_memory_bytes(one)
    assert single >= 4_000_000
    assert peak_memory_bytes(two_in_sequence) < 2.5 * single

    def two_together():
        a, b = torch.ones(1_000_000), torch.ones(1_000_000)
        return float(a[0] + b[0])

    assert peak_memory_bytes(two_together) >= 8_000_000


def test_adder_memory_within_4x_of_conv(one_thread):
    torch.manual_seed(0)
    x = torch.randn(8, 32, 16, 16, requires_grad=True)
    w = torch.randn(64, 32, 3, 3, requires_grad=True)

    def conv():
        x.grad = w.grad = None
        F.conv2d(x, w, padding=1).sum().backward()

    def adder():
        x.grad = w.grad = None
        adder_conv2d(x, w, padding=1).sum().backward()

    conv(), adder()  # one-time allocations (kernels' caches) are not the layer's memory
    conv_peak, adder_peak = peak_memory_bytes(conv), peak_memory_bytes(adder)
    # the naive difference tensor alone would be 8*64*288*256*4 B = 151 MB, ~100x the conv peak
    assert conv_peak > 0
    assert adder_peak <= 4 * conv_peak, (adder_peak, conv_peak)
