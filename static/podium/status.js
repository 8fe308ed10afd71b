// Shows whether the status page's websocket is connected; htmx's ws extension reconnects by itself.
(function () {
  "use strict";
  function setLive(text, cls) {
    var el = document.getElementById("live-state");
    if (el) { el.textContent = text; el.className = "live " + cls; }
  }
  document.body.addEventListener("htmx:wsOpen", function () { setLive("live", "on"); });
  document.body.addEventListener("htmx:wsClose", function () { setLive("disconnected, retrying", "off"); });
  document.body.addEventListener("htmx:wsError", function () { setLive("disconnected, retrying", "off"); });
})();
