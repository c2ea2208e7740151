"""The language-model space against its goals (issue 17, "Benchmark"), all measured in this run.

Runs the default LM job (``hwnas search experiments/text-lm.yaml``, through the CLI's ``main`` in a
temporary workdir) and, on that job's trained supernet, lookup table and latency samples, prints
``name: value`` lines:

- ``lm_default_job_s``: wall seconds of the job (goal <= 300 on the project's 2 cores).
- ``lm_largest_gap``, ``lm_smallest_gap``: test perplexity of the supernet's largest / smallest
  subnet over the same architecture trained alone (the trainer with ``fixed_arch``: the same epochs
  over the same data, the same optimizer and schedule, so the same token budget); goal <= 1.03.
- ``lm_decode_predictor_within_10pct``, ``lm_decode_predictor_kendall_tau``: the job's latency
  predictor (refitted exactly as the job fitted it: the better of the table sum and the learned
  correction on the job's own end-to-end samples) against measured per-token decode latency (the
  local-cpu device times ``StandaloneLM.timed_call``: one decode step over a filled KV cache) of
  ``--held-out`` random subnets the job never measured, timed interleaved in rounds against the
  table's reference baseline; goal >= 0.95 and >= 0.9. Beside it the plain table sum, a
  parameter-count baseline (latency linear in parameters, fitted on the job's samples) and the
  repeat ceiling (a second measurement pass against the first).
- ``lm_export_vs_supernet_tokens_equal``: share of (candidate, prompt) pairs whose exported model
  (``Job.export`` then ``hwnas.load_exported``), generating greedily with its KV cache, gives the
  tokens the supernet gives without a cache (:func:`hwnas.utils.generation.greedy_generate`); goal 1.
- ``lm_exported_vs_transformers``: median time of one decode step (batch 1, one thread, cache at
  the job's context length) of the exported largest float subnet over the same weights as a
  transformers ``LlamaForCausalLM`` with its ``DynamicCache`` (:func:`~hwnas.spaces.lm.hf_export.export_hf`,
  ``from_pretrained``), timed interleaved in rounds; goal <= 1.1.

``--quick`` runs everything on tiny settings (the smoke test, tests/test_bench_lm.py).

Usage: python experiments/bench_lm.py [--quick] [--held-out 100] [--workdir DIR [--skip-job]] [--stages gaps predictor tokens transformers]
"""
from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

import hwnas
from hwnas.cli.app import main as cli_main
from hwnas.hwmodels.devices import build_device
from hwnas.hwmodels.local_cpu import processor_name
from hwnas.hwmodels.profiler import build_lookup_table
from hwnas.ir import count
from hwnas.job.handle import open_job
from hwnas.job.store import arch_of
from hwnas.predictors.latency import TableSumPredictor, fit_search_latency_predictor
from hwnas.predictors.quality import regression_quality
from hwnas.spaces.dims import Arch
from hwnas.spaces.lm.hf_export import export_hf
from hwnas.spaces.lm.standalone import DecodeStep
from hwnas.spaces.registry import op_graph, space_entry
from hwnas.train.components import Components
from hwnas.train.trainer import SupernetTrainer
from hwnas.utils.generation import greedy_generate

CONFIG = Path(__file__).with_name("text-lm.yaml")
STAGES = ["gaps", "predictor", "tokens", "transformers"]
MEASURE_BATCH = 10  # subnets timed together, interleaved in rounds (as the job's fit_latency)
PROMPTS = [b"The return statement ", b"def f(x):", b"A class definition ", b"import "]
QUICK = ["data.dataset=text", "train.epochs=1", "data.context_length=32", "space.context_length=32", "space.hidden_size=32",
         "space.intermediate_size=64", "space.mlp_choices=[32,64]", "space.group_size=16",
         "predictor.samples=10", "search.population=4", "search.generations=1", "search.evaluate=2",
         "device.repeats=3", "device.warmup=1", "device.rounds=2", "device.correction_samples=6"]


def quick_corpus(folder: Path, documents: int = 10, chars: int = 1000) -> Path:
    """A few pydoc topics as a ``text`` data set: the same kind of text, a few seconds an epoch."""
    from pydoc_data.topics import topics
    folder.mkdir(parents=True, exist_ok=True)
    for name in sorted(topics)[:documents]:
        (folder / f"{name}.txt").write_text(topics[name][:chars], encoding="utf-8")
    return folder


def stage(fn, *args) -> None:
    """Print one stage's figures; a stage that fails says so and the others still run."""
    try:
        show(fn(*args))
    except Exception as exc:  # noqa: BLE001 - a benchmark reports every figure it can
        print(f"stage_failed_{fn.__name__}: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}",
              flush=True)


def run_job(work: Path, sets: list[str]) -> float:
    args = ["search", str(CONFIG), "--workdir", str(work), "--quiet"]
    args += [a for item in sets for a in ("--set", item)]
    started = time.perf_counter()
    if cli_main(args) != 0:
        raise SystemExit("the default LM job failed")
    return time.perf_counter() - started


def trained_parts(job) -> Components:
    parts = Components.build(job.config, torch.device("cpu"))
    parts.load_weights(job.paths.supernet)
    return parts


def gaps(job, parts: Components) -> dict[str, float]:
    """Test perplexity in the supernet and trained alone, for the largest and smallest subnets."""
    out = {}
    for which, arch in (("largest", parts.space.largest()), ("smallest", parts.space.smallest())):
        supernet = parts.evaluate(arch, "test")
        alone = Components.build(job.config, torch.device("cpu"))  # fresh weights, seeded as the job's
        SupernetTrainer(alone.supernet, alone.data, job.config.train, job.config.seed, alone.compute,
                        job.config.data.batch_size, fixed_arch=arch).train()
        trained_alone = alone.evaluate(arch, "test")
        out[f"lm_{which}_test_perplexity_supernet"] = supernet
        out[f"lm_{which}_test_perplexity_alone"] = trained_alone
        out[f"lm_{which}_gap"] = supernet / trained_alone
    return out


def measure(device, models, input_shape) -> np.ndarray:
    out: list[float] = []
    for start in range(0, len(models), MEASURE_BATCH):
        timing = device.time_models(models[start:start + MEASURE_BATCH], input_shape)
        out.extend(timing.summary(i)[0] for i in range(len(timing.samples_ns)))
    return np.array(out)


def predictor_figures(job, parts: Components, work: Path, held_out: int) -> dict[str, float]:
    """The job's latency predictor, the table sum and a parameter-count fit against measured decode."""
    config, space = job.config, parts.space
    device = build_device(config.device, work)
    # the job's cached table: nothing is re-profiled; the device gets the table's reference baseline
    table = build_lookup_table(device, space, space_entry("lm").build_standalone, work / "luts").table
    samples = pd.read_csv(job.paths.latency_samples)
    fit_archs = [Arch.from_json(a) for a in samples["arch"]]
    fit_y = samples["latency_ms"].to_numpy(float)
    fit_graphs = [op_graph(space.subnet_spec(a)) for a in fit_archs]
    interpolate = getattr(space, "interpolated_field", None)
    search, choice, _ = fit_search_latency_predictor(table, fit_graphs, fit_y, interpolate,
                                                     config.predictor.holdout, config.seed)
    seen = set(fit_archs)
    rng = np.random.default_rng([config.seed, 17])
    archs = [a for a in dict.fromkeys(space.sample(rng) for _ in range(5 * held_out)) if a not in seen][:held_out]
    graphs = [op_graph(space.subnet_spec(a)) for a in archs]
    models = parts.subnets_to_time(archs)
    started = time.perf_counter()
    y = measure(device, models, space.input_shape)
    seconds = (time.perf_counter() - started) / len(models)
    again = measure(device, models, space.input_shape)
    params = np.array([count(g)["params"] for g in fit_graphs], float)
    slope, intercept = np.polyfit(params, fit_y, 1)
    held_params = np.array([count(g)["params"] for g in graphs], float)
    predictions = {"decode_predictor": search.predict(graphs),
                   "decode_table_sum": TableSumPredictor(table, interpolate).fit(fit_graphs).predict(graphs),
                   "decode_param_count": slope * held_params + intercept,
                   "decode_repeat": again}
    out: dict[str, float | str] = {"lm_decode_predictor_is": choice, "lm_decode_fit_samples": len(fit_archs),
                                   "lm_decode_held_out": len(archs),
                                   "lm_decode_held_out_ms_range": f"{y.min():.3f}-{y.max():.3f}",
                                   "lm_decode_measure_s_per_subnet": seconds}
    for label, predicted in predictions.items():
        q = regression_quality(y, np.asarray(predicted))
        out[f"lm_{label}_within_10pct"] = q["within_10pct"]
        out[f"lm_{label}_kendall_tau"] = q["kendall_tau"]
        out[f"lm_{label}_mape"] = q["mape"]
    return out


def tokens_equal(job, parts: Components, work: Path, subnets: int, new_tokens: int) -> dict[str, float]:
    """Exported candidates' cached greedy tokens against the supernet's uncached ones."""
    ids = [int(i) for i in job.candidates()["id"]][:subnets]
    equal = []
    for cid in ids:
        out = job.export(work / f"export-{cid}", candidate=cid)
        model = hwnas.load_exported(out)
        parts.supernet.set_active(arch_of(job.candidate(cid)))
        parts.supernet.eval()
        for prompt in PROMPTS:
            reference = greedy_generate(parts.supernet, list(prompt), new_tokens)
            equal.append(bool(torch.equal(model.generate(list(prompt), new_tokens).cpu(), reference.cpu())))
    return {"lm_export_pairs": len(equal), "lm_export_vs_supernet_tokens_equal": float(np.mean(equal))}


def float_largest(space) -> Arch:
    values = space.largest().to_dict()
    values.update({k: 16 for k in values if k.endswith(".wbits")})
    return space.validate({**values, "abits": 16})


@torch.inference_mode()
def versus_transformers(parts: Components, work: Path, rounds: int, calls: int) -> dict[str, float]:
    """Decode step of the exported float subnet against transformers' Llama on the same weights."""
    from transformers import DynamicCache, LlamaForCausalLM
    torch.set_num_threads(1)
    parts.supernet.set_active(float_largest(parts.space))
    ours = parts.supernet.extract().eval()
    hf = LlamaForCausalLM.from_pretrained(export_hf(ours, work / "hf-largest")).eval()
    context = int(ours.spec["context_length"])
    prefix = torch.randint(0, ours.spec["vocab_size"], (1, context - 1), generator=torch.Generator().manual_seed(0))
    new = torch.tensor([[65]])
    cache = DynamicCache(config=hf.config)
    hf(input_ids=prefix, cache=cache, use_cache=True)
    _, past = ours.step(prefix)  # our cache, filled with the same tokens (DecodeStep's is zeros)
    step = DecodeStep(ours, context)
    step.past = past

    def hf_call():
        logits = hf(input_ids=new, cache=cache, use_cache=True).logits
        cache.crop(-1)  # back to context - 1 tokens, so every call decodes at the same length
        return logits
    diff = float((step(new)[:, -1] - hf_call()[:, -1]).abs().max())
    subjects = {"ours": lambda: step(new), "transformers": hf_call}
    times: dict[str, list[float]] = {name: [] for name in subjects}
    for r in range(rounds + 1):  # round 0 warms up
        for name, fn in subjects.items():
            samples = []
            for _ in range(calls):
                started = time.perf_counter_ns()
                fn()
                samples.append(time.perf_counter_ns() - started)
            if r:
                times[name].append(float(np.median(samples)) / 1e6)
    med = {name: float(np.median(t)) for name, t in times.items()}
    spread = {name: float(np.max(t) - np.min(t)) for name, t in times.items()}
    return {"lm_exported_decode_ms": med["ours"], "lm_exported_decode_spread_ms": spread["ours"],
            "lm_transformers_decode_ms": med["transformers"], "lm_transformers_decode_spread_ms": spread["transformers"],
            "lm_exported_vs_transformers_logits_max_abs_diff": diff,
            "lm_exported_vs_transformers": med["ours"] / med["transformers"]}


def show(figures: dict) -> None:
    for key, value in figures.items():
        print(f"{key}: {value:.4f}" if isinstance(value, float) else f"{key}: {value}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny settings: a smoke run")
    parser.add_argument("--held-out", type=int, default=None, help="subnets the predictor is scored on (100)")
    parser.add_argument("--workdir", type=Path, default=None)
    parser.add_argument("--stages", nargs="+", default=STAGES, choices=STAGES)
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override the job's config (as hwnas search --set); printed")
    parser.add_argument("--skip-job", action="store_true", help="use the text-lm job already in --workdir")
    args = parser.parse_args()
    held_out = args.held_out or (4 if args.quick else 100)
    work = args.workdir or Path(tempfile.mkdtemp(prefix="hwnas-bench-lm-"))
    print(f"date: {dt.datetime.now(dt.timezone.utc).isoformat(timespec='seconds')}")
    print(f"machine: {processor_name()}, {platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__}")
    print(f"load_average_start: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    print(f"mode: {'quick (tiny settings)' if args.quick else 'full (experiments/text-lm.yaml as shipped)'}")
    started = time.perf_counter()
    sets = [*QUICK, f"data.root={quick_corpus(work / 'quick-text')}"] if args.quick else []
    sets += args.set
    if args.set:
        print(f"overrides: {' '.join(args.set)}")
    if args.skip_job:
        print("lm_default_job_s: not run (--skip-job: the job already in --workdir)")
    else:
        show({"lm_default_job_s": run_job(work, sets)})
    job = open_job("text-lm", workdir=work)
    parts = trained_parts(job)
    stages = {"gaps": (gaps, job, parts),
              "predictor": (predictor_figures, job, parts, work, held_out),
              "tokens": (tokens_equal, job, parts, work, 2 if args.quick else 5, 4 if args.quick else 16),
              "transformers": (versus_transformers, parts, work, 3 if args.quick else 15, 5 if args.quick else 30)}
    for name in args.stages:
        stage(*stages[name])
    print(f"bench_seconds: {time.perf_counter() - started:.0f}")
    print(f"load_average_end: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    print(f"date_end: {dt.datetime.now(dt.timezone.utc).isoformat(timespec='seconds')}")
    print("compared against: lm_*_gap: the same architecture trained alone (fixed_arch, same epochs, data, "
          "optimizer); lm_decode_*: per-token decode latency measured on this CPU (local-cpu, 1 thread, "
          "interleaved rounds), the repeat figures a second pass against the first; "
          "lm_export_vs_supernet_tokens_equal: the supernet's uncached greedy tokens; "
          "lm_exported_vs_transformers: transformers' LlamaForCausalLM with DynamicCache on the same weights")


if __name__ == "__main__":
    main()
