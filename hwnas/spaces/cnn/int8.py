"""Which CNN subnets have a real int8 export (the space's ``int8_ineligible_reason`` hook)."""
from __future__ import annotations

from typing import Any

INT8_BITS = 8


def cnn_int8_ineligible_reason(spec: dict[str, Any]) -> str | None:
    """None when the subnet of ``spec`` can be exported as a real int8 model, else why not.

    The searched layers (every block's) must all be 8-bit multiplication layers: PyTorch's int8
    backends have no shift or adder kernels, and lower bit-widths would run as int8, not as what
    was searched. The stem and the head are float in the search (first and last layers
    unquantized, as is common practice) and stay float in the int8 model.
    """
    for block in spec["blocks"]:
        for layer in block["layers"].values():
            if layer["op"] != "mult":
                return f"it has {layer['op']} layers, which PyTorch's int8 backends cannot run"
            if layer["wbits"] != INT8_BITS or layer["abits"] != INT8_BITS:
                return (f"block {block['name']} has {layer['wbits']}-bit weights and {layer['abits']}-bit "
                        "inputs; the int8 export is for subnets whose every searched layer is 8-bit")
    return None
