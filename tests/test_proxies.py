"""Zero-cost proxies: deterministic for a seed, the model untouched, each number against a reference
computed another way (autograd formulas by hand, closed forms, numpy), errors that name what is
known, and language models as well as classifiers."""
from __future__ import annotations

import math
import re
import subprocess
import sys

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from hwnas.errors import ProxyError
from hwnas.proxies import DEFAULT_PROXIES, ProxyScore, proxy_names, register_proxy, score
from hwnas.proxies.registry import PROXIES
from tests.test_readme_snippets import readme_snippet

STOCHASTIC = ("grad_norm", "snip", "jacob_cov", "zico")  # dropout in training mode; zico's split
DETERMINISTIC = ("synflow", "params", "flops")           # no data (or no randomness) in them


def small_cnn(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
        nn.Conv2d(8, 16, 3, stride=2, padding=1), nn.BatchNorm2d(16), nn.GELU(),
        nn.Dropout(0.2), nn.Conv2d(16, 16, 3, padding=1), nn.SiLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 10))


def image_batch(n: int = 8, seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 3, 12, 12, generator=g), torch.randint(0, 10, (n,), generator=g)


def values(scores: dict[str, ProxyScore]) -> dict[str, float]:
    return {name: s.value for name, s in scores.items()}


# -- what every proxy promises ---------------------------------------------------------------------------
def test_every_builtin_proxy_is_registered_and_scored_by_default():
    assert set(DEFAULT_PROXIES) <= set(proxy_names())
    x, y = image_batch()
    scores = score(small_cnn(), x, y)
    assert list(scores) == list(DEFAULT_PROXIES)
    assert all(math.isfinite(s.value) for s in scores.values()), values(scores)
    assert {n: s.batch_size for n, s in scores.items()} == {
        "synflow": 1, "naswot": 8, "grad_norm": 8, "snip": 8, "jacob_cov": 8, "zico": 8, "meco": 1,
        "params": 0, "flops": 8}
    assert all(s.seed == 0 and float(s) == s.value for s in scores.values())


def test_the_same_seed_gives_bit_identical_scores_and_another_seed_changes_the_stochastic_ones():
    x, y = image_batch()
    model = small_cnn()
    first, again = values(score(model, x, y, seed=3)), values(score(model, x, y, seed=3))
    assert first == again  # exact equality: bit-identical floats
    other = values(score(model, x, y, seed=4))
    assert all(other[n] != first[n] for n in STOCHASTIC), (first, other)
    assert all(other[n] == first[n] for n in DETERMINISTIC)
    # a proxy's score does not depend on which other proxies ran before it
    assert values(score(model, x, y, proxies=("zico",), seed=3))["zico"] == first["zico"]


def test_scoring_leaves_the_model_its_gradients_modes_and_the_random_state_as_they_were():
    x, y = image_batch()
    model = small_cnn().train()
    model[4].eval()  # a mixed mode must come back mixed
    model[0].bias.requires_grad_(False)
    model[0].weight.grad = torch.ones_like(model[0].weight)  # a gradient the user had stays as it was
    before = {k: v.clone() for k, v in model.state_dict().items()}
    modes = [m.training for m in model.modules()]
    rng = torch.get_rng_state()
    score(model, x, y)
    after = model.state_dict()
    assert before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)
    assert torch.equal(model[0].weight.grad, torch.ones_like(model[0].weight))
    assert all(p.grad is None for p in model.parameters() if p is not model[0].weight)
    assert [m.training for m in model.modules()] == modes
    assert not model[0].bias.requires_grad and model[0].weight.requires_grad
    assert all(p.dtype == torch.float32 for p in model.parameters())  # synflow's float64 stayed on its copy
    assert torch.equal(torch.get_rng_state(), rng)


# -- each number against a reference ---------------------------------------------------------------------
def test_snip_and_grad_norm_of_a_two_layer_net_match_the_gradients_written_out_by_hand():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(5, 4), nn.ReLU(), nn.Linear(4, 3)).double()
    x = torch.randn(6, 5, dtype=torch.float64)
    y = torch.tensor([0, 1, 2, 0, 1, 2])
    W1, b1 = model[0].weight.detach().numpy(), model[0].bias.detach().numpy()
    W2, b2 = model[2].weight.detach().numpy(), model[2].bias.detach().numpy()
    X = x.numpy()
    z = X @ W1.T + b1
    h = np.maximum(z, 0)
    logits = h @ W2.T + b2
    p = np.exp(logits - logits.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    dlogits = (p - np.eye(3)[y.numpy()]) / len(X)  # d mean cross entropy / d logits
    dW2 = dlogits.T @ h
    dW1 = ((dlogits @ W2) * (z > 0)).T @ X
    got = values(score(model, x, y, proxies=("snip", "grad_norm")))
    assert got["snip"] == pytest.approx(np.abs(W1 * dW1).sum() + np.abs(W2 * dW2).sum(), rel=1e-12)
    assert got["grad_norm"] == pytest.approx(math.sqrt((dW1 ** 2).sum() + (dW2 ** 2).sum()), rel=1e-12)


def test_synflow_of_a_linear_chain_is_its_closed_form_whatever_the_batchnorm_statistics():
    """With all-ones input and absolute weights, R = 1^T |W3| |W2| |W1| 1 is linear in each layer's
    weights, so every layer contributes sum |W * dR/dW| = R and the score is 3 R. The BatchNorm
    (gamma -2, trained statistics) acts as |gamma| / sqrt(1 + eps), as documented."""
    torch.manual_seed(0)
    bn = nn.BatchNorm1d(5)
    model = nn.Sequential(nn.Linear(4, 5, bias=False), bn, nn.Linear(5, 3, bias=False), nn.Linear(3, 2, bias=False))
    with torch.no_grad():
        bn.weight.fill_(-2.0)
        bn.running_mean.fill_(3.0)
        bn.running_var.fill_(9.0)
    W1, W2, W3 = (np.abs(model[i].weight.detach().double().numpy()) for i in (0, 2, 3))
    R = np.ones(2) @ W3 @ W2 @ (2.0 / math.sqrt(1 + bn.eps) * W1) @ np.ones(4)
    x = torch.randn(7, 4)
    assert values(score(model, x, proxies="synflow"))["synflow"] == pytest.approx(3 * R, rel=1e-12)


class FunctionalSiLU(nn.Module):
    """A layer that calls its activation as a function (as SwiGLU does), not as a module."""

    def __init__(self):
        super().__init__()
        self.linear = nn.Linear(6, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.silu(self.linear(x))


def test_naswot_is_numpys_slogdet_of_the_hamming_kernel_of_the_activation_codes():
    torch.manual_seed(0)
    model = nn.Sequential(nn.ReLU(), FunctionalSiLU())
    x = torch.randn(5, 6)
    first = (x > 0).numpy()
    second = (model[1].linear(torch.relu(x)) > 0).detach().numpy()
    kernel = np.zeros((5, 5))
    for c in (first.astype(float), second.astype(float)):
        kernel += c @ c.T + (1 - c) @ (1 - c).T
    sign, logdet = np.linalg.slogdet(kernel)
    assert sign > 0
    assert values(score(model, x, proxies="naswot"))["naswot"] == pytest.approx(logdet, rel=1e-12)


def test_jacob_cov_of_a_linear_model_is_the_eigenvalue_score_of_its_correlation():
    """A linear map has the same Jacobian for every input: correlation all ones, eigenvalues
    (B, 0, ..., 0); a ReLU network's Jacobians differ by input and score higher."""
    torch.manual_seed(0)
    x = torch.randn(4, 6)
    k = 1e-5
    expected = -(math.log(4 + k) + 1 / (4 + k)) - 3 * (math.log(k) + 1 / k)
    assert values(score(nn.Linear(6, 3), x, proxies="jacob_cov"))["jacob_cov"] == pytest.approx(expected, rel=1e-6)
    relu_net = nn.Sequential(nn.Linear(6, 32), nn.ReLU(), nn.Linear(32, 3))
    assert values(score(relu_net, x, proxies="jacob_cov"))["jacob_cov"] > expected


def test_meco_is_the_sum_of_minimum_eigenvalues_of_channel_correlations():
    torch.manual_seed(0)
    conv = nn.Conv2d(2, 3, 3, padding=1)
    x = torch.randn(4, 2, 5, 5)
    feature = conv(x[:1])[0].detach().double().reshape(3, -1).numpy()
    expected = np.linalg.eigvalsh(np.corrcoef(feature))[0]  # the conv is the only module
    assert values(score(conv, x, proxies="meco"))["meco"] == pytest.approx(expected, rel=1e-9)
    # a one-channel map (one attention head: [1, heads=1, tokens, dim]) has no correlation matrix: skipped
    one_channel = nn.Sequential(nn.Conv2d(2, 1, 3, padding=1), nn.Flatten(2), nn.Unflatten(1, (1, 1)))
    assert values(score(one_channel, x, proxies="meco"))["meco"] == 0.0


def test_params_counts_every_parameter_once_and_flops_are_two_per_multiply_accumulate_per_sample():
    model = nn.Sequential(nn.Linear(7, 5), nn.ReLU(), nn.Linear(5, 7))
    model[2].weight = nn.Parameter(model[0].weight.detach().T.clone())
    assert values(score(model, torch.randn(4, 7), proxies="params"))["params"] == sum(
        p.numel() for p in model.parameters()) == 7 * 5 + 5 + 5 * 7 + 7
    tied = nn.Sequential(nn.Embedding(10, 4), nn.Linear(4, 10, bias=False))
    tied[1].weight = tied[0].weight
    assert values(score(tied, torch.zeros(2, 3, dtype=torch.long), proxies="params"))["params"] == 40
    got = score(nn.Linear(7, 5), torch.randn(4, 7), proxies="flops")["flops"]
    assert (got.value, got.batch_size) == (2 * 7 * 5, 4)


# -- errors ---------------------------------------------------------------------------------------------
def test_an_unknown_proxy_is_a_one_line_error_naming_the_known_ones_before_any_work():
    calls = []
    model = nn.Linear(3, 2)
    model.register_forward_hook(lambda *a: calls.append(1))
    with pytest.raises(ProxyError) as error:
        score(model, torch.randn(2, 3), proxies=("params", "flops", "synflw"))
    message = str(error.value)
    assert "\n" not in message and "'synflw'" in message and all(name in message for name in proxy_names())
    assert calls == []


def test_loss_based_proxies_without_targets_and_one_sample_statistics_say_what_is_missing():
    with pytest.raises(ProxyError, match="grad_norm, zico need targets"):
        score(nn.Linear(3, 2), torch.randn(2, 3), proxies=("grad_norm", "synflow", "zico"))
    with pytest.raises(ProxyError, match="'naswot' needs a batch of at least 2"):
        score(nn.Sequential(nn.Linear(3, 2), nn.ReLU()), torch.randn(1, 3), proxies="naswot")


# -- language models and custom proxies ------------------------------------------------------------------
class TinyLM(nn.Module):
    """Token ids [B, T] -> logits [B, T, V], returned Hugging Face style (an object with .logits)."""

    def __init__(self, vocab: int = 20, dim: int = 8, length: int = 6):
        super().__init__()
        self.tokens, self.positions = nn.Embedding(vocab, dim), nn.Embedding(length, dim)
        self.mlp = nn.Sequential(nn.Linear(dim, 16), nn.GELU(), nn.Linear(16, dim))
        self.norm, self.head = nn.LayerNorm(dim), nn.Linear(dim, vocab, bias=False)

    def forward(self, ids: torch.Tensor):
        h = self.tokens(ids) + self.positions(torch.arange(ids.shape[1]))
        return {"logits": self.head(self.norm(h + self.mlp(h)))}


def test_a_language_model_is_scored_on_token_ids_and_jacob_cov_at_its_token_embedding():
    torch.manual_seed(0)
    model = TinyLM()
    ids = torch.randint(0, 20, (4, 6))
    scores = score(model, ids, ids.roll(-1, dims=1))
    assert all(math.isfinite(s.value) for s in scores.values()), values(scores)
    # per sequence: 2 * (8*16 + 16*8 + 8*20) multiply-accumulates per token, 6 tokens
    assert scores["flops"].value == 2 * 6 * (8 * 16 + 16 * 8 + 8 * 20)
    assert values(score(model, ids, proxies="jacob_cov")) == {"jacob_cov": scores["jacob_cov"].value}


def test_token_ids_without_an_embedding_reading_them_have_no_jacobian():
    class OneHot(nn.Module):
        def forward(self, ids):
            return F.one_hot(ids, 5).float() @ torch.ones(5, 3)

    with pytest.raises(ProxyError, match="'jacob_cov' does not apply"):
        score(OneHot(), torch.randint(0, 5, (3, 4)), proxies="jacob_cov")


def test_the_lm_space_subnet_is_scored_with_its_functional_silu_counted_by_naswot():
    from hwnas.spaces.registry import build_space, parse_space_config, space_entry

    config = parse_space_config(dict(type="lm", hidden_size=16, num_layers=2, heads=2, kv_heads=1,
                                     intermediate_size=24, context_length=8))
    spec = build_space(config, (8,), 32).subnet_spec(build_space(config, (8,), 32).largest())
    torch.manual_seed(0)
    model = space_entry("lm").build_standalone(spec)
    with torch.no_grad():  # the projections start at zero
        for p in model.parameters():
            if p.dim() >= 2:
                p.normal_(0, 0.2)
    ids = torch.randint(0, 32, (4, 8))
    scores = score(model, ids, ids.roll(-1, dims=1), proxies=("naswot", "snip", "jacob_cov", "synflow"))
    assert all(math.isfinite(s.value) for s in scores.values()), values(scores)


def test_a_registered_proxy_is_scored_like_the_builtin_ones():
    @register_proxy("weight_sum", train=False, samples="none")
    def weight_sum(model, batch):
        for p in model.parameters():  # a proxy may change its copy freely
            p.data.zero_()
        return 1.0

    try:
        model = nn.Linear(3, 2)
        before = model.weight.detach().clone()
        assert "weight_sum" in proxy_names() and "synflow" in proxy_names()
        got = score(model, torch.randn(2, 3), proxies="weight_sum")["weight_sum"]
        assert (got.value, got.batch_size) == (1.0, 0) and torch.equal(model.weight, before)
    finally:
        PROXIES.pop("weight_sum")


def test_the_readme_snippet_runs_and_prints_each_score_with_its_batch_size_and_seed(tmp_path):
    run = subprocess.run([sys.executable, "-c", readme_snippet("zero-cost-proxies")], cwd=tmp_path,
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    lines = run.stdout.strip().splitlines()
    assert [line.split(":")[0] for line in lines[:5]] == ["synflow", "naswot", "snip", "zico", "flops"]
    assert re.fullmatch(r"naswot: \S+ \(batch of 32, seed 0\)", lines[1]) and "batch of 1," in lines[0]
    assert lines[5] == "known: " + ", ".join(proxy_names())
