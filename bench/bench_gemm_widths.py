"""GEMM time of the out_proj shape at token counts around multiples of 8 (graph replays, one CUDA device).

Per dtype, batch 256, d_inner 384 -> d_model 192 (vim_tiny): the bmm as the model runs it
(token-major output, "tok"), with the output channel-major ("chan"), with the GEMM width aligned
to 8 or 16 tokens, and split into the multiple-of-8 part plus the rest ("split"); then cuBLASLt.
Prints us per call and the per-token ratio to 192 tokens.

    python bench/bench_gemm_widths.py
"""
import torch
from stmsearch.ops.layout import padded_empty, gemm_width, widened


def t_us(fn, n=50):
    for _ in range(5):
        fn()
    torch.cuda.synchronize()
    g = torch.cuda.CUDAGraph()
    with torch.cuda.graph(g):
        for _ in range(10):
            fn()
    g.replay(); torch.cuda.synchronize()
    s, e = torch.cuda.Event(True), torch.cuda.Event(True)
    best = []
    for _ in range(7):
        s.record(); g.replay(); e.record(); torch.cuda.synchronize()
        best.append(s.elapsed_time(e) * 100)  # us per fn (10 per replay)
    best.sort()
    return best[3]


B, C, D = 256, 384, 192
for dtype in (torch.float32, torch.bfloat16):
    w = torch.randn(C, D, device="cuda", dtype=dtype).expand(B, -1, -1)
    wt = torch.randn(D, C, device="cuda", dtype=dtype).expand(B, -1, -1)
    res = {}
    for L in (192, 193, 196, 197, 200, 208):
        for align in (8, 16):
            y = padded_empty(B, C, L, device="cuda", dtype=dtype).normal_()
            width = -(-L // align) * align
            wide = widened(y, width)
            out = torch.empty(B, width, D, device="cuda", dtype=dtype)
            res[(L, align, "tok")] = t_us(lambda: torch.bmm(wide.transpose(1, 2), w, out=out))
            outc = torch.empty(B, D, width, device="cuda", dtype=dtype)
            res[(L, align, "chan")] = t_us(lambda: torch.bmm(wt, wide, out=outc))
        # split: the x8 part plus the rest
        y = padded_empty(B, C, L, device="cuda", dtype=dtype).normal_()
        m = L // 8 * 8
        wide = widened(y, gemm_width(L))
        out = torch.empty(B, gemm_width(L), D, device="cuda", dtype=dtype)
        def split():
            torch.bmm(wide[..., :m].transpose(1, 2), w, out=out[:, :m])
            if gemm_width(L) > m:
                torch.bmm(wide[..., m:].transpose(1, 2), w, out=out[:, m:])
        res[(L, 8, "split")] = t_us(split)
    base = res[(192, 8, "tok")] / 192
    print(dtype, "us per call; per-token ratio to 192 tok")
    for k, v in res.items():
        print(f"  L={k[0]} align={k[1]} {k[2]}: {v:.1f} us  ratio {v / k[0] / base:.3f}")
for lib in ("cublaslt",):
    try:
        torch.backends.cuda.preferred_blas_library(lib)
        y = padded_empty(B, C, 193, device="cuda").normal_()
        wide = widened(y, 200)
        w = torch.randn(C, D, device="cuda").expand(B, -1, -1)
        out = torch.empty(B, 200, D, device="cuda")
        y2 = padded_empty(B, C, 192, device="cuda").normal_()
        out2 = torch.empty(B, 192, D, device="cuda")
        a = t_us(lambda: torch.bmm(wide.transpose(1, 2), w, out=out)); b = t_us(lambda: torch.bmm(y2.transpose(1, 2), w, out=out2))
        print(f"{lib} fp32 193(200): {a:.1f} 192: {b:.1f} ratio/token {a/193/(b/192):.3f}")
    except Exception as exc:
        print(lib, "failed", exc)
