"""The figures the README and the closing note quote from select_runs.py's outputs: the choice's means from
select_runs_0_500.log (the run was stopped by hand, so its own summary never printed; means over the schedules
that carry all nine variants), and the report's per-proxy breakdown from select_runs_500_1000.json.
``python summarise_select.py`` in this folder."""
import collections, json, re

rows = collections.defaultdict(dict)
for line in open("select_runs_0_500.log"):
    m = re.match(r"(\S+) int(\d) c(\d+) (\w+) runs (\d) from ([\d.]+): ([\d.]+)", line)
    if m:
        p, i, c, sh, r, f, a = m.groups()
        rows[(p, i, c, sh)][(int(r), float(f))] = float(a)
means = {}
for proxy in ("vim_proxy", "vim_proxy_clutter"):
    keys = [k for k in rows if k[0] == proxy and len(rows[k]) == 9]
    means[proxy] = {v: sum(rows[k][v] for k in keys) / len(keys) for v in rows[keys[0]]}
    print(f"choice, {proxy}: {len(keys)} schedules")
for v, a in means["vim_proxy"].items():
    b = means["vim_proxy_clutter"][v]
    print(f"  runs {v[0]} from {v[1]}: digits {a:.4f} clutter {b:.4f} both {(a + b) / 2:.5f}")

d = collections.defaultdict(dict)
for r in json.load(open("select_runs_500_1000.json")):
    d[(r["proxy"], r["interval"], r["count"], r["shape"])][(r["runs"], r["runs_from"])] = (r["accuracy"], r["reduction"])
variants = [(2, 0.0), (4, 0.0), (4, 0.1)]
for proxy in ("vim_proxy", "vim_proxy_clutter"):
    ks = [k for k in d if k[0] == proxy and len(d[k]) == 3]
    print(f"report, {proxy}: {len(ks)} schedules", {v: round(sum(d[k][v][0] for k in ks) / len(ks), 4) for v in variants})
    for other in variants[:2]:
        ahead = sum(d[k][(4, 0.1)][0] > d[k][other][0] + 1e-9 for k in ks)
        behind = sum(d[k][(4, 0.1)][0] < d[k][other][0] - 1e-9 for k in ks)
        print(f"  runs 4 from 0.1 vs {other}: ahead {ahead}, behind {behind}, tied {len(ks) - ahead - behind}")
    for name, heavy in (("< 40% fewer token-layers", False), (">= 40%", True)):
        kk = [k for k in ks if (d[k][(2, 0.0)][1] >= 0.4) == heavy]
        print(f"  {name}: {len(kk)}", {v: round(sum(d[k][v][0] for k in kk) / len(kk), 4) for v in variants})
