"""Importers (and exporters back) for the lookup-table formats users already have.

- ``ofa``: the block-keyed tables of ProxylessNAS / Once-for-All, a YAML or JSON mapping from
  ``expanded_conv-input:HxWxC-output:HxWxC-expand:E-kernel:K-stride:S-idskip:I`` (optionally
  ``-se:0-hs:H``), ``Conv-input:...-output:...`` (the 3x3 stem), ``Conv_1-input:...-output:...``
  (the 1x1 head) and ``Logits-input:HxWxC-output:N`` (pooling and classifier) to ``{mean, std,
  count}`` in milliseconds (or a bare number). Blocks become ``mbconv`` rows, so a table of this
  format prices subnets block by block (:func:`hwnas.ir.block_graph`). Bit-widths are
  not in the keys: they are wildcards. ``hs:1`` (hard-swish) rows and squeeze-excite (``se:1``)
  rows describe blocks hwnas spaces do not have; they are skipped with a warning naming them.
- ``bitwidth``: convolution tables keyed ``(cin, cout, H, k, stride, pad, groups)-W{w}A{a}``, as
  mixed-precision quantization work measures them, mapping to a latency in ms or to
  ``{latency_ms, energy_mj}`` (APQ's published BitFusion table spells them ``latency`` and
  ``energy``). Activation and operator fields are wildcards; hwnas convolutions pad ``k // 2``, so
  any other padding is refused.
- ``fbnet``: HW-NAS-Bench's FBNet-space tables (edge GPU, Eyeriss, FPGA, Pixel 3, Raspberry Pi 4),
  a NumPy ``.npy`` file holding a pickled dict (read by :mod:`hwnas.utils.safe_npy`, which admits
  only a dict of names to numbers) of ``ConvBlock_H{h}_W{w}_Cin{c}_Cout{c}_exp{e}_kernel{k}_stride{s}_group{g}``
  (an inverted-residual block: ``mbconv`` rows, so the table prices subnets block by block),
  ``ConvNorm_H_W_Cin_Cout_kernel_stride_group`` (the stem and head convolutions),
  ``AvgP_H_W_Cin_Cout_kernel_stride`` and ``FC_Cin_Cout`` (pooling and the linear layer, summed
  into one ``classifier`` row, hwnas's op for both) and ``Skip_...`` keys to milliseconds.

In every format, entries named ``head`` and ``tail`` (APQ's fixed stem and fixed last layers)
become the table's fixed parts: one figure for all the ops before, or after, a subnet's blocks
(see :meth:`~hwnas.hwmodels.lut.LookupTable.fixed_parts`). Entries of a kind hwnas cannot use are
skipped, with one warning line per kind saying what was not understood and how many there were.

Files are YAML or JSON mappings (any suffix but ``.csv``, ``.yaml``/``.yml`` and ``.npy``), a
CSV with ``key`` and ``latency_ms`` (and optional ``energy_mj``) columns, or for ``fbnet`` a
``.npy`` file.
"""
from __future__ import annotations

import json
import re
import warnings
from pathlib import Path
from typing import Any, Callable, NamedTuple

import pandas as pd
import yaml

from hwnas.errors import LookupTableError
from hwnas.hwmodels.lut import FIXED_PARTS, LookupTable, parse_row
from hwnas.ir import signature_key
from hwnas.utils.io import distinct_keys
from hwnas.utils.safe_npy import UnsafeTableError, load_number_dict

OFA_KEY = re.compile(r"^(?P<type>[A-Za-z][A-Za-z0-9_]*)-input:(?P<inp>\d+x\d+x\d+)"
                     r"(?:-output:(?P<out>\d+(?:x\d+x\d+)?))?(?P<rest>(?:-[a-z]+:[0-9.]+)*)$")
BITWIDTH_KEY = re.compile(r"^\(\s*(\d+)\s*,\s*(\d+)\s*,\s*(\d+)\s*,\s*(\d+)\s*,\s*(\d+)\s*,\s*(\d+)\s*,"
                          r"\s*(\d+)\s*\)\s*-\s*W(\d+)A(\d+)$")


def read_mapping(path: str | Path) -> dict[str, Any]:
    """A key -> value mapping from a YAML / JSON file or a CSV with ``key`` and value columns."""
    path = Path(path)
    if not path.exists():
        raise LookupTableError(f"table {path} does not exist")
    if path.suffix.lower() == ".npy":
        try:
            return load_number_dict(path)
        except (UnsafeTableError, OSError) as exc:
            raise LookupTableError(f"table {path} is refused: {exc}") from None
    try:
        if path.suffix.lower() == ".csv":
            frame = pd.read_csv(path, dtype={"key": str})
            if "key" not in frame.columns or "latency_ms" not in frame.columns:
                raise LookupTableError(f"table {path}: a CSV needs 'key' and 'latency_ms' columns")
            repeated = frame["key"][frame["key"].duplicated()]
            if len(repeated):
                raise LookupTableError(f"table {path}: key {repeated.iloc[0]!r} appears twice")
            values = [c for c in ("latency_ms", "energy_mj") if c in frame.columns]
            return {r["key"]: {c: r[c] for c in values if pd.notna(r[c])} for r in frame.to_dict("records")}
        text = path.read_text()
        if path.suffix.lower() in (".yaml", ".yml"):
            _refuse_repeated_yaml_keys(yaml.compose(text, Loader=yaml.SafeLoader), path)
            tree = yaml.safe_load(text)
        else:
            tree = json.loads(text, object_pairs_hook=lambda pairs: _unique(pairs, path))
    except (yaml.YAMLError, json.JSONDecodeError, UnicodeDecodeError, pd.errors.ParserError,
            pd.errors.EmptyDataError, RecursionError) as exc:  # RecursionError: absurd nesting
        raise LookupTableError(f"table {path} is unreadable: {str(exc).splitlines()[0]}") from None
    if not isinstance(tree, dict):
        raise LookupTableError(f"table {path}: expected a mapping of keys to latencies")
    return tree


def _unique(pairs: list[tuple[str, Any]], path: Path) -> dict[str, Any]:
    """A JSON object whose keys are distinct (json would keep the last of a repeated key)."""
    return distinct_keys(pairs, lambda key: LookupTableError(f"table {path}: key {key!r} appears twice"))


def _refuse_repeated_yaml_keys(node: Any, path: Path) -> None:
    """The same for the top-level mapping of a YAML file (safe_load keeps the last)."""
    if isinstance(node, yaml.MappingNode):
        seen: set[str] = set()
        for key, _ in node.value:
            if isinstance(key, yaml.ScalarNode):
                if key.value in seen:
                    raise LookupTableError(f"table {path}: key {key.value!r} appears twice")
                seen.add(key.value)


def _values(key: str, value: Any) -> dict[str, Any]:
    """latency_ms, spread_ms, repeats and energy_mj from a bare number or a mapping."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return {"latency_ms": value}
    if not isinstance(value, dict):
        raise LookupTableError(f"entry {key!r}: expected a latency in ms or a mapping, got {value!r}")
    latency = next((value[k] for k in ("mean", "latency_ms", "latency") if k in value), None)
    if latency is None:
        raise LookupTableError(f"entry {key!r}: no latency (mean, latency_ms or latency)")
    return {"latency_ms": latency, "spread_ms": value.get("std"), "repeats": value.get("count"),
            "energy_mj": value.get("energy_mj", value.get("energy"))}


def _shape(text: str) -> list[int]:
    return [int(v) for v in text.split("x")]


# -- OFA / ProxylessNAS block keys -----------------------------------------------------------------
def ofa_row(key: str) -> dict[str, Any] | None:
    """The schema signature of an OFA key; None for a layer type hwnas spaces do not have."""
    m = OFA_KEY.match(key.strip())
    if not m:
        raise LookupTableError(f"entry {key!r} is not an OFA-style key "
                               "(expanded_conv-input:HxWxC-output:HxWxC-expand:E-kernel:K-stride:S-idskip:I)")
    kind, (h, w, cin) = m["type"], _shape(m["inp"])
    extra = {k: float(v) for k, v in (part.split(":") for part in m["rest"].split("-")[1:])}
    if kind == "Logits" and m["out"] and "x" not in m["out"]:
        return {"kind": "classifier", "cin": cin, "h": h, "w": w, "cout": int(m["out"]), "kernel": 1, "stride": 1,
                "groups": 1}
    if not m["out"] or "x" not in m["out"]:
        return None
    oh, ow, cout = _shape(m["out"])
    if kind in ("Conv", "Conv_1"):
        kernel, stride = (3, h // oh) if kind == "Conv" else (1, 1)
        return {"kind": "conv", "cin": cin, "h": h, "w": w, "cout": cout, "kernel": kernel, "stride": stride,
                "groups": 1}
    if kind != "expanded_conv":
        return None
    missing = [k for k in ("expand", "kernel", "stride", "idskip") if k not in extra]
    if missing:
        raise LookupTableError(f"entry {key!r} lacks {missing[0]}")
    if extra.get("se", 0) or extra.get("hs", 0):
        return None
    stride, kernel = int(extra["stride"]), int(extra["kernel"])
    if int(extra["idskip"]) != int(stride == 1 and cin == cout):
        raise LookupTableError(f"entry {key!r}: idskip:{int(extra['idskip'])} but hwnas blocks add the input "
                               "exactly when stride is 1 and input and output channels match")
    row = {"kind": "mbconv", "cin": cin, "h": h, "w": w, "cout": cout, "kernel": kernel, "stride": stride,
           "groups": 1, "mid": int(round(cin * extra["expand"]))}
    if "hs" in extra:
        row["act"] = "relu6"
    return row


def ofa_key(row: dict[str, Any]) -> str:
    """The OFA key of a schema row (the inverse of :func:`ofa_row`)."""
    shape = lambda *v: "x".join(str(int(x)) for x in v)  # noqa: E731
    kind = row["kind"]
    if kind == "classifier":
        return f"Logits-input:{shape(row['h'], row['w'], row['cin'])}-output:{int(row['cout'])}"
    if kind == "conv" and row["kernel"] in (1, 3):
        oh = (row["h"] + 2 * (row["kernel"] // 2) - row["kernel"]) // row["stride"] + 1
        ow = (row["w"] + 2 * (row["kernel"] // 2) - row["kernel"]) // row["stride"] + 1
        name = "Conv" if row["kernel"] == 3 else "Conv_1"
        return f"{name}-input:{shape(row['h'], row['w'], row['cin'])}-output:{shape(oh, ow, row['cout'])}"
    if kind == "mbconv":
        pad, k, s = row["kernel"] // 2, row["kernel"], row["stride"]
        oh, ow = (row["h"] + 2 * pad - k) // s + 1, (row["w"] + 2 * pad - k) // s + 1
        expand = row["mid"] / row["cin"]
        e = f"{int(expand)}" if float(expand).is_integer() else f"{expand:g}"
        key = (f"expanded_conv-input:{shape(row['h'], row['w'], row['cin'])}-output:{shape(oh, ow, row['cout'])}"
               f"-expand:{e}-kernel:{k}-stride:{s}-idskip:{int(s == 1 and row['cin'] == row['cout'])}")
        return key + ("-se:0-hs:0" if row.get("act") == "relu6" else "")
    raise LookupTableError(f"entry {row.get('key', kind)} has no OFA-style key (OFA tables hold 3x3 stem and "
                           "1x1 head convs, expanded_conv blocks and Logits)")


# -- bit-width keys --------------------------------------------------------------------------------
def bitwidth_row(key: str) -> dict[str, Any]:
    m = BITWIDTH_KEY.match(key.strip())
    if not m:
        raise LookupTableError(f"entry {key!r} is not a bit-width key ((cin, cout, H, k, stride, pad, groups)-W{{w}}A{{a}})")
    cin, cout, h, k, stride, pad, groups, wbits, abits = (int(v) for v in m.groups())
    if pad != k // 2:
        raise LookupTableError(f"entry {key!r}: padding {pad} with kernel {k}; hwnas convolutions pad kernel // 2")
    if groups < 1 or cin % groups or cout % groups:
        raise LookupTableError(f"entry {key!r}: groups {groups} must divide cin {cin} and cout {cout}")
    kind = "dwconv" if groups > 1 and groups == cin else "conv"
    return {"kind": kind, "cin": cin, "h": h, "w": h, "cout": cout, "kernel": k, "stride": stride,
            "groups": groups, "wbits": wbits, "abits": abits}


def bitwidth_key(row: dict[str, Any]) -> str:
    if row["kind"] not in ("conv", "dwconv") or row.get("wbits") is None or row.get("abits") is None \
            or row["h"] != row["w"]:
        raise LookupTableError(f"entry {row.get('key', row['kind'])} has no bit-width key (square convolutions "
                               "with both bit-widths only)")
    return (f"({row['cin']}, {row['cout']}, {row['h']}, {row['kernel']}, {row['stride']}, {row['kernel'] // 2}, "
            f"{row['groups']})-W{row['wbits']}A{row['abits']}")


# -- FBNet-space keys (HW-NAS-Bench) ---------------------------------------------------------------
FBNET_KEY = re.compile(r"^(?P<type>[A-Za-z]+)((?:_[A-Za-z]+\d+)*)$")


def _fbnet_fields(key: str) -> tuple[str, dict[str, int]]:
    m = FBNET_KEY.match(key.strip())
    if not m:
        raise LookupTableError(f"entry {key!r} is not an FBNet-space key (ConvBlock_H{{h}}_W{{w}}_Cin{{c}}_...)")
    fields = dict(re.findall(r"_([A-Za-z]+?)(\d+)(?=_|$)", m.group(2)))
    return m["type"], {k.lower(): int(v) for k, v in fields.items()}


def fbnet_row(key: str) -> "dict[str, Any] | Skip":
    kind, f = _fbnet_fields(key)
    need = {"ConvBlock": ("h", "w", "cin", "cout", "exp", "kernel", "stride", "group"),
            "ConvNorm": ("h", "w", "cin", "cout", "kernel", "stride", "group"), "FC": ("cin", "cout")}
    if kind == "Skip":
        return Skip("Skip", "skip-connection choices (hwnas spaces switch blocks off by depth instead)")
    if kind == "AvgP":
        return Skip("AvgP", "pooling entries without the FC entry of their channels (hwnas prices pooling "
                            "with the classifier)")
    if kind not in need:
        return Skip(kind, f"{kind} entries (a layer type hwnas spaces do not have)")
    missing = [n for n in need[kind] if n not in f]
    if missing:
        raise LookupTableError(f"entry {key!r} lacks {missing[0]}")
    if kind == "FC":  # the pooled map's size where _fbnet_classifiers joined its AvgP entry, else any
        return {"kind": "classifier", "cin": f["cin"], "cout": f["cout"], "h": f.get("h"), "w": f.get("w"),
                "kernel": None, "stride": None, "groups": None}
    if kind == "ConvNorm":
        depthwise = f["group"] > 1 and f["group"] == f["cin"] == f["cout"]
        return {"kind": "dwconv" if depthwise else "conv", "cin": f["cin"], "h": f["h"], "w": f["w"], "cout": f["cout"],
                "kernel": f["kernel"], "stride": f["stride"], "groups": f["group"]}
    if f["group"] != 1:
        return Skip("ConvBlock-group", "blocks with grouped 1x1 convolutions (group > 1; hwnas blocks have none)")
    return {"kind": "mbconv", "cin": f["cin"], "h": f["h"], "w": f["w"], "cout": f["cout"], "kernel": f["kernel"],
            "stride": f["stride"], "groups": 1, "mid": f["cin"] * f["exp"]}


def _fbnet_classifiers(mapping: dict[str, Any]) -> dict[str, Any]:
    """The mapping with each ``FC_Cin{c}_Cout{n}`` entry joined to the ``AvgP`` entries producing
    its ``c`` channels (as ``FC_H{h}_W{w}_Cin{c}_Cout{n}``): hwnas's ``classifier`` op is pooling
    and the linear layer together, so its row has the pooled map's size and the sum of both
    latencies. An ``AvgP`` entry no ``FC`` entry takes stays, to be skipped with its reason."""
    parsed = {str(k): (_fbnet_fields(str(k)) if FBNET_KEY.match(str(k).strip()) else ("", {}), v)
              for k, v in mapping.items()}
    pools: dict[int, list[tuple[str, dict[str, int], float]]] = {}
    for key, ((kind, f), value) in parsed.items():
        if kind == "AvgP" and "cout" in f and isinstance(value, (int, float)):
            pools.setdefault(f["cout"], []).append((key, f, float(value)))
    out: dict[str, Any] = {}
    joined: set[str] = set()
    for key, ((kind, f), value) in parsed.items():
        if kind == "FC" and f.get("cin") in pools and isinstance(value, (int, float)):
            for pool_key, pool, pool_ms in pools[f["cin"]]:
                out[f"FC_H{pool['h']}_W{pool['w']}_Cin{f['cin']}_Cout{f['cout']}"] = float(value) + pool_ms
                joined.add(pool_key)
        elif kind != "AvgP":
            out[key] = value
    out.update({key: value for key, ((kind, _), value) in parsed.items() if kind == "AvgP" and key not in joined})
    return out


# -- tables ----------------------------------------------------------------------------------------
class Skip(NamedTuple):
    """An entry hwnas cannot use: its kind, and what was not understood (one warning line per kind)."""
    kind: str
    why: str


FORMATS: dict[str, Callable[[str], Any]] = {"ofa": ofa_row, "bitwidth": bitwidth_row, "fbnet": fbnet_row}
KEYERS: dict[str, Callable[[dict[str, Any]], str]] = {"ofa": ofa_key, "bitwidth": bitwidth_key}


def _signature(key: str, fmt: str) -> "dict[str, Any] | Skip":
    """The schema signature of one entry, or why it is skipped. A key of another shape than the
    format's is skipped (named by its leading word), so one stray entry does not refuse a table."""
    if key.strip().lower() in FIXED_PARTS:
        return {"kind": key.strip().lower()}
    try:
        sig = FORMATS[fmt](key)
    except LookupTableError as exc:
        if "is not a" not in str(exc):
            raise  # the format's own key, with a value hwnas refuses: name it
        word = re.match(r"[A-Za-z_]*[A-Za-z]", key.strip())
        return Skip(word.group(0) if word else key[:16], f"entries not understood as {fmt} keys ({exc})")
    if sig is None:
        return Skip("unsupported", "entries of layers hwnas spaces do not have")
    return sig


def import_mapping(mapping: dict[str, Any], fmt: str, device: dict[str, Any]) -> LookupTable:
    """A lookup table from a key -> value mapping of format ``fmt`` (see the module docstring)."""
    if fmt not in FORMATS:
        raise LookupTableError(f"unknown table format {fmt!r}; known: {sorted(FORMATS)} (or hwnas)")
    if fmt == "fbnet":
        mapping = _fbnet_classifiers(mapping)
    table = LookupTable(device=dict(device))
    skipped: dict[tuple[str, str], list[str]] = {}
    for key, value in mapping.items():
        sig = _signature(str(key), fmt)
        if isinstance(sig, Skip):
            skipped.setdefault(tuple(sig), []).append(str(key))
            continue
        row = parse_row({**sig, **_values(str(key), value)}, f"entry {key!r}")
        if signature_key(row) in table.entries:  # two spellings of one op: which latency is meant?
            raise LookupTableError(f"entry {key!r} describes the same op as an earlier entry ({signature_key(row)})")
        table.add_row(row)
    if not table.entries:
        if skipped:
            why = next(iter(skipped))[1]
            raise LookupTableError(f"no {fmt} entry could be imported: {next(iter(skipped.values()))[0]!r} and the "
                                   f"rest are {why}")
        raise LookupTableError(f"no {fmt} entry could be imported")
    for (kind, why), keys in skipped.items():
        warnings.warn(f"skipped {len(keys)} {why}, e.g. {keys[0]}", stacklevel=2)
    return table


def export_mapping(table: LookupTable, fmt: str) -> dict[str, Any]:
    """The table as a key -> value mapping of format ``fmt`` (what :func:`import_mapping` reads)."""
    if fmt not in KEYERS:
        raise LookupTableError(f"unknown table format {fmt!r}; known: {sorted(KEYERS)}")
    out: dict[str, Any] = {}
    for row in table.entries.values():
        if fmt == "ofa":
            value: Any = {"count": row["repeats"], "mean": row["latency_ms"], "std": row["spread_ms"]}
        else:
            value = {"latency_ms": row["latency_ms"]}
            if row["energy_mj"] is not None:
                value["energy_mj"] = row["energy_mj"]
        out[KEYERS[fmt](row)] = value
    return out


def import_table(path: str | Path, fmt: str, device: dict[str, Any]) -> LookupTable:
    """A table file of format ``hwnas`` (the native schema), ``ofa`` or ``bitwidth``."""
    if fmt == "hwnas":
        table = LookupTable.load(path)
        table.device = {**table.device, **device}
        return table
    return import_mapping(read_mapping(path), fmt, device)
