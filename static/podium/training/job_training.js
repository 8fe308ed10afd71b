// Training panels of the job page: logs, metrics and GPU utilisation.
// History comes over HTTP; the page's job websocket (scheduler/job.js) then hands over
// "output" and "metrics" frames through window.PodiumJobTraining. Frames that arrive
// while history loads wait, and the lines or points the history already holds are dropped.
(function () {
  "use strict";
  var source = document.getElementById("job-training-config");
  if (!source) { return; }
  var config = JSON.parse(source.textContent);
  var plotConfig = {displaylogo: false, responsive: true, modeBarButtonsToRemove: ["lasso2d", "select2d"]};

  function getJSON(url, params) {
    var query = new URLSearchParams();
    Object.keys(params || {}).forEach(function (key) {
      var value = params[key];
      if (value !== "" && value !== null && value !== undefined) { query.set(key, value); }
    });
    var target = url + (query.toString() ? "?" + query.toString() : "");
    return fetch(target, {credentials: "same-origin", headers: {Accept: "application/json"}}).then(function (response) {
      if (!response.ok) { throw new Error(target + ": " + response.status); }
      return response.json();
    });
  }

  function panels() {
    var el = document.getElementById("job-training-panels");
    return {
      attempt: el ? parseInt(el.getAttribute("data-attempt"), 10) || 0 : 0,
      state: el ? el.getAttribute("data-state") : "",
      active: el ? el.getAttribute("data-active") === "1" : false
    };
  }

  // Logs ------------------------------------------------------------------------------

  var logs = (function () {
    var box = document.getElementById("job-logs");
    var list = document.getElementById("log-lines");
    var earlier = document.getElementById("log-earlier");
    var newer = document.getElementById("log-newer");
    var follow = document.getElementById("log-follow");
    var rankSelect = document.getElementById("log-rank");
    var attemptSelect = document.getElementById("log-attempt");
    var search = document.getElementById("log-q");
    var download = document.getElementById("log-download");
    var loading = false;
    var buffered = [];
    var lastSeq = {};       // per rank: the last line number shown of the live attempt
    var liveAttempt = panels().attempt;
    var held = 0;           // live lines not shown while not following

    function filters() {
      return {rank: rankSelect.value, attempt: attemptSelect.value, q: search.value};
    }

    function lineCount() { return list.querySelectorAll(".line").length; }

    function separator(attempt) {
      var sep = document.createElement("div");
      sep.className = "sep";
      sep.setAttribute("data-attempt", attempt);
      sep.textContent = "attempt " + attempt;
      return sep;
    }

    function lineElement(id, attempt, rank, seq, text) {
      var line = document.createElement("div");
      line.className = "line";
      if (id) { line.setAttribute("data-id", id); }
      line.setAttribute("data-attempt", attempt);
      line.setAttribute("data-key", attempt + ":" + rank + ":" + seq);
      line.textContent = (config.showRank && rankSelect.value === "" ? "[rank " + rank + "] " : "") + text;
      return line;
    }

    // Rows are [id, attempt, rank, seq, text]; an attempt's lines start with its header.
    function fragmentOf(rows, previousAttempt) {
      var fragment = document.createDocumentFragment();
      var current = previousAttempt;
      rows.forEach(function (row) {
        if (row[1] !== current) { fragment.appendChild(separator(row[1])); current = row[1]; }
        fragment.appendChild(lineElement(row[0], row[1], row[2], row[3], row[4]));
      });
      return fragment;
    }

    function lastAttemptShown() {
      var last = list.lastElementChild;
      return last && last.hasAttribute("data-attempt") ? parseInt(last.getAttribute("data-attempt"), 10) : null;
    }

    function placeholder(text) {
      list.textContent = "";
      var line = document.createElement("div");
      line.className = "line muted empty";
      line.textContent = text;
      list.appendChild(line);
    }

    function toBottom() { box.scrollTop = box.scrollHeight; }

    // Drops the oldest lines beyond maxLines (counted once, not after every removal).
    function trim() {
      var excess = lineCount() - config.maxLines;
      if (excess <= 0) { return; }
      while (excess > 0 && list.firstElementChild) {
        if (list.firstElementChild.classList.contains("line")) { excess -= 1; }
        list.removeChild(list.firstElementChild);
      }
      while (list.firstElementChild && list.firstElementChild.className === "sep") {
        var next = list.firstElementChild.nextElementSibling;
        if (next && next.className === "sep") { list.removeChild(list.firstElementChild); } else { break; }
      }
      var top = list.firstElementChild;
      if (top && top.className === "line") { list.insertBefore(separator(parseInt(top.getAttribute("data-attempt"), 10)), top); }
      earlier.hidden = false;
    }

    function remember(rows) {
      rows.forEach(function (row) {
        if (row[1] === liveAttempt && (lastSeq[row[2]] === undefined || row[3] > lastSeq[row[2]])) { lastSeq[row[2]] = row[3]; }
      });
    }

    function load() {
      loading = true;
      held = 0;
      newer.hidden = true;
      var params = filters();
      params.limit = Math.min(1000, config.maxLines);
      download.href = config.download + (params.rank !== "" ? "?rank=" + encodeURIComponent(params.rank) : "");
      return getJSON(config.urls.job_logs, params).then(function (page) {
        lastSeq = {};
        liveAttempt = Math.max(liveAttempt, panels().attempt);
        page.lines.forEach(function (row) { liveAttempt = Math.max(liveAttempt, row[1]); });
        remember(page.lines);
        list.textContent = "";
        if (!page.lines.length) { placeholder(params.q ? "No line matches." : "No output yet."); }
        list.appendChild(fragmentOf(page.lines, null));
        earlier.hidden = !page.more_before;
        loading = false;
        var waiting = buffered;
        buffered = [];
        waiting.forEach(function (frame) { live(frame, true); });
        if (follow.checked) { toBottom(); }
      }).catch(function () {
        loading = false;
        placeholder("The logs could not be loaded; they are retried when the page reconnects.");
      });
    }

    function loadEarlier() {
      var top = list.querySelector(".line[data-key]");
      if (!top) { return; }
      var params = filters();
      params.limit = 1000;
      if (top.hasAttribute("data-id")) { params.before = top.getAttribute("data-id"); } else { params.before_key = top.getAttribute("data-key"); }
      earlier.disabled = true;
      getJSON(config.urls.job_logs, params).then(function (page) {
        earlier.disabled = false;
        earlier.hidden = !page.more_before;
        if (!page.lines.length) { return; }
        var height = box.scrollHeight;
        var first = list.firstElementChild;
        var lastAttempt = page.lines[page.lines.length - 1][1];
        if (first && first.className === "sep" && parseInt(first.getAttribute("data-attempt"), 10) === lastAttempt) {
          list.removeChild(first);
        }
        list.insertBefore(fragmentOf(page.lines, null), list.firstElementChild);
        box.scrollTop += box.scrollHeight - height;
      }).catch(function () { earlier.disabled = false; });
    }

    function matches(rank, text) {
      var f = filters();
      if (f.rank !== "" && parseInt(f.rank, 10) !== rank) { return false; }
      if (f.attempt !== "" && parseInt(f.attempt, 10) !== liveAttempt) { return false; }
      return !f.q || text.toLowerCase().indexOf(f.q.toLowerCase()) !== -1;
    }

    // An "output" frame: a rank's lines from line number seq on, of the running attempt.
    function live(frame, afterLoad) {
      if (loading) { buffered.push(frame); return; }
      var rank = frame.rank, seq = frame.seq, lines = frame.lines || [];
      if (typeof rank !== "number" || typeof seq !== "number") { return; }
      if (typeof frame.attempt === "number" && frame.attempt > liveAttempt) {
        liveAttempt = frame.attempt;
        lastSeq = {};
      }
      var last = lastSeq[rank];
      if (!afterLoad && typeof frame.attempt !== "number" && last !== undefined && seq <= last) {
        // Line numbers start again: a new attempt runs.
        liveAttempt = Math.max(liveAttempt + 1, panels().attempt);
        lastSeq = {};
        last = undefined;
      }
      var rows = [];
      lines.forEach(function (text, i) {
        if (last !== undefined && seq + i <= last) { return; }
        if (matches(rank, text)) { rows.push([null, liveAttempt, rank, seq + i, text]); }
      });
      if (lines.length) { lastSeq[rank] = Math.max(last === undefined ? -1 : last, seq + lines.length - 1); }
      if (!rows.length) { return; }
      if (!follow.checked) {
        held += rows.length;
        newer.textContent = held + " new line" + (held === 1 ? "" : "s") + ": follow them";
        newer.hidden = false;
        return;
      }
      var empty = list.querySelector(".line.empty");
      if (empty) { empty.remove(); }
      list.appendChild(fragmentOf(rows, lastAttemptShown()));
      trim();
      toBottom();
    }

    // A new attempt runs: lines that came before the page knew it are read again with
    // their attempt.
    function attemptStarted(attempt) {
      liveAttempt = Math.max(liveAttempt, attempt);
      if (follow.checked) { load(); } else { lastSeq = {}; }
      var present = Array.prototype.some.call(attemptSelect.options, function (o) { return o.value === String(attempt); });
      if (attempt > 0 && !present) {
        var option = document.createElement("option");
        option.value = String(attempt);
        option.textContent = "attempt " + attempt;
        attemptSelect.insertBefore(option, attemptSelect.options[1] || null);
      }
    }

    document.getElementById("log-tools").addEventListener("submit", function (event) {
      event.preventDefault();
      load();
    });
    rankSelect.addEventListener("change", load);
    attemptSelect.addEventListener("change", load);
    earlier.addEventListener("click", loadEarlier);
    newer.addEventListener("click", function () { follow.checked = true; load(); });
    box.addEventListener("scroll", function () {
      // Scrolling up to read stops following; new lines then wait below.
      if (follow.checked && !loading && box.scrollTop + box.clientHeight < box.scrollHeight - 40) { follow.checked = false; }
    });
    follow.addEventListener("change", function () { if (follow.checked) { load(); } });

    return {load: load, live: live, attemptStarted: attemptStarted};
  })();

  // Metrics ---------------------------------------------------------------------------

  var metrics = (function () {
    var container = document.getElementById("metric-charts");
    var empty = document.getElementById("metrics-empty");
    var charts = {};      // metric name -> chart element
    var lastStep = {};    // metric name -> attempt -> last step drawn
    var template = null;
    var colours = ["#2563eb"];
    var loading = false;
    var buffered = [];

    function chartId(name) { return "metric-" + name.replace(/[^A-Za-z0-9_-]/g, "_"); }

    function remember(name, attempt, step) {
      var byAttempt = lastStep[name] || (lastStep[name] = {});
      if (byAttempt[attempt] === undefined || step > byAttempt[attempt]) { byAttempt[attempt] = step; }
    }

    // A new chart narrows the others' columns: fit every chart to its own again, once.
    var resizing = false;
    function resizeSoon() {
      if (resizing) { return; }
      resizing = true;
      window.requestAnimationFrame(function () {
        resizing = false;
        Object.keys(charts).forEach(function (name) { window.Plotly.Plots.resize(charts[name]); });
      });
    }

    function draw(name, figure) {
      var el = charts[name];
      var added = !el;
      if (added) {
        el = document.createElement("div");
        el.className = "chart";
        el.id = chartId(name);
        container.appendChild(el);
        charts[name] = el;
      }
      window.Plotly.react(el, figure.data, figure.layout, plotConfig);
      if (added) { resizeSoon(); }
      figure.data.forEach(function (trace) {
        if (trace.meta && trace.x.length) { remember(name, trace.meta.attempt, trace.x[trace.x.length - 1]); }
      });
      empty.hidden = true;
    }

    function traceFor(attempt) {
      var colour = colours[(attempt - 1) % colours.length];
      return {
        type: "scatter", mode: "lines+markers", name: "attempt " + attempt, meta: {attempt: attempt},
        x: [], y: [], line: {color: colour, width: 1.5}, marker: {color: colour, size: 3},
        hovertemplate: "step %{x}<br>%{y:.4g}<extra>attempt " + attempt + "</extra>"
      };
    }

    function chartFor(name) {
      if (!charts[name]) {
        var layout = JSON.parse(JSON.stringify(template.layout));
        layout.title.text = name;
        draw(name, {data: [], layout: layout});
      }
      return charts[name];
    }

    function load() {
      loading = true;
      return getJSON(config.urls.job_metrics).then(function (answer) {
        template = answer.template;
        colours = answer.colours || colours;
        lastStep = {};
        answer.names.forEach(function (name) { draw(name, answer.figures[name]); });
        if (!answer.names.length) {
          empty.textContent = "No metrics reported yet. A script reports them with podium.sdk.report(step, loss=..., lr=...).";
          empty.hidden = false;
        }
        loading = false;
        var waiting = buffered;
        buffered = [];
        waiting.forEach(append);
      }).catch(function () {
        loading = false;
        empty.textContent = "The metrics could not be loaded; they are retried when the page reconnects.";
        empty.hidden = false;
      });
    }

    // A "metrics" frame: points {attempt, step, at, values}, oldest first.
    function append(points) {
      if (loading || !template) { buffered.push(points); return; }
      var grouped = {};
      (points || []).forEach(function (point) {
        Object.keys(point.values || {}).forEach(function (name) {
          var seen = (lastStep[name] || {})[point.attempt];
          if (seen !== undefined && point.step <= seen) { return; }
          remember(name, point.attempt, point.step);
          var byAttempt = grouped[name] || (grouped[name] = {});
          var series = byAttempt[point.attempt] || (byAttempt[point.attempt] = {x: [], y: []});
          series.x.push(point.step);
          series.y.push(point.values[name]);
        });
      });
      Object.keys(grouped).forEach(function (name) {
        var el = chartFor(name);
        var xs = [], ys = [], indices = [];
        Object.keys(grouped[name]).forEach(function (key) {
          var attempt = parseInt(key, 10);
          var index = el.data.findIndex(function (t) { return t.meta && t.meta.attempt === attempt; });
          if (index === -1) {
            window.Plotly.addTraces(el, traceFor(attempt));
            index = el.data.length - 1;
          }
          indices.push(index);
          xs.push(grouped[name][key].x);
          ys.push(grouped[name][key].y);
        });
        window.Plotly.extendTraces(el, {x: xs, y: ys}, indices, config.maxPoints);
      });
    }

    // The timeline moved: draw its markers again on every chart.
    function markers() {
      if (!template) { return; }
      getJSON(config.urls.job_metrics, {part: "markers"}).then(function (layout) {
        template.layout.shapes = layout.shapes;
        template.layout.annotations = layout.annotations;
        Object.keys(charts).forEach(function (name) {
          window.Plotly.relayout(charts[name], {shapes: layout.shapes, annotations: layout.annotations});
        });
      }).catch(function () { return null; });
    }

    return {load: load, append: append, markers: markers};
  })();

  // GPU utilisation -------------------------------------------------------------------

  var gpus = (function () {
    var el = document.getElementById("gpu-chart");
    var note = document.getElementById("gpu-empty");
    var until = null;
    var timer = null;
    var lastX = {};
    var drawn = false;

    function schedule(live) {
      if (timer) { window.clearTimeout(timer); timer = null; }
      if (live) { timer = window.setTimeout(poll, config.gpuPollSeconds * 1000); }
    }

    function show(figure) {
      lastX = {};
      figure.data.forEach(function (trace) {
        if (trace.x.length) { lastX[trace.meta.key] = trace.x[trace.x.length - 1]; }
      });
      if (!figure.data.length) {
        if (drawn) { window.Plotly.purge(el); drawn = false; }
        el.hidden = true;
        note.textContent = "The job holds no GPUs yet.";
        note.hidden = false;
        return;
      }
      el.hidden = false;
      note.hidden = true;
      window.Plotly.react(el, figure.data, figure.layout, plotConfig);
      drawn = true;
    }

    function load() {
      schedule(false);
      document.getElementById("gpu-attempt").textContent = String(panels().attempt);
      return getJSON(config.urls.job_gpus).then(function (answer) {
        until = answer.until;
        show(answer.figure);
        schedule(answer.live);
      }).catch(function () { schedule(true); });
    }

    function poll() {
      if (document.hidden || !drawn) { schedule(true); return; }
      getJSON(config.urls.job_gpus, {since: until}).then(function (answer) {
        var keys = Object.keys(answer.traces);
        var indices = [], xs = [], ys = [];
        var traceIndex = {};
        el.data.forEach(function (t, i) { if (t.meta) { traceIndex[t.meta.key] = i; } });
        var unknown = keys.some(function (key) { return traceIndex[key] === undefined; });
        if (unknown) { load(); return; }
        keys.forEach(function (key) {
          var trace = answer.traces[key];
          var x = [], y = [];
          trace.x.forEach(function (t, i) {
            if (lastX[key] === undefined || t > lastX[key]) { x.push(t); y.push(trace.y[i]); }
          });
          if (!x.length) { return; }
          lastX[key] = x[x.length - 1];
          indices.push(traceIndex[key]);
          xs.push(x);
          ys.push(y);
        });
        if (indices.length) { window.Plotly.extendTraces(el, {x: xs, y: ys}, indices, config.gpuMaxPoints); }
        until = answer.until;
        schedule(answer.live);
      }).catch(function () { schedule(true); });
    }

    return {load: load};
  })();

  // The refreshed block says when a new attempt starts or the state changes. ------------

  var seen = panels();
  document.body.addEventListener("htmx:afterSettle", function () {
    var now = panels();
    if (now.attempt === seen.attempt && now.state === seen.state) { return; }
    var newAttempt = now.attempt !== seen.attempt;
    var started = now.active && !seen.active;
    seen = now;
    metrics.markers();
    if (newAttempt) { logs.attemptStarted(now.attempt); }
    if (newAttempt || started) { gpus.load(); }
  });

  // History is read once the websocket is open, so that no line or point falls between
  // the two; without a websocket after a while, it is read anyway.
  function history() { logs.load(); metrics.load(); }
  var fallback = window.setTimeout(history, 3000);

  window.PodiumJobTraining = {
    onMessage: function (message) {
      if (message.kind === "output") { logs.live(message, false); }
      else if (message.kind === "metrics") { metrics.append(message.points); }
    },
    onOpen: function () {
      window.clearTimeout(fallback);
      history();
    }
  };
  gpus.load();
})();
