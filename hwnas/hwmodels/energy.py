"""Analytical energy per inference, from energy per arithmetic operation and per memory access.

Figures (45 nm, 0.9 V) are from M. Horowitz, "Computing's energy problem (and what we can do
about it)", ISSCC 2014, the table every hardware-aware NAS paper cites:

    8-bit int add 0.03 pJ, 32-bit int add 0.1 pJ, 32-bit float add 0.9 pJ,
    8-bit int mult 0.2 pJ, 32-bit int mult 3.1 pJ, 32-bit float mult 3.7 pJ,
    8 KB SRAM read of 64 bits 10 pJ, DRAM read of 64 bits 1.3-2.6 nJ (we take 1.3 nJ).

Shifts are not in that table; we take ShiftAddNet's (You et al., NeurIPS 2020, Table 1, 45 nm):
a 32-bit shift 0.13 pJ and an 8-bit shift 0.024 pJ.

Integer multiplies below 8 bits scale with the product of the operand widths (an array
multiplier's area), integer adds and shifts with their width; a MAC whose weight or activation is
float is a float MAC. By operator type, one MAC costs:

    mult:  a b_w x b_a multiply + an accumulating add (32-bit integer, or float)
    shift: a shift of the b_a-bit activation + an accumulating add (DeepShift, ShiftAddNet)
    adder: a subtraction of width max(b_w, b_a) (its absolute value is a sign flip) + an
           accumulating add (AdderNet)

Weights are read once from DRAM per inference (a shift weight's sign and exponent in at most 8
bits); activations are read and written once through SRAM. This is the model used until the
hardware-model issue adds roofline devices.
"""
from __future__ import annotations

from dataclasses import dataclass

from hwnas.errors import ConfigError
from hwnas.ir import OpSig
from hwnas.ir import FLOAT_BITS

PJ_PER_MJ = 1e9


@dataclass(frozen=True)
class Horowitz45nm:
    """Energy per op in picojoules; all fields overridable to describe another process."""

    name: str = "horowitz-45nm"
    int8_mult_pj: float = 0.2
    int32_add_pj: float = 0.1
    int8_add_pj: float = 0.03
    fp32_mult_pj: float = 3.7
    fp32_add_pj: float = 0.9
    int32_shift_pj: float = 0.13
    int8_shift_pj: float = 0.024
    sram_pj_per_bit: float = 10.0 / 64
    dram_pj_per_bit: float = 1300.0 / 64

    def mac_pj(self, wbits: int, abits: int, op: str = "mult") -> float:
        is_float = wbits >= FLOAT_BITS or abits >= FLOAT_BITS
        accumulate = self.fp32_add_pj if is_float else self.int32_add_pj  # 32-bit accumulator
        if op == "shift":
            return self.shift_pj(abits) + accumulate
        if op == "adder":
            return self.add_pj(FLOAT_BITS if is_float else max(wbits, abits)) + accumulate
        if is_float:
            return self.fp32_mult_pj + self.fp32_add_pj
        return self.int8_mult_pj * (wbits * abits) / 64 + accumulate

    def shift_pj(self, bits: int) -> float:
        if bits >= FLOAT_BITS:
            return self.int32_shift_pj
        return self.int8_shift_pj * bits / 8

    def add_pj(self, bits: int) -> float:
        if bits >= FLOAT_BITS:
            return self.fp32_add_pj
        return self.int8_add_pj * bits / 8

    def op_pj(self, op: OpSig) -> float:
        """Energy of one op for one sample, in picojoules."""
        compute = op.macs * self.mac_pj(op.wbits, op.abits, op.op) + op.adds * self.add_pj(op.abits)
        weights = op.weight_count * op.weight_storage_bits * self.dram_pj_per_bit
        act_bits = op.abits if op.abits < FLOAT_BITS else FLOAT_BITS
        activations = op.io_elements * act_bits * self.sram_pj_per_bit
        return compute + weights + activations

    def energy_mj(self, ops: list[OpSig]) -> float:
        return sum(self.op_pj(op) for op in ops) / PJ_PER_MJ

    def describe(self) -> dict:
        return {"name": self.name, "source": "Horowitz, ISSCC 2014, 45 nm", **{
            k: v for k, v in self.__dict__.items() if k != "name"}}


ENERGY_MODELS: dict[str, type] = {"horowitz-45nm": Horowitz45nm}


def energy_model(name: str):
    try:
        return ENERGY_MODELS[name]()
    except KeyError:
        raise ConfigError(f"device.energy_model: unknown model {name!r}; known: {sorted(ENERGY_MODELS)}") from None
