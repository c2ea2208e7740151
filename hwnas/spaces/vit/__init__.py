"""The ViT space: an elastic vision transformer over timm blocks, registered as ``vit``."""
from hwnas.spaces.registry import SpaceEntry, register_space
from hwnas.spaces.vit.graph import vit_op_graph, vit_op_inputs
from hwnas.spaces.vit.pretrained import load_vit_pretrained
from hwnas.spaces.vit.space import ViTSpace, ViTSpaceConfig
from hwnas.spaces.vit.supernet import StandaloneViT, ViTSupernet

register_space(SpaceEntry(name="vit", config_model=ViTSpaceConfig, build_space=ViTSpace,
                          build_supernet=ViTSupernet, build_standalone=StandaloneViT, op_graph=vit_op_graph,
                          load_pretrained=load_vit_pretrained, op_inputs=vit_op_inputs))

__all__ = ["StandaloneViT", "ViTSpace", "ViTSpaceConfig", "ViTSupernet"]
