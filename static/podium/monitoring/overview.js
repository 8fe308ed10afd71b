// Cluster overview: applies fleet snapshot/delta frames to the heatmap in place.
// Updates are coalesced per animation frame and touch only the cells whose value changed,
// so 125 nodes x 8 GPUs at several frames a second stay smooth.
(function () {
  "use strict";
  var fleet = document.getElementById("fleet");
  var tbody = document.getElementById("fleet-rows");
  if (!fleet || !tbody || !window.PodiumLive) { return; }

  var HEALTH = ["healthy", "degraded", "unhealthy"];
  var STEPS = 20;
  var nodesUrl = fleet.getAttribute("data-nodes-url");
  var metric = fleet.getAttribute("data-metric") || "util";
  var nodes = {};    // node id -> {tr, name, stateEl, healthEl, cpuEl, cellsEl, cells: [{el, util, mem, memTotal, temp, power, health}], state}
  var pending = {};  // node id -> newest summary not yet drawn
  var scheduled = false;
  var powerMax = 700;

  // Colour scales: a palette of STEPS + 1 colours per metric, computed once.
  function mix(a, b, t) {
    return [0, 1, 2].map(function (i) { return Math.round(a[i] + (b[i] - a[i]) * t); });
  }
  function palette(stops) {
    var out = [];
    for (var s = 0; s <= STEPS; s++) {
      var t = s / STEPS, i = 0;
      while (i < stops.length - 2 && t > stops[i + 1][0]) { i++; }
      var span = stops[i + 1][0] - stops[i][0];
      var rgb = mix(stops[i][1], stops[i + 1][1], span ? (t - stops[i][0]) / span : 0);
      var dark = (rgb[0] * 299 + rgb[1] * 587 + rgb[2] * 114) / 1000 < 140;
      out.push({bg: "rgb(" + rgb.join(",") + ")", fg: dark ? "#fff" : "#1b1f24"});
    }
    return out;
  }
  var blues = palette([[0, [241, 245, 249]], [0.5, [96, 165, 250]], [1, [30, 58, 138]]]);
  var heat = palette([[0, [220, 252, 231]], [0.5, [250, 204, 21]], [1, [185, 28, 28]]]);
  var SCALES = {
    util: {pal: blues, lo: 0, hi: function () { return 100; }, unit: "%"},
    mem: {pal: blues, lo: 0, hi: function () { return 100; }, unit: "%"},
    temp: {pal: heat, lo: 30, hi: function () { return 90; }, unit: "°C"},
    power: {pal: heat, lo: 0, hi: function () { return powerMax; }, unit: "W"}
  };
  var HEALTH_COLOURS = [
    {bg: "#bbf7d0", fg: "#14532d"}, {bg: "#fcd34d", fg: "#78350f"}, {bg: "#b91c1c", fg: "#fff"}
  ];

  function num(text) {
    if (text === null || text === undefined || text === "") { return null; }
    var v = Number(text);
    return isNaN(v) ? null : v;
  }

  function paint(cell) {
    var el = cell.el, colour, text;
    if (metric === "health") {
      var code = HEALTH.indexOf(cell.health);
      colour = HEALTH_COLOURS[code < 0 ? 0 : code];
      text = String(cell.index);
    } else {
      var v = cell[metric];
      if (v === null) {
        el.style.background = "";
        el.style.color = "";
        el.classList.add("na");
        el.textContent = "";
        return;
      }
      var scale = SCALES[metric];
      var hi = scale.hi();
      var t = Math.max(0, Math.min(1, (v - scale.lo) / ((hi - scale.lo) || 1)));
      colour = scale.pal[Math.round(t * STEPS)];
      text = String(Math.round(v));
    }
    el.classList.remove("na");
    el.style.background = colour.bg;
    el.style.color = colour.fg;
    el.textContent = text;
  }

  function register(tr) {
    var name = tr.getAttribute("data-node");
    var node = {
      tr: tr,
      name: name,
      stateEl: document.getElementById("node-" + name + "-state"),
      healthEl: document.getElementById("node-" + name + "-health"),
      cpuEl: tr.querySelector("[data-cpu]"),
      cellsEl: tr.querySelector(".cells"),
      cells: []
    };
    node.state = node.stateEl ? node.stateEl.getAttribute("data-state") : "";
    Array.prototype.forEach.call(tr.querySelectorAll("a.cell"), function (a) {
      node.cells.push({
        el: a,
        index: Number(a.getAttribute("data-gpu")),
        util: num(a.getAttribute("data-util")),
        mem: num(a.getAttribute("data-mem")),
        memTotal: num(a.getAttribute("data-mem-total")),
        temp: num(a.getAttribute("data-temp")),
        power: num(a.getAttribute("data-power")),
        health: a.getAttribute("data-health") || "healthy"
      });
    });
    nodes[tr.getAttribute("data-node-id")] = node;
    return node;
  }

  function badge(el, kind, value) {
    if (!el || el.getAttribute("data-" + kind) === value) { return; }
    el.setAttribute("data-" + kind, value);
    el.className = "badge " + kind + "-" + value;
    el.textContent = value;
  }

  function cellCreate(node, index, simulated) {
    var a = document.createElement("a");
    a.className = "cell" + (simulated ? " sim" : "");
    a.href = nodesUrl + node.id + "/gpus/" + index + "/";
    a.setAttribute("data-node", node.name);
    a.setAttribute("data-gpu", String(index));
    a.title = node.name + " GPU " + index + (simulated ? " (simulated)" : "");
    node.cellsEl.appendChild(a);
    var cell = {el: a, index: index, util: null, mem: null, memTotal: null, temp: null, power: null, health: "healthy"};
    node.cells.push(cell);
    return cell;
  }

  function rowCreate(summary) {
    var tr = document.createElement("tr");
    var id = String(summary.id);
    tr.id = "node-row-" + id;
    tr.setAttribute("data-node-id", id);
    tr.setAttribute("data-node", summary.name);
    var th = document.createElement("th");
    th.scope = "row";
    var link = document.createElement("a");
    link.href = nodesUrl + id + "/";
    link.textContent = summary.name;
    th.appendChild(link);
    if (summary.simulated) {
      var sim = document.createElement("span");
      sim.className = "badge sim";
      sim.textContent = "simulated";
      th.appendChild(document.createTextNode(" "));
      th.appendChild(sim);
    }
    tr.appendChild(th);
    ["state", "health"].forEach(function (kind) {
      var td = document.createElement("td");
      var span = document.createElement("span");
      span.id = "node-" + summary.name + "-" + kind;
      td.appendChild(span);
      tr.appendChild(td);
    });
    var cpu = document.createElement("td");
    cpu.className = "num small";
    cpu.setAttribute("data-cpu", "");
    tr.appendChild(cpu);
    var cells = document.createElement("td");
    cells.className = "cells";
    tr.appendChild(cells);
    var empty = tbody.querySelector("tr.empty-row");
    if (empty) { empty.remove(); }
    // Keep rows sorted by name, as the server renders them.
    var before = null;
    Array.prototype.some.call(tbody.children, function (row) {
      if ((row.getAttribute("data-node") || "") > summary.name) { before = row; return true; }
      return false;
    });
    tbody.insertBefore(tr, before);
    var node = register(tr);
    node.id = id;
    return node;
  }

  function apply(summary) {
    var id = String(summary.id);
    var node = nodes[id];
    if (summary.state === "revoked") {
      if (node) { node.tr.remove(); delete nodes[id]; }
      return;
    }
    if (!node) { node = rowCreate(summary); }
    node.id = id;
    node.state = summary.state;
    if (node.tr.getAttribute("data-state") !== summary.state) {
      node.tr.setAttribute("data-state", summary.state);
    }
    badge(node.stateEl, "state", summary.state);
    badge(node.healthEl, "health", summary.health);
    var host = summary.host || {};
    if (node.cpuEl) {
      var cpuText = host.cpu === null || host.cpu === undefined ? "" : Math.round(host.cpu) + "%";
      if (node.cpuEl.textContent !== cpuText) { node.cpuEl.textContent = cpuText; }
    }
    var readings = summary.gpus || [];
    var fb = summary.fb || [];
    for (var i = 0; i < readings.length; i++) {
      var r = readings[i];
      if (!r) { continue; }
      var cell = node.cells[i] && node.cells[i].index === i ? node.cells[i] : null;
      if (!cell) {
        cell = node.cells.filter(function (c) { return c.index === i; })[0] || cellCreate(node, i, summary.simulated);
      }
      var health = r[4] === null || r[4] === undefined ? cell.health : HEALTH[r[4]] || cell.health;
      var memTotal = fb[i] && fb[i][1] !== null && fb[i][1] !== undefined ? fb[i][1] : cell.memTotal;
      if (cell.util === r[0] && cell.mem === r[1] && cell.temp === r[2] && cell.power === r[3] && cell.health === health) {
        cell.memTotal = memTotal;
        continue;
      }
      cell.util = r[0]; cell.mem = r[1]; cell.temp = r[2]; cell.power = r[3];
      cell.health = health; cell.memTotal = memTotal;
      var el = cell.el;
      el.setAttribute("data-util", r[0] === null ? "" : r[0]);
      el.setAttribute("data-mem", r[1] === null ? "" : r[1]);
      el.setAttribute("data-temp", r[2] === null ? "" : r[2]);
      el.setAttribute("data-power", r[3] === null ? "" : r[3]);
      el.setAttribute("data-health", health);
      paint(cell);
    }
  }

  // The same units as the page's server-side filters (apps/monitoring/templatetags/monitoring_units.py).
  function mib(v) {
    if (v >= 1024 * 1024) { return (v / (1024 * 1024)).toFixed(1) + " TiB"; }
    if (v >= 1024) { return Math.round(v / 1024) + " GiB"; }
    return Math.round(v) + " MiB";
  }

  function watts(v) {
    if (v >= 1000000) { return (v / 1000000).toFixed(2) + " MW"; }
    if (v >= 1000) { return (v / 1000).toFixed(1) + " kW"; }
    return Math.round(v) + " W";
  }

  function setText(id, text) {
    var el = document.getElementById(id);
    if (el && el.textContent !== text) { el.textContent = text; }
  }

  function totals() {
    var t = {nodes: 0, ready: 0, suspect: 0, lost: 0, gpus: 0, unhealthy: 0, degraded: 0,
             utilSum: 0, utilCount: 0, memUsed: 0, memTotal: 0, power: 0};
    Object.keys(nodes).forEach(function (id) {
      var node = nodes[id];
      t.nodes++;
      if (node.state in t) { t[node.state]++; }
      // A lost node's last readings are stale: they do not count in the totals.
      var reporting = node.state === "ready" || node.state === "suspect";
      node.cells.forEach(function (c) {
        t.gpus++;
        if (c.health === "unhealthy") { t.unhealthy++; }
        if (c.health === "degraded") { t.degraded++; }
        if (!reporting) { return; }
        if (c.util !== null) { t.utilSum += c.util; t.utilCount++; }
        if (c.memTotal) {
          t.memTotal += c.memTotal;
          if (c.mem !== null) { t.memUsed += c.memTotal * c.mem / 100; }
        }
        if (c.power !== null) { t.power += c.power; }
      });
    });
    setText("total-nodes", String(t.nodes));
    ["ready", "suspect", "lost", "gpus", "unhealthy", "degraded"].forEach(function (k) {
      setText("total-" + k, String(t[k]));
    });
    setText("total-util", t.utilCount ? String(Math.round(t.utilSum / t.utilCount)) : "–");
    setText("total-mem-used", mib(t.memUsed));
    setText("total-mem-total", mib(t.memTotal));
    setText("total-power", watts(t.power));
  }

  function flush() {
    scheduled = false;
    var batch = pending;
    pending = {};
    Object.keys(batch).forEach(function (id) { apply(batch[id]); });
    totals();
  }

  function schedule() {
    if (!scheduled) { scheduled = true; window.requestAnimationFrame(flush); }
  }

  function repaintAll() {
    Object.keys(nodes).forEach(function (id) { nodes[id].cells.forEach(paint); });
    var legend = document.getElementById("heat-legend");
    if (legend) {
      var scale = SCALES[metric];
      legend.textContent = metric === "health" ? "green healthy · amber degraded · red unhealthy"
        : scale.lo + " to " + Math.round(scale.hi()) + " " + scale.unit + " · grey: no reading";
    }
  }

  Array.prototype.forEach.call(tbody.querySelectorAll("tr[data-node-id]"), function (tr) {
    register(tr).id = tr.getAttribute("data-node-id");
  });
  repaintAll();

  Array.prototype.forEach.call(document.querySelectorAll("button.metric"), function (button) {
    button.addEventListener("click", function () {
      metric = button.getAttribute("data-metric");
      fleet.setAttribute("data-metric", metric);
      Array.prototype.forEach.call(document.querySelectorAll("button.metric"), function (b) {
        var on = b === button;
        b.classList.toggle("active", on);
        b.setAttribute("aria-pressed", on ? "true" : "false");
      });
      repaintAll();
    });
  });

  window.PodiumLive.connect("/ws/monitoring/fleet/", function (message) {
    if (message.kind !== "snapshot" && message.kind !== "delta") { return; }
    (message.nodes || []).forEach(function (summary) { pending[summary.id] = summary; });
    schedule();
  });
})();
