"""FLOPs per image with fvcore, with a handle for every op a ViM forward (merged or not) traces.

Convention (fvcore's): one multiply-accumulate (MAC) counts as one FLOP, and only MACs count:
- linear / conv / bmm / einsum: fvcore's own handles (in x out per output row). matmul, baddbmm,
  addmv: output elements x inner size (fvcore's own matmul handle ignores a broadcast batch of the
  second operand).
- the depthwise conv1d: on the CPU written as k shifted ``addcmul`` taps, 1 MAC per output
  element of each tap, so k per (token, channel); on CUDA a grouped ``conv1d`` counted by
  fvcore's conv handle over the padded length (L + k - 1, under 0.1% more in total).
- the selective scan, one op per layer (:data:`SCAN_OP`), per direction and image:
  3 MACs per (token, channel, state) -- ``dA * h``, ``+ dB * x`` and the read-out ``C * h`` --
  plus 2 per (token, channel): the ``D * x`` skip and the ``silu(z)`` gate.
- everything else counts 0 but is listed, so nothing is "unsupported": elementwise arithmetic
  and activations (softplus, silu, exp, rsqrt, the RMSNorm), residual adds, and the merge
  bookkeeping each merge method lists in its table entry (``Method.flop_ops``: topk, sort,
  cumsum, scatter, scatter_add, comparisons). The one MAC-heavy
  merge step, ToMe's similarity matmul, is a matmul and is counted.

Published figures this reproduces: ViM-Ti 1.45 G, ViM-S 5.1 G (224x224).

The reference scan loops over tokens in Python; tracing that would add ~10^4 graph nodes per
forward. While counting, ``stmsearch.models.vim.bidirectional_scan`` is swapped for a wrapper
around a ``torch.library`` custom op whose implementation calls the real scan, so the numbers
flowing through the forward (and hence the merge decisions) are unchanged.
"""
from __future__ import annotations

import contextlib
import threading
from collections import Counter

import torch
from fvcore.nn import FlopCountAnalysis
from fvcore.nn.jit_handles import get_shape

from ..merging.methods import METHODS
from ..models import vim as vim_module
from ..models.vim import VimConfig
from ..ops.scan import Direction, bidirectional_scan
from .throughput import threads

SCAN_OP = "stmsearch::bidirectional_scan"
SCAN_MACS_PER_STATE = 3  # dA*h + dB*x (state update) and C*h (read-out), per (token, channel, state)
SCAN_MACS_PER_CHANNEL = 2  # D skip and silu(z) gate, per (token, channel)

# Ops that do no multiply-accumulate under the convention above (see the module docstring).
ZERO_MAC_OPS = (
    # elementwise arithmetic, activations, norms
    "aten::add", "aten::add_", "aten::sub", "aten::rsub", "aten::mul", "aten::mul_", "aten::div",
    "aten::div_", "aten::neg", "aten::abs", "aten::sign", "aten::pow", "aten::sqrt", "aten::rsqrt",
    "aten::exp", "aten::exp_", "aten::log", "aten::softplus", "aten::silu", "aten::sigmoid",
    "aten::mean", "aten::sum", "aten::linalg_vector_norm", "aten::norm", "aten::clamp_min",
    "aten::reciprocal", "aten::clamp_max", "aten::where", "aten::__ior__", "aten::__or__", "aten::logical_and",
    "aten::logical_or", "aten::logical_not", "aten::lt", "aten::le", "aten::ne",
    # layout and copies
    "aten::pad", "aten::clone", "aten::expand_as", "aten::ones_like", "aten::empty_like",
    "aten::new_ones", "aten::flip", "aten::masked_select", "aten::masked_fill_", "aten::fill_",
    "aten::view_as", "aten::repeat", "aten::float", "aten::long",
)


def zero_mac_ops() -> set[str]:
    """The ops counted as 0 MACs: the model's (above) and every registered merge method's
    bookkeeping (``Method.flop_ops``: choosing and routing tokens)."""
    return set(ZERO_MAC_OPS).union(*(m.flop_ops for m in METHODS.values()))

_count_lock = threading.Lock()


@torch.library.custom_op(SCAN_OP, mutates_args=())
def _scan_op(u: torch.Tensor, delta: torch.Tensor, A: torch.Tensor, B: torch.Tensor, C: torch.Tensor,
             D: torch.Tensor, delta_bias: torch.Tensor | None, u_b: torch.Tensor, delta_b: torch.Tensor,
             A_b: torch.Tensor, B_b: torch.Tensor, C_b: torch.Tensor, D_b: torch.Tensor,
             delta_bias_b: torch.Tensor | None, z: torch.Tensor, dt_scale: torch.Tensor | None,
             backend: str | None) -> torch.Tensor:
    """The real :func:`bidirectional_scan`, as one op fvcore can see."""
    fwd = Direction(u, delta, A, B, C, D, delta_bias)
    bwd = Direction(u_b, delta_b, A_b, B_b, C_b, D_b, delta_bias_b)
    return bidirectional_scan(fwd, bwd, z, backend=backend, dt_scale=dt_scale)


def _scan_as_one_op(fwd: Direction, bwd: Direction, z: torch.Tensor, backend: str | None = None,
                    dt_scale: torch.Tensor | None = None, bwd_flipped: bool = False) -> torch.Tensor:
    """A traced mixer lays its inputs out for the reference backend (see ``BiMamba.forward``);
    the op itself runs on this device's own backend: inside it nothing is traced."""
    assert not bwd_flipped, "a traced mixer uses the reference layout"
    # all fields but ``steps`` (the last): the op recomputes them from delta
    return _scan_op(*fwd[:-1], *bwd[:-1], z, dt_scale, None)


def scan_macs(batch: int, channels: int, length: int, states: int) -> int:
    """MACs of one scan direction (see :data:`SCAN_MACS_PER_STATE`)."""
    return batch * length * channels * (SCAN_MACS_PER_STATE * states + SCAN_MACS_PER_CHANNEL)


def _scan_handle(inputs, outputs) -> Counter:
    total = 0
    for u, a in ((inputs[0], inputs[2]), (inputs[7], inputs[9])):  # u (B, D, L) and A (D, N) per direction
        b, d, length = get_shape(u)
        total += scan_macs(b, d, length, get_shape(a)[1])
    return Counter({"selective_scan": total})


def _product_handle(operand: int):
    """Output elements x the inner size of input ``operand``: ``matmul`` (any broadcasting; operand 0), and
    ``baddbmm`` / ``addmv`` (the saliency probe; operand 1, after the added term)."""
    def handle(inputs, outputs) -> Counter:
        n = 1
        for s in get_shape(outputs[0]):
            n *= s
        return Counter({"matmul": n * get_shape(inputs[operand])[-1]})
    return handle


def _addcmul_handle(inputs, outputs) -> Counter:
    """One MAC per output element (the depthwise conv taps)."""
    n = 1
    for s in get_shape(outputs[0]):
        n *= s
    return Counter({"conv1d_depthwise": n})


@contextlib.contextmanager
def _traceable():
    """While counting: the scan as one op, and bool fill values of ``scatter_`` as tensors.

    ``Tensor.scatter_(dim, index, True)`` (used by the merge plans) is recorded by the JIT
    tracer with a bool scalar no schema accepts; filling from a tensor of the same value is
    numerically identical and traces.
    """
    scatter_, own = torch.Tensor.scatter_, "scatter_" in vars(torch.Tensor)

    def scatter_bool_safe(self, dim, index, src=None, *args, value=None, **kwargs):
        fill = src if src is not None else value
        if isinstance(fill, bool):
            fill = (torch.ones_like if fill else torch.zeros_like)(index, dtype=self.dtype)
        return scatter_(self, dim, index, fill, *args, **kwargs)

    with _count_lock:
        vim_module.bidirectional_scan, torch.Tensor.scatter_ = _scan_as_one_op, scatter_bool_safe
        try:
            yield
        finally:
            vim_module.bidirectional_scan = bidirectional_scan
            if own:
                torch.Tensor.scatter_ = scatter_
            else:
                del torch.Tensor.scatter_


def count_flops(model: torch.nn.Module, input_shape: tuple[int, int, int], device: str | torch.device | None = None,
                sample: torch.Tensor | None = None) -> dict:
    """fvcore MACs of one image through ``model`` (as patched now: merges run for real).

    ``sample`` is a normalised (1, C, H, W) image to trace with (random if None: the merge
    schedules remove the same counts on any input). Returns ``flops`` (int, MACs per image),
    ``by_operator`` ({name: MACs}) and ``unsupported`` ({op: count}; empty when every op has
    a handle).
    """
    if device is None:
        device = next(model.parameters()).device
    x = sample if sample is not None else torch.randn(1, *input_shape)
    x = x[:1].to(device)
    # one CPU thread while tracing a batch of one: the work is per-op overhead, and OpenMP fork/join
    # on a busy shared host made tracing several times slower
    single = threads(1) if torch.device(device).type == "cpu" else contextlib.nullcontext()
    with _traceable(), single, torch.no_grad():
        fa = FlopCountAnalysis(model, (x,))
        fa.set_op_handle(SCAN_OP, _scan_handle, "aten::matmul", _product_handle(0),
                         "aten::addcmul_", _addcmul_handle, "aten::addcmul", _addcmul_handle,
                         "aten::baddbmm", _product_handle(1), "aten::baddbmm_", _product_handle(1), "aten::addmv", _product_handle(1))
        fa.set_op_handle(**{name: None for name in zero_mac_ops()})
        fa.unsupported_ops_warnings(False).uncalled_modules_warnings(False).tracer_warnings("none")
        total = fa.total()
        by_op, unsupported = dict(fa.by_operator()), dict(fa.unsupported_ops())
    return {"flops": int(total), "by_operator": {k: int(v) for k, v in by_op.items()}, "unsupported": unsupported}


def analytic_flops(cfg: VimConfig, tokens_per_layer: list[int]) -> int:
    """MACs per image from the architecture alone, under the same convention as :func:`count_flops`.

    ``tokens_per_layer[l]`` is the sequence length layer ``l``'s mixer runs on. Merge costs
    are left out (zero under the convention except ToMe's similarity matmul).
    """
    d, di, n, r, k = cfg.embed_dim, cfg.d_inner, cfg.d_state, cfg.dt_rank, cfg.d_conv
    patch = cfg.num_patches * cfg.in_chans * cfg.patch_size ** 2 * d
    per_token = (d * 2 * di  # in_proj (x and z)
                 + 2 * (di * k  # depthwise conv, per direction
                        + di * (r + 2 * n)  # x_proj -> dt, B, C
                        + r * di)  # dt_proj
                 + di * d)  # out_proj
    layers = sum(t * per_token + 2 * scan_macs(1, di, t, n) for t in tokens_per_layer)
    return patch + layers + d * cfg.num_classes
