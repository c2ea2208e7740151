"""An LM subnet as a Hugging Face ``LlamaForCausalLM`` folder (``save_pretrained``).

Possible where the subnet's kept layers are homogeneous (one count of heads, of key-value heads
and one MLP width: a ``LlamaConfig`` has one of each) and its activations are float (transformers'
Llama has no per-token activation quantizer). Quantized weights are written as their dequantized
values, so transformers computes exactly what :class:`StandaloneLM` computes; the file then holds
float weights on the quantization grid, not packed integers. The kept query heads of a GQA group
are contiguous in the subnet's projections, which is the pairing transformers assumes.
"""
from __future__ import annotations

import os
from contextlib import contextmanager
import shutil
import tempfile
from pathlib import Path
from typing import Any, Iterator

import torch

from hwnas.errors import HwnasError
from hwnas.spaces.lm.standalone import StandaloneLM

LAYER_NAMES = {"input_norm": "input_layernorm", "post_norm": "post_attention_layernorm",
               **{p: f"self_attn.{p}" for p in ("q_proj", "k_proj", "v_proj", "o_proj")},
               **{p: f"mlp.{p}" for p in ("gate_proj", "up_proj", "down_proj")}}


def hf_ineligible_reason(spec: dict[str, Any]) -> str | None:
    """None when the subnet of ``spec`` can be written as a ``LlamaForCausalLM``, else why not."""
    shapes = {(layer["heads"], layer["kv_heads"], layer["mlp"]) for layer in spec["layers"]}
    if len(shapes) > 1:
        return f"its layers differ in (heads, kv heads, MLP width): {sorted(shapes)}; a LlamaConfig has one of each"
    if spec["abits"] < 16:
        return f"its activations are quantized to {spec['abits']} bits, which transformers' Llama does not do"
    return None


def llama_config(spec: dict[str, Any]) -> Any:
    from transformers import LlamaConfig
    layer = spec["layers"][0]
    return LlamaConfig(vocab_size=spec["vocab_size"], hidden_size=spec["hidden"], intermediate_size=layer["mlp"],
                       num_hidden_layers=len(spec["layers"]), num_attention_heads=layer["heads"],
                       num_key_value_heads=layer["kv_heads"], head_dim=spec["head_dim"],
                       rms_norm_eps=spec["rms_norm_eps"], tie_word_embeddings=spec["tie_word_embeddings"],
                       max_position_embeddings=spec["context_length"],
                       rope_parameters={"rope_type": "default", "rope_theta": spec["rope_theta"]},
                       bos_token_id=None, eos_token_id=None, pad_token_id=None)


def hf_state_dict(model: StandaloneLM) -> dict[str, torch.Tensor]:
    """The standalone model's tensors under transformers' Llama names."""
    state = {"model.embed_tokens.weight": model.embed.weight, "model.norm.weight": model.norm.weight}
    for i, layer in enumerate(model.layers):
        for ours, theirs in LAYER_NAMES.items():
            state[f"model.layers.{i}.{theirs}.weight"] = getattr(layer, ours).weight
    state["lm_head.weight"] = model.embed.weight if model.lm_head.weight is None else model.lm_head.weight
    return {k: v.detach().cpu().contiguous() for k, v in state.items()}


def export_hf(model: StandaloneLM, folder: str | Path, tokenizer: Any = None) -> Path:
    """Write ``model`` as a ``LlamaForCausalLM`` folder (atomically: a temporary folder, renamed);
    ``tokenizer`` (a transformers tokenizer) is saved beside it when given."""
    from transformers import LlamaForCausalLM
    reason = hf_ineligible_reason(model.spec)
    if reason is not None:
        raise HwnasError(f"no Hugging Face export of this subnet: {reason}")
    folder = Path(folder)
    hf = LlamaForCausalLM(llama_config(model.spec))
    result = hf.load_state_dict(hf_state_dict(model), strict=False)
    left = [k for k in (*result.missing_keys, *result.unexpected_keys) if k != "lm_head.weight"]
    if left:  # the names above are transformers'; a version that renames them is caught here
        raise HwnasError(f"the Hugging Face export does not fit transformers' LlamaForCausalLM: {left[0]}")
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=folder.parent))
    try:
        hf.save_pretrained(tmp)
        if tokenizer is not None:
            tokenizer.save_pretrained(tmp)
        if folder.exists():
            shutil.rmtree(folder)
        os.replace(tmp, folder)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return folder


@contextmanager
def _quiet_transformers() -> Iterator[None]:
    """transformers draws progress bars on stderr while it saves and loads; the export's CLI
    prints its own lines."""
    from transformers.utils import logging as hf_logging
    was = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was:
            hf_logging.enable_progress_bar()


def write_hf_format(model: StandaloneLM, folder: Path) -> dict[str, Any]:
    """``hwnas export --format hf``: the subnet as a ``LlamaForCausalLM`` folder (a byte-level
    tokenizer has no transformers files to save beside it; a Hugging Face one is named in the
    manifest)."""
    with _quiet_transformers():
        export_hf(model, folder)
    return {"file": folder.name, "loads_with": "transformers.LlamaForCausalLM.from_pretrained"}


def load_hf_format(folder: Path):
    """The exported folder through transformers, as the export check runs it: token ids -> logits."""
    from transformers import LlamaForCausalLM
    with _quiet_transformers():
        hf = LlamaForCausalLM.from_pretrained(str(folder), local_files_only=True, dtype=torch.float32).eval()
    return lambda ids: hf(ids).logits
