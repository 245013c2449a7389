// Charts of the staff UI, drawn with uPlot (static/vendor/uplot) on a canvas. CSP-clean: no
// inline code or style attributes; uPlot sizes its elements through the CSSOM (element.style),
// which CSP allows. uPlot does not animate, so there is nothing to turn off for
// prefers-reduced-motion.
//
// Each chart is an element with data-chart="<kind>" and data-source="<id>": the id of a
// json_script element holding its data. Labels come translated from data-label-* attributes.
// The chart is drawn once; after every htmx swap (the status page's 2 s poll brings its summary
// out of band, the chart's own element is kept by hx-preserve) the new JSON is read and handed
// to setData. data-points on the element says how many points are drawn (the tests read it).
(function () {
  "use strict";

  if (typeof window.uPlot === "undefined") {
    return;
  }
  var uPlot = window.uPlot;
  var lang = document.documentElement.lang || undefined;
  var charts = new WeakMap(); // element -> {plot, source, state}

  function cssVar(name, fallback) {
    var value = getComputedStyle(document.documentElement).getPropertyValue(name).trim();
    return value || fallback;
  }

  function colours() {
    return {
      success: cssVar("--bs-success", "#198754"),
      successRgb: cssVar("--bs-success-rgb", "25, 135, 84"),
      danger: cssVar("--bs-danger", "#dc3545"),
      text: cssVar("--bs-secondary-color", "#6c757d"),
      grid: cssVar("--bs-border-color", "#dee2e6"),
    };
  }

  var numberFormat = new Intl.NumberFormat(lang, { maximumFractionDigits: 0 });

  function formatNumber(value) {
    return value == null ? "–" : numberFormat.format(value);
  }

  // Whole numbers only on the count axis.
  var COUNT_STEPS = [1, 2, 5, 10, 20, 50, 100, 200, 500, 1e3, 2e3, 5e3, 1e4, 2e4, 5e4, 1e5, 2e5, 5e5, 1e6, 1e7];

  function countAxis(c) {
    return {
      stroke: c.text,
      grid: { stroke: c.grid, width: 1 },
      ticks: { stroke: c.grid, width: 1 },
      incrs: COUNT_STEPS,
      size: 56,
      values: function (u, splits) {
        return splits.map(formatNumber);
      },
    };
  }

  function countScale() {
    return {
      range: function (u, min, max) {
        return [0, max > 0 ? Math.ceil(max * 1.05) : 1];
      },
    };
  }

  function widthOf(element) {
    return Math.max(element.clientWidth, 240);
  }

  // Progress over time: [[epoch seconds, sent, failed or error], ...] ------------------------------

  var timeOnly = new Intl.DateTimeFormat(lang, { hour: "2-digit", minute: "2-digit" });
  var timeSeconds = new Intl.DateTimeFormat(lang, { hour: "2-digit", minute: "2-digit", second: "2-digit" });
  var dayAndTime = new Intl.DateTimeFormat(lang, { day: "numeric", month: "short", hour: "2-digit", minute: "2-digit" });
  var fullTime = new Intl.DateTimeFormat(lang, { dateStyle: "medium", timeStyle: "medium" });

  function isPoint(point) {
    return (
      Array.isArray(point) &&
      point.length === 3 &&
      point.every(function (n) {
        return typeof n === "number" && isFinite(n);
      })
    );
  }

  var MIN_SPAN_SECONDS = 60;

  var timeline = {
    data: function (points) {
      points = (Array.isArray(points) ? points.filter(isPoint) : []).slice();
      points.sort(function (a, b) {
        return a[0] - b[0];
      });
      return [
        points.map(function (p) {
          return p[0];
        }),
        points.map(function (p) {
          return p[1];
        }),
        points.map(function (p) {
          return p[2];
        }),
      ];
    },
    options: function (element) {
      var c = colours();
      return {
        width: widthOf(element),
        height: 200,
        padding: [12, 36, 0, 0], // room for the last time label
        scales: {
          x: {
            time: true,
            // At least a minute wide: a send that took a second would otherwise get ticks a
            // few milliseconds apart, all labelled with the same second.
            range: function (u, min, max) {
              return max - min < MIN_SPAN_SECONDS ? [min, min + MIN_SPAN_SECONDS] : [min, max];
            },
          },
          y: countScale(),
        },
        cursor: { drag: { x: false, y: false } }, // no zooming: each poll would reset it
        series: [
          {
            label: element.dataset.labelTime,
            value: function (u, v) {
              return v == null ? "–" : fullTime.format(new Date(v * 1000));
            },
          },
          {
            label: element.dataset.labelSent,
            stroke: c.success,
            fill: "rgba(" + c.successRgb + ", 0.12)",
            width: 2,
            value: function (u, v) {
              return formatNumber(v);
            },
          },
          {
            label: element.dataset.labelFailed,
            stroke: c.danger,
            width: 2,
            dash: [6, 3],
            value: function (u, v) {
              return formatNumber(v);
            },
          },
        ],
        axes: [
          {
            stroke: c.text,
            grid: { stroke: c.grid, width: 1 },
            ticks: { stroke: c.grid, width: 1 },
            space: 70,
            values: function (u, splits) {
              var span = u.scales.x.max - u.scales.x.min;
              var format = span < 600 ? timeSeconds : span < 2 * 86400 ? timeOnly : dayAndTime;
              return splits.map(function (v) {
                return format.format(new Date(v * 1000));
              });
            },
          },
          countAxis(c),
        ],
      };
    },
  };

  // Sends per week: [{"week": "2026-01-05", "sent": 12}, ...] ----------------------------------------

  var weekFormat = new Intl.DateTimeFormat(lang, { day: "numeric", month: "short" });

  function weekLabel(iso) {
    var date = new Date(iso + "T00:00:00"); // no zone: local midnight, the week's Monday
    return isNaN(date) ? String(iso) : weekFormat.format(date);
  }

  var weekly = {
    data: function (weeks, state) {
      weeks = Array.isArray(weeks) ? weeks : [];
      state.labels = weeks.map(function (w) {
        return weekLabel(w && w.week);
      });
      return [
        weeks.map(function (w, i) {
          return i;
        }),
        weeks.map(function (w) {
          return w && typeof w.sent === "number" ? w.sent : 0;
        }),
      ];
    },
    options: function (element, state) {
      var c = colours();
      return {
        width: widthOf(element),
        height: 160,
        scales: {
          x: {
            time: false,
            range: function () {
              return [-0.5, Math.max(state.labels.length, 1) - 0.5];
            },
          },
          y: countScale(),
        },
        cursor: { drag: { x: false, y: false }, points: { show: false } },
        series: [
          {
            label: element.dataset.labelWeek,
            value: function (u, v) {
              return v == null ? "–" : state.labels[v] || "";
            },
          },
          {
            label: element.dataset.labelSent,
            stroke: c.success,
            fill: c.success,
            width: 0,
            points: { show: false },
            paths: uPlot.paths.bars({ size: [0.7, 48] }),
            value: function (u, v) {
              return formatNumber(v);
            },
          },
        ],
        axes: [
          {
            stroke: c.text,
            grid: { show: false },
            ticks: { stroke: c.grid, width: 1 },
            incrs: [1, 2, 3, 4, 6],
            space: 48,
            values: function (u, splits) {
              return splits.map(function (v) {
                return Number.isInteger(v) ? state.labels[v] || "" : "";
              });
            },
          },
          countAxis(c),
        ],
      };
    },
  };

  var KINDS = { timeline: timeline, weekly: weekly };

  // Drawing ---------------------------------------------------------------------------------------

  function label(plot, element) {
    var canvas = plot.root.querySelector("canvas");
    if (!canvas) {
      return;
    }
    canvas.setAttribute("role", "img");
    canvas.setAttribute("aria-label", element.dataset.label || "");
    if (element.dataset.describedBy) {
      canvas.setAttribute("aria-describedby", element.dataset.describedBy);
    }
  }

  function draw(element) {
    var kind = KINDS[element.dataset.chart];
    var source = document.getElementById(element.dataset.source);
    if (!kind || !source) {
      return;
    }
    var chart = charts.get(element);
    var text = source.textContent;
    if (chart && chart.source === text && element.contains(chart.plot.root)) {
      return;
    }
    var parsed;
    try {
      parsed = JSON.parse(text);
    } catch (error) {
      return;
    }
    var state = chart ? chart.state : { labels: [] };
    var data = kind.data(parsed, state);
    if (chart && element.contains(chart.plot.root)) {
      chart.plot.setData(data);
      chart.source = text;
    } else {
      var plot = new uPlot(kind.options(element, state), data, element);
      label(plot, element);
      charts.set(element, { plot: plot, source: text, state: state });
      if (window.ResizeObserver) {
        new ResizeObserver(function () {
          if (plot.width !== widthOf(element)) {
            plot.setSize({ width: widthOf(element), height: plot.height });
          }
        }).observe(element);
      }
    }
    element.dataset.points = String(data[0].length);
  }

  function drawAll() {
    document.querySelectorAll("[data-chart]").forEach(draw);
  }

  document.addEventListener("htmx:afterSettle", drawAll);
  document.addEventListener("htmx:oobAfterSwap", drawAll);
  drawAll(); // deferred: the document is parsed
})();
