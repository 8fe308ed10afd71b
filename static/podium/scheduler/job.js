// Job page: refreshes the state partial when the job changes, and tails the output of
// every rank from the job's websocket, keeping the last lines only.
(function () {
  "use strict";
  var source = document.getElementById("job-live-config");
  if (!source || !window.PodiumLive) { return; }
  var config = JSON.parse(source.textContent);
  var output = document.getElementById("job-output");
  var opened = false;

  function refresh() {
    var state = document.getElementById("job-state");
    if (state && window.htmx) { window.htmx.trigger(state, "job-changed"); }
  }

  function append(message) {
    if (!output) { return; }
    var atBottom = output.scrollTop + output.clientHeight >= output.scrollHeight - 8;
    var placeholder = output.querySelector(".line.empty");
    if (placeholder) { placeholder.remove(); }
    var fragment = document.createDocumentFragment();
    (message.lines || []).forEach(function (text) {
      var line = document.createElement("div");
      line.className = "line";
      line.textContent = (config.showRank ? "[" + message.rank + "] " : "") + text;
      fragment.appendChild(line);
    });
    output.appendChild(fragment);
    while (output.childElementCount > config.maxLines) { output.removeChild(output.firstElementChild); }
    if (atBottom) { output.scrollTop = output.scrollHeight; }
  }

  if (output) { output.scrollTop = output.scrollHeight; }
  window.PodiumLive.connect("/ws/scheduler/jobs/" + config.jobId + "/", function (message) {
    if (message.kind === "changed") { refresh(); }
    else if (message.kind === "output") { append(message); }
  }, function () {
    // After a reconnect the page may have missed changes: fetch the state again.
    if (opened) { refresh(); }
    opened = true;
  });
})();
