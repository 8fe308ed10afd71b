// Job page: the page's one websocket to the job. Refreshes the state partial (and the
// training block) when the job changes, and hands every message to the training panels
// (window.PodiumJobTraining, static/podium/training/job_training.js) when the page has them.
(function () {
  "use strict";
  var source = document.getElementById("job-live-config");
  if (!source || !window.PodiumLive) { return; }
  var config = JSON.parse(source.textContent);
  var REFRESHED = ["job-state", "job-training-panels"];

  function refresh() {
    if (!window.htmx) { return; }
    REFRESHED.forEach(function (id) {
      var el = document.getElementById(id);
      if (el) { window.htmx.trigger(el, "job-changed"); }
    });
  }

  window.PodiumLive.connect("/ws/scheduler/jobs/" + config.jobId + "/", function (message) {
    if (message.kind === "changed") { refresh(); }
    if (window.PodiumJobTraining) { window.PodiumJobTraining.onMessage(message); }
  }, function () {
    // The job may have changed between the page's rendering (or the last connection) and
    // now: fetch its state again.
    refresh();
    if (window.PodiumJobTraining) { window.PodiumJobTraining.onOpen(); }
  });
})();
