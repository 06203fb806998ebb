// Draws the stmsearch dashboard from the JSON embedded in the page (no network needed).
(function () {
  "use strict";
  const D = JSON.parse(document.getElementById("stm-data").textContent);
  const byKey = new Map(D.trials.map((t) => [t.key, t]));
  const colourOf = Object.fromEntries(D.studies.map((s) => [s.name, s.colour]));
  const plotConfig = { responsive: true, displaylogo: false, modeBarButtonsToRemove: ["lasso2d", "select2d"] };
  const paretoDivs = [];
  let detailPanel = null;

  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (k === "class") node.className = v;
      else if (k === "style") node.style.cssText = v;
      else node.setAttribute(k, v);
    }
    for (const c of children) if (c !== null && c !== undefined) node.append(c);
    return node;
  }

  function fmt(value, spec, withUnit = true) {
    if (value === null || value === undefined || value === "") return "–";
    if (typeof value === "boolean") return value ? "yes" : "no";
    if (typeof value !== "number") return String(value);
    const v = value * (spec.scale ?? 1);
    let text;
    if (spec.digits !== null && spec.digits !== undefined) {
      text = v.toLocaleString("en-US", { minimumFractionDigits: spec.digits, maximumFractionDigits: spec.digits });
    } else if (Number.isInteger(v)) {
      text = v.toLocaleString("en-US");
    } else {
      text = Number(v.toPrecision(4)).toLocaleString("en-US", { maximumFractionDigits: 6 });
    }
    return spec.unit && withUnit ? `${text} ${spec.unit}` : text;
  }

  function constraintText(c) {
    const parts = [];
    if (c && c.min_accuracy != null) parts.push(`accuracy ≥ ${(100 * c.min_accuracy).toFixed(1)} %`);
    if (c && c.max_flops != null) parts.push(`FLOPs ≤ ${c.max_flops.toLocaleString("en-US")} MACs`);
    if (c && c.min_speedup != null) parts.push(`speedup ≥ ${c.min_speedup}×`);
    return parts.length ? `; feasible when ${parts.join(", ")}` : "";
  }

  function header() {
    const h = document.getElementById("stm-header");
    h.append(el("h1", {}, D.title));
    for (const s of D.studies) {
      const subset = s.subset ? `${s.subset.toLocaleString("en-US")} images per trial` : "full set";
      h.append(el("div", { class: "meta study-line" }, el("span", { class: "swatch", style: `background:${s.colour}` }),
        el("b", {}, s.name), ` — model ${s.model ?? "?"} on ${s.dataset ?? "?"} (${subset}); objectives: ` +
        `${s.objectives.join(", ")}; ${s.complete} complete, ${s.failed} failed, ${s.pareto} on the front` +
        constraintText(s.constraints)));
    }
    const meta = el("div", { class: "meta" }, `Generated ${D.generated}.`);
    if (D.poll) meta.append(" ", el("span", { class: "live" }, "Live: reloads when new trials land."));
    h.append(meta);
  }

  function section(panel, parent) {
    const card = el("section", { class: "card", id: `view-${panel.id}`, "data-kind": panel.kind });
    parent.append(card);
    return card;
  }

  function plotPanel(panel, parent) {
    const card = section(panel, parent);
    if (panel.figure) {
      const div = el("div", { class: "plot", id: `plot-${panel.id}` });
      card.append(div);
      Plotly.newPlot(div, panel.figure.data, panel.figure.layout, plotConfig);
      if (panel.kind === "pareto") {
        paretoDivs.push(div);
        div.on("plotly_click", (ev) => {
          const key = ev.points.map((p) => p.customdata).find((c) => typeof c === "string");
          if (key) select(key);
        });
      }
    } else {
      card.append(el("h2", {}, panel.title));
    }
    if (panel.note) card.append(el("p", { class: "note" }, panel.note));
  }

  function kvTable(rows) {
    const t = el("table", { class: "kv" });
    for (const [k, v] of rows) t.append(el("tr", {}, el("th", {}, k), el("td", {}, v)));
    return t;
  }

  function showDetail(t) {
    const body = detailPanel.querySelector(".detail-body");
    body.replaceChildren();
    const badges = el("div", {});
    const badge = (text, cls) => badges.append(el("span", { class: `badge ${cls || ""}` }, text));
    if (t.state === "FAIL") badge("failed", "bad");
    else {
      badge(t.pareto ? "Pareto-optimal" : "dominated", t.pareto ? "good" : "");
      badge(t.feasible ? "feasible" : "infeasible", t.feasible ? "good" : "bad");
    }
    if (t.is_reference) badge("reference (unreduced)", "ref");
    if (t.state === "COMPLETE") badge(t.verified ? "verified" : "unverified", t.verified ? "good" : "");
    if (t.seed_config) badge(`seed: ${t.seed_config}`);
    body.append(el("h3", {}, el("span", { class: "swatch", style: `background:${colourOf[t.study]}` }),
      `${t.study} · trial ${t.number}`), badges);

    const tokens = t.tokens_per_layer || [];
    body.append(el("h3", {}, "Tokens per layer"));
    if (tokens.length) {
      const chart = el("div", { id: "detail-tokens", style: "height:200px" });
      body.append(chart, el("div", { class: "tokens-text", id: "detail-tokens-text" }, tokens.join(" → ")));
      Plotly.newPlot(chart, [{
        type: "bar", x: tokens.map((_, i) => i), y: tokens, marker: { color: colourOf[t.study] },
        hovertemplate: "layer %{x}: %{y} tokens<extra></extra>",
      }], {
        margin: { l: 50, r: 10, t: 8, b: 40 }, height: 200, template: "plotly_white",
        font: { family: "system-ui, sans-serif", size: 12, color: "#222" },
        xaxis: { title: { text: "Layer" }, dtick: tokens.length > 16 ? 2 : 1 },
        yaxis: { title: { text: "Tokens" }, rangemode: "tozero" },
      }, { displayModeBar: false, responsive: true });
    } else {
      body.append(el("p", { class: "placeholder" }, "No token counts recorded for this trial."));
    }

    const cfg = t.config || {};
    body.append(el("h3", {}, "Schedule"), kvTable([
      ["Method", cfg.method ?? "–"], ["Window", cfg.window ?? "default"],
      ["Tokens removed", scheduleText(cfg.schedule)],
    ]));
    body.append(el("h3", {}, "Metrics"), kvTable(panelFields("detail").map((f) => [f.label, fmt(t[f.key], f)])));
    if (t.verified) body.append(el("h3", {}, "Verified (whole set, paired timing)"), kvTable(verifiedRows(t.verified)));
    const knobs = Object.entries(cfg).filter(([k]) => !["method", "window", "schedule"].includes(k));
    if (knobs.length) body.append(el("h3", {}, "Knobs"), kvTable(knobs.map(([k, v]) => [k, fmt(v, {})])));
    if (t.error) body.append(el("h3", {}, "Error"), el("pre", { class: "error" }, t.error));
    if (t.metrics && t.metrics.device) body.append(el("p", { class: "note" }, `Measured on ${t.metrics.device}.`));
  }

  function verifiedRows(v) {
    const ci = (c, f) => (Array.isArray(c) ? ` (95% CI ${f(c[0])}–${f(c[1])})` : "");
    const pct = (x) => `${(100 * x).toFixed(2)} %`, times = (x) => `${x.toFixed(3)}×`;
    const rows = [];
    if (v.accuracy != null) rows.push(["Top-1 accuracy", pct(v.accuracy) + ci(v.accuracy_ci, pct)]);
    if (v.n != null) rows.push(["Images", v.n.toLocaleString()]);
    if (v.speedup != null) rows.push(["Speed-up", times(v.speedup) + ci(v.speedup_ci, times)]);
    if (v.throughput != null) rows.push(["Throughput", `${v.throughput.toFixed(1)} img/s`]);
    if (v.timing_pairs != null) rows.push(["Timed pairs", String(v.timing_pairs)]);
    if (v.device) rows.push(["Device", v.device]);
    return rows;
  }

  function scheduleText(s) {
    if (Array.isArray(s)) return s.some((c) => c) ? s.join(", ") + " (per layer)" : "none";
    if (!s || typeof s !== "object") return "–";
    const every = s.interval === 1 ? "every layer" : `every ${s.interval} layers`;
    const steps = s.steps ? `, ${s.steps} steps` : "";
    return `${s.count} tokens from layer ${s.start}, ${every}, ${s.shape}${steps}`;
  }

  function panelFields(kind) {
    const p = D.panels.find((q) => q.kind === kind);
    return p ? p.fields : [];
  }

  function markSelection(t) {
    for (const div of paretoDivs) {
      let at = null;
      div.data.forEach((tr) => (tr.customdata || []).forEach((c, i) => { if (c === t.key) at = [tr.x[i], tr.y[i]]; }));
      const idx = div.data.findIndex((tr) => tr.meta && tr.meta.role === "selection");
      const xy = at ? { x: [[at[0]]], y: [[at[1]]] } : { x: [[]], y: [[]] };
      if (idx >= 0) Plotly.restyle(div, xy, [idx]);
      else Plotly.addTraces(div, { x: xy.x[0], y: xy.y[0], mode: "markers", hoverinfo: "skip", showlegend: false,
        meta: { role: "selection" }, marker: { size: 22, symbol: "circle-open", color: "#111", line: { width: 2.5 } } });
    }
    document.querySelectorAll("table.trials tbody tr").forEach((tr) =>
      tr.classList.toggle("selected", tr.dataset.key === t.key));
  }

  function select(key) {
    const t = byKey.get(key);
    if (!t || !detailPanel) return;
    showDetail(t);
    markSelection(t);
    history.replaceState(null, "", `#trial=${encodeURIComponent(key)}`);
  }

  function detail(panel) {
    detailPanel = document.getElementById("stm-detail");
    detailPanel.id = "stm-detail";
    detailPanel.dataset.kind = "detail";
    detailPanel.append(el("h2", {}, panel.title),
      el("div", { class: "detail-body" }, el("p", { class: "placeholder" },
        "Click a point in a Pareto plot or a row of the table to see its schedule.")));
    if (panel.note) detailPanel.append(el("p", { class: "note" }, panel.note));
  }

  function table(panel, parent) {
    const card = section(panel, parent);
    card.append(el("h2", {}, panel.title),
      el("p", { class: "note" }, "Click a column header to sort, a row to show the trial."));
    const t = el("table", { class: "trials" });
    const head = el("tr", {});
    panel.fields.forEach((f, i) => {
      const th = el("th", { "data-col": String(i), "aria-sort": "none" }, f.label);
      if (f.unit) th.append(" ", el("span", { class: "unit" }, `(${f.unit})`));
      th.addEventListener("click", () => sortBy(t, panel.fields, i, th));
      head.append(th);
    });
    const body = el("tbody", {});
    for (const trial of D.trials) {
      const tr = el("tr", { "data-key": trial.key });
      if (trial.state === "FAIL") tr.classList.add("fail");
      else if (!trial.feasible) tr.classList.add("infeasible");
      if (trial.is_reference) tr.classList.add("reference");
      for (const f of panel.fields) {
        const v = trial[f.key];
        tr.append(el("td", { class: typeof v === "number" ? "num" : "" }, fmt(v, f, false)));
      }
      tr.addEventListener("click", () => select(trial.key));
      body.append(tr);
    }
    t.append(el("thead", {}, head), body);
    card.append(el("div", { class: "table-wrap" }, t));
  }

  function sortBy(t, fields, col, th) {
    const dir = th.getAttribute("aria-sort") === "ascending" ? "descending" : "ascending";
    t.querySelectorAll("th").forEach((h) => h.setAttribute("aria-sort", "none"));
    th.setAttribute("aria-sort", dir);
    const key = fields[col].key;
    const sign = dir === "ascending" ? 1 : -1;
    const rows = [...t.tBodies[0].rows];
    rows.sort((a, b) => {
      const va = byKey.get(a.dataset.key)[key], vb = byKey.get(b.dataset.key)[key];
      const na = va === null || va === undefined, nb = vb === null || vb === undefined;
      if (na || nb) return na - nb; // missing values last either way
      if (typeof va === "number" && typeof vb === "number") return sign * (va - vb);
      return sign * String(va).localeCompare(String(vb), "en", { numeric: true });
    });
    t.tBodies[0].append(...rows);
  }

  function poll() {
    setInterval(async () => {
      try {
        const r = await fetch("api/version", { cache: "no-store" });
        if (r.ok && (await r.json()).version !== D.version) location.reload();
      } catch (e) { /* server gone: keep showing the last data */ }
    }, 3000);
  }

  header();
  const plots = document.getElementById("stm-plots"), rest = document.getElementById("stm-rest");
  for (const panel of D.panels) {
    if (panel.kind === "pareto") plotPanel(panel, plots);
    else if (panel.kind === "detail") detail(panel);
    else if (panel.kind === "table") table(panel, rest);
    else plotPanel(panel, rest);
  }
  if (!detailPanel) document.getElementById("stm-detail").remove();
  const m = location.hash.match(/^#trial=(.+)$/);
  if (m) select(decodeURIComponent(m[1]));
  if (D.poll) poll();
  window.stmDashboard = { data: D, select };
})();
