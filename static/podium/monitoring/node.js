// Node detail: live charts (Plotly.extendTraces with a bounded window), GPU readings,
// processes, and the state/health badges, from the node's websocket.
(function () {
  "use strict";
  var source = document.getElementById("node-live-config");
  if (!source || !window.Plotly || !window.PodiumLive) { return; }
  var config = JSON.parse(source.textContent);
  var HEALTH = ["healthy", "degraded", "unhealthy"];
  var GPU_CHARTS = ["util", "mem", "temp", "power"];
  var plotConfig = {displaylogo: false, responsive: true, modeBarButtonsToRemove: ["lasso2d", "select2d"]};
  var traces = config.gpuIndexes.map(function (_, n) { return n; });
  var lastSeen = null;
  var lastSeq = null;

  Object.keys(config.figures).forEach(function (key) {
    var el = document.getElementById("chart-" + key);
    if (el) { window.Plotly.newPlot(el, config.figures[key].data, config.figures[key].layout, plotConfig); }
  });

  function badge(id, kind, value) {
    var el = document.getElementById(id);
    if (!el || !value || el.getAttribute("data-" + kind) === value) { return; }
    el.setAttribute("data-" + kind, value);
    el.className = "badge " + kind + "-" + value;
    el.textContent = value;
  }

  function setText(id, text) {
    var el = document.getElementById(id);
    if (el && el.textContent !== text) { el.textContent = text; }
  }

  function pct(used, total) {
    return used === null || used === undefined || !total ? null : Math.round(1000 * used / total) / 10;
  }

  function value(key, reading) {
    if (!reading) { return null; }
    if (key === "util") { return reading.util === undefined ? null : reading.util; }
    if (key === "mem") { return pct(reading.mem_used_mib, reading.mem_total_mib); }
    if (key === "temp") { return reading.temp_c === undefined ? null : reading.temp_c; }
    return reading.power_w === undefined ? null : reading.power_w;
  }

  function fmt(v, unit) { return v === null || v === undefined ? "" : Math.round(v) + " " + unit; }

  function processes(readings) {
    var body = document.getElementById("procs");
    if (!body) { return; }
    var rows = [];
    readings.forEach(function (r) {
      (r.procs || []).forEach(function (p) { rows.push([r.i, p]); });
    });
    body.textContent = "";
    if (!rows.length) {
      var tr = document.createElement("tr");
      var td = document.createElement("td");
      td.colSpan = 6; td.className = "empty"; td.textContent = "No process on the GPUs.";
      tr.appendChild(td); body.appendChild(tr);
      return;
    }
    var jobBase = body.getAttribute("data-job-base");
    rows.forEach(function (row) {
      var p = row[1];
      var tr = document.createElement("tr");
      [String(row[0]), String(p.pid), p.name || "", p.user || "",
       p.mem_mib === null || p.mem_mib === undefined ? "" : Math.round(p.mem_mib) + " MiB"].forEach(function (text, i) {
        var td = document.createElement("td");
        if (i === 1 || i === 4) { td.className = "num"; }
        td.textContent = text;
        tr.appendChild(td);
      });
      var job = document.createElement("td");
      if (p.job && jobBase) {
        var link = document.createElement("a");
        link.href = jobBase + encodeURIComponent(p.job) + "/";
        link.textContent = "job " + p.job;
        job.appendChild(link);
      }
      tr.appendChild(job);
      body.appendChild(tr);
    });
  }

  function onBatch(batch) {
    badge("node-state", "state", batch.node_state);
    badge("node-health", "health", batch.node_health);
    lastSeen = Date.now();
    if (batch.replay || (lastSeq !== null && batch.seq <= lastSeq)) { return; }
    lastSeq = batch.seq;
    var t = Math.round(batch.ts * 1000);
    var byIndex = {};
    (batch.gpus || []).forEach(function (r) { byIndex[r.i] = r; });
    if (traces.length) {
      GPU_CHARTS.forEach(function (key) {
        var el = document.getElementById("chart-" + key);
        if (!el) { return; }
        var xs = [], ys = [];
        config.gpuIndexes.forEach(function (index) {
          xs.push([t]);
          ys.push([value(key, byIndex[index])]);
        });
        window.Plotly.extendTraces(el, {x: xs, y: ys}, traces, config.maxPoints);
      });
    }
    var host = batch.host || {};
    var hostEl = document.getElementById("chart-host");
    if (hostEl) {
      window.Plotly.extendTraces(hostEl, {
        x: [[t], [t]],
        y: [[host.cpu_percent === undefined ? null : host.cpu_percent], [pct(host.mem_used_bytes, host.mem_total_bytes)]]
      }, [0, 1], config.maxPoints);
    }
    config.gpuIndexes.forEach(function (index) {
      var r = byIndex[index];
      if (!r) { return; }
      setText("gpu-" + index + "-util", fmt(r.util, "%"));
      setText("gpu-" + index + "-mem", fmt(pct(r.mem_used_mib, r.mem_total_mib), "%"));
      setText("gpu-" + index + "-temp", fmt(r.temp_c, "°C"));
      setText("gpu-" + index + "-power", fmt(r.power_w, "W"));
    });
    processes(batch.gpus || []);
  }

  function onState(message) {
    badge("node-state", "state", message.state);
    badge("node-health", "health", message.health);
    var gpus = message.gpus || {};
    Object.keys(gpus).forEach(function (index) { badge("gpu-" + index + "-health", "health", gpus[index]); });
  }

  function onSnapshot(summary) {
    if (!summary) { return; }
    badge("node-state", "state", summary.state);
    badge("node-health", "health", summary.health);
    (summary.gpus || []).forEach(function (g, index) {
      if (g && g[4] !== null && g[4] !== undefined) { badge("gpu-" + index + "-health", "health", HEALTH[g[4]]); }
    });
  }

  function onEvent() {
    if (window.htmx && config.eventsUrl) {
      window.htmx.ajax("GET", config.eventsUrl, {target: "#node-events", swap: "outerHTML"});
    }
  }

  window.setInterval(function () {
    if (lastSeen !== null) { setText("node-heartbeat", ((Date.now() - lastSeen) / 1000).toFixed(1) + " s ago"); }
  }, 1000);

  window.PodiumLive.connect("/ws/monitoring/nodes/" + config.nodeId + "/", function (message) {
    if (message.kind === "batch") { onBatch(message.batch || {}); }
    else if (message.kind === "state") { onState(message); }
    else if (message.kind === "event") { onEvent(); }
    else if (message.kind === "snapshot") { onSnapshot(message.node); }
  });
})();
