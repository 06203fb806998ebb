"""Token merging in a few Triton kernels: the GPU fast path of :mod:`stmsearch.merging.functions`.

A merge step in plain torch is some sixty small launches (masks, fading, top-k bookkeeping,
scatters); on a fast model the launches, not the bytes, are its cost. Here it is two to four:

- :func:`edge_scores`: for every adjacent pair, the damage of merging it (Ward or cosine, over
  the similarity features read once in whatever layout they lie, with the softplus of a
  step-size metric applied on the fly, once per token: a program's next-token rows come from
  its own tile), times distance fading, or +BIG where STM's blocks do not allow the edge.
  Replaces pair_damage + fading + block_edges.
- :func:`importance_vectors`: STM's importance-derived per-token vectors (the damage scale and
  the ``norm`` weights, with their powers) in one launch. Replaces ten-odd elementwise launches.
- :func:`mean_decay` and :func:`dt_weights`: the estimated fading decay (one per image) and the
  ``dt`` merge weights, each from one read of the recorded step sizes. Replace six and four
  launches (and an fp32 copy of a bf16 ``delta``).
- :func:`select_chain`: the r least-scored edges (ranked in the kernel, per side where STM is
  symmetric; random's draws masked to blocks there too), the plan's slot of every token, its
  kept flags and each slot's first token, and a per-row flag that r allowed edges were found.
  Replaces a torch top-k (two to three launches), choose_edges' bookkeeping and chain_plan.
- :func:`prune_plan`: importance pruning's whole plan (the r smallest, where the dropped
  tokens' patches go, each slot's first token) in one launch per batch.
- :func:`tome_plan`: ToMe's whole plan (cosine similarities of every source to every
  destination, the best match of each, the top r, slot indices) and its segments, in two
  launches, the similarities on tensor cores where that keeps fp32's plans (:func:`tome_tiles`).
  Replaces tome_plan's thirty-odd launches.
- :func:`stm_2d_plan`: 2-D STM's whole plan in two launches (each token's cell, the cell's
  earliest token and the damage of joining it, over programs of a few tokens; then per image the
  ranking within cells, the choice and the slots, listed as ToMe's are). Replaces stm_2d's
  scatter_reduce, gathers, two argsorts and choose_edges, and apply_plan's scatters.
- :func:`merge_segments`: for plans whose slots are runs of consecutive tokens (STM, random,
  pruning), or runs of a listed order (ToMe, 2-D STM), the weighted mean of each run, the run's patch
  count, its kept token's grid anchor and the class token's new place, in one pass over the
  residual stream, with no atomics. Replaces apply_plan, reduce_sum, kept_positions and the
  class token's gather.

Each equals its torch reference up to float summation order (tests/test_merge_fast.py).
``import triton`` is guarded as in :mod:`stmsearch.ops.scan_triton`.
"""
from __future__ import annotations

import torch

from .scan_triton import _HAVE_TRITON, _interpreting, triton, tl

BIG = 1e9  # the torch path's "never choose" score (stmsearch.merging.functions._BIG)
IMPORTANCE_KINDS = ("min", "max", "mean")  # stmsearch.merging.functions.importance_scale


def fast_merge_available(x: torch.Tensor) -> bool:
    """True where the kernels run on ``x``: a CUDA tensor (or the interpreter), triton, no trace."""
    return _HAVE_TRITON and (x.is_cuda or _interpreting()) and not torch.jit.is_tracing()


def _pow2(n: int, floor: int = 16) -> int:
    return max(floor, 1 << max(0, (n - 1).bit_length()))


if _HAVE_TRITON:

    @triton.jit
    def _edge_allowed(e, cls, window, runs, offset, BLOCKED: tl.constexpr):
        """functions.free_edges (and block_edges where BLOCKED) for edges ``e``: both tokens outside the
        window on one side, and with blocks, in one block of ``runs`` counted outwards from the window."""
        rel = e - cls
        d0 = tl.abs(rel) - window - 1
        d1 = tl.abs(rel + 1) - window - 1
        ok = (d0 >= 0) & (d1 >= 0) & ((rel < 0) == (rel + 1 < 0))  # d >= 0 keeps the class token out
        if BLOCKED:
            ok = ok & ((d0 + offset) // runs == (d1 + offset) // runs)
        return ok

    @triton.jit
    def _softplus(x):
        """torch's softplus (threshold 20) as log(1 + exp(x)): 1 + exp(x) rounds, so a small step errs by
        up to 6e-8 absolute (7e-5 relative at x = -7, all of it below -17) where torch's log1p does not;
        plans still equal the torch path's (tests/test_merge_fast.py). The form sets the speed of ToMe over
        ``dt``'s similarity kernel (vim_tiny b64 bf16, 197 tokens, bench_merge_tiles, H200, 2026-12-03):
        70.8 us as here; max(x, 0) + log1p(exp(-|x|)) with log1p(u) = log(1 + u) u / ((1 + u) - 1), exact,
        83.6 (83.3 at 32 channels a step); the same on lg2.approx 68.0 (57.3), but that log errs by 2^-22
        absolute near 1, which broke ToMe-dt's parity on the GPU."""
        return tl.where(x > 20.0, x, tl.log(1.0 + tl.exp(x)))

    @triton.jit
    def _mean_decay_kernel(delta_ptr, bias_ptr, a_ptr, out_ptr, D, L, N, s_b, s_d, s_l, s_ad, s_an,
                           HAS_BIAS: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_L: tl.constexpr,
                           BLOCK_N: tl.constexpr):
        b = tl.program_id(0)
        n = tl.arange(0, BLOCK_N)
        total = tl.zeros((BLOCK_D,), tl.float32)
        for d0 in range(0, D, BLOCK_D):
            d = d0 + tl.arange(0, BLOCK_D)
            m_d = d < D
            acc = tl.zeros((BLOCK_D,), tl.float32)
            for l0 in range(0, L, BLOCK_L):
                ls = l0 + tl.arange(0, BLOCK_L)
                acc += tl.sum(tl.load(delta_ptr + b * s_b + d[:, None] * s_d + ls[None, :] * s_l,
                                      mask=m_d[:, None] & (ls < L)[None, :], other=0.0).to(tl.float32), axis=1)
            dt = acc / L
            if HAS_BIAS:
                dt += tl.load(bias_ptr + d, mask=m_d, other=0.0).to(tl.float32)
            dt = _softplus(dt)
            m = m_d[:, None] & (n < N)[None, :]
            a = tl.load(a_ptr + d[:, None] * s_ad + n[None, :] * s_an, mask=m, other=0.0).to(tl.float32)
            total += tl.sum(tl.where(m, tl.exp(dt[:, None] * a), 0.0), axis=1)
        tl.store(out_ptr + b, tl.sum(total, axis=0) / (D * N))

    @triton.jit
    def _dt_weights_kernel(delta_ptr, bias_ptr, sizes_ptr, out_ptr, D, L, s_b, s_d, s_l, s_sizes,
                           HAS_BIAS: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_L: tl.constexpr):
        b = tl.program_id(0)
        ls = tl.program_id(1) * BLOCK_L + tl.arange(0, BLOCK_L)
        m_l = ls < L
        acc = tl.zeros((BLOCK_L,), tl.float32)
        for d0 in range(0, D, BLOCK_D):
            d = d0 + tl.arange(0, BLOCK_D)
            m = (d < D)[:, None] & m_l[None, :]
            x = tl.load(delta_ptr + b * s_b + d[:, None] * s_d + ls[None, :] * s_l, mask=m, other=0.0).to(tl.float32)
            if HAS_BIAS:
                x += tl.load(bias_ptr + d, mask=d < D, other=0.0).to(tl.float32)[:, None]
            acc += tl.sum(tl.where(m, _softplus(x), 0.0), axis=0)
        sizes = tl.load(sizes_ptr + b * s_sizes + ls, mask=m_l, other=0.0).to(tl.float32)
        tl.store(out_ptr + b * L + ls, sizes * (acc / D), mask=m_l)

    @triton.jit
    def _ahead(other, other_at, mine, mine_at):
        """(rows of ``mine``, columns of ``other``): the other value comes first in ascending order,
        ties to the earlier place; every in-kernel rank (edges, pruning, ToMe's sources, slots) counts these."""
        return (other[None, :] < mine[:, None]) | ((other[None, :] == mine[:, None]) & (other_at[None, :] < mine_at[:, None]))

    @triton.jit
    def _features(base, rows, c, m, bias_ptr, C, sf_t, sf_c, SOFTPLUS: tl.constexpr):
        """(rows x channels) fp32 tile of the similarity features; a step-size metric as softplus(delta + bias)."""
        x = tl.load(base + rows[:, None] * sf_t + c[None, :] * sf_c, mask=m, other=0.0)
        return _activate(x, c, m, bias_ptr, C, SOFTPLUS)

    @triton.jit
    def _activate(x, c, m, bias_ptr, C, SOFTPLUS: tl.constexpr):
        """A loaded feature tile as fp32 features (:func:`_features` apart from its load)."""
        return _activated(x, _bias(bias_ptr, c, C, SOFTPLUS), m, SOFTPLUS)

    @triton.jit
    def _bias(bias_ptr, c, C, SOFTPLUS: tl.constexpr):
        """Channels ``c``'s step bias (a stand-in 0 without SOFTPLUS, where ``bias_ptr`` is no bias)."""
        if SOFTPLUS:
            return tl.load(bias_ptr + c, mask=c < C, other=0.0).to(tl.float32)
        return tl.zeros_like(c).to(tl.float32)

    @triton.jit
    def _activated(x, bias, m, SOFTPLUS: tl.constexpr):
        """:func:`_activate` with its channels' ``bias`` already loaded."""
        x = x.to(tl.float32)
        if SOFTPLUS:
            x = tl.where(m, _softplus(x + bias[None, :]), 0.0)
        return x

    @triton.jit
    def _pair_sums(base, rows, partner, m_t, bias_ptr, C, sf_t, sf_c, SOFTPLUS: tl.constexpr, WARD: tl.constexpr,
                   SHIFT: tl.constexpr, BLOCK_E: tl.constexpr, BLOCK_C: tl.constexpr):
        """_damage's sums of each token of ``rows`` with its ``partner``, over every channel tile; with
        SHIFT the partner is the tile's next row (the program's last row has none), taken from the tile
        already read."""
        sq = tl.zeros((BLOCK_E,), tl.float32)
        dot = tl.zeros((BLOCK_E,), tl.float32)
        na = tl.zeros((BLOCK_E,), tl.float32)
        nb = tl.zeros((BLOCK_E,), tl.float32)
        for c0 in range(0, C, BLOCK_C):
            c = c0 + tl.arange(0, BLOCK_C)
            m = m_t[:, None] & (c < C)[None, :]
            a = _features(base, rows, c, m, bias_ptr, C, sf_t, sf_c, SOFTPLUS)
            if SHIFT:
                nxt = tl.minimum(tl.arange(0, BLOCK_E) + 1, BLOCK_E - 1)
                n = tl.gather(a, tl.broadcast_to(nxt[:, None], (BLOCK_E, BLOCK_C)), axis=0)
            else:
                n = _features(base, partner, c, m, bias_ptr, C, sf_t, sf_c, SOFTPLUS)
            if WARD:  # the squared difference, else the dot product and squared norms (cosine)
                d = a - n
                sq += tl.sum(d * d, axis=1)
            else:
                dot += tl.sum(a * n, axis=1)
                na += tl.sum(a * a, axis=1)
                nb += tl.sum(n * n, axis=1)
        return sq, dot, na, nb

    @triton.jit
    def _damage(sq, dot, na, nb, w_row, imp_row, gamma_at, gamma, a, b, mask, dist, WARD: tl.constexpr,
                UNIT_W: tl.constexpr, IMPORTANCE: tl.constexpr, FADE: tl.constexpr):
        """functions.pair_damage (Ward from the summed squared difference ``sq``, cosine from ``dot`` and
        the squared norms) of tokens ``a`` and ``b``, times importance_scale and fade at ``dist``."""
        if WARD:
            if UNIT_W:
                damage = sq * 0.5
            else:
                wa = tl.load(w_row + a, mask=mask, other=1.0).to(tl.float32)
                wb = tl.load(w_row + b, mask=mask, other=1.0).to(tl.float32)
                damage = sq * (wa * wb / (wa + wb))
        else:
            damage = 1.0 - dot / (tl.maximum(tl.sqrt(na), 1e-12) * tl.maximum(tl.sqrt(nb), 1e-12))
        if IMPORTANCE > 0:  # functions.importance_scale: 1 min, 2 max, 3 mean of the pair's importance
            ia = tl.load(imp_row + a, mask=mask, other=1.0).to(tl.float32)
            ib = tl.load(imp_row + b, mask=mask, other=1.0).to(tl.float32)
            if IMPORTANCE == 1:
                damage = damage * tl.minimum(ia, ib)
            elif IMPORTANCE == 2:
                damage = damage * tl.maximum(ia, ib)
            else:
                damage = damage * ((ia + ib) / 2)
        if FADE == 1:
            damage = damage * tl.exp2(dist.to(tl.float32) * tl.log2(gamma))
        if FADE == 2:
            damage = damage * tl.exp2(dist.to(tl.float32) * tl.log2(tl.load(gamma_at).to(tl.float32)))
        return damage

    @triton.jit
    def _edge_scores_kernel(f_ptr, bias_ptr, w_ptr, cls_ptr, gamma_ptr, imp_ptr, out_ptr, gamma, C, E,
                            sf_b, sf_t, sf_c, sw_b, s_gamma, s_imp, window, runs, offset,
                            SOFTPLUS: tl.constexpr, WARD: tl.constexpr, UNIT_W: tl.constexpr,
                            FADE: tl.constexpr, IMPORTANCE: tl.constexpr, BLOCKED: tl.constexpr,
                            BLOCK_E: tl.constexpr, BLOCK_C: tl.constexpr, SHIFT: tl.constexpr):
        b = tl.program_id(0)
        if SHIFT:  # BLOCK_E tokens a program, BLOCK_E - 1 edges: each token read and activated once
            i = tl.arange(0, BLOCK_E)
            e = tl.program_id(1) * (BLOCK_E - 1) + i
            m_e = (e < E) & (i < BLOCK_E - 1)
            m_t = e < E + 1
        else:
            e = tl.program_id(1) * BLOCK_E + tl.arange(0, BLOCK_E)
            m_e = e < E
            m_t = m_e
        sq, dot, na, nb = _pair_sums(f_ptr + b * sf_b, e, e + 1, m_t, bias_ptr, C, sf_t, sf_c, SOFTPLUS, WARD, SHIFT,
                                     BLOCK_E, BLOCK_C)
        cls = tl.load(cls_ptr + b)
        damage = _damage(sq, dot, na, nb, w_ptr + b * sw_b, imp_ptr + b * s_imp, gamma_ptr + b * s_gamma, gamma, e,
                         e + 1, m_e, tl.abs(e - cls), WARD, UNIT_W, IMPORTANCE, FADE)
        ok = m_e & _edge_allowed(e, cls, window, runs, offset, BLOCKED)
        tl.store(out_ptr + b * E + e, tl.where(ok, damage, 1e9), mask=m_e)

    @triton.jit
    def _importance_kernel(imp_ptr, sizes_ptr, dmg_ptr, w_ptr, T, s_imp, s_imp_t, s_sizes, q, p,
                           DAMAGE: tl.constexpr, Q_ONE: tl.constexpr, WEIGHTS: tl.constexpr, P_ONE: tl.constexpr,
                           BLOCK_T: tl.constexpr):
        b = tl.program_id(0)
        t = tl.arange(0, BLOCK_T)
        m = t < T
        imp = tl.load(imp_ptr + b * s_imp + t * s_imp_t, mask=m, other=1.0).to(tl.float32)
        floor = tl.maximum(imp, 1e-6)
        # features.powered: over the image's mean first, so neither power overflows fp32
        rel = floor / (tl.sum(tl.where(m, floor, 0.0), axis=0) / T)
        if DAMAGE:
            if Q_ONE:
                dmg = imp
            else:
                dmg = tl.minimum(tl.maximum(tl.exp2(q * tl.log2(rel)), 1e-12), 1e12)
            tl.store(dmg_ptr + b * T + t, dmg, mask=m)
        if WEIGHTS:
            if P_ONE:
                w = floor
            else:
                w = tl.minimum(tl.maximum(tl.exp2(p * tl.log2(rel)), 1e-12), 1e12)
            sizes = tl.load(sizes_ptr + b * s_sizes + t, mask=m, other=0.0).to(tl.float32)
            tl.store(w_ptr + b * T + t, sizes * w, mask=m)

    @triton.jit
    def _choose(rank, score, at, m, cls, R, LEFT, ok_at, SIDES: tl.constexpr):
        """The places ``at`` ranked among the R least (with sides, LEFT of them before the class token and
        R - LEFT after it), and the row's ok flag stored at ``ok_at``: R chosen, none of them not allowed."""
        if SIDES:
            k = tl.where(at < cls, LEFT, R - LEFT)
        else:
            k = R
        chosen = m & (rank < k)
        worst = tl.max(tl.where(chosen, score, 0.0), axis=0)
        tl.store(ok_at, ((worst < 5e8) & (tl.sum(chosen.to(tl.int32), axis=0) == R)).to(tl.int8))
        return chosen

    @triton.jit
    def _select_chain_kernel(score_ptr, cls_ptr, index_ptr, keep_ptr, first_ptr, ok_ptr, T, R, LEFT, OUT, s_b,
                             window, runs, offset, SIDES: tl.constexpr, MASK: tl.constexpr,
                             BLOCK_T: tl.constexpr, BLOCK_U: tl.constexpr):
        b = tl.program_id(0)
        E = T - 1
        e = tl.arange(0, BLOCK_T)
        m_e = e < E
        cls = tl.load(cls_ptr + b)
        score = tl.load(score_ptr + b * s_b + e, mask=m_e, other=0.0).to(tl.float32)
        if MASK:  # the block rule applied here (random's draws), not by the score's maker
            score = tl.where(_edge_allowed(e, cls, window, runs, offset, True), score, 1e9)
        # the R least scores (ties to the earlier edge, as functions.choose_edges' stable sort), or with
        # sides LEFT of the edges before the class token and R - LEFT of the others: each edge's rank
        rank = tl.zeros((BLOCK_T,), tl.int32)
        for u0 in range(0, E, BLOCK_U):
            u = u0 + tl.arange(0, BLOCK_U)
            m_u = u < E
            other = tl.load(score_ptr + b * s_b + u, mask=m_u, other=0.0).to(tl.float32)
            if MASK:
                other = tl.where(_edge_allowed(u, cls, window, runs, offset, True), other, 1e9)
            ahead = _ahead(other, u, score, e)
            if SIDES:
                ahead = ahead & ((u < cls)[None, :] == (e < cls)[:, None])
            rank += tl.sum((m_u[None, :] & ahead).to(tl.int32), axis=1)
        chosen = _choose(rank, score, e, m_e, cls, R, LEFT, ok_ptr + b, SIDES)
        keep_row = keep_ptr + b * T
        tl.store(keep_row + e, tl.full((BLOCK_T,), 1, tl.int8), mask=e < T)
        tl.debug_barrier()
        # edge e chosen: token e + 1 joins the token before it, so it starts no slot
        tl.store(keep_row + e + 1, tl.zeros((BLOCK_T,), tl.int8), mask=chosen)
        tl.debug_barrier()
        starts = tl.load(keep_row + e, mask=e < T, other=0).to(tl.int32)
        index = tl.cumsum(starts, axis=0) - 1
        tl.store(index_ptr + b * T + e, index.to(tl.int64), mask=e < T)
        tl.store(first_ptr + b * (OUT + 1) + index, e, mask=(e < T) & (starts == 1))
        tl.store(first_ptr + b * (OUT + 1) + OUT, T)

    @triton.jit
    def _drop_scores_kernel(imp_ptr, cls_ptr, out_ptr, E, s_imp, s_imp_t, window, BLOCK_T: tl.constexpr):
        """functions.drop_edges' ranking: each free edge scored by its inner member's importance (the
        token it would drop: the one nearer the class token)."""
        b = tl.program_id(0)
        e = tl.arange(0, BLOCK_T)
        m = e < E
        cls = tl.load(cls_ptr + b)
        inner = tl.where(e < cls, e + 1, e)
        imp = tl.load(imp_ptr + b * s_imp + inner * s_imp_t, mask=m, other=0.0).to(tl.float32)
        ok = m & _edge_allowed(e, cls, window, 1, 0, False)
        tl.store(out_ptr + b * E + e, tl.where(ok, imp, 1e9), mask=m)

    @triton.jit
    def _apply_drops_kernel(keep_ptr, cls_ptr, score_ptr, w_ptr, w_out_ptr, T, sw_b, HAS_W: tl.constexpr,
                            BLOCK_T: tl.constexpr):
        """The drop edges (those ``keep`` joins: token e + 1 starts no slot) scored below any damage, so
        the next choice takes them first; the tokens they drop weighted 0 (functions.stm_1d)."""
        b = tl.program_id(0)
        t = tl.arange(0, BLOCK_T)
        row = keep_ptr + b * T
        cls = tl.load(cls_ptr + b)
        joins = tl.load(row + t, mask=(t >= 1) & (t < T), other=1) == 0  # edge t - 1 is a drop
        next_joins = tl.load(row + t + 1, mask=t < T - 1, other=1) == 0  # edge t is a drop
        tl.store(score_ptr + b * (T - 1) + t, tl.full((BLOCK_T,), -1.0, tl.float32), mask=next_joins)
        # before the class token an edge drops its later token, after it its earlier one
        dropped = (joins & (t - 1 < cls)) | (next_joins & (t >= cls))
        if HAS_W:
            w = tl.load(w_ptr + b * sw_b + t, mask=t < T, other=0.0).to(tl.float32)
        else:
            w = tl.full((BLOCK_T,), 1.0, tl.float32)
        tl.store(w_out_ptr + b * T + t, tl.where(dropped, 0.0, w), mask=t < T)

    @triton.jit
    def _tome_match_kernel(f_ptr, bias_ptr, cls_ptr, best_ptr, dst_ptr, T, C, sf_b, sf_t, sf_c, window,
                           SOFTPLUS: tl.constexpr, BLOCK_R: tl.constexpr, BLOCK_S: tl.constexpr,
                           BLOCK_D: tl.constexpr, BLOCK_C: tl.constexpr, PRECISION: tl.constexpr,
                           UNROLL: tl.constexpr):
        """Each source's best destination among this program's ``BLOCK_D`` (a row's destinations split
        over programs keeps every similarity's sum, channels ``BLOCK_C`` at a time, as one program's)."""
        b = tl.program_id(0)
        i = tl.program_id(1) * BLOCK_R + tl.arange(0, BLOCK_R)  # this program's sources: source i is token 2i
        part = tl.program_id(2)
        j = part * BLOCK_D + tl.arange(0, BLOCK_D)  # its destinations: destination j is token 2j + 1
        src_in, dst_in = 2 * i < T, 2 * j + 1 < T
        base = f_ptr + b * sf_b
        dot = tl.zeros((BLOCK_R, BLOCK_D), tl.float32)
        ns = tl.zeros((BLOCK_R,), tl.float32)
        nd = tl.zeros((BLOCK_D,), tl.float32)
        # each step's tiles and step bias are loaded one step ahead (registers), so a step waits on no
        # memory latency; the sums run in the same order as without
        src_at = base + (2 * i)[:, None] * sf_t
        dst_at = base + (2 * j + 1)[:, None] * sf_t
        c = tl.arange(0, BLOCK_C)
        next_a = tl.load(src_at + c[None, :] * sf_c, mask=src_in[:, None] & (c < C)[None, :], other=0.0)
        next_d = tl.load(dst_at + c[None, :] * sf_c, mask=dst_in[:, None] & (c < C)[None, :], other=0.0)
        next_bias = _bias(bias_ptr, c, C, SOFTPLUS)
        for c0 in tl.range(0, C, BLOCK_C, loop_unroll_factor=UNROLL):
            c = c0 + tl.arange(0, BLOCK_C)
            a_raw, d_raw, bias = next_a, next_d, next_bias
            n = c + BLOCK_C
            next_a = tl.load(src_at + n[None, :] * sf_c, mask=src_in[:, None] & (n < C)[None, :], other=0.0)
            next_d = tl.load(dst_at + n[None, :] * sf_c, mask=dst_in[:, None] & (n < C)[None, :], other=0.0)
            next_bias = _bias(bias_ptr, n, C, SOFTPLUS)
            a = _activated(a_raw, bias, src_in[:, None] & (c < C)[None, :], SOFTPLUS)
            d = _activated(d_raw, bias, dst_in[:, None] & (c < C)[None, :], SOFTPLUS)
            dot += tl.dot(a, tl.trans(d), input_precision=PRECISION)
            ns += tl.sum(a * a, axis=1)
            nd += tl.sum(d * d, axis=1)
        # cosine similarity as F.normalize's (norms floored at 1e-12); protected tokens take no part
        sim = dot / (tl.maximum(tl.sqrt(ns), 1e-12)[:, None] * tl.maximum(tl.sqrt(nd), 1e-12)[None, :])
        cls = tl.load(cls_ptr + b)
        src_ok = src_in & (tl.abs(2 * i - cls) > window)
        dst_ok = dst_in & (tl.abs(2 * j + 1 - cls) > window)
        sim = tl.where(src_ok[:, None] & dst_ok[None, :], sim, -1e9)
        at = (b * (BLOCK_S // BLOCK_D) + part) * BLOCK_S + i
        tl.store(best_ptr + at, tl.max(sim, axis=1))
        tl.store(dst_ptr + at, (part * BLOCK_D + tl.argmax(sim, axis=1)).to(tl.int32))

    @triton.jit
    def _list_slots(index_ptr, order_ptr, first_row, row, T, OUT, BLOCK_T: tl.constexpr, BLOCK_U: tl.constexpr):
        """A row's tokens listed slot by slot, in sequence order within a slot (a stable sort of the
        stored index), and each slot's first place in that list: counts of smaller (and equal
        earlier) slot indices. What merge_segments reads for slots that are not runs of the sequence."""
        t = tl.arange(0, BLOCK_T)
        m_t = t < T
        idx = tl.load(index_ptr + row + t, mask=m_t, other=0).to(tl.int32)
        place = tl.zeros((BLOCK_T,), tl.int32)
        first = tl.zeros((BLOCK_T,), tl.int32)
        u = tl.arange(0, BLOCK_U)
        upcoming = tl.load(index_ptr + row + u, mask=u < T, other=0).to(tl.int32)  # each chunk one step early
        for u0 in range(0, T, BLOCK_U):
            u = u0 + tl.arange(0, BLOCK_U)
            other = upcoming
            upcoming = tl.load(index_ptr + row + u + BLOCK_U, mask=u + BLOCK_U < T, other=0).to(tl.int32)
            m_u = (u < T)[None, :]
            before = _ahead(other, u, idx, t)
            place += tl.sum((m_u & before).to(tl.int32), axis=1)
            first += tl.sum((m_u & (other[None, :] < t[:, None])).to(tl.int32), axis=1)
        tl.store(order_ptr + row + place, t, mask=m_t)
        tl.store(first_row + t, first, mask=t <= OUT)

    @triton.jit
    def _tome_plan_kernel(best_ptr, dst_ptr, index_ptr, keep_ptr, first_ptr, order_ptr, ok_ptr, T, R, OUT,
                          BLOCK_S: tl.constexpr, PARTS: tl.constexpr, BLOCK_T: tl.constexpr, BLOCK_U: tl.constexpr):
        b = tl.program_id(0)
        i = tl.arange(0, BLOCK_S)  # source i is token 2i
        src_in = 2 * i < T
        # each source's best over the match kernel's parts of the row: ties to the earlier destination
        best = tl.load(best_ptr + b * PARTS * BLOCK_S + i)
        best_dst = tl.load(dst_ptr + b * PARTS * BLOCK_S + i)
        for p in tl.static_range(1, PARTS):
            other = tl.load(best_ptr + (b * PARTS + p) * BLOCK_S + i)
            best_dst = tl.where(other > best, tl.load(dst_ptr + (b * PARTS + p) * BLOCK_S + i), best_dst)
            best = tl.maximum(best, other)
        # rows past the sequence rank below every real one
        best = tl.where(src_in, best, -3e9)
        tl.store(ok_ptr + b, (tl.sum((best > -5e8).to(tl.int32), axis=0) >= R).to(tl.int8))
        # the R best sources (ties to the earlier one): their rank among all sources
        ahead = _ahead(-best, i, -best, i)
        chosen = src_in & (tl.sum(ahead.to(tl.int32), axis=1) < R)
        row = b * T
        t = tl.arange(0, BLOCK_T)
        m_t = t < T
        # kept tokens, slots and each chosen source's (its destination's) slot in registers: gathers
        # instead of round trips through memory, each a barrier and a wait
        half = tl.minimum(t // 2, BLOCK_S - 1)  # BLOCK_T <= 2 BLOCK_S
        merged = m_t & (t % 2 == 0) & (tl.gather(chosen.to(tl.int32), half, 0) != 0)
        kept = (m_t & ~merged).to(tl.int32)
        slots = tl.cumsum(kept, axis=0) - 1
        dst_slot = tl.gather(slots, tl.minimum(2 * best_dst + 1, BLOCK_T - 1), 0)
        slots = tl.where(merged, tl.gather(dst_slot, half, 0), slots)
        tl.store(keep_ptr + row + t, kept.to(tl.int8), mask=m_t)
        tl.store(index_ptr + row + t, slots.to(tl.int64), mask=m_t)
        tl.debug_barrier()
        _list_slots(index_ptr, order_ptr, first_ptr + b * (OUT + 1), row, T, OUT, BLOCK_T, BLOCK_U)

    @triton.jit
    def _prune_plan_kernel(mag_ptr, cls_ptr, index_ptr, keep_ptr, weight_ptr, first_ptr, ok_ptr, T, R, OUT,
                           s_mag, s_mag_t, window, BLOCK_T: tl.constexpr, BLOCK_U: tl.constexpr):
        b = tl.program_id(0)
        t = tl.arange(0, BLOCK_T)
        m_t = t < T
        cls = tl.load(cls_ptr + b)
        prot = tl.abs(t - cls) <= window
        score = tl.where(prot, 1e9, tl.load(mag_ptr + b * s_mag + t * s_mag_t, mask=m_t, other=0.0).to(tl.float32))
        # the R smallest scores (ties to the earlier token): each token's rank among all
        rank = tl.zeros((BLOCK_T,), tl.int32)
        for u0 in range(0, T, BLOCK_U):
            u = u0 + tl.arange(0, BLOCK_U)
            other = tl.load(mag_ptr + b * s_mag + u * s_mag_t, mask=u < T, other=0.0).to(tl.float32)
            other = tl.where(tl.abs(u - cls) <= window, 1e9, other)
            ahead = _ahead(other, u, score, t)
            rank += tl.sum(((u < T)[None, :] & ahead).to(tl.int32), axis=1)
        drop = m_t & (rank < R)
        tl.store(ok_ptr + b, (tl.sum((drop & prot).to(tl.int32), axis=0) == 0).to(tl.int8))
        kept = m_t & ~drop
        upto = tl.cumsum(kept.to(tl.int32), axis=0)
        # a dropped token's patches go to the nearest kept token farther from the class token
        # (nearer only if none is left), as functions.prune_plan books them
        prev, nxt = upto - 1, tl.minimum(upto, OUT - 1)
        outward = tl.where(t < cls, tl.where(prev >= 0, prev, nxt), nxt)
        index = tl.where(drop, outward, upto - 1)
        row = b * T
        tl.store(index_ptr + row + t, index.to(tl.int64), mask=m_t)
        tl.store(keep_ptr + row + t, kept.to(tl.int8), mask=m_t)
        tl.store(weight_ptr + row + t, kept.to(tl.float32), mask=m_t)
        tl.debug_barrier()
        before = tl.load(index_ptr + row + t - 1, mask=m_t & (t > 0), other=-1)
        tl.store(first_ptr + b * (OUT + 1) + index, t, mask=m_t & (index != before))
        tl.store(first_ptr + b * (OUT + 1) + OUT, T)

    @triton.jit
    def _cell_2d(rep, t, cls, window, grid, layer, T):
        """functions.stm_2d's cell of each token: its patch's 2x2 cell at ``layer``, split at the class
        token; one spare cell (``2 side^2``) for the class token, protected tokens and rows past T."""
        side = grid // 2 + 1
        o = layer % 2
        ok = (t < T) & (rep >= 0) & (tl.abs(t - cls) > window)
        safe = tl.maximum(rep, 0)  # the class token's -1 floors differently in C than in torch
        cell = (((safe // grid + o) // 2) * side + (safe % grid + o) // 2) * 2 + (t < cls).to(tl.int32)
        return tl.where(ok, cell, 2 * side * side)

    @triton.jit
    def _cell_damage_kernel(f_ptr, bias_ptr, w_ptr, cls_ptr, gamma_ptr, imp_ptr, rep_ptr, score_ptr, partner_ptr,
                            gamma, C, T, sf_b, sf_t, sf_c, sw_b, s_gamma, s_imp, s_rep, window, grid, layer,
                            SOFTPLUS: tl.constexpr, WARD: tl.constexpr, UNIT_W: tl.constexpr, FADE: tl.constexpr,
                            IMPORTANCE: tl.constexpr, BLOCK_E: tl.constexpr, BLOCK_C: tl.constexpr,
                            BLOCK_U: tl.constexpr):
        """functions.stm_2d up to its ranking, BLOCK_E tokens a program: each token's cell's earliest
        token (its partner, the scatter_reduce amin) and the damage of joining it (BIG for no member)."""
        b = tl.program_id(0)
        t = tl.program_id(1) * BLOCK_E + tl.arange(0, BLOCK_E)
        m_t = t < T
        cls = tl.load(cls_ptr + b)
        rep_row = rep_ptr + b * s_rep
        cell = _cell_2d(tl.load(rep_row + t, mask=m_t, other=-1), t, cls, window, grid, layer, T)
        first = t
        for u0 in range(0, T, BLOCK_U):
            u = u0 + tl.arange(0, BLOCK_U)
            other = _cell_2d(tl.load(rep_row + u, mask=u < T, other=-1), u, cls, window, grid, layer, T)
            same = (other[None, :] == cell[:, None]) & (u < T)[None, :]
            first = tl.minimum(first, tl.min(tl.where(same, u[None, :], T), axis=1))
        member = m_t & (cell != 2 * (grid // 2 + 1) * (grid // 2 + 1)) & (first < t)
        partner = tl.where(member, first, t)
        sq, dot, na, nb = _pair_sums(f_ptr + b * sf_b, t, partner, m_t, bias_ptr, C, sf_t, sf_c, SOFTPLUS, WARD, False,
                                     BLOCK_E, BLOCK_C)
        damage = _damage(sq, dot, na, nb, w_ptr + b * sw_b, imp_ptr + b * s_imp, gamma_ptr + b * s_gamma, gamma, t,
                         partner, m_t, tl.abs(partner - cls), WARD, UNIT_W, IMPORTANCE, FADE)
        tl.store(score_ptr + b * T + t, tl.where(member, damage, 1e9), mask=m_t)
        tl.store(partner_ptr + b * T + t, partner, mask=m_t)

    @triton.jit
    def _stm_2d_plan_kernel(score_ptr, partner_ptr, cls_ptr, rep_ptr, index_ptr, keep_ptr, first_ptr, order_ptr,
                            ok_ptr, T, R, LEFT, OUT, s_rep, window, grid, layer, runs, SIDES: tl.constexpr,
                            BLOCK_T: tl.constexpr, BLOCK_U: tl.constexpr):
        """The rest of functions.stm_2d, one program a row: at most runs - 1 members a cell (the
        cheapest, ties to the earlier), the R cheapest of those (per side where symmetric), both ranked
        as its stable sorts; then the slots, listed for merge_segments."""
        b = tl.program_id(0)
        t = tl.arange(0, BLOCK_T)
        m_t = t < T
        row = b * T
        cls = tl.load(cls_ptr + b)
        rep_row = rep_ptr + b * s_rep
        cell = _cell_2d(tl.load(rep_row + t, mask=m_t, other=-1), t, cls, window, grid, layer, T)
        damage = tl.load(score_ptr + row + t, mask=m_t, other=1e9)
        in_cell = tl.zeros((BLOCK_T,), tl.int32)
        for u0 in range(0, T, BLOCK_U):
            u = u0 + tl.arange(0, BLOCK_U)
            other = _cell_2d(tl.load(rep_row + u, mask=u < T, other=-1), u, cls, window, grid, layer, T)
            d_u = tl.load(score_ptr + row + u, mask=u < T, other=1e9)
            ahead = _ahead(d_u, u, damage, t) & (other[None, :] == cell[:, None]) & (d_u < 5e8)[None, :]
            in_cell += tl.sum(ahead.to(tl.int32), axis=1)
        score = tl.where((damage < 5e8) & (in_cell < runs - 1), damage, 1e9)
        tl.debug_barrier()
        tl.store(score_ptr + row + t, score, mask=m_t)
        tl.debug_barrier()
        rank = tl.zeros((BLOCK_T,), tl.int32)
        for u0 in range(0, T, BLOCK_U):
            u = u0 + tl.arange(0, BLOCK_U)
            s_u = tl.load(score_ptr + row + u, mask=u < T, other=1e9)
            ahead = _ahead(s_u, u, score, t) & (u < T)[None, :]
            if SIDES:
                ahead = ahead & ((u < cls)[None, :] == (t < cls)[:, None])
            rank += tl.sum(ahead.to(tl.int32), axis=1)
        chosen = _choose(rank, score, t, m_t, cls, R, LEFT, ok_ptr + b, SIDES)
        kept = m_t & ~chosen
        tl.store(keep_ptr + row + t, kept.to(tl.int8), mask=m_t)
        tl.store(index_ptr + row + t, (tl.cumsum(kept.to(tl.int32), axis=0) - 1).to(tl.int64), mask=m_t)
        tl.debug_barrier()
        # a chosen token takes its cell's earliest token's slot (that one is kept: it is no member)
        partner = tl.load(partner_ptr + row + t, mask=m_t, other=0)
        slot = tl.load(index_ptr + row + partner, mask=chosen, other=0)
        tl.debug_barrier()
        tl.store(index_ptr + row + t, slot, mask=chosen)
        tl.debug_barrier()
        _list_slots(index_ptr, order_ptr, first_ptr + b * (OUT + 1), row, T, OUT, BLOCK_T, BLOCK_U)

    @triton.jit
    def _merge_segments_kernel(x_ptr, w_ptr, first_ptr, keep_ptr, sizes_ptr, rep_ptr, order_ptr, cls_ptr, out_ptr,
                               osizes_ptr, orep_ptr, ocls_ptr, T, OUT, C, sx_b, sx_t, sw_b, so_b, so_t, s_first,
                               UNIT_W: tl.constexpr, ORDER: tl.constexpr, SLOTS: tl.constexpr,
                               BLOCK_C: tl.constexpr):
        """``SLOTS`` slots of one row a program, their k-th members read together (most slots hold one
        token: one slot a program left each program one dependent chain of small loads); each slot sums
        its members in sequence as one slot a program did."""
        j = tl.program_id(0) * SLOTS + tl.arange(0, SLOTS)
        b = tl.program_id(1)
        m_j = j < OUT
        lo = tl.load(first_ptr + b * s_first + j, mask=m_j, other=0)
        hi = tl.load(first_ptr + b * s_first + j + 1, mask=m_j, other=0)
        c = tl.arange(0, BLOCK_C)
        m_c = c < C
        acc = tl.zeros((SLOTS, BLOCK_C), tl.float32)
        wsum = tl.zeros((SLOTS,), tl.float32)
        size = tl.zeros((SLOTS,), tl.float32)
        rep = tl.zeros((SLOTS,), tl.int64)
        cls = tl.load(cls_ptr + b)
        has_cls = j < 0  # False, typed as the loop carries it
        for k in range(0, tl.max(hi - lo, axis=0)):
            p = lo + k
            on = m_j & (p < hi)
            if ORDER:  # slots are runs of ``order``, not of the sequence (ToMe's cross-set merges)
                t = tl.load(order_ptr + b * T + p, mask=on, other=0)
            else:
                t = p
            if UNIT_W:
                w = tl.where(on, 1.0, 0.0)
            else:
                w = tl.load(w_ptr + b * sw_b + t, mask=on, other=0.0).to(tl.float32)
            row = tl.load(x_ptr + b * sx_b + t[:, None] * sx_t + c[None, :], mask=on[:, None] & m_c[None, :],
                          other=0.0)
            acc += w[:, None] * row.to(tl.float32)
            wsum += w
            size += tl.load(sizes_ptr + b * T + t, mask=on, other=0.0).to(tl.float32)
            kept = tl.load(keep_ptr + b * T + t, mask=on, other=0).to(tl.int64)
            rep += kept * tl.load(rep_ptr + b * T + t, mask=on, other=0)
            has_cls = has_cls | (on & (t == cls))
        out = acc / tl.maximum(wsum, 1e-12)[:, None]
        tl.store(out_ptr + b * so_b + j[:, None] * so_t + c[None, :], out.to(out_ptr.dtype.element_ty),
                 mask=m_j[:, None] & m_c[None, :])
        tl.store(osizes_ptr + b * OUT + j, size, mask=m_j)
        tl.store(orep_ptr + b * OUT + j, rep, mask=m_j)
        tl.store(ocls_ptr + b + 0 * j, j.to(tl.int64), mask=has_cls)  # the one slot that holds the class token


def edge_scores(feat: torch.Tensor, channels_first: bool, cls: torch.Tensor, window: int, runs: int | None,
                offset: int, weight: torch.Tensor | None, ward: bool,
                fading: float | torch.Tensor | None, softplus_bias: torch.Tensor | None = None,
                importance: torch.Tensor | None = None, importance_kind: str = "none",
                tiles: tuple[int, int, int, bool] | None = None) -> torch.Tensor:
    """(B, T-1) score of merging each adjacent token pair; ``BIG`` where the edge is not allowed.

    ``feat``: (B, C, T) if ``channels_first`` else (B, T, C), any strides. ``softplus_bias``
    (C,): the features are pre-activation steps, softplus(feat + bias) is compared.
    ``weight`` (B, T) or None (all 1). ``fading``: gamma (a float, or a tensor of 1 or B
    values) or None. ``runs`` None: no blocks (any pair outside the window on one side).
    ``importance`` (B, T): the damage is scaled by the pair's ``importance_kind`` (min, max, mean).
    ``tiles`` (edges, channels, warps, shift) of a program: :func:`edge_tiles` unless given (for tuning).
    """
    bsz, t, chans, strides = _token_view(feat, channels_first)
    edges = t - 1
    out = torch.empty(bsz, edges, device=feat.device, dtype=torch.float32)
    args, flags = _damage_args(feat, cls, weight, ward, fading, softplus_bias, importance, importance_kind)
    block_e, block_c, warps, shift = tiles or edge_tiles(channels_first, chans)
    grid = (bsz, triton.cdiv(edges, block_e - 1 if shift else block_e))
    _edge_scores_kernel[grid](*args[:6], out, args[6], chans, edges, *strides, *args[7:], window, runs or 1, offset,
                              **flags, BLOCKED=runs is not None, BLOCK_E=block_e, BLOCK_C=block_c, SHIFT=shift,
                              num_warps=warps)
    return out


def _token_view(feat: torch.Tensor, channels_first: bool) -> tuple[int, int, int, tuple[int, int, int]]:
    """(batch, tokens, channels, (batch, token, channel) strides) of features in either layout."""
    if channels_first:
        bsz, chans, t = feat.shape
        sf_b, sf_c, sf_t = feat.stride()
    else:
        bsz, t, chans = feat.shape
        sf_b, sf_t, sf_c = feat.stride()
    return bsz, t, chans, (sf_b, sf_t, sf_c)


def _damage_args(feat: torch.Tensor, cls: torch.Tensor, weight: torch.Tensor | None, ward: bool,
                 fading: float | torch.Tensor | None, softplus_bias: torch.Tensor | None,
                 importance: torch.Tensor | None, importance_kind: str) -> tuple[tuple, dict]:
    """The damage kernels' shared arguments: (feat, bias, weight, cls, gamma tensor, importance, gamma,
    weight's row stride, gamma's stride, importance's row stride) and their constexpr flags."""
    fade, gamma, gamma_t, s_gamma = 0, 1.0, cls, 0
    if isinstance(fading, torch.Tensor):
        fade, gamma_t = 2, fading.reshape(-1).float()
        s_gamma = 0 if gamma_t.numel() == 1 else 1
    elif fading is not None:
        fade, gamma = 1, float(fading)
    w = weight if weight is not None else cls
    imp = importance if importance is not None else cls
    imp_mode = 0 if importance is None else IMPORTANCE_KINDS.index(importance_kind) + 1
    args = (feat, softplus_bias if softplus_bias is not None else cls, w, cls, gamma_t, imp, gamma,
            w.stride(0) if weight is not None else 0, s_gamma, imp.stride(0) if importance is not None else 0)
    return args, dict(SOFTPLUS=softplus_bias is not None, WARD=ward, UNIT_W=weight is None, FADE=fade,
                      IMPORTANCE=imp_mode)


def plan_2d_tiles(t: int) -> tuple[int, int]:
    """(tokens a step of the pairwise loops, warps) of :func:`stm_2d_plan`'s per-image kernel at ``t``
    tokens. Graph replays on an H200 (vim_tiny batch 64, ``bench/bench_merge_tiles.py``, 2026-12-04), µs at
    197 / 87 tokens: (32, 8) 43.0 / 24.5, (32, 4) 51.6 / 19.4, the former (16, 4) 59.2 / 23.0: a row of
    256 slots wants 8 warps (at 4, (32, 4) spills 96 stack bytes there; (32, 8) needs 168 registers a thread,
    ``bench/kernel_registers.py``), one of 128 four."""
    return (32, 8) if _pow2(t) > 128 else (32, 4)


def stm_2d_plan(feat: torch.Tensor, channels_first: bool, cls: torch.Tensor, rep: torch.Tensor, grid: int, r: int,
                window: int, runs: int, layer: int, left: int | None, weight: torch.Tensor | None, ward: bool,
                fading: float | torch.Tensor | None, softplus_bias: torch.Tensor | None = None,
                importance: torch.Tensor | None = None, importance_kind: str = "none",
                tiles: tuple[int, int] | None = None
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """STM's 2-D plan (:func:`stmsearch.merging.functions.stm_2d`) in two launches: each token's cell,
    its earliest token and the damage of joining it (features and their options as :func:`edge_scores`
    reads them, spread over programs of a few tokens), then per image the ``runs - 1`` cheapest members a
    cell, the ``r`` cheapest of those (``left`` of them before the class token, where given), and the
    slots listed as :func:`tome_plan` returns them: (index, keep, first, order, ok). ``tiles``: (tokens
    a step of the per-image kernel's pairwise loops, its warps; for tuning)."""
    bsz, t, chans, strides = _token_view(feat, channels_first)
    index = torch.empty(bsz, t, device=feat.device, dtype=torch.long)
    keep = torch.empty(bsz, t, device=feat.device, dtype=torch.bool)
    first = torch.empty(bsz, t - r + 1, device=feat.device, dtype=torch.int32)
    order = torch.empty(bsz, t, device=feat.device, dtype=torch.int32)
    ok = torch.empty(bsz, device=feat.device, dtype=torch.bool)
    score = torch.empty(bsz, t, device=feat.device, dtype=torch.float32)
    partner = torch.empty(bsz, t, device=feat.device, dtype=torch.int32)
    args, flags = _damage_args(feat, cls, weight, ward, fading, softplus_bias, importance, importance_kind)
    block_e, block_c, warps, _ = edge_tiles(channels_first, chans)
    _cell_damage_kernel[(bsz, triton.cdiv(t, block_e))](*args[:6], rep, score, partner, args[6], chans, t, *strides,
                                                        *args[7:], rep.stride(0), window, grid, layer, **flags,
                                                        BLOCK_E=block_e, BLOCK_C=block_c, BLOCK_U=32,
                                                        num_warps=warps)
    block_u, warps = tiles or plan_2d_tiles(t)
    _stm_2d_plan_kernel[(bsz,)](score, partner, cls, rep, index, keep.view(torch.int8), first, order,
                                ok.view(torch.int8), t, r, left or 0, t - r, rep.stride(0), window, grid, layer, runs,
                                SIDES=left is not None, BLOCK_T=_pow2(t), BLOCK_U=block_u, num_warps=warps)
    return index, keep, first, order, ok


def edge_tiles(channels_first: bool, chans: int) -> tuple[int, int, int, bool]:
    """(edges, channels, warps, shift) of an :func:`edge_scores` program for features in that layout
    (shift: the program reads ``edges`` tokens once and scores the ``edges - 1`` edges between them)."""
    if _interpreting():
        return 16, min(64, _pow2(chans)), 4, True
    # measured on an H200 (vim_tiny, batch 64, bf16 and fp32, features x, dt and the residual): 4-8 us a
    # launch against 6-27 with 32 edges x 64 channels read twice (bench/results/gpu/MERGE_HISTORY.md)
    return 16, min(128, _pow2(chans)), 4, True


def mean_decay(delta: torch.Tensor, bias: torch.Tensor | None, a: torch.Tensor,
               tiles: tuple[int, int] | None = None) -> torch.Tensor:
    """(B,) ``features.fading``'s estimated gamma in one launch: exp(softplus(mean over L of
    ``delta`` (B, D, L) + ``bias``) x A (D, N)), averaged over channels and states. ``tiles``
    (channels a step, warps; for tuning)."""
    bsz, chans, length = delta.shape
    out = torch.empty(bsz, device=delta.device, dtype=torch.float32)
    block_d, warps = tiles or (64, 8)
    _mean_decay_kernel[(bsz,)](delta, bias if bias is not None else a, a, out, chans, length, a.shape[1],
                               *delta.stride(), *a.stride(), HAS_BIAS=bias is not None, BLOCK_D=block_d,
                               BLOCK_L=_pow2(min(length, 256)), BLOCK_N=_pow2(a.shape[1], 2), num_warps=warps)
    return out


def dt_weights(delta: torch.Tensor, bias: torch.Tensor | None, sizes: torch.Tensor,
               tiles: tuple[int, int, int] | None = None) -> torch.Tensor:
    """(B, L) ``features.weights``' ``dt`` weights in one launch: ``sizes`` x the mean over channels of
    softplus(``delta`` (B, D, L) + ``bias``), read once (no fp32 copy of a bf16 ``delta``). ``tiles``
    (channels a step, tokens a program, warps; for tuning)."""
    bsz, chans, length = delta.shape
    out = torch.empty(bsz, length, device=delta.device, dtype=torch.float32)
    # short rows of tokens a program: a late layer's few tokens still fill the GPU with programs
    block_d, block_l, warps = tiles or (128, 32, 4)
    _dt_weights_kernel[(bsz, triton.cdiv(length, block_l))](delta, bias if bias is not None else sizes, sizes, out,
                                                            chans, length, *delta.stride(), sizes.stride(0),
                                                            HAS_BIAS=bias is not None, BLOCK_D=block_d,
                                                            BLOCK_L=block_l, num_warps=warps)
    return out


def importance_vectors(importance: torch.Tensor, sizes: torch.Tensor, damage_power: float | None,
                       weight_power: float | None) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """STM's per-token vectors from a step's importance (B, T), in one launch:
    ``features.damage_importance`` (importance ** damage_power over the image's mean) and the
    ``norm`` weights (sizes x the same at weight_power). A power None: that vector is not wanted."""
    bsz, t = importance.shape
    dmg = torch.empty(bsz, t, device=importance.device, dtype=torch.float32) if damage_power is not None else None
    w = torch.empty(bsz, t, device=importance.device, dtype=torch.float32) if weight_power is not None else None
    _importance_kernel[(bsz,)](importance, sizes, dmg if dmg is not None else sizes, w if w is not None else sizes,
                               t, *importance.stride(), sizes.stride(0), float(damage_power or 1.0),
                               float(weight_power or 1.0), DAMAGE=dmg is not None, Q_ONE=damage_power == 1,
                               WEIGHTS=w is not None, P_ONE=weight_power == 1, BLOCK_T=_pow2(t))
    return dmg, w


def select_chain(score: torch.Tensor, cls: torch.Tensor, r: int, left: int | None = None,
                 blocks: tuple[int, int, int] | None = None
                 ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Merge along the ``r`` least-scored edges of ``score`` (B, T-1) (``BIG``: not allowed; a
    row stride of 0 shares one row), choice and plan in one launch.

    ``left``: take ``left`` edges before the class token ``cls`` (B,) and ``r - left`` after it.
    ``blocks`` (window, runs, offset): the kernel applies STM's block rule to the scores itself.
    Returns (index (B, T) int64, keep (B, T) bool, first (B, T-r+1) int32: each slot's first
    token and T at the end, ok (B,) bool: ``r`` allowed edges were found).
    """
    edges = score.shape[1]
    bsz, t = cls.shape[0], edges + 1
    if score.stride(1) != 1:
        score = score.contiguous()
    index = torch.empty(bsz, t, device=score.device, dtype=torch.long)
    keep = torch.empty(bsz, t, device=score.device, dtype=torch.bool)
    first = torch.empty(bsz, t - r + 1, device=score.device, dtype=torch.int32)
    ok = torch.empty(bsz, device=score.device, dtype=torch.bool)
    window, runs, offset = blocks if blocks is not None else (0, 1, 0)
    _select_chain_kernel[(bsz,)](score, cls, index, keep.view(torch.int8), first, ok.view(torch.int8), t, r,
                                 left or 0, t - r, score.stride(0), window, runs, offset, SIDES=left is not None,
                                 MASK=blocks is not None, BLOCK_T=_pow2(t), BLOCK_U=16, num_warps=4)
    return index, keep, first, ok


def drop_scores(importance: torch.Tensor, cls: torch.Tensor, window: int) -> torch.Tensor:
    """(B, T-1) :func:`functions.drop_edges`' score of each edge: its inner member's ``importance``
    (B, T), any strides; ``BIG`` outside the free edges. Its ``r`` least are the drops."""
    bsz, t = importance.shape
    out = torch.empty(bsz, t - 1, device=importance.device, dtype=torch.float32)
    _drop_scores_kernel[(bsz,)](importance, cls, out, t - 1, importance.stride(0), importance.stride(1), window,
                                BLOCK_T=_pow2(t))
    return out


def apply_drops(keep: torch.Tensor, cls: torch.Tensor, score: torch.Tensor, weight: torch.Tensor | None
                ) -> torch.Tensor:
    """Given the drops' choice (``keep`` (B, T) of :func:`select_chain` over :func:`drop_scores`): sets
    the drop edges of ``score`` (B, T-1, contiguous, edited in place) to -1, below any damage, and
    returns the merge weights (B, T) fp32: ``weight`` (None: all 1) with the dropped tokens at 0."""
    bsz, t = keep.shape
    out = torch.empty(bsz, t, device=keep.device, dtype=torch.float32)
    _apply_drops_kernel[(bsz,)](keep.view(torch.int8), cls, score, out if weight is None else weight, out, t,
                                0 if weight is None else weight.stride(0), HAS_W=weight is not None,
                                BLOCK_T=_pow2(t))
    return out


def tome_plan(feat: torch.Tensor, cls: torch.Tensor, r: int, window: int,
              tiles: tuple | None = None, softplus_bias: torch.Tensor | None = None
              ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """ToMe's bipartite plan (:func:`stmsearch.merging.functions.tome_plan`) over ``feat`` (B, T, C),
    any strides, with its segments: the similarities, the matching and the bookkeeping in two launches.
    ``softplus_bias`` (C,): the features are pre-activation steps, softplus(feat + bias) is compared.

    Returns (index (B, T) int64, keep (B, T) bool, first (B, T-r+1) int32, order (B, T) int32, as
    :func:`merge_segments` reads them, ok (B,) bool: at least ``r`` sources could merge). ``tiles``
    (sources a program, channels a step, the dot's input precision, warps of the plan, warps of the
    similarities, and optionally destinations a program (all by default) and the channel loop's unroll
    factor (1); for tuning).
    """
    bsz, t, chans = feat.shape
    out_len = t - r
    index = torch.empty(bsz, t, device=feat.device, dtype=torch.long)
    keep = torch.empty(bsz, t, device=feat.device, dtype=torch.bool)
    first = torch.empty(bsz, out_len + 1, device=feat.device, dtype=torch.int32)
    order = torch.empty(bsz, t, device=feat.device, dtype=torch.int32)
    ok = torch.empty(bsz, device=feat.device, dtype=torch.bool)
    block_s = _pow2((t + 1) // 2)
    # the similarities spread over programs of sources x destinations (one program a row left most SMs
    # idle at small batches), then the choice and the bookkeeping, which need the whole row, one per row
    block_r, block_c, precision, warps, match_warps, *more = tiles or tome_tiles(feat, block_s,
                                                                               softplus_bias is not None)
    block_d = more[0] if more else block_s
    unroll = more[1] if len(more) > 1 else 1
    block_r, block_d = min(block_r, block_s), min(block_d, block_s)
    parts = block_s // block_d
    best = torch.empty(bsz, parts, block_s, device=feat.device, dtype=torch.float32)
    best_dst = torch.empty(bsz, parts, block_s, device=feat.device, dtype=torch.int32)
    _tome_match_kernel[(bsz, block_s // block_r, parts)](feat, cls if softplus_bias is None else softplus_bias, cls,
                                                         best, best_dst, t, chans, *feat.stride(), window,
                                                         SOFTPLUS=softplus_bias is not None, BLOCK_R=block_r,
                                                         BLOCK_S=block_s, BLOCK_D=block_d, BLOCK_C=block_c,
                                                         PRECISION=precision, UNROLL=unroll, num_warps=match_warps)
    _tome_plan_kernel[(bsz,)](best, best_dst, index, keep.view(torch.int8), first, order, ok.view(torch.int8), t, r,
                              out_len, BLOCK_S=block_s, PARTS=parts, BLOCK_T=_pow2(t), BLOCK_U=16, num_warps=warps)
    return index, keep, first, order, ok


def tome_tiles(feat: torch.Tensor, block_s: int, softplus: bool = False) -> tuple:
    """(sources a program, channels a step, the dot's input precision, warps of the plan, warps of the
    similarities[, destinations a program]) for :func:`tome_plan` over ``feat`` in its layout and dtype, as
    measured on an H200 (graph replays at vim_tiny's and vim_small's recorded shapes, batch 64; README
    "Merges on the GPU", and bench/results/gpu/MERGE_HISTORY.md for the precisions). Three-pass TF32 gives fp32-grade
    similarities on tensor cores (the same plans as IEEE on every ``x`` and residual input timed; over a
    random-init model's ``dt`` steps, whose best matches can tie that closely, IEEE's 54-token plans
    differed), one pass does for 16-bit features, and fp32 channel-major features (a mixer's ``x``) keep IEEE.
    ``softplus``: the features compared are fp32 steps computed in the kernel, whatever ``feat``'s dtype.
    Token-major tiles split a row's destinations over programs 64 at a time: four programs a row at 197
    tokens instead of two, 166-211 registers a thread and no spill where the unsplit tile spilled
    (``bench/kernel_registers.py``, sm_90). Channels stay 16 a step and a program's sources 64 where
    that took 64: another sum order or matrix instruction changes plans over steps (below)."""
    if not feat.is_cuda:  # the interpreter has no tensor cores to emulate
        return 32, 32 if block_s <= 64 else 16, "ieee", 4, 4
    fp32 = feat.dtype == torch.float32 or softplus
    if feat.stride(1) != 1:  # token-major (the residual stream): 42-31 us against 46-33 for (32, 16, _, 4);
        # a mixer's features lie so too in the CUDA token layout (models.vim), 16-bit ones exact in one pass.
        # Over steps (vim_tiny b64 bf16, 197 / 119 / 54 tokens, 2026-12-04): 71.0 / - / 26.2 us before the
        # prefetch, 54.4 / 33.5 / 23.6 with it, 52.5 with 64 destinations a program at 197 and 19.9 with 16
        # sources a program at 54 (where the default's 32 sources use the same matrix instruction as 16: same
        # plans; 16 at 119 changed plans, as did the faster (64, 32, _, 8, 8) at 197, 32 channels a step)
        if softplus and block_s <= 32:
            return 16, 16, "tf32x3", 8, 4, 16
        return 64, 16, "tf32x3" if fp32 else "tf32", 8, 4, 64
    if fp32:  # 63 us against 93 for TF32x3 (vim_tiny's x)
        return 32, 16, "ieee", 4, 4
    # 16-bit channel-major: a bf16 or fp16 value is a TF32 value, so one TF32 pass multiplies exactly
    # (sums in fp32, as IEEE): bf16 34 / 45 us against 42 / 63 for TF32x3 and 54 / 86 at (32, 16)
    # (vim_tiny / vim_small)
    return 64, 32, "tf32", 4, 4


def prune_plan(magnitude: torch.Tensor, cls: torch.Tensor, r: int, window: int
               ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Importance pruning's plan (:func:`stmsearch.merging.functions.prune_plan`) over ``magnitude``
    (B, T) with its segments, in one launch per batch.

    Returns (index (B, T) int64, weight (B, T) float32: 1 kept, 0 dropped, keep (B, T) bool,
    first (B, T-r+1) int32, ok (B,) bool: no protected token had to go).
    """
    bsz, t = magnitude.shape
    out_len = t - r
    index = torch.empty(bsz, t, device=magnitude.device, dtype=torch.long)
    keep = torch.empty(bsz, t, device=magnitude.device, dtype=torch.bool)
    weight = torch.empty(bsz, t, device=magnitude.device, dtype=torch.float32)
    first = torch.empty(bsz, out_len + 1, device=magnitude.device, dtype=torch.int32)
    ok = torch.empty(bsz, device=magnitude.device, dtype=torch.bool)
    _prune_plan_kernel[(bsz,)](magnitude, cls, index, keep.view(torch.int8), weight, first, ok.view(torch.int8), t,
                               r, out_len, *magnitude.stride(), window, BLOCK_T=_pow2(t), BLOCK_U=16,
                               num_warps=4)
    return index, weight, keep, first, ok


def merge_segments(x: torch.Tensor, weight: torch.Tensor | None, first: torch.Tensor, keep: torch.Tensor,
                   sizes: torch.Tensor, rep: torch.Tensor, cls: torch.Tensor, order: torch.Tensor | None = None,
                   tiles: tuple[int, int] | None = None
                   ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Merge runs of tokens: slot j holds tokens first[:, j] .. first[:, j+1] - 1 (of ``order``
    (B, T) int32 when given: the tokens listed slot by slot, else of the sequence).

    x (B, T, C) (unit stride in C), weight (B, T) or None (all 1), keep (B, T) bool (one kept
    token per slot), sizes (B, T) float, rep (B, T) int64, cls (B,) int64. Returns the weighted mean
    (B, OUT, C) in x's dtype, the slots' summed sizes, their kept token's rep and the class token's slot.
    ``tiles`` (slots a program, warps): :func:`merge_tiles` unless given (for tuning).
    """
    bsz, t, chans = x.shape
    out_len = first.shape[1] - 1
    if x.stride(2) != 1:
        x = x.contiguous()
    sizes, rep, keep = sizes.contiguous(), rep.contiguous(), keep.contiguous()
    out = torch.empty(bsz, out_len, chans, device=x.device, dtype=x.dtype)
    osizes = torch.empty(bsz, out_len, device=x.device, dtype=sizes.dtype)
    orep = torch.empty(bsz, out_len, device=x.device, dtype=rep.dtype)
    ocls = torch.empty(bsz, device=x.device, dtype=torch.long)
    w = weight if weight is not None else sizes
    block_c = _pow2(chans, 32)
    slots, warps = tiles or merge_tiles(block_c)
    order = order.contiguous() if order is not None else first
    _merge_segments_kernel[(triton.cdiv(out_len, slots), bsz)](
        x, w, first, keep.view(torch.int8), sizes, rep, order, cls, out, osizes, orep, ocls, t, out_len, chans,
        x.stride(0), x.stride(1), w.stride(0) if weight is not None else 0, out.stride(0), out.stride(1),
        first.stride(0), UNIT_W=weight is None, ORDER=order is not first, SLOTS=slots, BLOCK_C=block_c,
        num_warps=warps)
    return out, osizes, orep, ocls


def merge_tiles(block_c: int) -> tuple[int, int]:
    """(slots a program, warps) of :func:`merge_segments` for rows of ``block_c`` channels, as measured on an
    H200 (``bench_merge_tiles.py --only "merge,merge tome"``, vim_tiny and vim_small at batch 64 and 256,
    2026-12-04: the sums over their first, middle and last steps 164 -> 135 us at 256 channels, 274 -> 234
    at 512, against one slot a program on 1 and 4 warps, this kernel's tiles before). Wider rows keep
    those (not measured)."""
    if block_c <= 256:
        return 2, 1
    return (1, 1) if block_c <= 512 else (1, 4)
