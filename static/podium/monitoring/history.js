// GPU history: draws the figures the server built (charts.py), one per metric.
(function () {
  "use strict";
  var source = document.getElementById("history-figures");
  if (!source || !window.Plotly) { return; }
  var figures = JSON.parse(source.textContent);
  var config = {displaylogo: false, responsive: true, modeBarButtonsToRemove: ["lasso2d", "select2d"]};
  Object.keys(figures).forEach(function (key) {
    var el = document.getElementById("chart-" + key);
    if (el) { window.Plotly.newPlot(el, figures[key].data, figures[key].layout, config); }
  });
})();
