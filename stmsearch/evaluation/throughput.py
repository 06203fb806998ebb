"""Measured speed and memory of a model's forward pass.

GPU: CUDA events around each timed forward after warm-up, median of ``runs``; optional bf16
autocast and CUDA graphs. The timing holds an exclusive lock on the physical GPU (by UUID, so
it works across processes whatever ``CUDA_VISIBLE_DEVICES`` says): two trials sharing a GPU
never time each other. CPU: wall clock (``time.perf_counter``), median of ``runs``.

Inputs are real images tiled to the batch when ``sample`` is given, else random; the merge
path runs on them either way, and a schedule removes the same token counts on any input, so
the cost is representative.

``peak_mem_mb`` (GPU only): the weights plus the peak extra memory allocated by one forward at
the throughput batch size (``torch.cuda.max_memory_allocated`` over the allocation before it),
so data a process keeps on the device does not count. On the CPU it is None: the host
allocator keeps and reuses freed pages, so neither RSS growth nor its high-water mark isolates
one forward.
"""
from __future__ import annotations

import contextlib
import fcntl
import random
import statistics
import tempfile
import time
from pathlib import Path
from typing import Callable

import torch


def _inputs(input_shape: tuple[int, ...], batch: int, device: torch.device,
            sample: torch.Tensor | None) -> torch.Tensor:
    """A (batch, C, H, W) float input: ``sample`` repeated to ``batch`` rows, or random normal."""
    if sample is None:
        return torch.randn(batch, *input_shape, device=device)
    if tuple(sample.shape[1:]) != tuple(input_shape):
        raise ValueError(f"sample images are {tuple(sample.shape[1:])}, model expects {tuple(input_shape)}")
    reps = -(-batch // sample.shape[0])
    return sample.to(device).repeat(reps, 1, 1, 1)[:batch].contiguous()


@contextlib.contextmanager
def file_lock(path: str | Path):
    """An exclusive flock(2) on ``path`` for the block (the lock ``flock PATH command`` takes too)."""
    with open(path, "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def gpu_lock(device: torch.device) -> contextlib.AbstractContextManager:
    """Hold the physical GPU ``device`` alone (an flock shared by every process on this host)."""
    props = torch.cuda.get_device_properties(device)
    uuid = str(getattr(props, "uuid", device.index))
    return file_lock(Path(tempfile.gettempdir()) / f"stmsearch-gpu-{uuid}.lock")


def cuda_times(fn: Callable[[], object], runs: int, warmup: int) -> list[float]:
    """Seconds of each timed call by CUDA events, after ``warmup`` untimed calls."""
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(runs):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end) / 1e3)
    return times


CPU_TIMING_THREADS = 1  # threads of the interleaved CPU timings (see interleaved_times)
QUEUE_AHEAD_CYCLES = 10_000_000  # GPU clock cycles of idle work queued before a timed call (a few ms)


def interleaved_times(fns: list[Callable[[], object]], device: torch.device, rounds: int,
                      warmup: int = 1, queue_ahead: bool = False, shuffle: bool = False) -> list[list[float]]:
    """Seconds of each of ``fns`` over ``rounds`` rounds, interleaved: every round calls each once.

    Compared forwards take turns (A B, then B A, ...), so whatever else the machine does in a
    stretch of time falls on all of them alike: their ratios hold under load where separate
    runs would not. CUDA events on a GPU (synchronised per call), the wall clock on the CPU, on
    one thread (:data:`CPU_TIMING_THREADS`): with several, any other process on the cores stalls
    every parallel region's barrier, which skews the ratios themselves (measured with
    bench/bench_load.py: speed-ups 10-19% higher beside one busy process on 2 cores).
    ``queue_ahead`` (GPU): the call's kernels are queued behind a few milliseconds of idle GPU
    work, so its time is the GPU's alone, without the host's launch latency: what a short step
    (a merge) costs inside a batched forward, where its launches overlap the layer before it.
    ``shuffle``: each round in its own seeded order instead. With many calls a round, taking turns
    keeps the first and last of a group of like calls next to unlike ones every round (measured: a
    merge step 4% slower there than beside its like), where a new order each round spreads that on all.
    """
    cuda = torch.device(device).type == "cuda"
    with contextlib.nullcontext() if cuda else threads(CPU_TIMING_THREADS):
        return _interleaved(fns, cuda, rounds, warmup, queue_ahead, shuffle)


@contextlib.contextmanager
def threads(n: int):
    """Run torch's CPU ops on ``n`` threads inside the block."""
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _interleaved(fns: list[Callable[[], object]], cuda: bool, rounds: int, warmup: int,
                 queue_ahead: bool, shuffle: bool = False) -> list[list[float]]:
    for _ in range(warmup):
        for fn in fns:
            fn()
    out: list[list[float]] = [[] for _ in fns]
    for r in range(rounds):
        if shuffle:
            order = random.Random(r).sample(range(len(fns)), len(fns))
        else:
            order = range(len(fns)) if r % 2 == 0 else reversed(range(len(fns)))
        for i in order:
            if cuda and queue_ahead:
                start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                torch.cuda._sleep(QUEUE_AHEAD_CYCLES)
                start.record()
                fns[i]()
                end.record()
                end.synchronize()
                out[i].append(start.elapsed_time(end) / 1e3)
            elif cuda:
                out[i].extend(cuda_times(fns[i], 1, 0))
            else:
                t0 = time.perf_counter()
                fns[i]()
                out[i].append(time.perf_counter() - t0)
    return out


def _cpu_times(fn: Callable[[], object], runs: int, warmup: int) -> list[float]:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return times


def _check_sync_free(forward: Callable[[], object]) -> None:
    """Raise if a forward synchronises with the host (it could not be captured in a CUDA graph)."""
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        forward()
    except RuntimeError as exc:
        raise RuntimeError("cuda_graphs: this forward synchronises with the host (data-dependent shapes, "
                           f"e.g. the token-merge plans), so it cannot be captured: {exc}") from None
    finally:
        torch.cuda.set_sync_debug_mode(0)


def _graphed(forward: Callable[[], object], warmup: int) -> Callable[[], object]:
    """Capture ``forward`` (fixed input tensor) in a CUDA graph; returns its replay."""
    _check_sync_free(forward)
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        for _ in range(max(1, warmup)):
            forward()
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        forward()
    return graph.replay


def _timed(model: torch.nn.Module, x: torch.Tensor, runs: int, warmup: int, bf16: bool,
           cuda_graphs: bool) -> float:
    """Median seconds of one forward of ``x``."""
    device = x.device
    # the autocast weight cache cannot outlive a graph capture
    autocast = lambda: torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16,  # noqa: E731
                                      cache_enabled=not cuda_graphs)

    def forward():
        with autocast():
            return model(x)

    if device.type != "cuda":
        return statistics.median(_cpu_times(forward, runs, warmup))
    fn = _graphed(forward, warmup) if cuda_graphs else forward
    return statistics.median(cuda_times(fn, runs, warmup))


def describe_device(device: torch.device) -> str:
    """e.g. ``cuda:0 NVIDIA H200`` or ``cpu (2 threads)``."""
    if device.type == "cuda":
        return f"{device} {torch.cuda.get_device_name(device)}"
    threads = torch.get_num_threads()
    return f"cpu ({threads} thread{'s' if threads > 1 else ''})"


@torch.inference_mode()
def measure_throughput(model: torch.nn.Module, input_shape: tuple[int, int, int], batch_size: int,
                       device: str | torch.device, runs: int = 5, warmup: int = 2, bf16: bool = False,
                       cuda_graphs: bool = False, sample: torch.Tensor | None = None) -> dict:
    """``throughput`` (img/s at ``batch_size``), ``latency_ms`` (batch 1), ``peak_mem_mb`` (see module doc).

    ``model`` must already be on ``device``. ``sample``: normalised real images to feed
    (tiled to the batch), else random inputs.
    """
    device = torch.device(device)
    if runs < 1 or batch_size < 1:
        raise ValueError(f"runs and batch_size must be >= 1, got runs={runs}, batch_size={batch_size}")
    if cuda_graphs and device.type != "cuda":
        raise ValueError("cuda_graphs needs a CUDA device")
    x_batch = _inputs(input_shape, batch_size, device, sample)
    x_one = x_batch[:1].clone()
    if device.type != "cuda":
        seconds = _timed(model, x_batch, runs, warmup, bf16, False)
        latency = _timed(model, x_one, runs, warmup, bf16, False)
        return {"throughput": batch_size / seconds, "latency_ms": latency * 1e3, "peak_mem_mb": None}
    weights = sum(t.numel() * t.element_size() for t in list(model.parameters()) + list(model.buffers()))
    with gpu_lock(device), torch.cuda.device(device):
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
        seconds = _timed(model, x_batch, runs, warmup, bf16, cuda_graphs)
        peak = torch.cuda.max_memory_allocated() - before + weights
        latency = _timed(model, x_one, runs, warmup, bf16, cuda_graphs)
    return {"throughput": batch_size / seconds, "latency_ms": latency * 1e3, "peak_mem_mb": peak / 2 ** 20}
