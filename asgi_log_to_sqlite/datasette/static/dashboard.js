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
  var newestRequest = null;
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

  function msText(ms) { return ms == null ? "–" : (ms < 10 ? ms.toFixed(1) : numbers.format(Math.round(ms))) + " ms"; }

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
    Object.keys(params).forEach(function (key) {
      query.delete("range");
      query.set(key, params[key]);
    });
    window.location.search = "?" + query.toString();
  }

  // The period's slots (hours or days) from its start, so that this period and the previous line up.
  function slots(period, daily) {
    var step = daily ? 86400000 : 3600000;
    var start = Date.parse(period.start);
    var count = Math.round((Date.parse(period.end) - start) / step);
    return { step: step, start: start, count: count };
  }

  function series(rows, timeColumn, valueColumn, start, grid) {
    var values = new Array(grid.count).fill(0);
    rows.forEach(function (row) {
      var at = Math.floor((Date.parse(row[timeColumn]) - start) / grid.step);
      if (at >= 0 && at < grid.count) { values[at] += Number(row[valueColumn]) || 0; }
    });
    return values;
  }

  var draw = {
    traffic: function (panel, previous) {
      var daily = panel.query === "traffic_by_day";
      var timeColumn = daily ? "day" : "hour";
      var grid = slots(config.period, daily);
      var labels = [];
      for (var i = 0; i < grid.count; i++) {
        labels.push(timeLabel(new Date(grid.start + i * grid.step).toISOString(), daily));
      }
      var datasets = [{ type: "bar", label: "requests", data: series(records(panel), timeColumn, "requests", grid.start, grid),
        backgroundColor: COLORS.now, order: 2 }];
      if (previous && !previous.error) {
        datasets.push({ type: "line", label: "previous period", order: 1, borderColor: COLORS.previous,
          backgroundColor: COLORS.previous, pointRadius: 0, borderWidth: 2, tension: 0.25,
          data: series(records(previous), timeColumn, "requests", Date.parse(config.period.previous_start), grid) });
      }
      chart("traffic", "bar", { labels: labels, datasets: datasets }, {
        scales: { x: { ticks: { maxTicksLimit: 14, maxRotation: 0 } }, y: { beginAtZero: true } },
        onClick: function (event, elements) {
          if (!elements.length) { return; }
          var day = new Date(grid.start + elements[0].index * grid.step).toISOString().slice(0, 10);
          narrowTo({ start: day, end: day });
        },
      });
      return panel.rows.length;
    },

    status_over_time: function (panel) {
      var timeColumn = firstOf(panel, ["hour", "day"]);
      var classes = panel.columns.filter(function (c) { return c !== timeColumn; });
      var rows = records(panel);
      chart("status_over_time", "bar", {
        labels: rows.map(function (r) { return timeLabel(r[timeColumn], timeColumn === "day"); }),
        datasets: classes.map(function (c, i) {
          var digit = (c.match(/[1-5]/) || [""])[0];
          return { label: c, data: rows.map(function (r) { return r[c]; }),
            backgroundColor: COLORS["s" + digit] || PALETTE[i % PALETTE.length] };
        }),
      }, { scales: { x: { stacked: true, ticks: { maxTicksLimit: 8, maxRotation: 0 } }, y: { stacked: true, beginAtZero: true } } });
      return rows.length;
    },

    top_paths: function (panel) {
      return horizontalBars("top_paths", panel, "path", [{ label: "requests", column: "requests", color: COLORS.now }],
        function (row) { narrowTo({ path_prefix: row.path }); });
    },

    top_routes: function (panel) {
      var label = firstOf(panel, ["route", "path"]);
      return horizontalBars("top_routes", panel, label, [{ label: "requests", column: "requests", color: COLORS.now }]);
    },

    slowest_routes: function (panel) {
      var label = firstOf(panel, ["route", "path"]);
      var percentiles = panel.columns.filter(function (c) { return /^p(50|95|99)/.test(c); });
      return horizontalBars("slowest_routes", panel, label, percentiles.map(function (c) {
        return { label: c.replace("_ms", "") + " ms", column: c, color: COLORS[c.slice(0, 3)] };
      }));
    },

    error_paths: function (panel) { return table("error_paths", panel); },

    agents: function (panel) {
      var rows = records(panel);
      var label = firstOf(panel, ["agent", "browser", "name", "kind"]);
      var value = firstOf(panel, ["requests", "hits"]);
      var people = rows.filter(function (r) { return !r.is_bot; }), bots = rows.filter(function (r) { return r.is_bot; });
      var shown = people.slice(0, 6).concat(bots.slice(0, 4));
      chart("agents", "bar", {
        labels: shown.map(function (r) { return r[label] + (r.is_bot ? " (bot)" : ""); }),
        datasets: [{ label: value, data: shown.map(function (r) { return r[value]; }),
          backgroundColor: shown.map(function (r) { return r.is_bot ? COLORS.bots : COLORS.people; }) }],
      }, { indexAxis: "y", plugins: { legend: { display: false } } });
      return rows.length;
    },

    referring_sites: function (panel) {
      var label = firstOf(panel, ["site", "host", "referring_site"]);
      return horizontalBars("referring_sites", panel, label, [{ label: "requests", column: firstOf(panel, ["requests", "hits"]), color: COLORS.now }]);
    },

    referrers: function (panel) { return table("referrers", panel); },

    visitors_by_day: function (panel, previous) {
      var rows = records(panel);
      var value = firstOf(panel, ["visitors", "people"]);
      chart("visitors_by_day", "line", {
        labels: rows.map(function (r) { return timeLabel(r.day, true); }),
        datasets: [{ label: value, data: rows.map(function (r) { return r[value]; }), borderColor: COLORS.now,
          backgroundColor: COLORS.now, tension: 0.25 }],
      }, { scales: { y: { beginAtZero: true } } });
      return rows.length;
    },

    bytes_served: function (panel) {
      var rows = records(panel);
      var label = panel.columns[0];
      var value = firstOf(panel, ["bytes", "body_bytes"]);
      chart("bytes_served", "bar", {
        labels: rows.map(function (r) { return String(r[label]); }),
        datasets: [{ label: "bytes", data: rows.map(function (r) { return r[value]; }), backgroundColor: COLORS.now }],
      }, { plugins: { legend: { display: false } }, scales: { y: { ticks: { callback: function (v) { return bytesText(v); } } } } });
      return rows.length;
    },

    last_requests: function (panel) {
      if (panel.rows.length) {
        var idColumn = panel.columns.indexOf("id");
        newestRequest = Math.max(newestRequest || 0, Number(panel.rows[0][idColumn]) || 0);
      }
      return table("last_requests", panel);
    },
  };

  // ---- KPIs ---------------------------------------------------------------------------------------

  function totals(panels) {
    var traffic = records(panels.traffic || { columns: [], rows: [] });
    var requests = sum(traffic, "requests");
    var figures = {
      requests: requests,
      errors: requests ? 100 * sum(traffic, "server_errors") / requests : null,
      bytes: sum(traffic, "bytes"),
      bots: requests ? 100 * sum(traffic, "bots") / requests : null,
    };
    if (panels.visitors_by_day) { figures.visitors = sum(records(panels.visitors_by_day), firstOf(panels.visitors_by_day, ["visitors"])); }
    if (panels.slowest_routes) {
      // The busiest route's p95 stands for the site until a whole-period percentile query exists.
      var routes = records(panels.slowest_routes);
      figures.p95 = routes.length ? routes[0][firstOf(panels.slowest_routes, ["p95_ms", "p95"])] : null;
    }
    return figures;
  }

  function showKpis(data) {
    var now = totals(data.panels), before = totals(data.previous);
    var text = {
      requests: function (v) { return numbers.format(v); },
      visitors: function (v) { return numbers.format(v); },
      errors: function (v) { return v == null ? "–" : v.toFixed(1) + "%"; },
      p95: msText,
      bytes: bytesText,
      bots: function (v) { return v == null ? "–" : Math.round(v) + "%"; },
    };
    Object.keys(text).forEach(function (kpi) {
      var element = document.querySelector('[data-kpi="' + kpi + '"]');
      var value = now[kpi], previous = before[kpi];
      element.querySelector(".log-kpi-value").textContent = value == null ? "–" : text[kpi](value);
      var delta = element.querySelector(".log-kpi-delta");
      delta.className = "log-kpi-delta";
      if (value == null || previous == null) { delta.textContent = ""; return; }
      var relative = kpi === "errors" || kpi === "bots";
      var change = relative ? value - previous : (previous ? 100 * (value - previous) / previous : null);
      if (change == null) { delta.textContent = "new"; return; }
      delta.textContent = (change >= 0 ? "▲ " : "▼ ") + Math.abs(change).toFixed(relative ? 1 : 0) + (relative ? " pts" : "%");
      delta.classList.add(change >= 0 ? "log-up" : "log-down");
      delta.title = "previous period: " + text[kpi](previous);
    });
  }

  // ---- loading --------------------------------------------------------------------------------------

  function show(data) {
    var empty = data.empty;
    document.getElementById("log-empty").hidden = !empty;
    document.getElementById("log-dashboard").classList.toggle("log-is-empty", empty);
    showKpis(data);
    Object.keys(data.panels).forEach(function (id) {
      var panel = data.panels[id];
      var element = titled(id, panel);
      if (panel.error) { drawn(element, 0); return; }
      drawn(element, draw[id](panel, data.previous[id]));
    });
    document.body.setAttribute("data-dashboard", "drawn");
  }

  function load(panels) {
    var query = new URLSearchParams(config.query_string);
    if (panels) { query.set("panels", panels.join(",")); }
    return fetch(config.data_url + "?" + query.toString(), { credentials: "same-origin" })
      .then(function (response) { return response.json(); })
      .then(function (data) {
        if (!data.ok) { throw new Error(data.error); }
        show(data);
      })
      .catch(function (error) {
        document.body.setAttribute("data-dashboard", "failed");
        var message = document.createElement("p");
        message.className = "message-error";
        message.textContent = "The dashboard's data did not load: " + error.message;
        document.getElementById("log-dashboard").prepend(message);
      });
  }

  var timer = null;
  document.getElementById("log-live").addEventListener("change", function (event) {
    document.body.classList.toggle("log-live-on", event.target.checked);
    if (timer) { clearInterval(timer); timer = null; }
    if (event.target.checked) {
      timer = setInterval(function () { load(config.live_panels); }, LIVE_EVERY_MS);
    }
  });

  load(null);
})();
