"""A tabular benchmark of the demo search space (NAS-Bench-201 style): every config's accuracy on all
1000 held-out digits and its latency-model speed-up, precomputed once, so a sampler run costs
milliseconds per trial and samplers are compared on a deterministic objective."""
