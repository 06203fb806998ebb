"""The inputs of one selective-scan direction, shared by every scan backend."""
from __future__ import annotations

from typing import NamedTuple

import torch


class Direction(NamedTuple):
    """Inputs of one scan direction, all in original sequence order.

    u, delta: (batch, D, L); A: (D, N) (already ``-exp(A_log)``); B, C: (batch, N, L);
    D, delta_bias: (D,). The step size used is ``softplus(delta + delta_bias)``, as in ViM;
    ``steps`` (batch, D, L), where given, is that step size already computed (the CPU makes it
    once for the scan and for a merge metric that reads it; the GPU's kernels take the softplus
    on the fly).
    """

    u: torch.Tensor
    delta: torch.Tensor
    A: torch.Tensor
    B: torch.Tensor
    C: torch.Tensor
    D: torch.Tensor
    delta_bias: torch.Tensor | None
    steps: torch.Tensor | None = None
