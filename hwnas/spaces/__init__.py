"""What can be searched: one registered entry per space (see :mod:`hwnas.spaces.registry` for the
contract), and the elastic and compressed operators every space may use (``ops/``)."""
from hwnas.spaces.dims import Arch, Dim, SearchSpace
from hwnas.spaces.registry import SPACES, build_space, register_space, space_entry

__all__ = ["Arch", "Dim", "SearchSpace", "SPACES", "build_space", "register_space", "space_entry"]
