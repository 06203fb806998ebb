"""Token-reduction plans as small pure tensor functions (ToMe style).

Every method returns a :class:`Plan`: for each input token, the output slot it goes to
(``index``, (B, T)) and the weight of its features there (``weight``). Applying a plan is
one scatter-add for any method, so STM's runs, ToMe's cross-set merges and pruning share
one vectorised path. No loop over tokens or batch items anywhere.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .capacity import block_offset, cell_of, split_sides

_BIG = 1e9  # "never choose": finite, so topk order stays defined
WARD_CHUNK = 8  # images per pass of Ward's differences (pair_damage)
SHORTAGE = "fewer than {} mergeable neighbour pairs left; lower the schedule"
BIPARTITE_SHORTAGE = "fewer than {} tokens left for bipartite merging; lower the schedule"
PRUNE_SHORTAGE = "fewer than {} unprotected tokens to prune; lower the schedule"


@dataclass
class Plan:
    """Where each token goes. index: (B, T) output slot; weight: (B, T) feature weight (None: all
    1); keep: (B, T) the one token per slot whose place (sequence position) the slot takes.
    first: (B, out_len + 1) each slot's first token and T, where every slot is a run of
    consecutive tokens (the GPU merges such plans without atomics); None otherwise. order:
    (B, T) the tokens listed slot by slot, where slots are runs of it rather than of the
    sequence (then ``first`` indexes ``order``)."""

    index: torch.Tensor
    weight: torch.Tensor | None
    keep: torch.Tensor
    out_len: int  # known from the schedule, so no device sync is needed to size outputs
    first: torch.Tensor | None = None
    order: torch.Tensor | None = None


def apply_plan(x: torch.Tensor, plan: Plan) -> torch.Tensor:
    """Weighted average of the tokens sharing a slot. x: (B, T, C) -> (B, out_len, C), in fp32."""
    b, t, c = x.shape
    w = (plan.weight.float() if plan.weight is not None else x.new_ones(b, t, dtype=torch.float32)).unsqueeze(-1)
    # index_add_ over the flattened batch, not scatter_add_ with an index expanded over channels: the same sums
    # in the same order, 4x faster on the CPU (0.17 against 0.69 ms at 32 x 197 x 64)
    flat = (plan.index + torch.arange(b, device=x.device)[:, None] * plan.out_len).view(-1)
    num = x.new_zeros(b * plan.out_len, c, dtype=torch.float32).index_add_(0, flat, (x.float() * w).view(b * t, c))
    den = w.new_zeros(b * plan.out_len, 1).index_add_(0, flat, w.reshape(b * t, 1))
    return (num / den.clamp_min(1e-12)).view(b, plan.out_len, c).to(x.dtype)


def reduce_sum(v: torch.Tensor, plan: Plan) -> torch.Tensor:
    """Sum a per-token quantity (B, T) into its slots (sizes, patch counts)."""
    return v.new_zeros(v.shape[0], plan.out_len).scatter_add_(1, plan.index, v)


def _check(ok: torch.Tensor, message: str) -> None:
    """Raise if ``ok`` is false; on CUDA an asynchronous device assert, so no merge waits
    for the GPU (a sync per layer would starve its launch queue)."""
    if ok.is_cuda:
        torch._assert_async(ok, message)
    elif not bool(ok):
        raise RuntimeError(message)


def kept_positions(plan: Plan) -> torch.Tensor:
    """(B, out_len) indices of each slot's kept token, in order, without a device sync: each kept token
    written to its slot (``index``), the others to a spare column (a scatter, not a sort: 14 against 46 us
    on the CPU at 32 x 197)."""
    b, t = plan.keep.shape
    slot = torch.where(plan.keep, plan.index, plan.out_len)
    out = plan.index.new_zeros(b, plan.out_len + 1).scatter_(1, slot, positions(b, t, plan.index.device))
    return out[:, :plan.out_len]


def positions(b: int, t: int, device: torch.device) -> torch.Tensor:
    return torch.arange(t, device=device).expand(b, t)


def protected_mask(cls: torch.Tensor, t: int, window: int) -> torch.Tensor:
    """(B, T) True for the class token and the ``window`` tokens on each side of it."""
    pos = positions(cls.shape[0], t, cls.device)
    return (pos - cls[:, None]).abs() <= window


def fade(damage: torch.Tensor, fading: float | torch.Tensor | None, dist: torch.Tensor) -> torch.Tensor:
    """``damage * gamma ** dist`` (gamma: a float, a tensor of 1 or B values, or None: no fading)."""
    if fading is None:
        return damage
    if isinstance(fading, torch.Tensor):
        return damage * fading.float().reshape(-1, 1).pow(dist)
    return damage * torch.pow(fading, dist)


def pair_damage(a: torch.Tensor, b: torch.Tensor, wa: torch.Tensor, wb: torch.Tensor, kind: str) -> torch.Tensor:
    """Damage of merging each token of ``a`` (B, E, C) with the one of ``b`` beside it: (B, E).

    ``cosine``: 1 - cosine similarity, blind to magnitude. ``ward``: the squared error the merge
    adds to the stream, sum of w * |token - merged|^2 over the two tokens, which for a weighted
    mean is w_a w_b / (w_a + w_b) |a - b|^2 (Ward's criterion, weights ``wa``, ``wb`` (B, E)):
    near-identical tokens are free whatever their direction, and merging large tokens or
    tokens that already stand for many patches costs more.
    """
    if kind == "ward":
        wa, wb = wa.float(), wb.float()
        scale = wa * wb / (wa + wb)
        dim = -1
        if a.dim() == 3 and a.stride(1) == 1 != a.stride(2) and b.stride(1) == 1:
            # (B, E, C) views of a channels-first (B, C, T) tensor: the differences taken in that layout read it
            # in order (bench/results/calib_2026-12-06b/ward_layout.log)
            a, b, dim = a.transpose(1, 2), b.transpose(1, 2), 1
        if a.device.type != "cpu" or (torch.is_grad_enabled() and (a.requires_grad or b.requires_grad)):
            return (a.float() - b.float()).square().sum(dim) * scale
        # a few images at a time, squared in place: the differences stay in cache rather than making two passes
        # over (B, E, C) buffers in memory (bench/results/calib_2026-12-06c/ward_chunks.log); each image's sums
        # are the same
        shape = list(a.shape)
        del shape[dim]
        sums = a.new_empty(shape, dtype=torch.float32)
        for i in range(0, a.shape[0], WARD_CHUNK):
            torch.sum((a[i:i + WARD_CHUNK].float() - b[i:i + WARD_CHUNK].float()).square_(), dim,
                      out=sums[i:i + WARD_CHUNK])
        return sums * scale
    return 1.0 - (F.normalize(a.float(), dim=-1) * F.normalize(b.float(), dim=-1)).sum(-1)


def importance_scale(ia: torch.Tensor, ib: torch.Tensor, kind: str) -> torch.Tensor:
    """Factor on the damage of merging tokens of importance ``ia`` and ``ib`` (B, E): the lesser
    (``min``: a token that carries little may join any neighbour, as pruning would drop it), the
    greater (``max``: only where both carry little) or their ``mean``."""
    if kind == "min":
        return torch.minimum(ia, ib)
    if kind == "max":
        return torch.maximum(ia, ib)
    return (ia + ib) / 2


def _edge_distances(cls: torch.Tensor, t: int, window: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, T) each token's offset from the class token and its distance past the window (0 for the
    first eligible token on either side, negative inside the window)."""
    rel = positions(cls.shape[0], t, cls.device) - cls[:, None]
    return rel, rel.abs() - window - 1


def free_edges(cls: torch.Tensor, t: int, window: int) -> torch.Tensor:
    """(B, T-1) True where edge (i, i+1) joins two eligible tokens on one side of the class token
    (no blocks: chains of any length)."""
    rel, dist = _edge_distances(cls, t, window)
    same_side = torch.sign(rel[:, :-1]) == torch.sign(rel[:, 1:])
    return (dist[:, :-1] >= 0) & (dist[:, 1:] >= 0) & same_side


def block_edges(cls: torch.Tensor, t: int, window: int, runs: int, layer: int) -> torch.Tensor:
    """(B, T-1) True where edge (i, i+1) lies inside one block of ``runs`` eligible tokens.

    Blocks are counted outwards from the protection window on each side, so both sides
    see the same layout and no edge crosses the window or the class token.
    """
    block = torch.div(_edge_distances(cls, t, window)[1] + block_offset(layer, runs), runs, rounding_mode="floor")
    return free_edges(cls, t, window) & (block[:, :-1] == block[:, 1:])


def allowed_edges(cls: torch.Tensor, t: int, window: int, runs: int, layer: int, edges: str) -> torch.Tensor:
    """(B, T-1) the edges STM may merge along: :func:`block_edges` (``edges`` ``blocks``) or :func:`free_edges`."""
    return block_edges(cls, t, window, runs, layer) if edges == "blocks" else free_edges(cls, t, window)


def choose_edges(damage: torch.Tensor, allowed: torch.Tensor, r: int) -> torch.Tensor:
    """(B, E) bool: the ``r`` allowed edges of least damage in every row."""
    score = torch.where(allowed, damage, torch.full_like(damage, _BIG))
    # a stable sort, not topk: ties (e.g. identical tokens, damage 0) go to the earlier edge on every
    # device, as the GPU kernel ranks them (stmsearch.ops.merge_triton.select_chain)
    top = torch.sort(score, dim=-1, stable=True).indices[:, :r]
    chosen = torch.zeros_like(allowed).scatter_(1, top, True)
    _check((chosen <= allowed).all(), SHORTAGE.format(r))
    return chosen


def chain_plan(edges: torch.Tensor, weight: torch.Tensor, r: int) -> Plan:
    """Merge along ``r`` chosen adjacent edges (B, T-1): each chain becomes one token at its start."""
    starts = torch.cat([torch.ones_like(edges[:, :1]), ~edges], dim=1)
    return Plan(starts.long().cumsum(1) - 1, weight, starts, starts.shape[1] - r)


def drop_edges(importance: torch.Tensor, cls: torch.Tensor, window: int, k: int,
               where: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Pruning's choice in edge form: the ``k`` faintest eligible tokens (``importance`` (B, T)), each
    joining its outward neighbour (the one farther from the class token). Returns (edges (B, T-1), dropped
    (B, T)). Edge (i, i+1) drops its inner member (i + 1 before the class token, i after it), so each
    token has one edge and the outermost token of any chain is never dropped: every merged token keeps a
    member that was not dropped. ``where`` (B, T-1) restricts the edges (a side)."""
    b, t = importance.shape
    allowed = free_edges(cls, t, window)
    if where is not None:
        allowed = allowed & where
    before = positions(b, t - 1, cls.device) < cls[:, None]
    inner = torch.where(before, importance[:, 1:], importance[:, :-1]).float()
    edges = choose_edges(inner, allowed, k) if k else torch.zeros_like(allowed)
    dropped = torch.zeros(b, t, dtype=torch.bool, device=cls.device)
    dropped[:, 1:] |= edges & before
    dropped[:, :-1] |= edges & ~before
    return edges, dropped


def stm_1d(metric: torch.Tensor, cls: torch.Tensor, r: int, window: int, runs: int, layer: int,
           symmetric: bool, fading: float | torch.Tensor | None, weight: torch.Tensor, damage_kind: str = "cosine",
           importance: torch.Tensor | None = None, importance_kind: str = "min", edges: str = "blocks",
           drop: float = 0.0, magnitude: torch.Tensor | None = None) -> Plan:
    """STM with 1-D neighbours: runs of up to ``runs`` adjacent tokens in scan order.

    Damage of an edge = :func:`pair_damage` (``damage_kind``) * gamma^distance-to-class-token (if
    ``fading`` gamma is given: a float, or a tensor of one or one per image), * :func:`importance_scale`
    if ``importance`` (B, T) is given. Symmetric: ``split_sides`` merges on each side.
    ``edges``: ``blocks`` (runs of up to ``runs`` inside fixed blocks) or ``free`` (any adjacent eligible
    pair, chains of any length). ``drop``: this share of each side's merges (rounded down) drops the
    faintest tokens (``magnitude`` (B, T), pruning's order) into their outward neighbour at weight 0,
    anywhere outside the window; STM's damage chooses the rest.
    """
    b, t, _ = metric.shape
    damage = pair_damage(metric[:, :-1], metric[:, 1:], weight[:, :-1], weight[:, 1:], damage_kind)
    if importance is not None:
        damage = damage * importance_scale(importance[:, :-1].float(), importance[:, 1:].float(), importance_kind)
    damage = fade(damage, fading, (positions(b, t - 1, metric.device) - cls[:, None]).abs().float())
    allowed = allowed_edges(cls, t, window, runs, layer, edges)
    if symmetric:
        before = positions(b, t - 1, metric.device) < cls[:, None]
        parts = [(side, k) for side, k in zip((before, ~before), split_sides(r, layer)) if k]
    else:
        parts = [(None, r)]
    chosen, dropped = torch.zeros_like(allowed), None
    for side, k in parts:
        k_drop = int(drop * k) if magnitude is not None else 0
        if k_drop:
            gone, out = drop_edges(magnitude, cls, window, k_drop, side)
            chosen |= gone
            dropped = out if dropped is None else dropped | out
        ok = allowed & ~chosen if side is None else allowed & side & ~chosen
        if k - k_drop:
            chosen |= choose_edges(damage, ok, k - k_drop)
    if dropped is not None:
        weight = weight * (~dropped).to(weight.dtype)
    return chain_plan(chosen, weight, r)


def random_score(cls: torch.Tensor, t: int, window: int, layer: int, draw: torch.Tensor) -> torch.Tensor:
    """(B, T-1) random score of STM's adjacent pairs (blocks of 2), ``_BIG`` where not allowed.

    ``draw`` (T-1,): one random number per edge, shared by the batch, so an image's merges do
    not depend on its place in the batch.
    """
    allowed = block_edges(cls, t, window, 2, layer)
    damage = draw.expand_as(allowed)
    return torch.where(allowed, damage, torch.full_like(damage, _BIG))


def random_plan(cls: torch.Tensor, t: int, r: int, window: int, layer: int, weight: torch.Tensor,
                draw: torch.Tensor) -> Plan:
    """Random adjacent pairs (the floor baseline): STM's pair layout, random choice."""
    score = random_score(cls, t, window, layer, draw)
    return chain_plan(choose_edges(score, score < _BIG / 2, r), weight, r)


def tome_plan(metric: torch.Tensor, cls: torch.Tensor, r: int, window: int, weight: torch.Tensor | None) -> Plan:
    """ToMe bipartite matching: even tokens merge into their most similar odd token.

    Order is restored: kept tokens stay in sequence order and a merged token takes its
    destination's slot. Protected tokens are neither source nor destination.
    """
    b, t, _ = metric.shape
    prot = protected_mask(cls, t, window)
    m = F.normalize(metric.float(), dim=-1)
    src, dst = m[:, 0::2], m[:, 1::2]
    sim = src @ dst.transpose(1, 2)
    sim = sim.masked_fill(prot[:, 0::2, None] | prot[:, None, 1::2], -_BIG)
    best, best_dst = sim.max(-1)
    _check((best > -_BIG / 2).sum(-1).min() >= r, BIPARTITE_SHORTAGE.format(r))
    top = best.topk(r, dim=-1).indices  # (B, r) source rows
    removed = torch.zeros(b, t, dtype=torch.bool, device=metric.device)
    removed[:, 0::2] = torch.zeros_like(best, dtype=torch.bool).scatter_(1, top, True)
    index = (~removed).long().cumsum(1) - 1
    dst_tok = 2 * best_dst.gather(1, top) + 1  # destination token of each chosen source
    src_tok = 2 * top
    index = index.scatter(1, src_tok, index.gather(1, dst_tok))
    return Plan(index, weight, ~removed, t - r)


def prune_plan(magnitude: torch.Tensor, cls: torch.Tensor, r: int, window: int) -> Plan:
    """Drop the ``r`` tokens of smallest output magnitude (features weight 0).

    A dropped token's patches are booked to the nearest kept token farther from the class
    token (nearer only if none is left), so patch counts still add up and the protected
    window stays untouched; its features are discarded.
    """
    b, t = magnitude.shape
    prot = protected_mask(cls, t, window)
    score = magnitude.float().masked_fill(prot, _BIG)
    drop = torch.zeros_like(prot).scatter_(1, score.topk(r, dim=-1, largest=False).indices, True)
    _check(~(drop & prot).any(), PRUNE_SHORTAGE.format(r))
    kept_upto = (~drop).long().cumsum(1)
    # for a dropped token: the kept slot before it and after it (the last slot if none after)
    prev, nxt = kept_upto - 1, kept_upto.clamp_max(t - r - 1)
    before = positions(b, t, cls.device) < cls[:, None]
    outward = torch.where(before, torch.where(prev >= 0, prev, nxt), nxt)
    index = torch.where(drop, outward, kept_upto - 1)
    return Plan(index, (~drop).float(), ~drop, t - r)


def stm_2d(metric: torch.Tensor, cls: torch.Tensor, rep: torch.Tensor, grid: int, r: int, window: int,
           runs: int, layer: int, symmetric: bool, fading: float | torch.Tensor | None, weight: torch.Tensor,
           damage_kind: str = "cosine", importance: torch.Tensor | None = None, importance_kind: str = "min") -> Plan:
    """STM with 2-D neighbours: tokens of one 2x2 patch cell merge into the cell's earliest token.

    ``rep`` (B, T) is the patch each token is anchored at (-1 for the class token); cells shift
    with the layer's parity (:func:`~stmsearch.merging.capacity.cell_of`) and split at the class
    token. Every eligible token but a cell's earliest may join it (damage against it, faded by the
    earliest's distance), at most ``runs - 1`` a cell per layer. Anchoring on the earliest token
    left, not a fixed corner, keeps every cell with two tokens mergeable whatever earlier layers
    merged, which is what ``cell_capacity`` counts; the merged token keeps the earliest position,
    so sequence order is preserved.
    """
    b, t, c = metric.shape
    pos = positions(b, t, metric.device)
    row, col = cell_of(torch.div(rep, grid, rounding_mode="floor"), rep % grid, layer)
    side = grid // 2 + 1  # cells along a row
    before = pos < cls[:, None]
    spare = 2 * side * side  # one slot for the class token and protected tokens
    ok = (rep >= 0) & ~protected_mask(cls, t, window)
    cell = torch.where(ok, (row * side + col) * 2 + before.long(), spare)
    first = torch.full((b, spare + 1), t, dtype=torch.long, device=metric.device)
    first = first.scatter_reduce(1, cell, pos, "amin").gather(1, cell).clamp_max(t - 1)
    member = ok & (first < pos)
    damage = pair_damage(metric, metric.gather(1, first[..., None].expand(-1, -1, c)), weight,
                         weight.gather(1, first), damage_kind)
    if importance is not None:
        damage = damage * importance_scale(importance.float(), importance.float().gather(1, first), importance_kind)
    damage = fade(damage, fading, (first - cls[:, None]).abs().float())
    damage = torch.where(member, damage, torch.full_like(damage, _BIG))
    # rank each member among its cell's (four patch places a cell): the runs - 1 cheapest may join
    place = cell * 4 + (torch.div(rep, grid, rounding_mode="floor") + layer) % 2 * 2 + (rep % grid + layer) % 2
    place = torch.where(ok, place, 4 * spare)
    by_place = torch.full((b, 4 * spare + 1), _BIG, device=metric.device).scatter(1, place, damage)
    # stable: ties (identical tokens, damage 0) to the earlier place, which is the earlier token, as the
    # GPU kernel ranks them (stmsearch.ops.merge_triton.stm_2d_plan)
    rank = by_place[:, :-1].view(b, spare, 4).argsort(dim=-1, stable=True).argsort(-1).flatten(1)
    rank = torch.cat([rank, rank.new_zeros(b, 1)], 1).gather(1, place)
    allowed = member & (rank < runs - 1)
    if symmetric:
        left, right = split_sides(r, layer)
        chosen = torch.zeros_like(allowed)
        for where, k in ((before, left), (~before, right)):
            if k:
                chosen |= choose_edges(damage, allowed & where, k)
    else:
        chosen = choose_edges(damage, allowed, r)
    keep = ~chosen
    slot = keep.long().cumsum(1) - 1
    return Plan(torch.where(chosen, slot.gather(1, first), slot), weight, keep, t - r)
