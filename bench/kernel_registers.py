"""Registers and spills of the merge kernels, compiled for an H200 (sm_90) on any machine: no GPU needed.

A kernel that runs out of registers spills to local memory, and a latency-bound merge kernel pays
for every spill in each loop step. This compiles each kernel at the tiles and warps its dispatch
function uses (vim_tiny's shapes: 384 mixer channels, 197 tokens) and at the alternatives worth
timing, and prints what ptxas gave it: registers a thread, stack bytes, spill loads and stores.

    python bench/kernel_registers.py            # every kernel
    python bench/kernel_registers.py tome       # the rows whose name contains "tome"
"""
from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path

import triton
from triton.backends.compiler import GPUTarget

from stmsearch.ops import merge_triton as mt

TARGET = GPUTarget("cuda", 90, 32)
BIN = Path(triton.__file__).parent / "backends" / "nvidia" / "bin"
FLOATS = {"gamma", "q", "p"}  # the scalar parameters that are floats; every other scalar is an int


def compile_row(kernel, pointers: dict[str, str], constexprs: dict, warps: int) -> dict:
    """Compile ``kernel`` for sm_90; ``pointers`` names the element type of pointer params ("*fp32" by default)."""
    sig = {}
    for p in kernel.params:
        if p.is_constexpr:
            sig[p.name] = "constexpr"
        elif p.name.endswith("_ptr"):
            sig[p.name] = pointers.get(p.name, "*fp32")
        else:
            sig[p.name] = "fp32" if p.name in FLOATS else "i32"
    src = triton.compiler.ASTSource(fn=kernel, signature=sig, constexprs=constexprs)
    compiled = triton.compile(src, target=TARGET, options={"num_warps": warps})
    with tempfile.TemporaryDirectory() as tmp:
        cubin = Path(tmp) / "k.cubin"
        cubin.write_bytes(compiled.asm["cubin"])
        usage = subprocess.run([BIN / "cuobjdump", "-res-usage", cubin], capture_output=True, text=True).stdout
        sass = subprocess.run([BIN / "nvdisasm", cubin], capture_output=True, text=True).stdout
    fields = dict(f.split(":") for f in next(l for l in usage.splitlines() if "REG:" in l).split() if ":" in f)
    return {"regs": int(fields["REG"]), "stack": int(fields["STACK"]), "ldl": sass.count("LDL"),
            "stl": sass.count("STL")}


def tome(dtype: str, softplus: bool, tiles: tuple, warps: int, block_d: int = 128, unroll: int = 1) -> tuple:
    block_r, block_c, precision, _ = tiles
    return (mt._tome_match_kernel, {"f_ptr": dtype, "cls_ptr": "*i64", "dst_ptr": "*i32"},
            dict(SOFTPLUS=softplus, BLOCK_R=block_r, BLOCK_S=128, BLOCK_D=block_d, BLOCK_C=block_c,
                 PRECISION=precision, UNROLL=unroll), warps)


CHANNELS = 384  # vim_tiny's mixer channels


def edges(dtype: str, softplus: bool) -> tuple:
    block_e, block_c, warps, shift = mt.edge_tiles(False, CHANNELS)
    return (mt._edge_scores_kernel, {"f_ptr": dtype, "cls_ptr": "*i64"},
            dict(SOFTPLUS=softplus, WARD=True, UNIT_W=False, FADE=1, IMPORTANCE=1, BLOCKED=True, BLOCK_E=block_e,
                 BLOCK_C=block_c, SHIFT=shift), warps)


def cells(dtype: str, softplus: bool) -> tuple:
    block_e, block_c, warps, _ = mt.edge_tiles(False, CHANNELS)  # stm_2d_plan's first kernel takes the edge tiles
    return (mt._cell_damage_kernel, {"f_ptr": dtype, "cls_ptr": "*i64", "rep_ptr": "*i64", "partner_ptr": "*i32"},
            dict(SOFTPLUS=softplus, WARD=True, UNIT_W=False, FADE=1, IMPORTANCE=1, BLOCK_E=block_e, BLOCK_C=block_c,
                 BLOCK_U=32), warps)


def plan_2d(block_u: int, warps: int) -> tuple:
    return (mt._stm_2d_plan_kernel, {"partner_ptr": "*i32", "cls_ptr": "*i64", "rep_ptr": "*i64", "index_ptr": "*i64",
                                     "keep_ptr": "*i8", "first_ptr": "*i32", "order_ptr": "*i32", "ok_ptr": "*i8"},
            dict(SIDES=False, BLOCK_T=256, BLOCK_U=block_u), warps)


def chain() -> tuple:
    return (mt._select_chain_kernel, {"cls_ptr": "*i64", "index_ptr": "*i64", "keep_ptr": "*i8", "first_ptr": "*i32",
                                      "ok_ptr": "*i8"}, dict(SIDES=False, MASK=True, BLOCK_T=256, BLOCK_U=16), 4)


def rows() -> dict[str, tuple]:
    out = {}
    for dtype, name in (("*bf16", "bf16"), ("*fp32", "fp32")):
        # ToMe: token-major features take (64, 16, ...) at either precision; 16-bit channel-major (64, 32, tf32)
        for softplus in (False, True):
            what = "dt" if softplus else "x/residual"
            precision = "tf32x3" if softplus or dtype == "*fp32" else "tf32"
            # tome_tiles' token-major tile: 64 destinations a program; unsplit rows for comparison
            out[f"tome {what} {name} token-major (64, 16, {precision}), 4 warps, 64 destinations"] = \
                tome(dtype, softplus, (64, 16, precision, 0), 4, 64)
            for warps in (4, 8):
                out[f"tome {what} {name} token-major (64, 16, {precision}), {warps} warps, unsplit"] = \
                    tome(dtype, softplus, (64, 16, precision, 0), warps)
        # over steps at 32 source slots or fewer: 16 sources a program; the channel loop unrolled (not chosen)
        for block_r, block_d, unroll in ((16, 16, 1), (64, 64, 2), (16, 32, 2)):
            out[f"tome dt {name} token-major ({block_r}, 16, tf32x3), 4 warps, {block_d} destinations, "
                f"unroll {unroll}"] = tome(dtype, True, (block_r, 16, "tf32x3", 0), 4, block_d, unroll)
        out[f"edge_scores dt {name}"] = edges(dtype, True)
        out[f"edge_scores x {name}"] = edges(dtype, False)
        out[f"stm 2d cell damage dt {name}"] = cells(dtype, True)
    out["tome x bf16 channel-major (64, 32, tf32), 4 warps"] = tome("*bf16", False, (64, 32, "tf32", 0), 4)
    for block_u, warps in (mt.plan_2d_tiles(256), (32, 4), (64, 8), (16, 4), (16, 8)):
        out[f"stm 2d plan (BLOCK_U {block_u}), {warps} warps"] = plan_2d(block_u, warps)
    out["select_chain"] = chain()
    return out


def main(pattern: str = "") -> None:
    print(f"{'kernel':64s} {'regs':>5s} {'stack':>6s} {'spill loads':>12s} {'spill stores':>13s}", flush=True)
    for label, (kernel, pointers, constexprs, warps) in rows().items():
        if pattern in label:
            r = compile_row(kernel, pointers, constexprs, warps)
            print(f"{label:64s} {r['regs']:5d} {r['stack']:6d} {r['ldl']:12d} {r['stl']:13d}", flush=True)


if __name__ == "__main__":
    main(*sys.argv[1:2])
