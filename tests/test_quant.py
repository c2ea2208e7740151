import math

import pytest
import torch

from hwnas.spaces.ops.quant import ElasticLSQ, fake_quantize, lsq, qrange


@pytest.mark.parametrize("bits", [2, 3, 4, 8])
@pytest.mark.parametrize("signed", [True, False])
def test_at_most_two_to_the_bits_levels(bits, signed):
    torch.manual_seed(bits)
    q = ElasticLSQ((bits, 32), signed=signed)
    q.active_bits = bits
    x = torch.randn(20000) * 3
    y = q(x)
    levels = torch.unique(y)
    assert len(levels) <= 2**bits
    qn, qp = qrange(bits, signed)
    ints = torch.round(levels / q.step(bits).detach())
    assert ints.min() >= -qn and ints.max() <= qp
    ramp = torch.linspace(-20, 20, 50000) if signed else torch.linspace(0, 20, 50000)
    with torch.no_grad():  # a step that spans a dense ramp: every level is used, and no more
        q.steps[f"b{bits}"].fill_(10.0 / qp)
    assert len(torch.unique(q(ramp))) == 2**bits


def test_float_bits_pass_through():
    q = ElasticLSQ((4, 32), signed=True)
    q.active_bits = 32
    x = torch.randn(10)
    assert torch.equal(q(x), x)


def test_one_step_per_bitwidth_and_data_driven_init():
    q = ElasticLSQ((4, 8, 32), signed=True)
    x = torch.randn(4096)
    for bits in (4, 8):
        q.active_bits = bits
        q(x)
        qp = 2 ** (bits - 1) - 1
        assert q.step(bits).item() == pytest.approx(2 * x.abs().mean().item() / math.sqrt(qp), rel=1e-5)
    assert q.step(4).item() != q.step(8).item()


def test_lsq_forward_equals_fake_quantize_and_gradients_match_the_paper():
    torch.manual_seed(0)
    x = (torch.randn(64) * 2).requires_grad_()
    step = torch.tensor([0.3], requires_grad=True)
    qn, qp = qrange(3, True)
    y = lsq(x, step, qn, qp)
    assert torch.equal(y.detach(), fake_quantize(x.detach(), step.detach(), qn, qp))
    y.sum().backward()
    v = x.detach() / 0.3
    inside = (v >= -qn) & (v <= qp)
    assert torch.equal(x.grad, inside.float())  # straight-through inside the range, zero outside
    # LSQ step gradient: sum of (round(v) - v) inside, the bound outside, scaled by 1/sqrt(N*Qp)
    expected = torch.where(inside, v.round() - v, v.clamp(-qn, qp)).sum() / math.sqrt(64 * qp)
    assert step.grad.item() == pytest.approx(expected.item(), rel=1e-5)
