/* The log dashboard: fetches every panel's query rows from dashboard.json and draws them with Chart.js.
 *
 * Each panel's rows are exactly those of its ready-made query; after drawing, a panel carries
 * data-rows="N" (rows drawn) so that a person, or the browser test, can tell a drawn panel from an
 * empty one. Panels whose query failed carry data-error.
 */
(function () {
  "use strict";

  var config = JSON.parse(document.getElementById("log-dashboard-config").textContent);
  var LIVE_EVERY_MS = 5000;
  var COLORS = {
    now: "#2f6fb3", previous: "#9aa7b4", s2: "#3a9d5d", s3: "#7d8ea3", s4: "#e0a21b", s5: "#c8423b",
    p50: "#6aa5dd", p95: "#2f6fb3", p99: "#173d66", people: "#2f6fb3", bots: "#e0a21b", other: "#b9c3cc",
  };
  var PALETTE = ["#2f6fb3", "#3a9d5d", "#e0a21b", "#c8423b", "#7b5ea7", "#1f9aa0", "#d36f2b", "#7d8ea3"];
  var charts = {};
  var shownRequests = [];  // the rows the last-requests panel shows, newest first
  var newestId = null;  // the id of the newest of them
  var numbers = new Intl.NumberFormat("en");

  Chart.defaults.animation = false;
  Chart.defaults.maintainAspectRatio = false;
  Chart.defaults.font.family = getComputedStyle(document.body).fontFamily;

  // ---- rows and formatting -------------------------------------------------------------------------

  function records(panel) {
    return panel.rows.map(function (row) {
      var record = {};
      panel.columns.forEach(function (column, i) { record[column] = row[i]; });
      return record;
    });
  }

  function sum(rows, column) {
    return rows.reduce(function (total, row) { return total + (Number(row[column]) || 0); }, 0);
  }

  function has(panel, column) { return panel.columns.indexOf(column) >= 0; }

  function firstOf(panel, candidates) {
    for (var i = 0; i < candidates.length; i++) { if (has(panel, candidates[i])) { return candidates[i]; } }
    return null;
  }

  function bytesText(n) {
    var units = ["B", "kB", "MB", "GB", "TB"];
    var i = 0;
    while (n >= 1000 && i < units.length - 1) { n /= 1000; i++; }
    return (i ? n.toFixed(n < 10 ? 1 : 0) : String(Math.round(n))) + " " + units[i];
  }

  function msText(ms) {
    if (ms == null) { return "–"; }
    return (ms < 1 ? ms.toFixed(2) : ms < 10 ? ms.toFixed(1) : numbers.format(Math.round(ms))) + " ms";
  }

  function timeLabel(text, daily) {
    var moment = new Date(text);
    if (isNaN(moment)) { return String(text); }
    var options = daily ? { month: "short", day: "numeric", timeZone: "UTC" }
      : { month: "short", day: "numeric", hour: "2-digit", minute: "2-digit", hour12: false, timeZone: "UTC" };
    return moment.toLocaleString("en", options);
  }

  // ---- panels: title link, state, charts -----------------------------------------------------------

  function section(id) { return document.querySelector('[data-panel="' + id + '"]'); }

  function titled(id, panel) {
    var element = section(id);
    var link = element.querySelector(".log-query-link");
    link.href = panel.url;
    link.textContent = panel.title;
    link.title = panel.description + " Open the query: its rows, SQL and CSV.";
    element.removeAttribute("data-error");
    var old = element.querySelector(".log-panel-error");
    if (old) { old.remove(); }
    if (panel.error) {
      element.setAttribute("data-error", panel.error);
      var message = document.createElement("p");
      message.className = "log-panel-error message-error";
      message.textContent = panel.error;
      element.appendChild(message);
    }
    return element;
  }

  function drawn(element, rows) {
    element.setAttribute("data-rows", String(rows));
    element.classList.toggle("log-no-rows", rows === 0);
  }

  function chart(id, type, data, options) {
    var element = section(id);
    if (charts[id]) {
      charts[id].data = data;
      charts[id].update("none");
      return charts[id];
    }
    var base = { responsive: true, plugins: { legend: { position: "bottom", labels: { boxWidth: 12 } } } };
    charts[id] = new Chart(element.querySelector("canvas"), { type: type, data: data, options: Object.assign(base, options || {}) });
    return charts[id];
  }

  function horizontalBars(id, panel, labelColumn, series, onClick) {
    var rows = records(panel).slice(0, 12);
    chart(id, "bar", {
      labels: rows.map(function (r) { return r[labelColumn]; }),
      datasets: series.map(function (s) {
        return { label: s.label, data: rows.map(function (r) { return r[s.column]; }), backgroundColor: s.color };
      }),
    }, {
      indexAxis: "y",
      plugins: { legend: { display: series.length > 1, position: "bottom" } },
      scales: { y: { ticks: { autoSkip: false, callback: function (v) {
        var text = String(this.getLabelForValue(v));
        return text.length > 32 ? text.slice(0, 31) + "…" : text;
      } } } },
      onClick: onClick ? function (event, elements) {
        if (elements.length) { onClick(rows[elements[0].index]); }
      } : undefined,
    });
    return rows.length;
  }

  function table(id, panel, columns) {
    var element = section(id);
    var holder = element.querySelector(".log-table");
    var shown = columns || panel.columns;
    var html = document.createElement("table");
    html.className = "rows-and-columns";
    var head = html.createTHead().insertRow();
    shown.forEach(function (column) {
      var th = document.createElement("th");
      th.textContent = column;
      head.appendChild(th);
    });
    var body = html.createTBody();
    records(panel).forEach(function (record) {
      var tr = body.insertRow();
      shown.forEach(function (column) {
        var td = tr.insertCell();
        var value = record[column];
        td.textContent = value == null ? "" : (typeof value === "number" ? numbers.format(value) : String(value));
        if (typeof value === "number") { td.className = "log-number"; }
      });
    });
    holder.replaceChildren(html);
    return panel.rows.length;
  }

  function narrowTo(params) {
    var query = new URLSearchParams(config.query_string);
    // A day replaces the period (a preset or a custom range); a path keeps it.
    if (params.start) { query.delete("range"); }
    Object.keys(params).forEach(function (key) { query.set(key, params[key]); });
    window.location.search = "?" + query.toString();
  }

  // The period's slots (hours or days) from its start, so that this period and the previous line up.
  function slots(start, end, daily) {
    var step = daily ? 86400000 : 3600000;
    var from = Math.floor(Date.parse(start) / step) * step;
    return { step: step, start: from, count: Math.max(1, Math.ceil((Date.parse(end) - from) / step)) };
  }

  function slotLabels(grid, daily) {
    var labels = [];
    for (var i = 0; i < grid.count; i++) { labels.push(timeLabel(new Date(grid.start + i * grid.step).toISOString(), daily)); }
    return labels;
  }

  // One value per slot from rows keyed by time; gaps are ``empty`` (0 for counts, null for latencies).
  function series(rows, timeColumn, valueColumn, grid, start, empty) {
    var values = new Array(grid.count).fill(empty);
    var from = start == null ? grid.start : Math.floor(Date.parse(start) / grid.step) * grid.step;
    rows.forEach(function (row) {
      var at = Math.floor((Date.parse(row[timeColumn]) - from) / grid.step);
      if (at >= 0 && at < grid.count && row[valueColumn] != null) { values[at] = (values[at] || 0) + Number(row[valueColumn]); }
    });
    return values;
  }

  function timeAxes(stacked) {
    return {
      x: { stacked: !!stacked, ticks: { maxTicksLimit: 8, maxRotation: 0 }, grid: { display: false } },
      y: { stacked: !!stacked, beginAtZero: true },
    };
  }

  function overTime(id, panel, type, columns, options) {
    var timeColumn = firstOf(panel, ["hour", "day"]);
    var daily = timeColumn === "day";
    var grid = slots(config.period.start, config.period.end, daily);
    var rows = records(panel);
    chart(id, type, {
      labels: slotLabels(grid, daily),
      datasets: columns.map(function (c) {
        return Object.assign({ label: c.label, data: series(rows, timeColumn, c.column, grid, null, c.empty === undefined ? 0 : c.empty),
          backgroundColor: c.color, borderColor: c.color }, c.style || {});
      }),
    }, Object.assign({ scales: timeAxes(options && options.stacked) }, options || {}));
    return rows.length;
  }

  var draw = {
    summary: function (panel, previous) {
      var now = records(panel)[0] || {}, before = previous && !previous.error ? records(previous)[0] || {} : {};
      summaries = { now: now, before: before };
      showKpis(now, before);
      return panel.rows.length;
    },

    traffic: function (panel, previous) {
      var daily = panel.query === "traffic_by_day";
      var timeColumn = daily ? "day" : "hour";
      var grid = slots(config.period.start, config.period.end, daily);
      var datasets = [
        { type: "bar", label: "people", data: series(records(panel), timeColumn, "people", grid, null, 0),
          backgroundColor: COLORS.people, stack: "now", order: 2 },
        { type: "bar", label: "bots", data: series(records(panel), timeColumn, "bots", grid, null, 0),
          backgroundColor: COLORS.bots, stack: "now", order: 2 },
      ];
      if (previous && !previous.error) {
        datasets.push({ type: "line", label: "previous period (all requests)", order: 1, borderColor: COLORS.previous,
          backgroundColor: COLORS.previous, pointRadius: 0, borderWidth: 2, tension: 0.25,
          data: series(records(previous), timeColumn, "requests", grid, config.period.previous_start, 0) });
      }
      chart("traffic", "bar", { labels: slotLabels(grid, daily), datasets: datasets }, {
        scales: { x: { stacked: true, ticks: { maxTicksLimit: 14, maxRotation: 0 }, grid: { display: false } },
          y: { stacked: true, beginAtZero: true } },
        onClick: function (event, elements) {
          if (!elements.length) { return; }
          var day = new Date(grid.start + elements[0].index * grid.step).toISOString().slice(0, 10);
          narrowTo({ start: day, end: day });
        },
      });
      return panel.rows.length;
    },

    status_over_time: function (panel) {
      var rows = records(panel);
      var classes = ["1xx", "2xx", "3xx", "4xx", "5xx", "no_response"].filter(function (c) {
        return has(panel, c) && sum(rows, c) > 0;
      });
      return overTime("status_over_time", panel, "bar", classes.map(function (c) {
        return { label: c.replace("_", " "), column: c, color: COLORS["s" + c.charAt(0)] || COLORS.other };
      }), { stacked: true });
    },

    latency_over_time: function (panel) {
      return overTime("latency_over_time", panel, "line", ["p50_ms", "p95_ms", "p99_ms"].map(function (c) {
        return { label: c.replace("_ms", "") + " ms", column: c, color: COLORS[c.slice(0, 3)], empty: null,
          style: { pointRadius: 2, borderWidth: 2, spanGaps: true, tension: 0.2 } };
      }), { scales: { x: timeAxes().x, y: { beginAtZero: true, title: { display: true, text: "ms" } } } });
    },

    top_paths: function (panel) {
      return horizontalBars("top_paths", panel, "path", [{ label: "requests", column: "requests", color: COLORS.now }],
        function (row) { narrowTo({ path_prefix: row.path }); });
    },

    top_routes: function (panel) {
      return horizontalBars("top_routes", panel, "route", [{ label: "requests", column: "requests", color: COLORS.now }]);
    },

    slowest_routes: function (panel) {
      return horizontalBars("slowest_routes", panel, "route", ["p50_ms", "p95_ms", "p99_ms"].map(function (c) {
        return { label: c.replace("_ms", "") + " ms", column: c, color: COLORS[c.slice(0, 3)] };
      }));
    },

    error_paths: function (panel) {
      return table("error_paths", panel, ["route", "client_errors", "server_errors", "requests", "error_percent"]);
    },

    bots_and_humans: function (panel) {
      var rows = records(panel);
      chart("bots_and_humans", "doughnut", {
        labels: rows.map(function (r) { return r.agent; }),
        datasets: [{ data: rows.map(function (r) { return r.requests; }),
          backgroundColor: rows.map(function (r) { return COLORS[r.agent] || COLORS.other; }) }],
      }, { plugins: { legend: { position: "right" } } });
      return rows.length;
    },

    agents: function (panel) {
      var rows = records(panel).slice(0, 10);
      chart("agents", "bar", {
        labels: rows.map(function (r) { return [r.browser, r.os, r.device].filter(Boolean).join(" · "); }),
        datasets: [{ label: "requests", data: rows.map(function (r) { return r.requests; }),
          backgroundColor: rows.map(function (r) { return r.agent === "bot" ? COLORS.bots : COLORS.people; }) }],
      }, { indexAxis: "y", plugins: { legend: { display: false } } });
      return panel.rows.length;
    },

    referring_sites: function (panel) {
      return horizontalBars("referring_sites", panel, "site", [{ label: "requests", column: "requests", color: COLORS.now }]);
    },

    referrers: function (panel) { return table("referrers", panel); },

    visitors_by_day: function (panel) {
      var rows = records(panel);
      chart("visitors_by_day", "bar", {
        labels: rows.map(function (r) { return timeLabel(r.day, true); }),
        datasets: [{ label: "people", data: rows.map(function (r) { return r.people; }), backgroundColor: COLORS.people, stack: "v" },
          { label: "bots", data: rows.map(function (r) { return r.bots; }), backgroundColor: COLORS.bots, stack: "v" }],
      }, { scales: { x: { stacked: true, grid: { display: false } }, y: { stacked: true, beginAtZero: true } } });
      return rows.length;
    },

    bytes_served: function (panel) {
      var rows = records(panel).slice(0, 10);
      chart("bytes_served", "bar", {
        labels: rows.map(function (r) { return r.route; }),
        datasets: [{ label: "bytes", data: rows.map(function (r) { return r.bytes; }), backgroundColor: COLORS.now }],
      }, { indexAxis: "y", plugins: { legend: { display: false } },
        scales: { x: { ticks: { callback: function (v) { return bytesText(v); } } } } });
      return panel.rows.length;
    },

    last_requests: function (panel, previous, data) {
      var shown = ["start", "method", "path", "status", "duration_ms", "bytes", "agent", "browser", "referrer"];
      var idAt = panel.columns.indexOf("id");
      if (newestId !== null) {
        // Live: only the rows newer than the newest shown are added, on top; 100 at most are kept.
        var fresh = panel.rows.filter(function (row) { return row[idAt] > newestId; });
        panel = Object.assign({}, panel, { rows: fresh.concat(shownRequests).slice(0, 100) });
      }
      shownRequests = panel.rows;
      if (panel.rows.length) { newestId = Math.max(newestId || 0, panel.rows[0][idAt]); }
      return table("last_requests", panel, shown);
    },
  };

  // ---- KPIs: this period against the previous ---------------------------------------------------------

  var KPIS = {
    requests: { value: function (s) { return s.requests; }, text: function (v) { return numbers.format(v); } },
    visitors: { value: function (s, v) { return v; }, text: function (v) { return numbers.format(v); } },
    errors: { value: function (s) { return s.server_error_percent; }, text: function (v) { return v.toFixed(1) + "%"; }, points: true },
    p95: { value: function (s) { return s.p95_ms; }, text: msText },
    bytes: { value: function (s) { return s.bytes; }, text: bytesText },
    bots: { value: function (s) { return s.bot_percent; }, text: function (v) { return Math.round(v) + "%"; }, points: true },
  };
  var visitors = { now: null, before: null };
  var summaries = null;  // the summary rows shown, this period and the previous, to show again with the visitors

  function showKpis(now, before) {
    Object.keys(KPIS).forEach(function (kpi) {
      var spec = KPIS[kpi];
      var element = document.querySelector('[data-kpi="' + kpi + '"]');
      var value = spec.value(now, visitors.now), previous = spec.value(before, visitors.before);
      element.querySelector(".log-kpi-value").textContent = value == null ? "–" : spec.text(value);
      var delta = element.querySelector(".log-kpi-delta");
      delta.className = "log-kpi-delta";
      delta.textContent = "";
      delta.removeAttribute("title");
      if (value == null || previous == null) { return; }
      var change = spec.points ? value - previous : (previous ? 100 * (value - previous) / previous : null);
      delta.title = "previous period: " + spec.text(previous);
      if (change == null) { delta.textContent = value ? "new" : ""; return; }
      var shown = Math.abs(change).toFixed(spec.points ? 1 : 0);
      if (Number(shown) === 0) { delta.textContent = "= " + (spec.points ? "0.0 pts" : "0%"); return; }
      delta.textContent = (change > 0 ? "▲ " : "▼ ") + shown + (spec.points ? " pts" : "%");
      delta.classList.add(change > 0 ? "log-up" : "log-down");
    });
  }

  function countVisitors(data) {
    // Distinct visitors are counted per day (a visitor is kept one day): the period's figure adds its days.
    if (data.panels.visitors_by_day) { visitors.now = sum(records(data.panels.visitors_by_day), "visitors"); }
    if (data.previous.visitors_by_day) { visitors.before = sum(records(data.previous.visitors_by_day), "visitors"); }
    if (data.panels.visitors_by_day && summaries) { showKpis(summaries.now, summaries.before); }
  }

  // ---- loading --------------------------------------------------------------------------------------

  function show(data) {
    if (data.panels.summary) {
      // The summary counts every request of the period: it alone tells an empty period.
      document.getElementById("log-empty").hidden = !data.empty;
      document.getElementById("log-dashboard").classList.toggle("log-is-empty", data.empty);
    }
    countVisitors(data);
    Object.keys(data.panels).forEach(function (id) {
      var panel = data.panels[id];
      var element = titled(id, panel);
      if (panel.error) { drawn(element, 0); return; }
      drawn(element, draw[id](panel, data.previous[id], data));
    });
  }

  function fetchPanels(panels) {
    var query = new URLSearchParams(config.query_string);
    query.set("panels", panels.join(","));
    return fetch(config.data_url + "?" + query.toString(), { credentials: "same-origin" })
      .then(function (response) { return response.json(); })
      .then(function (data) {
        if (!data.ok) { throw new Error(data.error); }
        show(data);
        return true;
      })
      .catch(function (error) {
        var message = document.createElement("p");
        message.className = "message-error";
        message.textContent = "The dashboard's data did not load (" + panels.join(", ") + "): " + error.message;
        document.getElementById("log-dashboard").prepend(message);
        return false;
      });
  }

  function loaded(results) {
    document.body.setAttribute("data-dashboard", results.every(Boolean) ? "drawn" : "failed");
    // How many loads have been drawn (the first, then each live refresh): a way to wait for the next one.
    document.body.setAttribute("data-loads", String(Number(document.body.getAttribute("data-loads") || 0) + 1));
  }

  // One request per panel, so that each draws as soon as its own query is done, not after the slowest.
  function loadAll() {
    return Promise.all(config.panels.map(function (id) { return fetchPanels([id]); })).then(loaded);
  }

  // Live: the next refresh is asked for once the last one is drawn, so slow queries never pile up.
  var live = false, timer = null;
  function refresh() {
    fetchPanels(config.live_panels).then(function (ok) {
      loaded([ok]);
      if (live) { timer = setTimeout(refresh, LIVE_EVERY_MS); }
    });
  }
  document.getElementById("log-live").addEventListener("change", function (event) {
    live = event.target.checked;
    document.body.classList.toggle("log-live-on", live);
    clearTimeout(timer);
    if (live) { timer = setTimeout(refresh, LIVE_EVERY_MS); }
  });

  loadAll();
})();
