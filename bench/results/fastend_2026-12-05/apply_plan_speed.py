"""apply_plan's slot sums: scatter_add_ with a channel-expanded index against index_add_ over the flattened batch
(32 x 197 x 64 into 173 slots, one thread): equal, and the median ms of each."""
import time, torch
torch.set_num_threads(1)
B,T,C,O=32,197,64,173
x=torch.randn(B,T,C); w=torch.rand(B,T,1)
idx=torch.sort(torch.randint(0,O,(B,T)),1).values
def sc():
    return x.new_zeros(B,O,C).scatter_add_(1, idx.unsqueeze(-1).expand(-1,-1,C), x*w)
def ia():
    flat=(idx+torch.arange(B)[:,None]*O).view(-1)
    return x.new_zeros(B*O,C).index_add_(0, flat, (x*w).view(B*T,C)).view(B,O,C)
def med(f,n=60):
    ts=[]
    for _ in range(n):
        t=time.perf_counter(); f(); ts.append(time.perf_counter()-t)
    ts.sort(); return round(ts[n//2]*1e3,3)
print(torch.equal(sc(),ia()))
for r in range(3): print('scatter',med(sc),'index_add',med(ia))
