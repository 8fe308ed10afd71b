// One browser websocket to the console, reconnecting with backoff, with a live indicator.
// PodiumLive.connect("/ws/...", onMessage, onOpen) → handle with close().
(function () {
  "use strict";
  var MAX_DELAY = 15000;
  // Close codes that mean "do not retry": signed out, or the object is not visible.
  var FINAL = {4401: "signed out: reload the page", 4404: "not available"};

  function setLive(text, cls) {
    var el = document.getElementById("live-state");
    if (el) { el.textContent = text; el.className = "live " + cls; }
  }

  function connect(path, onMessage, onOpen) {
    var scheme = window.location.protocol === "https:" ? "wss://" : "ws://";
    var url = scheme + window.location.host + path;
    var delay = 500;
    var socket = null;
    var stopped = false;
    var timer = null;

    function open() {
      socket = new WebSocket(url);
      socket.onopen = function () {
        delay = 500;
        setLive("live", "on");
        if (onOpen) { onOpen(); }
      };
      socket.onmessage = function (event) {
        var message;
        try { message = JSON.parse(event.data); } catch (e) { return; }
        onMessage(message);
      };
      socket.onclose = function (event) {
        if (stopped) { return; }
        if (FINAL[event.code]) { setLive(FINAL[event.code], "off"); return; }
        setLive("reconnecting", "off");
        timer = window.setTimeout(open, delay);
        delay = Math.min(MAX_DELAY, delay * 2);
      };
    }

    open();
    window.addEventListener("pagehide", function () { stopped = true; if (socket) { socket.close(); } });
    return {
      close: function () {
        stopped = true;
        if (timer) { window.clearTimeout(timer); }
        if (socket) { socket.close(); }
      }
    };
  }

  window.PodiumLive = {connect: connect, setLive: setLive};
})();
