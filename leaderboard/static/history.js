/* evalkit leaderboard: a model's history plot (one line per benchmark and dataset version, each
   point one run on its night: the nightly date, else the UTC day it started; error bars = the run's
   95% CI; a click on a point opens that night's comparison, when there is one). Data comes from
   data/leaderboard.js (window.EVALKIT_DATA), which works from file:// where fetch() would not. */
(function () {
  "use strict";
  var element = document.getElementById("history");
  var data = window.EVALKIT_DATA && window.EVALKIT_DATA.leaderboard;
  if (!element || !data || typeof Plotly === "undefined") { return; }
  var series = data.history[element.getAttribute("data-model")] || [];
  var traces = series.map(function (s) {
    var values = s.points.map(function (p) { return p.value; });
    return {
      x: s.points.map(function (p) { return p.night; }),
      customdata: s.points.map(function (p) { return p.comparison; }),
      y: values,
      text: s.points.map(function (p) { return p.run_id; }),
      name: s.task + " (" + s.version.split("--").pop() + ")",
      mode: "lines+markers",
      type: "scatter",
      hovertemplate: "%{y:.3f}<br>%{text}<extra>%{fullData.name}</extra>",
      error_y: {
        type: "data",
        symmetric: false,
        array: s.points.map(function (p, i) { return p.ci_high === null ? 0 : p.ci_high - values[i]; }),
        arrayminus: s.points.map(function (p, i) { return p.ci_low === null ? 0 : values[i] - p.ci_low; })
      }
    };
  });
  Plotly.newPlot(element, traces, {
    margin: {t: 50, r: 20, b: 50, l: 50},
    xaxis: {title: {text: "night"}, type: "date", tickformat: "%Y-%m-%d", dtick: 86400000},
    yaxis: {title: {text: "primary metric"}},
    legend: {orientation: "h", x: 0, y: 1.02, yanchor: "bottom"}
  }, {displaylogo: false, responsive: true});
  element.on("plotly_click", function (event) {
    var link = event.points.length && event.points[0].customdata;
    if (link) { window.location.href = "../" + link; }
  });
})();
