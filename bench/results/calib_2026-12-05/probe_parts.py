# probe_parts.py: a quick script of 2026-12-05 (its output was printed, not saved; the closing note quotes it). Run from the project root: PYTHONPATH=. python bench/results/calib_2026-12-05/probe_parts.py
import torch, time, statistics
torch.set_num_threads(1)
B,T,C,K=32,197,64,16
g=torch.Generator().manual_seed(0)
x=torch.randn(B,T,C,generator=g); h=torch.randn(B,T,C,generator=g); norm=h.norm(dim=-1); sizes=torch.ones(B,T)
W=torch.randn(B,2*C+2,K,generator=g); pre0=torch.randn(B,T,K)
Wa=torch.randn(C,K); 
def cat():
    return torch.cat([x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + 1e-6), h, torch.log(norm/norm.mean(-1,keepdim=True)+1e-6)[...,None], torch.log(sizes)[...,None]], -1)
inp=cat()
def bmm(): return pre0.clone().baddbmm_(inp, W)
def bmm2(): 
    p = torch.bmm(x, W[:, :C]); p.baddbmm_(h, W[:, C:2*C]); return p
def mm_shared(): return torch.mm(inp.view(-1, 2*C+2), W[0])
def rms(): return torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + 1e-6)
def rms2(): return torch.linalg.vector_norm(x, dim=-1)
def gelu(): return torch.nn.functional.gelu(pre0)
fs=dict(cat=cat,baddbmm=bmm,two_bmm=bmm2,mm_shared=mm_shared,rms=rms,rms_vn=rms2,gelu=gelu)
res={k:[] for k in fs}
for r in range(60):
    for k,f in fs.items():
        t=time.perf_counter(); f(); res[k].append(time.perf_counter()-t)
for k,v in res.items(): print(k, round(1e3*statistics.median(v[10:]),3),'ms')
