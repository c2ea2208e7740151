"""What can be searched: search spaces, the weight-sharing supernets that realize them, and the
trainer. Spaces are looked up by name in :data:`SPACES` so that adding one never edits the core."""
from hwnas.spaces.dims import Arch, Dim, SearchSpace
from hwnas.spaces.registry import SPACES, build_space, register_space

__all__ = ["Arch", "Dim", "SearchSpace", "SPACES", "build_space", "register_space"]
