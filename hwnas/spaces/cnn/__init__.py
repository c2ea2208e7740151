"""The CNN space: a MobileNetV2/V3-style inverted-residual supernet, registered as ``cnn``."""
from hwnas.spaces.cnn.graph import cnn_block_graph, cnn_op_graph, cnn_op_inputs
from hwnas.spaces.cnn.int8 import cnn_int8_ineligible_reason
from hwnas.spaces.cnn.pretrained import load_cnn_pretrained
from hwnas.spaces.cnn.space import CNNSpace, CNNSpaceConfig
from hwnas.spaces.cnn.supernet import CNNSupernet, StandaloneCNN
from hwnas.spaces.registry import SpaceEntry, register_space

register_space(SpaceEntry(name="cnn", config_model=CNNSpaceConfig, build_space=CNNSpace,
                          build_supernet=CNNSupernet, build_standalone=StandaloneCNN, op_graph=cnn_op_graph,
                          block_graph=cnn_block_graph, int8_ineligible_reason=cnn_int8_ineligible_reason,
                          load_pretrained=load_cnn_pretrained, op_inputs=cnn_op_inputs))

__all__ = ["CNNSpace", "CNNSpaceConfig", "CNNSupernet", "StandaloneCNN"]
