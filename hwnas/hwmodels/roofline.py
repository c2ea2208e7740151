"""Analytical devices: a roofline latency model and the energy model, described in YAML.

Users describe hardware they cannot run here (an FPGA, an accelerator with cheap shifts and adds)
by its peak throughput per operator type and bit-width, its DRAM bandwidth and its on-chip
buffer. An op's latency is the larger of its compute time and its memory time (the roofline):

    compute = MACs / peak(operator type, bit-width) + other element operations / peak elementwise
    memory  = (weight bytes + activation bytes, unless they fit the on-chip buffer) / DRAM bandwidth
    latency = max(compute, memory)

A MAC runs on the narrowest unit at least as wide as its wider operand (a 6-bit MAC on 8-bit
units); attention ops use the multiply units, except binary attention, whose q/k products are
additions (the adder units). Energy uses :class:`~hwnas.hwmodels.energy.Horowitz45nm`, whose
figures can be overridden in the same file.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from hwnas.errors import ConfigError
from hwnas.hwmodels.energy import Horowitz45nm
from hwnas.ir import OpSig
from hwnas.utils.models import format_validation_error

ATTENTION_UNITS = {"softmax": "mult", "linear": "mult", "relu_linear": "mult", "binary": "adder"}


class RooflineSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1)
    description: str = ""
    peak_macs_per_s: dict[str, dict[int, float]] = Field(
        description="operator type (mult, shift, adder) -> bit-width -> MAC/s")
    peak_elementwise_per_s: float = Field(gt=0)
    dram_bytes_per_s: float = Field(gt=0)
    onchip_buffer_bytes: int = Field(ge=0)
    energy: dict[str, float] = Field(default_factory=dict, description="overrides of Horowitz45nm's figures")

    @field_validator("peak_macs_per_s")
    @classmethod
    def _peaks(cls, v: dict[str, dict[int, float]]) -> dict[str, dict[int, float]]:
        if "mult" not in v:
            raise ValueError("needs at least the 'mult' unit")
        for unit, by_bits in v.items():
            if unit not in ("mult", "shift", "adder"):
                raise ValueError(f"unknown unit {unit!r}; use mult, shift or adder")
            if not by_bits or any(b < 1 or b > 32 or not (p > 0 and math.isfinite(p)) for b, p in by_bits.items()):
                raise ValueError(f"{unit}: give positive MAC/s for bit-widths in 1..32")
        return v

    @field_validator("energy")
    @classmethod
    def _energy(cls, v: dict[str, float]) -> dict[str, float]:
        known = set(Horowitz45nm.__dataclass_fields__) - {"name"}
        unknown = sorted(set(v) - known)
        if unknown:
            raise ValueError(f"unknown energy figure {unknown[0]!r}; known: {sorted(known)}")
        return v


class RooflineModel:
    def __init__(self, spec: RooflineSpec):
        self.spec = spec
        self.energy = Horowitz45nm(**spec.energy)

    @classmethod
    def from_yaml(cls, path: str | Path) -> "RooflineModel":
        path = Path(path)
        try:
            tree = yaml.safe_load(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ConfigError(f"device spec {path} does not exist") from None
        except (OSError, UnicodeDecodeError, yaml.YAMLError, RecursionError) as exc:
            raise ConfigError(f"device spec {path} is unreadable: {str(exc).splitlines()[0]}") from None
        try:
            return cls(RooflineSpec.model_validate(tree))
        except ValidationError as exc:

            raise ConfigError(f"device spec {path}: {format_validation_error(exc)}") from None

    def unit_peak(self, unit: str, bits: int) -> float:
        by_bits = self.spec.peak_macs_per_s.get(unit) or self.spec.peak_macs_per_s["mult"]
        wide_enough = [b for b in by_bits if b >= bits]
        return by_bits[min(wide_enough)] if wide_enough else by_bits[max(by_bits)]

    def op_seconds(self, op: OpSig) -> float:
        if op.kind == "attention":
            unit, bits = ATTENTION_UNITS.get(op.op, "mult"), op.abits
        else:
            unit, bits = op.op, max(op.wbits, op.abits)
        compute = op.macs / self.unit_peak(unit, bits) + op.adds / self.spec.peak_elementwise_per_s
        weight_bytes = op.weight_count * op.weight_storage_bits / 8
        activation_bytes = op.io_elements * op.abits / 8
        fits = weight_bytes + activation_bytes <= self.spec.onchip_buffer_bytes
        dram = weight_bytes + (0.0 if fits else activation_bytes)
        return max(compute, dram / self.spec.dram_bytes_per_s)

    def latency_ms(self, ops: list[OpSig]) -> float:
        return 1e3 * sum(self.op_seconds(op) for op in ops)

    def describe(self) -> dict[str, Any]:
        return {"name": self.spec.name, "kind": "analytical", "description": self.spec.description,
                "model": "roofline", **self.spec.model_dump(exclude={"name", "description"})}
