// Pool sections (queue page, pool page): every element with data-pool-live="<pool id>"
// refreshes itself with htmx when its pool changes; it also polls as a fallback.
(function () {
  "use strict";
  if (!window.PodiumLive || !window.htmx) { return; }
  var watched = {};

  function changed(poolId) {
    document.querySelectorAll('[data-pool-live="' + poolId + '"]').forEach(function (target) {
      window.htmx.trigger(target, "pool-changed");
    });
  }

  document.querySelectorAll("[data-pool-live]").forEach(function (element) {
    var poolId = element.getAttribute("data-pool-live");
    if (watched[poolId]) { return; }
    watched[poolId] = true;
    window.PodiumLive.connect("/ws/scheduler/pools/" + poolId + "/", function (message) {
      if (message.kind === "changed") { changed(poolId); }
    });
  });
})();
