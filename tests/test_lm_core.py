"""The core side of language models: text data split by document, byte-level and Hugging Face
tokenizers, per-token losses, perplexity as a job's quality metric (objective, budget, front,
store, predictor) and the config errors that keep a task and its metric together. A tiny sequence
model defined here (an embedding and a linear head) stands in where a model is needed."""
from __future__ import annotations

import copy
import math

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from pydoc_data.topics import topics
from torch import nn
from torch.utils.data import TensorDataset

from hwnas.cli.budgets import budgets_of
from hwnas.config import DeviceConfig, TrainConfig
from hwnas.data import DataSplits, iterate_batches, load_data
from hwnas.data.text import windows
from hwnas.errors import ConfigError, HwnasError, NoCandidateError
from hwnas.hwmodels.local_cpu import LocalCPU
from hwnas.job.checks import load_job_config
from hwnas.job.store import JobStore
from hwnas.predictors.accuracy import AccuracyPredictor
from hwnas.search.budgets import Budgets
from hwnas.search.front import query_front
from hwnas.search.objectives import constraint_matrix, objective_matrix
from hwnas.spaces.registry import build_space
from hwnas.train.evaluation import evaluate_subnet, quality_metrics, split_quality
from hwnas.train.trainer import SupernetTrainer
from hwnas.utils.tokenizers import ByteTokenizer, load_tokenizer
from tests.conftest import TINY
from tests.seq_space import StandaloneSeq


class TinyLM(nn.Module):
    """Token ids [B, T] -> logits [B, T, V]; ``set_active`` picks how many embedding dims are used,
    so the sandwich's subnets differ."""

    def __init__(self, vocab: int = 256, dim: int = 16):
        super().__init__()
        self.embed, self.head, self.width = nn.Embedding(vocab, dim), nn.Linear(dim, vocab), dim

    def set_active(self, arch) -> None:
        self.width = int(arch)

    def forward(self, x):
        h = self.embed(x)
        mask = (torch.arange(h.shape[-1]) < self.width).to(h.dtype)
        return self.head(h * mask)


# -- data -------------------------------------------------------------------------------------------
def test_windows_are_contiguous_and_shifted_by_one():
    x, y = windows(list(range(11)), 3)
    assert x.dtype == y.dtype == torch.int64
    assert x.tolist() == [[0, 1, 2], [3, 4, 5], [6, 7, 8]]
    assert y.tolist() == [[1, 2, 3], [4, 5, 6], [7, 8, 9]]


def test_pydoc_splits_by_document_and_windows_its_bytes():
    data = load_data("pydoc", val_fraction=0.2, test_fraction=0.2, split_seed=3, context_length=32)
    d = data.description
    names = d["document_names"]
    assert sorted(names["train"] + names["val"] + names["test"]) == sorted(topics)  # every document once
    assert not set(names["train"]) & set(names["val"]) and not set(names["val"]) & set(names["test"])
    assert not set(names["train"]) & set(names["test"])
    assert data.quality == "perplexity" and data.num_classes == 256 and data.input_shape == (32,)
    # the train split's token stream is its documents' UTF-8 bytes, each followed by a blank line
    stream = b"".join(topics[k].encode("utf-8") + b"\n\n" for k in names["train"])
    assert d["tokens"]["train"] == len(stream)
    x, y = data.train.tensors
    assert x.dtype == torch.int64 and x.shape[1] == 32 and len(x) == (len(stream) - 1) // 32
    assert bytes(x[0].tolist()) == stream[:32] and bytes(y[0].tolist()) == stream[1:33]
    assert torch.equal(x[1:, 0], y[:-1, -1])  # window i+1 starts with the last target of window i
    xb, yb = next(iterate_batches(data.val, 4))
    assert xb.dtype == torch.int64 and yb.shape == (4, 32)  # token ids are not cast to float
    again = load_data("pydoc", val_fraction=0.2, test_fraction=0.2, split_seed=3, context_length=32)
    assert torch.equal(again.test.tensors[0], data.test.tensors[0])


def test_text_folder_documents_and_a_context_too_long(tmp_path):
    for i in range(6):
        (tmp_path / f"doc{i}.txt").write_text(f"Document {i} says héllo. " * 20, encoding="utf-8")
    data = load_data("text", root=tmp_path, val_fraction=0.2, test_fraction=0.2, context_length=16)
    assert sum(data.description["documents"].values()) == 6
    assert all(n >= 1 for n in data.description["documents"].values())
    with pytest.raises(HwnasError, match="context_length 4096"):
        load_data("text", root=tmp_path, val_fraction=0.2, test_fraction=0.2, context_length=4096)
    with pytest.raises(HwnasError, match="data.context_length: dataset 'digits' takes no context_length"):
        load_data("digits", context_length=8)


def test_byte_tokenizer_round_trip():
    tok = ByteTokenizer()
    text = "Grüße, 世界! \n\ttabs"
    assert tok.decode(tok.encode(text)) == text and max(tok.encode(text)) < tok.vocab_size == 256
    assert load_tokenizer().describe() == {"kind": "bytes", "vocab_size": 256}


def test_a_local_hugging_face_tokenizer_round_trips_and_tokenizes_a_dataset(tmp_path):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    sentences = ["the quick brown fox jumps over the lazy dog", "a language model reads tokens",
                 "hardware aware search of small models"] * 5
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    bpe.train_from_iterator(sentences, trainers.BpeTrainer(vocab_size=300, min_frequency=1, special_tokens=["<eos>"],
                                                           initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    PreTrainedTokenizerFast(tokenizer_object=bpe, eos_token="<eos>").save_pretrained(str(tmp_path / "tok"))
    tok = load_tokenizer(tmp_path / "tok")
    text = "the lazy fox reads small tokens"
    ids = tok.encode(text)
    assert tok.decode(ids) == text and len(ids) < len(text)  # merges happened
    docs = tmp_path / "docs"
    docs.mkdir()
    for i, s in enumerate(sentences[:6]):
        (docs / f"{i}.txt").write_text(s * 4)
    data = load_data("text", root=docs, val_fraction=0.2, test_fraction=0.2, context_length=8,
                     tokenizer=str(tmp_path / "tok"))
    assert data.num_classes == tok.vocab_size and data.description["tokenizer"]["kind"] == "huggingface"
    assert int(data.train.tensors[0].max()) < tok.vocab_size


# -- losses and perplexity --------------------------------------------------------------------------
def _reference_nll(model, x, y) -> torch.Tensor:
    """Per-token negative log-likelihoods, one position at a time, in float64."""
    logits = model(x).double()
    out = torch.empty(y.shape, dtype=torch.float64)
    for b in range(y.shape[0]):
        for t in range(y.shape[1]):
            row = logits[b, t]
            out[b, t] = torch.logsumexp(row, 0) - row[y[b, t]]
    return out


def test_sequence_losses_are_per_token_means():
    torch.manual_seed(0)
    net = TinyLM(vocab=11, dim=6)
    x, y = torch.randint(0, 11, (3, 5)), torch.randint(0, 11, (3, 5))
    trainer = SupernetTrainer(net, None, TrainConfig(), 0, torch.device("cpu"), 3)
    losses = []
    loss0, hits = trainer._run_subnets(net, x, y, [6, 2], lambda k, loss: losses.append(loss.detach()))
    with torch.no_grad():
        net.set_active(6)
        assert loss0 == pytest.approx(float(_reference_nll(net, x, y).mean()), rel=1e-5)
        assert hits == float((net(x).argmax(-1) == y).sum())
        teacher = F.softmax(net(x).double(), -1)
        net.set_active(2)
        student = F.log_softmax(net(x).double(), -1)
        kl = (teacher * (teacher.log() - student)).sum(-1)  # per token
    assert float(losses[1]) == pytest.approx(float(kl.mean()), rel=1e-5)  # batchmean over B*T tokens


def test_perplexity_is_exp_of_the_mean_token_cross_entropy():
    torch.manual_seed(1)
    net = TinyLM(vocab=13, dim=8).eval()
    x, y = torch.randint(0, 13, (7, 6)), torch.randint(0, 13, (7, 6))
    dataset = TensorDataset(x, y)
    with torch.no_grad():
        nll = _reference_nll(net, x, y)
        correct = (net(x).argmax(-1) == y).double().mean()
    got = quality_metrics(net, dataset, batch_size=12)  # 2 sequences a batch, the last one short
    assert got["loss"] == pytest.approx(float(nll.mean()), rel=1e-6)
    assert got["perplexity"] == pytest.approx(math.exp(float(nll.mean())), rel=1e-6)
    assert got["accuracy"] == pytest.approx(float(correct))
    splits = DataSplits(dataset, dataset, dataset, 13, (6,), {}, quality="perplexity")
    assert evaluate_subnet(net, 8, splits, "val", 16, 4) == pytest.approx(got["perplexity"], rel=1e-6)
    assert set(split_quality(net, splits, "perplexity")) == {"val_perplexity", "test_perplexity", "val_accuracy",
                                                             "test_accuracy"}


def test_the_perplexity_predictor_fits_the_log():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(60, 3))
    y = np.exp(2.0 + X @ np.array([0.3, -0.2, 0.1]))  # log-linear (and above 1): exact for a ridge on log(y)
    pred = AccuracyPredictor("ridge", 0, "perplexity").fit(X[:40], y[:40]).predict(X[40:])
    assert np.allclose(pred, y[40:], rtol=0.02)
    raw = AccuracyPredictor("ridge", 0, "accuracy").fit(X[:40], y[:40] / y.max()).predict(X[40:])
    assert not np.allclose(raw, y[40:] / y.max(), rtol=0.02)  # the same ridge on the raw values misses


# -- objectives, budgets, front, store --------------------------------------------------------------
def _lm_rows() -> pd.DataFrame:
    return pd.DataFrame({"id": [0, 1, 2, 3], "arch": ["{}"] * 4, "val_perplexity": [9.0, 12.0, 20.0, 11.0],
                         "test_perplexity": [9.5, 12.5, 21.0, 11.5], "val_accuracy": [0.5, 0.4, 0.3, 0.45],
                         "latency_ms": [3.0, 2.0, 1.0, 4.0], "energy_mj": [0.3, 0.2, 0.1, 0.4],
                         "memory_kb": [30.0, 20.0, 10.0, 40.0]})


def test_perplexity_is_minimized_and_budgeted_on_stored_rows():
    rows = _lm_rows()
    objectives = ["perplexity", "latency"]
    assert objective_matrix(rows.to_dict("records"), objectives)[:, 0].tolist() == [9.0, 12.0, 20.0, 11.0]
    assert constraint_matrix(rows.to_dict("records"), {"val_perplexity": 12.0})[:, 0].tolist() == [-3, 0, 8, -1]
    front = query_front(rows, objectives)
    assert front["id"].tolist() == [0, 1, 2]  # #3 is dominated by #0; best (lowest) perplexity first
    assert query_front(rows, objectives, Budgets(max_latency_ms=2.5))["id"].tolist() == [1, 2]
    assert query_front(rows, objectives, Budgets(max_perplexity=15))["id"].tolist() == [0, 1]
    with pytest.raises(NoCandidateError, match=r"nearest is #0 .*validation perplexity 9\.000"):
        query_front(rows, objectives, Budgets(max_perplexity=8.5))
    with pytest.raises(HwnasError, match="--min-accuracy: this job is judged by perplexity"):
        query_front(rows, objectives, Budgets(min_accuracy=0.4))


def test_budget_options_in_megabytes():
    assert budgets_of({"max_memory_mb": 1.5}).max_memory_kb == 1536.0
    with pytest.raises(HwnasError, match="same budget"):
        budgets_of({"max_memory_mb": 1.0, "max_memory_kb": 10.0})
    with pytest.raises(HwnasError, match="--max-memory-mb"):
        budgets_of({"max_memory_mb": float("nan")})


def test_a_perplexity_job_stores_minimized_perplexity_columns(tmp_path):
    space = build_space(load_job_config(TINY).space, (1, 8, 8), 10)
    store = JobStore(f"sqlite:///{tmp_path / 'hwnas.db'}")
    study = store.create("lm", ["perplexity", "latency"], {"objectives": ["perplexity", "latency"]})
    assert [d.name for d in study.directions] == ["MINIMIZE", "MINIMIZE"]
    for i, arch in enumerate([space.largest(), space.smallest()]):
        store.add_candidate(study, space, arch, {"val_perplexity": 10.0 + i, "test_perplexity": 11.0 + i,
                                                 "val_accuracy": 0.3, "latency_ms": 2.0 - i, "measured": True})
    frame = store.candidates(study)
    assert frame["val_perplexity"].tolist() == [10.0, 11.0] and frame["test_perplexity"].tolist() == [11.0, 12.0]
    assert "val_accuracy" in frame and "predicted_perplexity" in frame


# -- config -----------------------------------------------------------------------------------------
@pytest.mark.parametrize("sets, field", [
    ({"data": {"dataset": "pydoc"}}, "search.objectives"),  # accuracy (the default) on a text dataset
    ({"search": {"objectives": ["perplexity", "latency"]}}, "search.objectives"),  # on digits
    ({"data": {"context_length": 64}}, "data.context_length"),
    ({"data": {"dataset": "pydoc"}, "search": {"objectives": ["perplexity", "latency"], "min_accuracy": 0.5}},
     "search.min_accuracy"),
    ({"search": {"objectives": ["accuracy", "perplexity", "latency"]}}, "search.objectives"),
])
def test_a_metric_that_does_not_fit_the_dataset_is_a_one_line_config_error(sets, field):
    tree = copy.deepcopy(TINY)
    for section, values in sets.items():
        tree.setdefault(section, {}).update(values)
    with pytest.raises(ConfigError) as err:
        load_job_config(tree)
    assert field in str(err.value) and "\n" not in str(err.value)


def test_a_language_model_config_passes():
    tree = copy.deepcopy(TINY)
    tree["data"].update(dataset="pydoc", context_length=64)
    tree["search"].update(objectives=["perplexity", "latency"], max_perplexity=20.0)
    config = load_job_config(tree)
    assert Budgets.from_config(config.search).max_perplexity == 20.0


def test_a_measured_device_times_a_model_on_the_inputs_the_model_states():
    model = StandaloneSeq({"num_classes": 256, "embed": 8, "hidden": 8}).eval()
    device = LocalCPU(DeviceConfig(warmup=1, repeats=3, rounds=1))
    x = device.example((16,), model)
    assert x.dtype == torch.int64 and x.shape == (1, 1)  # one decode step, not random floats
    assert device.example((1, 8, 8)).dtype == torch.float32  # a model that states nothing: as before
    median, _ = device.time_model(model, (16,))
    assert median > 0
