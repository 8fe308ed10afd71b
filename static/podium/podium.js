// Says so when an htmx request is refused or fails, instead of leaving the page unchanged.
(function () {
  "use strict";
  var reasons = {403: "Your role does not allow this.", 404: "That no longer exists, or you may not see it."};
  document.addEventListener("htmx:responseError", function (event) {
    var box = document.getElementById("request-error");
    if (!box) { return; }
    var status = event.detail.xhr.status;
    box.textContent = reasons[status] || ("The console answered with an error (HTTP " + status + "). Try again.");
    box.hidden = false;
  });
  document.addEventListener("htmx:sendError", function () {
    var box = document.getElementById("request-error");
    if (!box) { return; }
    box.textContent = "The console cannot be reached. Check the connection and try again.";
    box.hidden = false;
  });
})();
