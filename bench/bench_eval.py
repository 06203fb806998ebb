"""Accuracy-pass speed: the data path must not be the bottleneck.

(a) default, CPU: vim_proxy over the 1000 mnist5k val digits (target <= 15 s on 2 cores).
(b) --gpu: vim_tiny over 10,000 cached 224x224 images on one GPU (target <= 10 s), at batch
    256 and 512 (and bf16 with --bf16). Without --imagefolder there is no ImageNet here, so
    10,000 random uint8 images are synthesised directly on the device: same shapes, same data
    path (uint8 on device -> normalise -> forward); the accuracy printed is then meaningless.

    python bench/bench_eval.py                      # (a)
    python bench/bench_eval.py --gpu --bf16         # (b)
    python bench/bench_eval.py --gpu --imagefolder /data/imagenet/val --checkpoint vim_t.pth
"""
from __future__ import annotations

import argparse
import os
import time

import torch

import stmsearch
from stmsearch.evaluation.accuracy import evaluate_accuracy
from stmsearch.evaluation.throughput import describe_device
from stmsearch.evaluation.datasets import IMAGENET_MEAN, IMAGENET_STD, ImageSet, load_dataset
from stmsearch.models.zoo import PROXY_CHECKPOINT
from stmsearch.ops.scan import resolve_backend


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed_pass(model, data: ImageSet, batch_size: int, device: torch.device, bf16: bool) -> tuple[float, dict]:
    """Seconds of one full accuracy pass, after a one-batch warm-up."""
    evaluate_accuracy(model, data.head(batch_size), batch_size, device, progress=False, amp_bf16=bf16)
    _sync(device)
    t0 = time.perf_counter()
    result = evaluate_accuracy(model, data, batch_size, device, progress=False, amp_bf16=bf16)
    _sync(device)
    return time.perf_counter() - t0, result


def synthetic_imagenet(n: int, device: torch.device) -> ImageSet:
    """n random uint8 3x224x224 images made on the device (no ImageNet on this machine)."""
    g = torch.Generator(device=device).manual_seed(0)
    images = torch.randint(0, 256, (n, 3, 224, 224), dtype=torch.uint8, device=device, generator=g)
    labels = torch.randint(0, 1000, (n,), device=device, generator=g)
    return ImageSet("synthetic-imagenet", images, labels, IMAGENET_MEAN, IMAGENET_STD, 1000,
                    tuple(str(i) for i in range(1000)))


def cpu_proxy(batch_size: int) -> None:
    device = torch.device("cpu")
    weights = "trained" if PROXY_CHECKPOINT.is_file() else "RANDOM-INIT (no shipped weights yet)"
    t0 = time.perf_counter()
    data = load_dataset("mnist5k", "val")
    load_s = time.perf_counter() - t0
    model = stmsearch.create_model("vim_proxy")
    seconds, result = timed_pass(model, data, batch_size, device, bf16=False)
    print(f"(a) vim_proxy [{weights}] on {describe_device(device)}, scan={resolve_backend(device)}, "
          f"load avg {os.getloadavg()[0]:.1f} (shared host)")
    print(f"    dataset load {load_s:.2f} s (once per process); accuracy pass over {result['n']} digits, "
          f"batch {batch_size}: {seconds:.2f} s ({result['n'] / seconds:.0f} img/s), top-1 {result['accuracy']:.4f}")


def gpu_tiny(n: int, imagefolder: str | None, checkpoint: str | None, bf16: bool) -> None:
    device = torch.device("cuda", torch.cuda.current_device())
    t0 = time.perf_counter()
    if imagefolder:
        data = load_dataset(f"imagefolder:{imagefolder}", "val", device, limit=n)
        source = f"imagefolder {imagefolder} (cached uint8 on the device)"
    else:
        data = synthetic_imagenet(n, device)
        source = "SYNTHETIC random uint8 images made on the device (no ImageNet here; accuracy meaningless)"
    _sync(device)
    print(f"(b) vim_tiny on {describe_device(device)}, scan={resolve_backend(device)}; {len(data)} images: {source}; "
          f"data ready in {time.perf_counter() - t0:.2f} s")
    model = stmsearch.create_model("vim_tiny", checkpoint).to(device)
    for precision in (["fp32", "bf16"] if bf16 else ["fp32"]):
        for batch_size in (256, 512):
            seconds, result = timed_pass(model, data, batch_size, device, precision == "bf16")
            print(f"    {precision} batch {batch_size}: {seconds:.2f} s, {result['n'] / seconds:,.0f} img/s, "
                  f"top-1 {result['accuracy']:.4f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--gpu", action="store_true", help="run (b) on the GPU instead of (a)")
    parser.add_argument("--batch-size", type=int, default=200, help="(a) CPU batch size")
    parser.add_argument("--n", type=int, default=10_000, help="(b) images")
    parser.add_argument("--imagefolder", help="(b) a class-per-folder tree to use instead of synthetic images")
    parser.add_argument("--checkpoint", help="(b) vim_tiny weights")
    parser.add_argument("--bf16", action="store_true", help="(b) also time bf16 autocast")
    parser.add_argument("--threads", type=int, help="CPU threads (default: torch's, one per core)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.gpu:
        gpu_tiny(args.n, args.imagefolder, args.checkpoint, args.bf16)
    else:
        cpu_proxy(args.batch_size)


if __name__ == "__main__":
    main()
