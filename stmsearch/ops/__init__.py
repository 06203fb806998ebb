"""Numerical kernels: the selective scan and its backends."""
from .scan import BACKENDS, Direction, bidirectional_scan, mamba_ssm_available, resolve_backend
from .scan_reference import selective_scan_reference

__all__ = ["BACKENDS", "Direction", "bidirectional_scan", "mamba_ssm_available", "resolve_backend",
           "selective_scan_reference"]
