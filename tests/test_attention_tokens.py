import math

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from hwnas.spaces.ops.attention import (
    ATTENTIONS,
    attention,
    binary_codes,
    binary_linear_attention,
    count_attention_ops,
    linear_attention,
    linear_attention_quadratic,
    relu_linear_attention,
    softmax_attention,
)
from hwnas.spaces.ops.tokens import class_attention_scores, kept_count, select_tokens


def qkv(b=2, h=3, n=7, d=5, seed=0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(b, h, n, d, generator=g, dtype=dtype) for _ in range(3)]


class LargestTensor(TorchDispatchMode):
    """Records the largest numel of any tensor an aten op produces under it."""

    def __init__(self):
        super().__init__()
        self.max_numel = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in out if isinstance(out, (tuple, list)) else (out,):
            if isinstance(t, torch.Tensor):
                self.max_numel = max(self.max_numel, t.numel())
        return out


# -- attention ----------------------------------------------------------------------------------
def test_softmax_matches_formula():
    q, k, v = qkv()
    ref = torch.softmax(q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1]), dim=-1) @ v
    torch.testing.assert_close(softmax_attention(q, k, v), ref, atol=1e-10, rtol=1e-10)
    q, k, v = (t.float() for t in (q, k, v))
    ref = torch.softmax(q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1]), dim=-1) @ v
    torch.testing.assert_close(softmax_attention(q, k, v), ref, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("fmap", ["elu", "relu"])
def test_linear_equals_quadratic(fmap):
    for seed in range(3):
        q, k, v = (t.float() for t in qkv(seed=seed, n=11))
        out = linear_attention(q, k, v, feature_map=fmap)
        assert out.shape == q.shape
        torch.testing.assert_close(out, linear_attention_quadratic(q, k, v, feature_map=fmap),
                                   atol=1e-5, rtol=1e-5)


def test_linear_unknown_feature_map():
    q, k, v = qkv()
    with pytest.raises(ValueError, match="elu"):
        linear_attention(q, k, v, feature_map="tanh")


@pytest.mark.parametrize("fn", [linear_attention, relu_linear_attention, binary_linear_attention])
def test_linear_forms_never_build_n_by_n(fn):
    n, d = 4096, 16
    q, k, v = (torch.randn(1, 1, n, d, requires_grad=True) for _ in range(3))
    with LargestTensor() as probe:
        out = fn(q, k, v)
        out.square().sum().backward()
    assert out.shape == (1, 1, n, d) and torch.isfinite(out).all()
    assert probe.max_numel <= n * d  # the N x N form would be 16.7M floats
    with LargestTensor() as probe:  # the probe does see a quadratic form
        linear_attention_quadratic(*(t.detach()[:, :, :256] for t in (q, k, v)))
    assert probe.max_numel >= 256 * 256


def test_relu_linear_is_efficientvit_attention():
    """The relu_linear kind against the quadratic form and against EfficientViT's own way of
    computing it (v padded with a column of ones, so the last output column is the normalizer)."""
    for seed in range(3):
        q, k, v = (t.float() for t in qkv(seed=seed, n=11))
        out = attention("relu_linear", q, k, v)
        a = torch.relu(q) @ torch.relu(k).transpose(-2, -1)  # (B, H, N, N), no exp and no 1/sqrt(D)
        torch.testing.assert_close(out, (a @ v) / (a.sum(-1, keepdim=True) + 1e-6), atol=1e-5, rtol=1e-5)
        padded = torch.nn.functional.pad(v, (0, 1), value=1.0)
        o = torch.relu(q) @ (torch.relu(k).transpose(-2, -1) @ padded)
        torch.testing.assert_close(out, o[..., :-1] / (o[..., -1:] + 1e-6), atol=1e-5, rtol=1e-5)
    q, k, v = (t.float() for t in qkv(seed=7))
    q = (-q.abs()).requires_grad_(True)  # relu(q) all zero: output 0, finite gradients
    out = attention("relu_linear", q, k, v)
    out.sum().backward()
    assert (out == 0).all() and torch.isfinite(q.grad).all()


def test_binary_codes_and_ste():
    x = torch.tensor([-2.0, -1.0, -0.5, 0.0, 0.5, 1.0, 1.5], requires_grad=True)
    c = binary_codes(x)
    assert c.tolist() == [0, 0, 0, 1, 1, 1, 1]  # sign(0) counts as +1: codes are 0 or 1 only
    c.sum().backward()
    assert x.grad.tolist() == [0, 0.5, 0.5, 0.5, 0.5, 0.5, 0]  # d((s + 1) / 2) = 1/2 inside |x|<=1
    with torch.no_grad():  # the same codes without the autograd function (what an export traces)
        assert torch.equal(binary_codes(x), c.detach())


def binary_reference(q, k, v):
    """Explicit {0, 1} codes, and sums of selected rows in Python loops."""
    bq, bk = (q >= 0).to(v.dtype), (k >= 0).to(v.dtype)
    b, h, n, d = q.shape
    out = torch.zeros_like(v)
    for bi in range(b):
        for hi in range(h):
            kv = torch.zeros(d, v.shape[-1], dtype=v.dtype)
            count = torch.zeros(d, dtype=v.dtype)
            for j in range(n):
                for dd in range(d):
                    if bk[bi, hi, j, dd]:
                        kv[dd] += v[bi, hi, j]
                        count[dd] += 1
            for i in range(n):
                bits = [dd for dd in range(d) if bq[bi, hi, i, dd]]
                num = sum((kv[dd] for dd in bits), torch.zeros(v.shape[-1]))
                den = sum(count[dd] for dd in bits)
                out[bi, hi, i] = num / max(float(den), 1.0)
    return out


def test_binary_matches_reference():
    q, k, v = (t.float() for t in qkv(b=2, h=2, n=6, d=4, seed=3))
    out = binary_linear_attention(q, k, v)
    torch.testing.assert_close(out, binary_reference(q, k, v), atol=1e-6, rtol=1e-6)
    bq, bk = (q >= 0).float(), (k >= 0).float()  # and the quadratic form with these codes
    a = bq @ bk.transpose(-2, -1)
    torch.testing.assert_close(out, (a / a.sum(-1, keepdim=True).clamp_min(1)) @ v)


def test_binary_ste_gradient():
    q, k, v = (t.float() * 1.5 for t in qkv(b=2, h=2, n=9, d=6, seed=4))
    q.requires_grad_(True)
    w = torch.randn(q.shape, generator=torch.Generator().manual_seed(9))
    (binary_linear_attention(q, k, v) * w).sum().backward()
    outside = q.detach().abs() > 1
    assert outside.any() and (~outside).any()
    assert (q.grad[outside] == 0).all()
    assert (q.grad[~outside] != 0).float().mean() > 0.9  # passes (nonzero almost surely)
    # exactly the gradient of the hardtanh surrogate with the same forward value
    q2 = q.detach().clone().requires_grad_(True)
    soft = (torch.nn.functional.hardtanh(q2) + 1) / 2
    code = (q2 >= 0).float() + soft - soft.detach()
    bk = (k >= 0).float()
    kv = torch.einsum("bhnd,bhne->bhde", bk, v)
    den = torch.einsum("bhnd,bhd->bhn", code, bk.sum(2)).clamp_min(1).unsqueeze(-1)
    (torch.einsum("bhnd,bhde->bhne", code, kv) / den * w).sum().backward()
    torch.testing.assert_close(q.grad, q2.grad)


def test_binary_all_zero_codes_are_finite():
    q, k, v = (t.float() for t in qkv(seed=5))
    q = (-q.abs() - 0.1).requires_grad_(True)  # every code 0: the normalizer is 0
    k = (-k.abs() - 0.1).requires_grad_(True)
    out = binary_linear_attention(q, k, v)
    assert torch.isfinite(out).all() and (out == 0).all()
    out.sum().backward()
    assert torch.isfinite(q.grad).all() and torch.isfinite(k.grad).all()
    q, k = q.detach().clone(), k.detach().clone()
    q[..., 0] = 0.5  # some queries set a bit that no key has: still finite
    out = binary_linear_attention(q, k, v)
    assert torch.isfinite(out).all()


def test_dispatch_and_unknown_kind():
    q, k, v = (t.float() for t in qkv())
    assert set(ATTENTIONS) == {"softmax", "linear", "relu_linear", "binary"}
    torch.testing.assert_close(attention("softmax", q, k, v), softmax_attention(q, k, v))
    torch.testing.assert_close(attention("linear", q, k, v), linear_attention(q, k, v))
    torch.testing.assert_close(attention("linear", q, k, v, feature_map="relu"),
                               linear_attention(q, k, v, feature_map="relu"))
    torch.testing.assert_close(attention("relu_linear", q, k, v), linear_attention(q, k, v, feature_map="relu"))
    torch.testing.assert_close(attention("binary", q, k, v), binary_linear_attention(q, k, v))
    with pytest.raises(ValueError, match="binary.*linear.*softmax"):
        attention("performer", q, k, v)
    with pytest.raises(ValueError, match="softmax"):
        count_attention_ops("performer", 4, 2, 1)


# -- op counts: instrumented scalar implementations ---------------------------------------------
class Counter:
    def __init__(self):
        self.mults = self.adds = 0

    def mul(self, a, b):
        self.mults += 1
        return a * b

    def div(self, a, b):
        self.mults += 1
        return a / b

    def exp(self, a):
        self.mults += 1
        return math.exp(a)

    def add(self, a, b):
        self.adds += 1
        return a + b

    def above(self, a, b):  # a comparison counts as an add
        self.adds += 1
        return a >= b

    def elu1(self, x):  # elu(x) + 1: a comparison, then exp or add
        return self.add(x, 1.0) if self.above(x, 0.0) else self.exp(x)

    def relu(self, x):
        return x if self.above(x, 0.0) else 0.0

    def dot(self, a, b):  # L mults, L - 1 adds
        acc = self.mul(a[0], b[0])
        for x, y in zip(a[1:], b[1:]):
            acc = self.add(acc, self.mul(x, y))
        return acc

    def total(self, xs):  # L - 1 adds
        acc = xs[0]
        for x in xs[1:]:
            acc = self.add(acc, x)
        return acc

    def select_total(self, bits, rows):  # sum of the rows whose bit is 1: adds only
        picked = [r for bit, r in zip(bits, rows) if bit]
        return self.total(picked) if picked else 0.0


def counted_head(kind, q, k, v, c):
    """One head of attention on nested lists, every arithmetic op through the counter c."""
    n, d = len(q), len(q[0])
    if kind == "softmax":
        s = 1 / math.sqrt(d)
        qs = [[x * s for x in row] for row in q]  # scale folded into the q projection
        out = []
        for i in range(n):
            e = [c.exp(c.dot(qs[i], k[j])) for j in range(n)]
            z = c.total(e)
            a = [c.div(x, z) for x in e]
            out.append([c.dot(a, [v[j][dd] for j in range(n)]) for dd in range(d)])
        return out
    if kind in ("linear", "relu_linear"):
        fmap = c.elu1 if kind == "linear" else c.relu
        fq = [[fmap(x) for x in row] for row in q]
        fk = [[fmap(x) for x in row] for row in k]
        kv = [[c.dot([fk[j][a] for j in range(n)], [v[j][e] for j in range(n)]) for e in range(d)]
              for a in range(d)]
        ksum = [c.total([fk[j][a] for j in range(n)]) for a in range(d)]
        out = []
        for i in range(n):
            num = [c.dot(fq[i], [kv[a][e] for a in range(d)]) for e in range(d)]
            den = c.dot(fq[i], ksum)
            out.append([c.div(x, den + 1e-6) for x in num])  # the eps is not counted
        return out
    bq = [[c.above(x, 0.0) for x in row] for row in q]
    bk = [[c.above(x, 0.0) for x in row] for row in k]
    kv = [[c.select_total([bk[j][a] for j in range(n)], [v[j][e] for j in range(n)])
           for e in range(d)] for a in range(d)]
    ksum = [c.select_total([bk[j][a] for j in range(n)], [1.0] * n) for a in range(d)]
    out = []
    for i in range(n):
        num = [c.select_total(bq[i], [kv[a][e] for a in range(d)]) for e in range(d)]
        den = c.select_total(bq[i], ksum)
        out.append([c.div(x, max(den, 1.0)) for x in num])
    return out


@pytest.mark.parametrize("kind", ["softmax", "linear", "relu_linear", "binary"])
@pytest.mark.parametrize("n,d,h", [(3, 2, 2), (4, 3, 1), (1, 1, 1)])
def test_count_attention_ops_matches_explicit_count(kind, n, d, h):
    q, k, v = qkv(b=1, h=h, n=n, d=d, seed=n * d)
    if kind == "binary":  # the documented count is the worst case: every code bit set
        q, k = q.abs(), k.abs()
    if kind == "linear":  # and the exp branch of elu for every entry
        q, k = -q.abs(), -k.abs()
    c = Counter()
    out = [counted_head(kind, q[0, i].tolist(), k[0, i].tolist(), v[0, i].tolist(), c)
           for i in range(h)]
    assert count_attention_ops(kind, n, d, h) == {"mults": c.mults, "adds": c.adds}
    # and the instrumented computation is the real one
    torch.testing.assert_close(torch.tensor([out], dtype=v.dtype), attention(kind, q, k, v),
                               atol=1e-9, rtol=1e-6)


def test_count_attention_ops_scaling():
    soft = count_attention_ops("softmax", 197, 64, 3)
    assert soft["mults"] == 3 * (2 * 197**2 * 64 + 2 * 197**2)
    lin = count_attention_ops("linear", 197, 64, 3)
    assert lin["mults"] == 3 * (2 * 197 * 64**2 + 4 * 197 * 64)  # the core, and elu's exp per q / k entry
    relu = count_attention_ops("relu_linear", 197, 64, 3)
    assert relu["mults"] == 3 * (2 * 197 * 64**2 + 2 * 197 * 64) and relu["adds"] == lin["adds"]
    binary = count_attention_ops("binary", 197, 64, 3)
    assert binary["mults"] == 3 * 197 * 64 and binary["adds"] == lin["adds"]
    assert count_attention_ops("linear", 394, 64, 3)["mults"] == 2 * lin["mults"]  # linear in N


# -- tokens -------------------------------------------------------------------------------------
def test_class_attention_scores_is_cls_row():
    q, k, _ = qkv(b=2, h=4, n=9, d=8, seed=6)
    full = torch.softmax(q @ k.transpose(-2, -1) / math.sqrt(8), dim=-1)
    scores = class_attention_scores(q, k)
    assert scores.shape == (2, 8)
    torch.testing.assert_close(scores, full[:, :, 0, 1:].mean(1))


def test_class_attention_scores_is_linear_in_n():
    q, k = (torch.randn(1, 2, 4096, 16) for _ in range(2))
    with LargestTensor() as probe:
        class_attention_scores(q, k)
    assert probe.max_numel <= q.numel()


def test_select_tokens_keeps_top_in_order_and_packages_the_rest():
    torch.manual_seed(0)
    b, n, c, keep = 2, 9, 5, 3
    x = torch.randn(b, n, c)
    scores = torch.rand(b, n - 1)
    out = select_tokens(x, scores, keep)
    assert out.shape == (b, 1 + keep + 1, c)
    for i in range(b):
        s = scores[i].tolist()
        top = sorted(sorted(range(n - 1), key=lambda j: -s[j])[:keep])
        dropped = [j for j in range(n - 1) if j not in top]
        torch.testing.assert_close(out[i, 0], x[i, 0])
        torch.testing.assert_close(out[i, 1:1 + keep], x[i, 1:][top])
        wsum = sum(s[j] for j in dropped)
        package = sum(s[j] / wsum * x[i, 1 + j] for j in dropped)
        torch.testing.assert_close(out[i, -1], package)


def test_select_tokens_ties_are_deterministic():
    x = torch.arange(6 * 2, dtype=torch.float32).reshape(1, 6, 2)
    scores = torch.tensor([[0.1, 0.5, 0.5, 0.5, 0.2]])
    out = select_tokens(x, scores, 2)  # tokens 2 and 3 (patches 1, 2) win the tie over patch 3
    torch.testing.assert_close(out[0, 1:3], x[0, 2:4])
    torch.testing.assert_close(out, select_tokens(x, scores, 2))


def test_select_tokens_keep_all_and_zero_scores():
    x = torch.randn(2, 5, 3)
    scores = torch.rand(2, 4)
    assert select_tokens(x, scores, 4) is x
    out = select_tokens(x, torch.zeros(2, 4), 1)  # dropped scores sum to 0: uniform package
    assert out.shape == (2, 3, 3)
    torch.testing.assert_close(out[:, 1], x[:, 1])
    torch.testing.assert_close(out[:, 2], x[:, 2:].mean(1))
    out = select_tokens(x, scores, 0)
    assert out.shape == (2, 2, 3)
    with pytest.raises(ValueError):
        select_tokens(x, scores, 5)
    with pytest.raises(ValueError):
        select_tokens(x, scores[:, :3], 2)


def test_select_tokens_gradients_reach_contributing_tokens():
    x = torch.randn(2, 8, 4, requires_grad=True)
    scores = (torch.rand(2, 7) + 0.1).requires_grad_(True)
    out = select_tokens(x, scores, 3)
    out.square().sum().backward()
    assert (x.grad.abs().sum(-1) > 0).all()  # class, kept and (through the package) dropped
    assert scores.grad is not None and torch.isfinite(scores.grad).all()
    # a dropped token with score 0 does not contribute, and gets no gradient
    x.grad = None
    s = scores.detach().clone()
    s[0, 6] = 0.0
    select_tokens(x, s, 3).square().sum().backward()
    assert (x.grad[0, 7] == 0).all() and (x.grad[0, :7].abs().sum(-1) > 0).all()


def test_kept_count():
    assert kept_count(10, 0.0) == 1
    assert kept_count(10, 1.0) == 10
    assert kept_count(7, 0.5) == 4
    assert kept_count(10, 0.7) == 7  # 0.7 * 10 is 7.000000000000001 in floats
    assert kept_count(196, 0.25) == 49
    assert kept_count(1, 0.01) == 1
    assert kept_count(10, 1.5) == 10
    with pytest.raises(ValueError):
        kept_count(0, 0.5)
