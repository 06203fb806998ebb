"""Logits of both proxies under STM, prune and ToMe (every 2nd layer from 0, 20 tokens decreasing) on 16 random
images, saved to argv[1]: run on two versions of the code and compare with torch.equal."""
import sys, torch
from stmsearch.models import create_model
from stmsearch.merging import MergeConfig, apply
from stmsearch.merging.config import ParametricSchedule
from stmsearch.evaluation.fidelity import load_proxy
torch.set_num_threads(1)
out={}
for name in ['vim_proxy','vim_proxy_clutter']:
    m=create_model(name, pretrained=True).eval()
    g=torch.Generator().manual_seed(0); x=torch.randn(16,1,m.cfg.img_size,m.cfg.img_size,generator=g) if m.cfg.in_chans==1 else torch.randn(16,m.cfg.in_chans,m.cfg.img_size,m.cfg.img_size,generator=g)
    for meth in ['stm','prune','tome']:
        apply(m, MergeConfig(method=meth, schedule=ParametricSchedule(start=0,interval=2,count=20,shape='decreasing')))
        with torch.inference_mode(): out[(name,meth)]=m(x)
torch.save(out, sys.argv[1])
