# probe_parts.py (2026-12-06): the saliency probe's prediction as a merge step runs it on the CPU, one thread,
# batch 32 x 197 tokens, the shipped 16-unit digits probe: the code before (the normalised residual and the
# inputs concatenated, one baddbmm) against SaliencyProbe.predict now (the normalisation as a factor per token
# after the product, no concatenation), interleaved, 30 rounds, glibc keeping freed buffers as a forward has it. Run from the project root, alone:
#   PYTHONPATH=. python bench/results/calib_2026-12-06c/probe_parts.py
import statistics, time
import torch
from stmsearch.evaluation.throughput import threads
from stmsearch.models import probe as pb
from stmsearch.ops.cpu_memory import recycle_large_buffers


def before(self, layer, residual, hidden, cls, sizes, norm):  # SaliencyProbe.predict at 79d2321
    w1, b1, w2, b2, v = self._weights(residual.device)
    i, c = self._row(layer), self.embed_dim
    x = residual.float()
    b, t, _ = x.shape
    mean_norm = norm.mean(-1, keepdim=True)
    inputs = torch.cat([x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + 1e-6), hidden.float(),
                        torch.log(norm / mean_norm + 1e-6)[..., None], torch.log(sizes.float())[..., None]], -1)
    xc = inputs[torch.arange(b, device=x.device), cls, :c]
    weight = x.new_empty(b, 2 * c + 2, w1.shape[2])
    torch.mul(xc[:, :, None], w1[i, 2 * c:3 * c], out=weight[:, :c]).add_(w1[i, :c])
    torch.mul(w1[i, c:2 * c], 1.0 / (mean_norm[:, :, None] + 1e-6), out=weight[:, c:2 * c])
    weight[:, 2 * c:] = w1[i, -3:-1]
    offset = torch.arange(t, device=x.device)[None] - cls[:, None] + t - 1
    pre = self._positions(i, t, x.device).index_select(0, offset.view(-1)).view(b, t, -1)
    pre.baddbmm_(inputs, weight)
    if v is not None:
        pre = torch.addmm(b1[i], pre.view(b * t, -1), v[i]).view(b, t, -1)
    return torch.addmv(b2[i], torch.ops.aten.gelu_(pre).view(b * t, -1), w2[i]).view(b, t)


if __name__ == '__main__':
    recycle_large_buffers()  # as in any CPU forward, whose reference scan applies it
    probe = pb.load('bench/results/probe_refit_2026-12-05/vim_proxy.h16.probe.pt')
    g = torch.Generator().manual_seed(0)
    b, t, c = 32, 197, probe.embed_dim
    res, hid = 3 * torch.randn(b, t, c, generator=g), torch.randn(b, t, c, generator=g)
    cls, sizes = torch.full((b,), t // 2), torch.ones(b, t)
    norm = hid.norm(dim=-1)
    fns = {'before': lambda: before(probe, 2, res, hid, cls, sizes, norm),
           'now': lambda: probe.predict(2, res, hid, cls, sizes, norm)}
    with torch.inference_mode(), threads(1):
        diff = (fns['before']() - fns['now']()).abs().max().item()
        ts = {k: [] for k in fns}
        for _ in range(30):
            for k, f in fns.items():
                f()
                t0 = time.perf_counter()
                for _ in range(5):
                    f()
                ts[k].append(1e3 * (time.perf_counter() - t0) / 5)
    for k, v in ts.items():
        q = statistics.quantiles(v, n=4)
        print(f'{k:7s} median {statistics.median(v):.3f} ms (quartiles {q[0]:.3f}-{q[2]:.3f})')
    print(f'largest absolute difference of the log saliency: {diff:.2e}')
