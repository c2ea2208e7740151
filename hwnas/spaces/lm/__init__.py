"""The language-model space: a Llama-family decoder-only supernet, registered as ``lm``."""
from hwnas.spaces.lm.graph import kv_cache_bytes, lm_op_graph, lm_op_inputs, lm_prefill_graph, prefill_unit
from hwnas.spaces.lm.hf_export import hf_ineligible_reason, load_hf_format, write_hf_format
from hwnas.spaces.lm.pretrained import load_lm_pretrained
from hwnas.spaces.lm.space import LMSpace, LMSpaceConfig
from hwnas.spaces.lm.standalone import DecodeStep, StandaloneLM, greedy_generate
from hwnas.spaces.lm.supernet import LMSupernet
from hwnas.spaces.registry import ExportFormat, LatencyPhase, SpaceEntry, register_space

register_space(SpaceEntry(name="lm", config_model=LMSpaceConfig, build_space=LMSpace, build_supernet=LMSupernet,
                          build_standalone=StandaloneLM, op_graph=lm_op_graph, load_pretrained=load_lm_pretrained,
                          op_inputs=lm_op_inputs,
                          export_formats={"hf": ExportFormat(hf_ineligible_reason, write_hf_format, load_hf_format,
                                                             target="hf")},
                          latency_phases={"prefill": LatencyPhase(lm_prefill_graph, StandaloneLM.prefill_call,
                                                                  prefill_unit)}))

__all__ = ["DecodeStep", "LMSpace", "LMSpaceConfig", "LMSupernet", "StandaloneLM", "greedy_generate",
           "kv_cache_bytes", "lm_prefill_graph"]
