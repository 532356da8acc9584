/* brewnet's training curves, drawn with uPlot: the live dashboard (`caffe train -dashboard`: data from /data,
   then server-sent events from /events) and the report (`brewnet report`: runs embedded in the page as JSON).
   A run is RunCurves.snapshot() (brewnet/tools/dashboard/curves.py): series[group][name] = [iterations, values]. */
(function () {
  "use strict";

  var COLORS = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf",
                "#7f7f7f", "#bcbd22"];
  var state = { runs: [], smoothing: 0.6, live: false, ended: false, charts: {} };

  function el(tag, attrs, text) {
    var node = document.createElement(tag);
    Object.keys(attrs || {}).forEach(function (k) { node.setAttribute(k, attrs[k]); });
    if (text !== undefined) node.textContent = text;
    return node;
  }

  // TensorBoard's smoothing: an exponential moving average, debiased so that the first points are not pulled
  // towards zero.
  function smooth(values, weight) {
    var last = 0, n = 0;
    return values.map(function (v) {
      if (v === null) return null;
      n += 1;
      last = last * weight + (1 - weight) * v;
      return last / (1 - Math.pow(weight, n));
    });
  }

  function positive(values) {
    return values.map(function (v) { return v !== null && v > 0 ? v : null; });
  }

  function fmt(x, digits) {
    if (x === null || x === undefined) return "–";
    return Number(x).toPrecision(digits || 4).replace(/\.?0+(e|$)/, "$1");
  }

  function duration(seconds) {
    if (seconds === null || seconds === undefined) return "–";
    if (seconds < 120) return seconds.toFixed(1) + " s";
    if (seconds < 7200) return (seconds / 60).toFixed(1) + " min";
    return (seconds / 3600).toFixed(1) + " h";
  }

  // --- which charts, with which lines --------------------------------------------------------------------
  function names(group) {
    var seen = [];
    state.runs.forEach(function (run) {
      Object.keys(run.series[group] || {}).forEach(function (n) { if (seen.indexOf(n) < 0) seen.push(n); });
    });
    return seen;
  }

  function label(run, name, several) {
    return several ? run.name + " · " + name : name;
  }

  function lines(group, only, transform) {
    var out = [], several = state.runs.length > 1;
    state.runs.forEach(function (run, r) {
      Object.keys(run.series[group] || {}).forEach(function (name, i) {
        if (only && name !== only) return;
        var s = run.series[group][name];
        out.push({ label: label(run, name, several), xs: s[0], ys: transform ? transform(s[1]) : s[1],
                   color: COLORS[(several ? r : i) % COLORS.length], width: 1.5 });
      });
    });
    return out;
  }

  function lossLines() {
    var out = [], several = state.runs.length > 1;
    state.runs.forEach(function (run, r) {
      var s = (run.series.loss || {}).loss;
      if (!s) return;
      var color = COLORS[r % COLORS.length];
      out.push({ label: label(run, "raw", several), xs: s[0], ys: s[1], color: color, width: 1, alpha: 0.35 });
      out.push({ label: label(run, "smoothed", several), xs: s[0], ys: smooth(s[1], state.smoothing),
                 color: color, width: 2 });
    });
    return out;
  }

  function chartSpecs() {
    var specs = [{ id: "loss", title: "Train loss (raw and smoothed)", lines: lossLines() }];
    names("test").forEach(function (name) {
      specs.push({ id: "test-" + name, title: "Test " + name, lines: lines("test", name) });
    });
    var train = names("train").filter(function (n) { return n !== "loss" || names("train").length > 1; });
    if (train.length) specs.push({ id: "train", title: "Train net outputs", lines: lines("train") });
    specs.push({ id: "lr", title: "Learning rate", lines: lines("lr") });
    specs.push({ id: "speed", title: "Iterations per second", lines: lines("speed") });
    specs.push({ id: "weights", title: "Per-layer mean |w| (each display)", log: true,
                 lines: lines("weights", null, positive) });
    specs.push({ id: "grads", title: "Per-layer mean |dw| (each display)", log: true,
                 lines: lines("grads", null, positive) });
    return specs.filter(function (s) { return s.lines.length; });
  }

  // --- drawing -------------------------------------------------------------------------------------------
  function aligned(spec) {
    return uPlot.join(spec.lines.map(function (l) { return [l.xs, l.ys]; }));
  }

  function options(spec, width) {
    return {
      title: spec.title, width: width, height: 260,
      scales: { x: { time: false }, y: spec.log ? { distr: 3 } : {} },
      axes: [{ label: "iteration" }, { size: 64, values: tickLabels }],
      legend: { live: false },
      series: [{ label: "iteration" }].concat(spec.lines.map(function (l) {
        var stroke = l.alpha ? hexAlpha(l.color, l.alpha) : l.color;
        return { label: l.label, stroke: stroke, width: l.width, spanGaps: true, points: { show: false } };
      })),
    };
  }

  // three significant digits (uPlot's default rounds 0.0095 to 0.01 on a fine grid); small ones in e-notation
  function tickLabels(u, splits) {
    return splits.map(function (v) {
      if (v === null || v === undefined) return null;
      if (v !== 0 && Math.abs(v) < 1e-3) return v.toExponential(0);
      return String(Number(v.toPrecision(3)));
    });
  }

  function hexAlpha(hex, alpha) {
    var n = parseInt(hex.slice(1), 16);
    return "rgba(" + (n >> 16) + "," + ((n >> 8) & 255) + "," + (n & 255) + "," + alpha + ")";
  }

  function draw() {
    var box = document.getElementById("charts");
    // two charts a row on a wide window (the box's padding, the gap, each chart's frame and a scrollbar that
    // may appear once the charts are there left out)
    var columns = box.clientWidth >= 1000 ? 2 : 1;
    var width = Math.max(320, Math.floor((box.clientWidth - 24 - 20 - 8 * (columns - 1)) / columns) - 12);
    var wanted = {};
    chartSpecs().forEach(function (spec) {
      wanted[spec.id] = true;
      var data = aligned(spec), key = spec.lines.map(function (l) { return l.label; }).join("\n");
      var chart = state.charts[spec.id];
      if (!chart) {
        var holder = el("section", { "class": "chart", id: "chart-" + spec.id });
        box.appendChild(holder);
        chart = state.charts[spec.id] = { holder: holder };
      }
      if (chart.plot && chart.key === key) {
        chart.plot.setData(data);
      } else {
        if (chart.plot) chart.plot.destroy();
        chart.plot = new uPlot(options(spec, width), data, chart.holder);
        chart.key = key;
      }
      chart.holder.setAttribute("data-points", String(data[0].length));
      box.appendChild(chart.holder);      // in the specs' order, whichever curve came first
    });
    Object.keys(state.charts).forEach(function (id) {
      if (!wanted[id]) {
        state.charts[id].plot && state.charts[id].plot.destroy();
        state.charts[id].holder.remove();
        delete state.charts[id];
      }
    });
  }

  // --- the header: what the run is doing -----------------------------------------------------------------
  function last(series) {
    if (!series) return null;
    var vs = series[1];
    for (var i = vs.length - 1; i >= 0; i--) if (vs[i] !== null) return vs[i];
    return null;
  }

  var STATUS = { running: "training", finished: "finished", stopped: "stopped early", failed: "failed",
                 ended: "log ends before the end of training" };

  function summary() {
    var table = document.getElementById("runs-table");
    table.textContent = "";
    var head = el("tr");
    ["run", "status", "iteration", "loss", "test outputs", "iter/s", "time", "ETA"].forEach(function (h) {
      head.appendChild(el("th", {}, h));
    });
    table.appendChild(head);
    state.runs.forEach(function (run, r) {
      var row = el("tr");
      var tests = Object.keys(run.series.test || {}).map(function (n) {
        return n + " " + fmt(last(run.series.test[n]));
      }).join(", ");
      var swatch = el("td", { "class": "run-name" }, run.name || "run " + (r + 1));
      swatch.style.borderLeftColor = COLORS[r % COLORS.length];
      var progress = run.iteration === null ? "–" : run.iteration + (run.max_iter ? " / " + run.max_iter : "");
      [swatch, el("td", { "class": "status status-" + run.status }, STATUS[run.status] || run.status),
       el("td", {}, progress), el("td", {}, fmt(last((run.series.loss || {}).loss))), el("td", {}, tests || "–"),
       el("td", {}, fmt(last((run.series.speed || {})["iter/s"]), 3)), el("td", {}, duration(run.elapsed)),
       el("td", { "class": "eta" }, run.eta_text || "–")].forEach(function (c) { row.appendChild(c); });
      table.appendChild(row);
    });
    if (state.live && state.runs.length) {
      var run = state.runs[0];
      var bar = document.getElementById("progress-bar");
      bar.style.width = run.max_iter ? Math.min(100, 100 * (run.iteration || 0) / run.max_iter) + "%" : "0";
      document.getElementById("eta").textContent = run.status === "running" ? (run.eta_text || "ETA ?")
        : "final state: " + (STATUS[run.status] || run.status) + " at iteration " + run.iteration;
      document.body.setAttribute("data-status", run.status);
    }
  }

  function render(runs) {
    state.runs = runs;
    summary();
    draw();
  }

  function connection(text) {
    document.getElementById("connection").textContent = text;
  }

  // --- the page ------------------------------------------------------------------------------------------
  function skeleton(title) {
    document.title = title;
    var header = el("header");
    header.appendChild(el("h1", {}, title));
    if (state.live) {
      var line = el("div", { "class": "live" });
      var progress = el("div", { "class": "progress" });
      progress.appendChild(el("div", { id: "progress-bar" }));
      line.appendChild(progress);
      line.appendChild(el("span", { id: "eta" }, "ETA ?"));
      line.appendChild(el("span", { id: "connection" }, "connecting…"));
      header.appendChild(line);
    }
    header.appendChild(el("table", { id: "runs-table" }));
    var controls = el("label", { "class": "controls" }, "loss smoothing ");
    var slider = el("input", { type: "range", min: "0", max: "0.99", step: "0.01", value: String(state.smoothing),
                               id: "smoothing" });
    var shown = el("span", {}, String(state.smoothing));
    slider.addEventListener("input", function () {
      state.smoothing = parseFloat(slider.value);
      shown.textContent = slider.value;
      draw();
    });
    controls.appendChild(slider);
    controls.appendChild(shown);
    header.appendChild(controls);
    document.body.appendChild(header);
    document.body.appendChild(el("main", { id: "charts" }));
  }

  function startLive() {
    state.live = true;
    skeleton("brewnet training dashboard");
    fetch("data").then(function (r) { return r.json(); }).then(function (run) {
      if (!state.runs.length || state.runs[0].version < run.version) render([run]);
    });
    var events = new EventSource("events");
    events.onopen = function () { connection("live"); };
    events.onmessage = function (e) { render([JSON.parse(e.data)]); };
    events.addEventListener("end", function () {
      state.ended = true;
      events.close();
      connection("training over: the final state stays on this page");
    });
    events.onerror = function () {
      if (state.ended) return;
      connection(events.readyState === EventSource.CLOSED ? "connection lost: showing the last state received"
                                                          : "reconnecting…");
    };
  }

  function startReport(holder) {
    skeleton(holder.getAttribute("data-title") || "brewnet training report");
    render(JSON.parse(holder.textContent));
  }

  window.brewnetDashboard = {
    pointCount: function (id) {
      var chart = state.charts[id || "loss"];
      return chart ? Number(chart.holder.getAttribute("data-points")) : 0;
    },
    state: state,
  };

  document.addEventListener("DOMContentLoaded", function () {
    var embedded = document.getElementById("runs");
    if (embedded) startReport(embedded); else startLive();
  });
})();
