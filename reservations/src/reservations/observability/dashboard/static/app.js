// The queue dashboard: polls /admin/queue/api/overview and updates the page in place.
// Plain DOM code, no build step. Every value from the server goes in through textContent.
"use strict";

(() => {
  const base = location.pathname.replace(/\/+$/, "");
  const api = `${base}/api`;
  const params = new URLSearchParams(location.search);
  const intervalMs = Math.max(250, Number(params.get("interval")) || 2000);
  const tokenKey = "reservations-admin-token";
  const svgNs = "http://www.w3.org/2000/svg";
  const channels = new Map(); // name -> {root, deadIds}
  let timer = null;
  let busy = false;

  const $ = (selector, root = document) => root.querySelector(selector);
  const number = new Intl.NumberFormat("en");

  function setStatus(state, text) {
    const el = $("#status");
    el.dataset.state = state;
    el.textContent = text;
  }

  function headers() {
    const token = sessionStorage.getItem(tokenKey);
    const h = { "Content-Type": "application/json" };
    if (token) h.Authorization = `Bearer ${token}`;
    return h;
  }

  async function call(path, options = {}) {
    const response = await fetch(`${api}${path}`, { ...options, headers: headers() });
    if (response.status === 401) {
      const body = await response.json().catch(() => ({}));
      const error = new Error(body.message || "unauthorized");
      error.unauthorized = true;
      throw error;
    }
    if (!response.ok) throw new Error(`${path}: HTTP ${response.status}`);
    return response.json();
  }

  function showLogin(message) {
    $("#login").hidden = false;
    $("#main").hidden = true;
    $("#login-error").textContent = sessionStorage.getItem(tokenKey) ? message : "";
    setStatus("locked", "admin token needed");
  }

  $("#login").addEventListener("submit", (event) => {
    event.preventDefault();
    sessionStorage.setItem(tokenKey, $("#token").value.trim());
    $("#token").value = "";
    poll();
  });

  function formatDuration(ms) {
    if (ms < 1000) return `${ms} ms`;
    if (ms < 60000) return `${(ms / 1000).toFixed(1)} s`;
    return `${(ms / 60000).toFixed(1)} min`;
  }

  function formatCount(name, value) {
    return name === "lag_ms" ? formatDuration(value) : number.format(value);
  }

  function ago(ms, now) {
    const s = Math.max(0, Math.round((now - ms) / 1000));
    if (s < 60) return `${s}s ago`;
    if (s < 3600) return `${Math.floor(s / 60)}m ${s % 60}s ago`;
    return new Date(ms).toLocaleString();
  }

  // -- charts -----------------------------------------------------------------------------------

  function svg(tag, attrs) {
    const el = document.createElementNS(svgNs, tag);
    for (const [k, v] of Object.entries(attrs)) el.setAttribute(k, v);
    return el;
  }

  function niceMax(value) {
    if (value <= 0) return 1;
    const exp = 10 ** Math.floor(Math.log10(value));
    for (const step of [1, 2, 2.5, 5, 10]) if (value <= step * exp) return step * exp;
    return 10 * exp;
  }

  function formatSpan(ms) {
    if (ms === 0) return "now";
    return ms >= 60000 ? `−${Math.round(ms / 60000)} min` : `−${Math.round(ms / 1000)} s`;
  }

  function drawChart(el, series, lines, now, format) {
    // Drawn at the element's own size, so that text is never stretched.
    const width = Math.max(200, Math.round(el.getBoundingClientRect().width)) || 600;
    const height = 150, top = 8, bottom = 18;
    el.setAttribute("viewBox", `0 0 ${width} ${height}`);
    // From the first sample (at least 30 s, at most the 10 minutes the server keeps) to now.
    const first = series.length ? series[0].at_ms : now;
    const windowMs = Math.min(10 * 60 * 1000, Math.max(30 * 1000, now - first));
    const start = now - windowMs;
    const max = niceMax(Math.max(0, ...series.flatMap((p) => lines.map((l) => p[l.key]))));
    const x = (t) => ((t - start) / windowMs) * width;
    const y = (v) => top + (1 - v / max) * (height - top - bottom);
    el.replaceChildren();
    for (const f of [0, 0.5, 1]) {
      el.append(svg("line", { x1: 0, x2: width, y1: y(max * f), y2: y(max * f), class: "grid" }));
    }
    for (const [fraction, anchor] of [[1, "start"], [0.5, "middle"], [0, "end"]]) {
      const label = svg("text", { x: x(now - fraction * windowMs), y: height - 4, class: "axis",
                                  "text-anchor": anchor });
      label.textContent = formatSpan(fraction * windowMs);
      el.append(label);
    }
    const maxLabel = svg("text", { x: 4, y: top + 10, class: "axis" });
    maxLabel.textContent = format(max);
    el.append(maxLabel);
    for (const line of lines) {
      const points = series.filter((p) => p.at_ms >= start)
        .map((p) => `${x(p.at_ms).toFixed(1)},${y(p[line.key]).toFixed(1)}`);
      if (points.length) {
        el.append(svg("polyline", { points: points.join(" "), class: `line ${line.cls}` }));
      }
    }
  }

  // -- channels ---------------------------------------------------------------------------------

  function channelView(name) {
    let view = channels.get(name);
    if (view) return view;
    const root = $("#channel-template").content.firstElementChild.cloneNode(true);
    root.dataset.channel = name;
    $(".channel-name", root).textContent = name;
    $(".redrive-all", root).addEventListener("click", () => act("redrive", name, null));
    $(".delete-all", root).addEventListener("click", () => {
      if (confirm(`Delete every dead letter of ${name}?`)) act("delete-dead", name, null);
    });
    $("#channels").append(root);
    view = { root, deadKey: "" };
    channels.set(name, view);
    return view;
  }

  function renderChannel(ch, now) {
    const view = channelView(ch.name);
    const root = view.root;
    for (const el of root.querySelectorAll("[data-count]")) {
      const key = el.dataset.count;
      $(".value", el).textContent = formatCount(key, ch[key]);
      el.dataset.value = String(ch[key]);
    }
    root.classList.toggle("has-dead", ch.dead > 0);
    $(".rates", root).textContent =
      `${ch.processed_per_s.toFixed(1)} processed/s · ${ch.produced_per_s.toFixed(1)} produced/s (last minute)`;
    drawChart($(".chart.throughput", root), ch.series,
      [{ key: "processed_per_s", cls: "processed" }, { key: "produced_per_s", cls: "produced" }],
      now, (v) => `${number.format(v)}/s`);
    drawChart($(".chart.lag", root), ch.series, [{ key: "lag_ms", cls: "lag" }], now,
      formatDuration);
    renderDeadLetters(view, ch, now);
  }

  function renderDeadLetters(view, ch, now) {
    const root = view.root;
    const letters = ch.dead_letters;
    $(".no-dead", root).hidden = letters.length > 0;
    $(".dead-table", root).hidden = letters.length === 0;
    $(".actions", root).hidden = ch.dead === 0;
    $(".dead-shown", root).textContent =
      ch.dead > letters.length ? `(newest ${letters.length} of ${number.format(ch.dead)})` :
      letters.length ? `(${letters.length})` : "";
    const body = $(".dead-table tbody", root);
    const key = letters.map((d) => `${d.id}:${d.tries}`).join(",");
    if (key === view.deadKey) {
      for (const row of body.rows) {
        $(".dead-at", row).textContent = ago(Number(row.dataset.deadAt), now);
      }
      return;
    }
    view.deadKey = key;
    body.replaceChildren(...letters.map((d) => deadRow(ch.name, d, now)));
  }

  function cell(text, cls) {
    const td = document.createElement("td");
    if (cls) td.className = cls;
    td.textContent = text;
    return td;
  }

  function deadRow(channel, d, now) {
    const tr = document.createElement("tr");
    tr.dataset.deadId = d.id;
    tr.dataset.deadAt = String(d.dead_at_ms);
    const payload = document.createElement("td");
    const pre = document.createElement("pre");
    pre.className = "payload";
    pre.textContent = d.payload + (d.payload_truncated ? " …" : "");
    pre.title = d.decodes ? "decodes as the channel's type" : "does not decode as the channel's type";
    payload.append(pre);
    const error = cell(d.error, "error-text");
    const actions = document.createElement("td");
    actions.className = "row-actions";
    const redrive = document.createElement("button");
    redrive.type = "button";
    redrive.className = "redrive";
    redrive.textContent = "Redrive";
    redrive.addEventListener("click", () => act("redrive", channel, [d.id]));
    const del = document.createElement("button");
    del.type = "button";
    del.className = "delete danger";
    del.textContent = "Delete";
    del.addEventListener("click", () => act("delete-dead", channel, [d.id]));
    actions.append(redrive, del);
    tr.append(cell(d.id, "mono"), cell(String(d.tries), "num"), error, payload,
              cell(ago(d.dead_at_ms, now), "dead-at"), actions);
    return tr;
  }

  async function act(action, channel, ids) {
    try {
      const result = await call(`/${action}`, {
        method: "POST",
        body: JSON.stringify({ channel, ids }),
      });
      const n = result.moved ?? result.deleted ?? 0;
      setStatus("ok", `${action === "redrive" ? "redrove" : "deleted"} ${n} in ${channel}`);
    } catch (error) {
      if (error.unauthorized) return showLogin(error.message);
      setStatus("error", `${action} failed: ${error.message}`);
    }
    poll();
  }

  // -- events -----------------------------------------------------------------------------------

  function renderEvents(events) {
    $("#no-events").hidden = events.length > 0;
    const body = $("#events tbody");
    body.replaceChildren(...events.map((e) => {
      const tr = document.createElement("tr");
      tr.dataset.eventId = String(e.id);
      const sold = document.createElement("td");
      const bar = document.createElement("div");
      bar.className = "bar";
      const fill = document.createElement("span");
      fill.style.width = `${e.capacity ? (100 * e.reserved) / e.capacity : 0}%`;
      bar.append(fill);
      sold.append(bar);
      const remaining = cell(number.format(e.remaining), "num");
      remaining.dataset.field = "remaining";
      if (e.remaining === 0) remaining.classList.add("sold-out");
      const capacity = cell(number.format(e.capacity), "num");
      capacity.dataset.field = "capacity";
      const reserved = cell(number.format(e.reserved), "num");
      reserved.dataset.field = "reserved";
      const pending = cell(number.format(e.pending), "num");
      pending.dataset.field = "pending";
      const lost = cell(number.format(e.lost), "num");
      lost.dataset.field = "lost";
      if (e.lost > 0) lost.classList.add("lost");
      tr.append(cell(String(e.id), "num"), cell(e.name), capacity, reserved, remaining, pending,
                lost, sold);
      return tr;
    }));
  }

  // -- polling ----------------------------------------------------------------------------------

  async function poll() {
    clearTimeout(timer);
    if (busy) {
      timer = setTimeout(poll, 50);
      return;
    }
    busy = true;
    try {
      const data = await call("/overview");
      $("#login").hidden = true;
      $("#main").hidden = false;
      for (const ch of data.channels) renderChannel(ch, data.now_ms);
      renderEvents(data.events);
      const problems = data.errors.length ? ` · ${data.errors.join("; ")}` : "";
      setStatus(data.errors.length ? "error" : "live",
        `live · updated ${new Date(data.now_ms).toLocaleTimeString()}${problems}`);
      document.body.dataset.polls = String(Number(document.body.dataset.polls || 0) + 1);
    } catch (error) {
      if (error.unauthorized) {
        busy = false;
        return showLogin(error.message);
      }
      setStatus("error", `not updated: ${error.message}`);
    }
    busy = false;
    timer = setTimeout(poll, intervalMs);
  }

  poll();
})();
