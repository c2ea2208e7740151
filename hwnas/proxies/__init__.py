"""Zero-cost proxies: score any ``nn.Module`` on one batch, without training it.

    from hwnas.proxies import score
    scores = score(model, images, labels, proxies=("synflow", "naswot", "snip"), seed=0)
    scores["naswot"].value, scores["naswot"].batch_size, scores["naswot"].seed

Each proxy is a registered function (:func:`register_proxy`, :func:`proxy_names`); :func:`score`
runs each on its own copy of the model under the seed, so the model is never changed and the same
model, batch and seed give bit-identical scores. Built in: ``synflow``, ``naswot``, ``grad_norm``,
``snip``, ``jacob_cov``, ``zico``, ``meco``, ``params``, ``flops`` (see each function's docstring
for what it measures and the paper it comes from). Needs torch only; spaces never import it.
"""
from __future__ import annotations

from hwnas.proxies.batch import ProxyBatch, default_loss, logits_of, weight_parameters
from hwnas.proxies.registry import ProxyEntry, proxy_entry, proxy_names, register_proxy
from hwnas.proxies.scoring import DEFAULT_PROXIES, ProxyScore, score

__all__ = ["DEFAULT_PROXIES", "ProxyBatch", "ProxyEntry", "ProxyScore", "default_loss", "logits_of",
           "proxy_entry", "proxy_names", "register_proxy", "score", "weight_parameters"]
