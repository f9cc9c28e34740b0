"""Roofline arithmetic for compiled programs: what XLA says a program computes and moves,
against what it must move, at a chip's published peak figures.

Everything here is pure arithmetic on numbers the compiler gives (`compiled.cost_analysis()`,
the optimized HLO text) plus array shapes; `sparta_jax.aot --roofline` feeds it the programs
of a config compiled for a TPU topology, and the tests feed it CPU programs.

XLA counts a while loop's body once, whatever its trip count, so a program is only costed
whole when it has no loop that matters: the decode step is compiled on its own for that (its
layers are unrolled, see models/llama.py), and the DPO step's layer scan is costed by
compiling it at one and two layers (`per_layer_extrapolation`).
"""
from __future__ import annotations

import dataclasses
import re


@dataclasses.dataclass(frozen=True)
class Chip:
    name: str
    bf16_tflops: float  # dense bf16 peak per chip, 1e12 FLOP/s
    hbm_gbps: float  # HBM bandwidth per chip, 1e9 bytes/s
    source: str


# Google's published per-chip figures (cloud.google.com/tpu/docs/<generation>).
CHIPS = {
    "v4": Chip("TPU v4", 275.0, 1200.0, "cloud.google.com/tpu/docs/v4"),
    "v5p": Chip("TPU v5p", 459.0, 2765.0, "cloud.google.com/tpu/docs/v5p"),
    "v5e": Chip("TPU v5e", 197.0, 819.0, "cloud.google.com/tpu/docs/v5e"),
    "v5litepod": Chip("TPU v5e", 197.0, 819.0, "cloud.google.com/tpu/docs/v5e"),
    "v6e": Chip("TPU v6e", 918.0, 1640.0, "cloud.google.com/tpu/docs/v6e"),
}


def program_cost(compiled) -> tuple[float, float]:
    """(flops, bytes accessed) per device from XLA's cost analysis of a compiled program."""
    cost = compiled.cost_analysis()
    if isinstance(cost, (list, tuple)):  # older jax: one dict per device program
        cost = cost[0]
    if not cost or "flops" not in cost or "bytes accessed" not in cost:
        raise ValueError("this backend gives no cost analysis (flops, bytes accessed)")
    return float(cost["flops"]), float(cost["bytes accessed"])


def per_layer_extrapolation(one_layer: tuple[float, float], two_layers: tuple[float, float],
                            layers: int) -> tuple[float, float]:
    """(flops, bytes) of an L-layer program from the same program at 1 and 2 layers.

    Layers are identical, so cost(L) = cost(1) + (L - 1) * (cost(2) - cost(1)) exactly when
    each layer is costed once (an unrolled stack, or a scan of 1 and 2 layers that XLA unrolls).
    """
    return tuple(a + (layers - 1) * (b - a) for a, b in zip(one_layer, two_layers))


def roofline_seconds(flops: float, bytes_accessed: float, chip: Chip) -> tuple[float, str]:
    """(seconds, "compute" | "memory"): the larger of compute time and memory time at peak."""
    compute = flops / (chip.bf16_tflops * 1e12)
    memory = bytes_accessed / (chip.hbm_gbps * 1e9)
    return (compute, "compute") if compute >= memory else (memory, "memory")


def decode_row(name: str, *, flops: float, bytes_accessed: float, ideal_bytes: float, chip: Chip,
               tokens_per_step: int, chips: int) -> dict:
    """One decode step: roofline time, the tokens/s per chip it implies, and how far its memory
    traffic is from the floor (every weight shard and the cache read once)."""
    seconds, bound = roofline_seconds(flops, bytes_accessed, chip)
    floor, _ = roofline_seconds(flops, ideal_bytes, chip)
    return dict(program=name, flops=flops, bytes=bytes_accessed, ideal_bytes=ideal_bytes,
                bytes_over_ideal=bytes_accessed / ideal_bytes, seconds=seconds, bound=bound,
                tokens_per_s_per_chip=tokens_per_step / seconds / chips,
                percent_of_floor=100.0 * floor / seconds)


def train_row(name: str, *, flops: float, bytes_accessed: float, ideal_bytes: float, chip: Chip,
              model_flops: float) -> dict:
    """One train step: roofline time and the MFU it implies (model flops over time x peak)."""
    seconds, bound = roofline_seconds(flops, bytes_accessed, chip)
    return dict(program=name, flops=flops, bytes=bytes_accessed, ideal_bytes=ideal_bytes,
                bytes_over_ideal=bytes_accessed / ideal_bytes, seconds=seconds, bound=bound,
                model_flops=model_flops, mfu=model_flops / (seconds * chip.bf16_tflops * 1e12))


def lora_dpo_model_flops(*, base_params: int, lora_params: int, tokens: int, attention_flops_per_token: float,
                         reference_pass: bool) -> float:
    """Useful flops of one LoRA DPO step (per the whole step; divide by chips for per chip).

    Per token: the policy's forward (2 per weight), its backward to the activations (2 per
    frozen weight, 4 per trained LoRA weight: they also get weight gradients), and a forward
    of the reference when the step computes it; attention's own matmuls on top (forward,
    backward twice the forward). Recomputation (remat) is not useful work and is not counted.
    """
    dense = 2 * base_params + 2 * base_params + 6 * lora_params
    attention = 3 * attention_flops_per_token
    if reference_pass:
        dense += 2 * base_params
        attention += attention_flops_per_token
    return float(tokens) * (dense + attention)


# ------------------------------------------------------------------------------ HLO copies
_ELEMENT_BYTES = {"pred": 1, "s8": 1, "u8": 1, "s16": 2, "u16": 2, "f16": 2, "bf16": 2, "s32": 4, "u32": 4,
                  "f32": 4, "s64": 8, "u64": 8, "f64": 8}
_SHAPE = re.compile(r"\b(" + "|".join(_ELEMENT_BYTES) + r")\[([\d,]*)\]")
# Ops that only move or relabel data; a fusion made of nothing else is a copy.
_MOVEMENT = {"parameter", "copy", "transpose", "slice", "dynamic-slice", "concatenate", "pad", "bitcast",
             "reshape", "broadcast", "constant", "tuple", "get-tuple-element", "copy-start", "copy-done"}
_INSTRUCTION = re.compile(r"^\s*(?:ROOT )?%(\S+) = (.+?) ([\w\-]+)\((.*)$")


def array_bytes(hlo_type: str) -> int:
    """Bytes of an HLO type string such as 'f32[8,3,1088,64]{3,2,1,0}' (tuples summed)."""
    total = 0
    for element, dims in _SHAPE.findall(hlo_type):
        n = 1
        for d in dims.split(","):
            if d:
                n *= int(d)
        total += n * _ELEMENT_BYTES[element]
    return total


def _computations(hlo_text: str) -> dict[str, list[tuple[str, str, str, str]]]:
    """computation name -> [(instruction, type, op, rest of line)] of an HLO module's text."""
    comps: dict[str, list] = {}
    current = None
    for line in hlo_text.splitlines():
        header = re.match(r"^(?:ENTRY )?%(\S+) .*\{\s*$", line)
        if header:
            current = ("ENTRY " if line.startswith("ENTRY") else "") + header.group(1)
            comps[current] = []
            continue
        if line.rstrip() == "}":  # (an attribute's text can span lines, one starting "}}")
            current = None
            continue
        m = _INSTRUCTION.match(line)
        if current is not None and m:
            comps[current].append(m.groups())
    return comps


def large_copies(hlo_text: str, min_bytes: int) -> list[dict]:
    """Instructions of a compiled program that materialise >= min_bytes by moving data only.

    A copy, transpose or slice at the top level of a computation (not inside a fusion, where it
    is just how the fusion reads its input), or a fusion made of nothing but such moves. An
    in-place dynamic-update-slice writes only its update and is not listed.
    """
    comps = _computations(hlo_text)
    fused = set()
    for instructions in comps.values():
        for _, _, op, rest in instructions:
            if op == "fusion":
                fused.update(re.findall(r"calls=%([\w.\-]+)", rest))
    found = []
    for comp, instructions in comps.items():
        if comp in fused:
            continue
        for name, hlo_type, op, rest in instructions:
            size = array_bytes(hlo_type)
            # An asynchronous copy is listed once, by its copy-done (whose type is the copy's).
            if size < min_bytes or op in ("parameter", "get-tuple-element", "tuple", "bitcast", "constant",
                                          "copy-start"):
                continue
            if op == "fusion":
                called = re.findall(r"calls=%([\w.\-]+)", rest)
                ops = {o for c in called for _, _, o, _ in comps.get(c, [])}
                if not ops or not ops <= _MOVEMENT:
                    continue
            elif op not in _MOVEMENT:
                continue
            found.append(dict(computation=comp, instruction=name, op=op, type=hlo_type.split("{")[0], bytes=size))
    return found


_COLLECTIVES = ("all-gather", "all-reduce", "reduce-scatter", "all-to-all", "collective-permute")
_NOT_TRAFFIC = {"parameter", "constant", "get-tuple-element", "tuple", "bitcast", "after-all", "partition-id",
                "replica-id"}


def traffic_by_kind(hlo_text: str) -> dict[str, int]:
    """Bytes read and written by each top-level instruction of a compiled program's entry
    computation (operands plus result), summed by kind: fusions with a matmul (weights and cache
    read there, with the activations in and out), Pallas kernels (Mosaic custom calls: the decode
    step's attention and MLP with `sampler.decode_kernels="pallas"`), collectives, other fusions
    and ops, and loops.

    A breakdown, not XLA's own count: a fusion that updates a buffer in place (its root a
    dynamic-update-slice) counts only its other operands; a loop that writes rows into a cache
    in place is listed with its whole operands (so under "loops", left out of a total), and an
    asynchronous pair (copy, collective) counts the start's operands and the done's result.
    """
    comps = _computations(hlo_text)
    entry = next(c for c in comps if c.startswith("ENTRY "))
    sizes: dict[str, int] = {}
    kinds = {"matmul fusions": 0, "kernels": 0, "collectives": 0, "other": 0, "loops": 0}
    for name, hlo_type, op, rest in comps[entry]:
        sizes[name] = array_bytes(hlo_type)
        if op in _NOT_TRAFFIC:
            continue
        operands = re.findall(r"%([\w.\-]+)", rest.split("), ")[0] if "), " in rest else rest)
        if op.endswith("-start"):  # an asynchronous pair: what the start reads, what the done writes
            moved = sum(sizes.get(o, 0) for o in operands)
        elif op.endswith("-done"):
            moved = sizes[name]
        else:
            moved = sizes[name] + sum(sizes.get(o, 0) for o in operands)
        if op == "fusion":
            called = [comps.get(c, []) for c in re.findall(r"calls=%([\w.\-]+)", rest)]
            if any(body and body[-1][2] == "dynamic-update-slice" for body in called):
                # Updated in place: the buffer is neither read nor written whole, only the update.
                moved -= 2 * sizes[name]
            matmul = any(o in ("dot", "convolution") for body in called for _, _, o, _ in body)
            kinds["matmul fusions" if matmul else "other"] += moved
        elif op.startswith(_COLLECTIVES):  # (an asynchronous copy counts as "other")
            kinds["collectives"] += moved
        elif op in ("while", "conditional", "call"):
            kinds["loops"] += moved
        elif op in ("dot", "convolution"):
            kinds["matmul fusions"] += moved
        elif op == "custom-call" and 'custom_call_target="tpu_custom_call"' in rest:
            kinds["kernels"] += moved
        else:
            kinds["other"] += moved
    return kinds


# ----------------------------------------------------------------------------------- table
def format_rows(rows: list[dict], chip: Chip, header: str = "") -> str:
    """A Markdown table of decode and train rows."""
    def si(x, unit):
        for scale, prefix in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
            if abs(x) >= scale:
                return f"{x / scale:.2f} {prefix}{unit}"
        return f"{x:.0f} {unit}"

    lines = ([header] if header else []) + [
        f"| program | flops/chip | HBM bytes/chip (XLA) | ideal bytes/chip | XLA / ideal | roofline time "
        f"at {chip.name} peak | implies |",
        "|---|---:|---:|---:|---:|---:|---|"]
    for r in rows:
        if "mfu" in r:
            implies = f"MFU {100 * r['mfu']:.1f}% (model flops {si(r['model_flops'], 'FLOP')}/chip)"
        else:
            implies = (f"{r['tokens_per_s_per_chip']:,.0f} tok/s per chip; {r['percent_of_floor']:.0f}% of "
                       f"the bandwidth floor")
        lines.append(f"| {r['program']} | {si(r['flops'], 'FLOP')} | {si(r['bytes'], 'B')} | "
                     f"{si(r['ideal_bytes'], 'B')} | {r['bytes_over_ideal']:.2f}x | "
                     f"{1e3 * r['seconds']:.3f} ms ({r['bound']}) | {implies} |")
    lines.append(f"Peak figures: {chip.name} {chip.bf16_tflops:g} bf16 TFLOP/s, {chip.hbm_gbps:g} GB/s HBM "
                 f"per chip ({chip.source}).")
    return "\n".join(lines)
