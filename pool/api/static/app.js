// elastic-pool dashboard: one card per domain, a live plot, nodes by state, the decision log.
// Plain DOM and SVG, no dependencies. Everything that comes from the server is shown with
// textContent (never parsed as HTML): event text is untrusted.
"use strict";

(() => {
  const TOKEN_KEY = "elastic-pool.token";
  const WINDOW = 3600;           // seconds the plot shows
  const EVENTS_KEPT = 300;       // events of the selected domain kept (node moves included)
  const EVENTS_SHOWN = 80;       // entries of the decision log drawn
  const NODES_SHOWN = 120;       // node chips per state before "and N more"
  const STALE_AFTER = 45000;     // ms without a byte (keepalives come every 15 s): reconnect
  const BACKOFF_MIN = 500;
  const BACKOFF_MAX = 30000;
  const STATES = ["REQUESTED", "PENDING", "STARTED", "JOINED", "DRAINING", "TERMINATING", "UNHEALTHY",
                  "FAILED", "TERMINATED"];
  const SVG_NS = "http://www.w3.org/2000/svg";

  const $ = (id) => document.getElementById(id);
  const S = {
    token: sessionStorage.getItem(TOKEN_KEY),
    me: null,                // {name, role}
    domains: new Map(),      // name -> DomainSummary
    cards: new Map(),        // name -> {root, fields...}
    selected: null,
    points: [],              // the selected domain's history: {time, value, intended, actual}
    events: [],              // the selected domain's events, newest first
    nodes: [],
    stream: null,            // AbortController of the live stream
    generation: 0,           // bumped on sign-out: stale loops stop
    stale: false,            // the list could not be read: read it again when the stream connects
  };

  // ---------------------------------------------------------------- helpers

  function el(tag, props, ...children) {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(props || {})) {
      if (v === null || v === undefined || v === false) continue;
      if (k === "class") node.className = v;
      else if (k === "text") node.textContent = String(v);
      else if (k === "on") for (const [ev, fn] of Object.entries(v)) node.addEventListener(ev, fn);
      else node.setAttribute(k, v === true ? "" : String(v));
    }
    for (const c of children) if (c !== null && c !== undefined) node.append(c);  // strings become text nodes
    return node;
  }

  function svg(tag, attrs, text) {
    const node = document.createElementNS(SVG_NS, tag);
    for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, String(v));
    if (text !== undefined) node.textContent = String(text);
    return node;
  }

  const canOperate = () => S.me !== null && (S.me.role === "operator" || S.me.role === "admin");
  const num = (v) => (typeof v === "number" && Number.isFinite(v) ? v : null);
  const short = (v, n = 300) => {
    let s = typeof v === "string" ? v : JSON.stringify(v);
    if (s === undefined) s = String(v);
    return s.length > n ? s.slice(0, n - 1) + "…" : s;
  };
  const fmt = (v) => (v === null ? "–" : Math.abs(v) >= 1000 || Number.isInteger(v) ? String(Math.round(v * 100) / 100)
    : String(Number(v.toPrecision(3))));
  const clock = (t) => {
    const d = new Date(t * 1000);
    return [d.getHours(), d.getMinutes(), d.getSeconds()].map((x) => String(x).padStart(2, "0")).join(":");
  };
  const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

  function debounce(fn, ms) {
    let timer = null;
    return (...args) => { clearTimeout(timer); timer = setTimeout(() => fn(...args), ms); };
  }

  class HttpError extends Error {
    constructor(status, message) { super(message); this.status = status; }
  }

  async function api(path, options = {}) {
    const headers = { Authorization: `Bearer ${S.token}`, Accept: "application/json" };
    if (options.body !== undefined) headers["Content-Type"] = "application/json";
    const r = await fetch(path, {
      method: options.method || "GET", headers, cache: "no-store",
      body: options.body === undefined ? undefined : JSON.stringify(options.body),
    });
    let data = null;
    try { data = await r.json(); } catch (e) { data = null; }
    if (r.status === 401) { signOut("the server refused the token: sign in again"); throw new HttpError(401, "signed out"); }
    if (!r.ok) {
      const why = data && typeof data.error === "string" ? data.error : `HTTP ${r.status}`;
      throw new HttpError(r.status, why);
    }
    return data;
  }

  function notice(text) {
    const n = $("notice");
    n.textContent = text || "";
    n.hidden = !text;
  }

  // ---------------------------------------------------------------- sign-in

  function showLogin(message) {
    $("app").hidden = true;
    $("signout").hidden = true;
    $("who").textContent = "";
    $("login").hidden = false;
    $("login-error").textContent = message || "";
    $("token").value = "";
    $("token").focus();
  }

  function signOut(message) {
    S.generation += 1;
    if (S.stream) S.stream.abort();
    S.stream = null;
    S.token = null;
    S.me = null;
    sessionStorage.removeItem(TOKEN_KEY);
    S.domains.clear();
    S.cards.clear();
    $("domains").replaceChildren();
    setConn("off", "offline");
    showLogin(message);
  }

  async function signIn(token) {
    S.token = token;
    let me;
    try {
      me = await api("/whoami");
    } catch (e) {
      if (e.status !== 401) showLogin(`cannot sign in: ${e.message}`);
      return;
    }
    if (!me || typeof me.name !== "string" || typeof me.role !== "string") {
      showLogin("the server's /whoami answer is not {name, role}");
      return;
    }
    sessionStorage.setItem(TOKEN_KEY, token);
    S.me = { name: me.name, role: me.role };
    $("who").textContent = `${me.name} (${me.role})`;
    $("signout").hidden = false;
    $("login").hidden = true;
    $("app").hidden = false;
    document.body.dataset.role = me.role;
    try {
      await loadDomains();
    } catch (e) {
      if (e.status === 401) return;
      S.stale = true;           // read again once the stream connects
      notice(`cannot list domains: ${e.message}`);
    }
    const gen = S.generation;
    liveStream(gen);
    tickLoop(gen);
  }

  // ---------------------------------------------------------------- domains

  async function loadDomains() {
    const data = await api("/domains");
    const list = Array.isArray(data && data.domains) ? data.domains : [];
    const seen = new Set();
    for (const d of list) {
      if (!d || typeof d.name !== "string") continue;
      seen.add(d.name);
      updateDomain(d);
    }
    for (const name of [...S.domains.keys()]) if (!seen.has(name)) removeDomain(name);
    $("no-domains").hidden = S.domains.size > 0;
    if ((S.selected === null || !S.domains.has(S.selected)) && S.domains.size > 0) {
      let wanted = "";
      try { wanted = decodeURIComponent(location.hash.slice(1)); } catch (e) { /* a malformed link: ignored */ }
      await select(S.domains.has(wanted) ? wanted : [...S.domains.keys()].sort()[0]);
    } else if (S.domains.size === 0) {
      S.selected = null;
      $("detail").hidden = true;
    }
  }
  const reloadDomains = debounce(() => loadDomains().catch((e) => notice(`cannot list domains: ${e.message}`)), 300);

  function removeDomain(name) {
    const card = S.cards.get(name);
    if (card) card.root.remove();
    S.cards.delete(name);
    S.domains.delete(name);
    if (S.selected === name) { S.selected = null; $("detail").hidden = true; }
    $("no-domains").hidden = S.domains.size > 0;
  }

  function makeCard(name) {
    const f = {};
    f.title = el("h2", { class: "name", text: name });
    f.meta = el("p", { class: "meta" });
    f.intended = el("span", { class: "intended big" });
    f.actual = el("span", { class: "actual big" });
    f.bounds = el("span", { class: "bounds" });
    f.mode = el("span", { class: "mode" });
    f.reading = el("p", { class: "reading" });
    f.states = el("ul", { class: "states" });
    f.error = el("p", { class: "card-error", role: "alert" });
    const sizes = el("div", { class: "sizes" },
      el("div", {}, el("span", { class: "label", text: "intended" }), f.intended),
      el("div", {}, el("span", { class: "label", text: "actual" }), f.actual),
      el("div", { class: "right" }, f.bounds, f.mode));
    const root = el("article", {
      class: "card", tabindex: "0", "data-domain": name, "aria-label": `domain ${name}`,
      on: { click: () => select(name), keydown: (ev) => cardKey(ev, name) },
    }, f.title, f.meta, sizes, f.reading, f.states);
    if (canOperate()) {
      const stop = (fn) => (ev) => { ev.stopPropagation(); fn(); };
      f.minus = el("button", { type: "button", class: "minus", title: "one worker fewer (arrow down)",
        "aria-label": `one worker fewer in ${name}`, text: "−", on: { click: stop(() => resize(name, { delta: -1 })) } });
      f.plus = el("button", { type: "button", class: "plus", title: "one worker more (arrow up)",
        "aria-label": `one worker more in ${name}`, text: "+", on: { click: stop(() => resize(name, { delta: 1 })) } });
      f.auto = el("button", { type: "button", class: "auto quiet", title: "hand the size back to the policy",
        text: "auto", on: { click: stop(() => resize(name, { size: "auto" })) } });
      f.pause = el("button", { type: "button", class: "pause quiet",
        on: { click: stop(() => togglePause(name)) } });
      root.append(el("div", { class: "controls" }, f.minus, f.plus, f.auto, f.pause));
      root.setAttribute("title", "arrow up / down: one worker more / fewer");
    }
    root.append(f.error);
    return { root, ...f };
  }

  function updateDomain(d) {
    S.domains.set(d.name, d);
    let card = S.cards.get(d.name);
    if (!card) {
      card = makeCard(d.name);
      S.cards.set(d.name, card);
      const container = $("domains");
      const after = [...container.children].find((c) => c.dataset.domain > d.name);
      container.insertBefore(card.root, after || null);
      $("no-domains").hidden = true;
    }
    const intended = num(d.intended), actual = num(d.actual);
    card.meta.textContent = `${short(d.workload ?? "?", 60)} · policy ${short(d.policy ?? "?", 60)}`;
    card.intended.textContent = intended === null ? "?" : String(intended);
    card.actual.textContent = actual === null ? "?" : String(actual);
    card.bounds.textContent = `min ${num(d.min) ?? "?"} · max ${num(d.max) ?? "?"}`;
    const override = num(d.override);
    card.mode.textContent = d.deleting ? "deleting" : d.paused ? (typeof d.paused_by === "string" ? `paused by ${short(d.paused_by, 64)}` : "paused")
      : override === null ? "auto" : `override ${override}`;
    card.mode.dataset.mode = d.deleting ? "deleting" : d.paused ? "paused" : override === null ? "auto" : "override";
    card.root.classList.toggle("paused", !!d.paused);
    card.root.classList.toggle("converging", intended !== null && actual !== null && intended !== actual);
    const r = d.reading || {};
    if (r.error) {
      card.reading.textContent = `sensor error: ${short(r.error, 200)}`;
      card.reading.className = "reading bad";
    } else {
      card.reading.textContent = `reading ${fmt(num(r.value))}` + (num(r.time) ? ` at ${clock(r.time)}` : "");
      card.reading.className = "reading";
    }
    const counts = d.nodes && typeof d.nodes === "object" ? d.nodes : {};
    const chips = [];
    for (const state of [...STATES, ...Object.keys(counts).filter((s) => !STATES.includes(s)).sort()]) {
      const n = num(counts[state]);
      if (n) chips.push(el("li", { class: "state", "data-state": state, text: `${state.toLowerCase()} ${n}` }));
    }
    card.states.replaceChildren(...(chips.length ? chips : [el("li", { class: "state none", text: "no nodes" })]));
    if (card.pause) {
      card.pause.textContent = d.paused ? "resume" : "pause";
      card.pause.title = d.paused ? "let the policy size the domain again" : "hold the intended size where it is";
      card.auto.hidden = override === null;
      card.plus.disabled = intended !== null && num(d.max) !== null && (override ?? intended) >= d.max;
      card.minus.disabled = intended !== null && num(d.min) !== null && (override ?? intended) <= d.min;
    }
    if (S.selected === d.name) {
      $("detail-title").textContent = d.name;
      addPoint({ time: num(d.updated) ?? Date.now() / 1000, value: num(r.value), intended, actual });
    }
  }

  function cardKey(ev, name) {
    if (ev.target !== ev.currentTarget) return;   // keys on the card itself, not on its buttons
    if (ev.key === "Enter" || ev.key === " ") { ev.preventDefault(); select(name); return; }
    if (!canOperate()) return;
    if (ev.key === "ArrowUp") { ev.preventDefault(); resize(name, { delta: 1 }); }
    else if (ev.key === "ArrowDown") { ev.preventDefault(); resize(name, { delta: -1 }); }
  }

  // one change at a time per domain: a delta applies to the size the change before it set
  const queues = new Map();
  function act(name, path, body) {
    select(name);   // the detail follows the domain acted on: its log shows what the change did
    const run = async () => {
      const card = S.cards.get(name);
      if (card) card.error.textContent = "";
      try {
        const d = await api(path, { method: "POST", body });
        if (d && typeof d.name === "string") updateDomain(d);
      } catch (e) {
        if (e.status !== 401 && card) card.error.textContent = e.message;
      }
    };
    const next = (queues.get(name) || Promise.resolve()).then(run);
    queues.set(name, next);
    next.then(() => { if (queues.get(name) === next) queues.delete(name); });
    return next;
  }
  const resize = (name, body) => act(name, `/domains/${encodeURIComponent(name)}/resize`, body);
  function togglePause(name) {
    const d = S.domains.get(name);
    act(name, `/domains/${encodeURIComponent(name)}/${d && d.paused ? "resume" : "pause"}`, {});
  }

  // ---------------------------------------------------------------- the selected domain

  async function select(name) {
    if (!S.domains.has(name)) return;
    const changed = S.selected !== name;
    S.selected = name;
    for (const [n, c] of S.cards) c.root.classList.toggle("selected", n === name);
    if (!changed) return;
    history.replaceState(null, "", `#${encodeURIComponent(name)}`);
    $("detail").hidden = false;
    $("detail-title").textContent = name;
    S.points = []; S.events = []; S.nodes = [];
    drawPlot(); drawEvents(); drawNodes();
    await loadDetail(name);
  }

  async function loadDetail(name) {
    const base = `/domains/${encodeURIComponent(name)}`;
    const since = Date.now() / 1000 - WINDOW;
    const [readings, events, nodes] = await Promise.allSettled([
      api(`${base}/readings?since=${since}`), api(`${base}/events?count=${EVENTS_KEPT}`), api(`${base}/nodes`)]);
    if (S.selected !== name) return;
    if (readings.status === "fulfilled" && Array.isArray(readings.value.points)) {
      const fresh = readings.value.points.map(asPoint).filter((p) => p !== null);
      const last = fresh.length ? fresh[fresh.length - 1].time : -Infinity;
      S.points = [...fresh, ...S.points.filter((p) => p.time > last)];   // live points that came meanwhile
    }
    if (events.status === "fulfilled" && Array.isArray(events.value.events)) {
      const known = new Set(S.events.map(eventKey));
      S.events = [...S.events, ...events.value.events.filter((e) => e && !known.has(eventKey(e)))];
      S.events.sort((a, b) => (num(b.time) ?? 0) - (num(a.time) ?? 0));
      S.events = S.events.slice(0, EVENTS_KEPT);
    }
    if (nodes.status === "fulfilled" && Array.isArray(nodes.value.nodes)) S.nodes = nodes.value.nodes;
    const failed = [readings, events, nodes].filter((x) => x.status === "rejected" && x.reason.status !== 401);
    notice(failed.length ? `cannot read ${name}: ${failed[0].reason.message}` : "");
    const d = S.domains.get(name);
    if (d) addPoint({ time: Date.now() / 1000, value: num((d.reading || {}).value), intended: num(d.intended),
                      actual: num(d.actual) });
    drawPlot(); drawEvents(); drawNodes();
  }
  const reloadNodes = debounce(async () => {
    const name = S.selected;
    if (name === null) return;
    try {
      const data = await api(`/domains/${encodeURIComponent(name)}/nodes`);
      if (S.selected === name && Array.isArray(data.nodes)) { S.nodes = data.nodes; drawNodes(); }
    } catch (e) { /* shown on the next full reload */ }
  }, 250);

  // one domain's summary read again (at most every 300 ms per domain)
  const summaryTimers = new Map();
  function reloadSummary(name) {
    if (summaryTimers.has(name)) return;
    summaryTimers.set(name, setTimeout(async () => {
      summaryTimers.delete(name);
      try {
        const d = await api(`/domains/${encodeURIComponent(name)}`);
        if (d && d.name === name && S.domains.has(name)) updateDomain(d);
      } catch (e) { /* gone, or signed out: the list is read again on the next change */ }
    }, 300));
  }

  function asPoint(p) {
    if (!p || num(p.time) === null) return null;
    return { time: p.time, value: num(p.value), intended: num(p.intended), actual: num(p.actual) };
  }

  function addPoint(p) {
    if (p.time === null) return;
    S.points.push(p);
    const from = Date.now() / 1000 - WINDOW - 60;
    while (S.points.length > 1 && S.points[1].time < from) S.points.shift();
    if (S.points.length > 5000) S.points.splice(0, S.points.length - 5000);
    drawPlot();
  }

  const eventKey = (e) => (e.id !== undefined ? `id:${e.id}` : `${e.time}|${e.kind}|${JSON.stringify(e)}`);

  // ---------------------------------------------------------------- drawing

  function drawPlot() {
    const plot = $("plot");
    const W = Math.max(320, Math.round(plot.clientWidth || 760)), H = 240, L = 48, R = 44, T = 12, B = 26;
    plot.setAttribute("viewBox", `0 0 ${W} ${H}`);
    const now = Date.now() / 1000, start = now - WINDOW;
    const pts = S.points.filter((p) => p.time >= start - 600).sort((a, b) => a.time - b.time);
    const x = (t) => L + (Math.max(start, Math.min(now, t)) - start) / WINDOW * (W - L - R);
    const values = pts.map((p) => p.value).filter((v) => v !== null);
    const workers = pts.flatMap((p) => [p.intended, p.actual]).filter((v) => v !== null);
    const va = axis(Math.max(0, ...values), false), wa = axis(Math.max(1, ...workers), true);
    const yv = (v) => H - B - v / va.max * (H - T - B);
    const yw = (v) => H - B - v / wa.max * (H - T - B);
    const kids = [];
    for (let v = 0; v <= va.max + 1e-9; v += va.step) {
      kids.push(svg("line", { x1: L, x2: W - R, y1: yv(v), y2: yv(v), class: "grid" }));
      kids.push(svg("text", { x: L - 6, y: yv(v) + 4, class: "tick reading", "text-anchor": "end" }, fmt(v)));
    }
    for (let v = 0; v <= wa.max + 1e-9; v += wa.step) {
      kids.push(svg("text", { x: W - R + 6, y: yw(v) + 4, class: "tick workers" }, fmt(v)));
    }
    for (let m = 0; m <= 60; m += 10) {
      const t = start + m * 60;
      kids.push(svg("text", { x: x(t), y: H - 6, class: "tick", "text-anchor": "middle" },
        m === 60 ? "now" : `-${60 - m} min`));
    }
    kids.push(svg("path", { d: linePath(pts, "value", x, yv, false, now), class: "series reading" }));
    kids.push(svg("path", { d: linePath(pts, "intended", x, yw, true, now), class: "series intended" }));
    kids.push(svg("path", { d: linePath(pts, "actual", x, yw, true, now), class: "series actual" }));
    if (!pts.length) kids.push(svg("text", { x: W / 2, y: H / 2, class: "nodata", "text-anchor": "middle" }, "no readings yet"));
    plot.replaceChildren(...kids);
  }

  // an axis from 0 past v in 2 to 5 round steps (whole steps for counts of workers)
  function axis(v, whole) {
    if (!(v > 0)) return { max: 1, step: whole ? 1 : 0.5 };
    const raw = v / 4, p = Math.pow(10, Math.floor(Math.log10(raw)));
    let step = [1, 2, 5, 10].map((m) => m * p).find((s) => s >= raw) || 10 * p;
    if (whole) step = Math.max(1, Math.round(step));
    return { max: step * Math.ceil(v / step - 1e-9), step };
  }

  // a series as an SVG path; steps for sizes; a gap where the value is missing; drawn on to now
  function linePath(pts, key, x, y, step, now) {
    let d = "", prev = null;
    for (const p of pts) {
      const v = p[key];
      if (v === null) { prev = null; continue; }
      const X = x(p.time).toFixed(1), Y = y(v).toFixed(1);
      if (prev === null) d += `M${X},${Y}`;
      else d += step ? `H${X}V${Y}` : `L${X},${Y}`;
      prev = v;
    }
    const last = pts.length ? pts[pts.length - 1] : null;
    if (last && last[key] !== null && d) d += `H${x(now).toFixed(1)}`;
    return d || "M0,0";
  }

  function drawNodes() {
    const box = $("nodes");
    const byState = new Map();
    for (const n of S.nodes) {
      if (!n || typeof n.state !== "string") continue;
      if (!byState.has(n.state)) byState.set(n.state, []);
      byState.get(n.state).push(n);
    }
    const order = [...STATES, ...[...byState.keys()].filter((s) => !STATES.includes(s)).sort()];
    const groups = [];
    for (const state of order) {
      const nodes = byState.get(state);
      if (!nodes) continue;
      const list = el("ul", { class: "node-list" });
      for (const n of nodes.slice(0, NODES_SHOWN)) {
        const bits = [short(n.site ?? "?", 40)];
        if (n.busy === true) bits.push("busy"); else if (n.busy === false) bits.push("idle");
        if (typeof n.endpoint === "string") bits.push(short(n.endpoint, 80));
        list.append(el("li", { class: "node", "data-state": state, title: bits.join(" · ") },
          el("span", { class: "node-id", text: short(n.id ?? n.name ?? "?", 60) }),
          el("span", { class: "node-info", text: bits.join(" · ") })));
      }
      if (nodes.length > NODES_SHOWN) list.append(el("li", { class: "more", text: `and ${nodes.length - NODES_SHOWN} more` }));
      const group = el(state === "TERMINATED" ? "details" : "div", { class: "state-group", "data-state": state });
      const head = el(state === "TERMINATED" ? "summary" : "h4", { class: "state-head" },
        el("span", { class: "state", "data-state": state, text: state.toLowerCase() }), ` ${nodes.length}`);
      group.append(head, list);
      groups.push(group);
    }
    box.replaceChildren(...(groups.length ? groups : [el("p", { class: "empty", text: "no nodes" })]));
  }

  function eventText(e) {
    if (e.kind === "decision") {
      return `target ${short(e.target ?? "?", 20)} (actual ${short(e.actual ?? "?", 20)}): ${short(e.reason ?? "", 500)}`;
    }
    const skip = new Set(["id", "time", "kind", "domain", "by", "inputs", "history"]);
    return Object.entries(e).filter(([k]) => !skip.has(k)).map(([k, v]) => `${k}=${short(v, 200)}`).join(" ");
  }

  function drawEvents() {
    const all = $("show-nodes").checked;
    const items = S.events.filter((e) => all || e.kind !== "node").slice(0, EVENTS_SHOWN).map((e) => {
      const kind = short(e.kind ?? "?", 32);
      const li = el("li", { class: "event", "data-kind": kind },
        el("time", { text: num(e.time) === null ? "--:--:--" : clock(e.time) }),
        el("span", { class: "kind", text: kind }));
      if (e.by !== undefined && e.by !== null) li.append(el("span", { class: "by", text: `by ${short(e.by, 64)}` }));
      li.append(el("span", { class: "what", text: eventText(e) }));
      return li;
    });
    $("events").replaceChildren(...(items.length ? items : [el("li", { class: "empty", text: "no events yet" })]));
  }

  // ---------------------------------------------------------------- live updates

  function setConn(state, text) {
    const c = $("conn");
    c.dataset.state = state;
    c.textContent = text;
  }

  function onMessage(kind, data) {
    if (!data || typeof data !== "object") return;
    if (kind === "summary") {
      if (typeof data.name === "string") updateDomain(data);
      return;
    }
    const name = typeof data.domain === "string" ? data.domain : null;
    if (name === null) return;
    const event = { kind, ...data };
    if (typeof event.kind !== "string") event.kind = kind;
    if (!S.domains.has(name) || kind === "deleted" || kind === "applied" || kind === "delete") reloadDomains();
    else if (kind === "node") reloadSummary(name);   // nodes by state: summaries come only when sizes change
    if (name !== S.selected) return;
    const key = eventKey(event);
    if (!S.events.some((e) => eventKey(e) === key)) {
      S.events.unshift(event);
      if (S.events.length > EVENTS_KEPT) S.events.length = EVENTS_KEPT;
      drawEvents();
    }
    if (kind === "node" || kind === "decision" || kind.startsWith("drain") || kind.includes("launch")) reloadNodes();
  }

  function parseBlock(block) {
    let kind = "message";
    const data = [];
    for (const line of block.split("\n")) {
      if (line === "" || line.startsWith(":")) continue;       // comments: keepalives
      const i = line.indexOf(":");
      const field = i < 0 ? line : line.slice(0, i);
      let value = i < 0 ? "" : line.slice(i + 1);
      if (value.startsWith(" ")) value = value.slice(1);
      if (field === "event") kind = value;
      else if (field === "data") data.push(value);
    }
    if (!data.length) return;
    let parsed;
    try { parsed = JSON.parse(data.join("\n")); } catch (e) { return; }
    onMessage(kind, parsed);
  }

  // fetch() and a stream reader (EventSource cannot send the bearer header): reconnects with backoff
  async function liveStream(gen) {
    let backoff = BACKOFF_MIN, first = true;
    while (gen === S.generation) {
      const ctl = new AbortController();
      S.stream = ctl;
      let lastByte = Date.now();
      const watchdog = setInterval(() => { if (Date.now() - lastByte > STALE_AFTER) ctl.abort(); }, 5000);
      try {
        setConn("connecting", "connecting…");
        const r = await fetch("/events/stream", {
          headers: { Authorization: `Bearer ${S.token}`, Accept: "text/event-stream" }, cache: "no-store",
          signal: ctl.signal,
        });
        if (r.status === 401) { signOut("the server refused the token: sign in again"); return; }
        if (!r.ok || !r.body) throw new Error(`HTTP ${r.status}`);
        setConn("live", "live");
        if (!first || S.stale) {   // what happened while the stream was down
          S.stale = false;
          await loadDomains();
          notice("");
          if (S.selected !== null) loadDetail(S.selected);
        }
        first = false;
        backoff = BACKOFF_MIN;
        const reader = r.body.getReader();
        const decoder = new TextDecoder();
        let buffer = "";
        for (;;) {
          const { value, done } = await reader.read();
          if (done) break;
          lastByte = Date.now();
          buffer += decoder.decode(value, { stream: true });
          buffer = buffer.replace(/\r\n|\r(?=.)/g, "\n");
          let i;
          while ((i = buffer.indexOf("\n\n")) >= 0) {
            const block = buffer.slice(0, i);
            buffer = buffer.slice(i + 2);
            parseBlock(block);
          }
          if (buffer.length > 1 << 20) buffer = "";   // a runaway message: dropped
        }
      } catch (e) {
        // aborted (stale, signed out) or the network: retried below
      } finally {
        clearInterval(watchdog);
      }
      if (gen !== S.generation) return;
      const wait = backoff + Math.random() * backoff / 2;
      setConn("down", `reconnecting in ${Math.ceil(wait / 1000)} s`);
      await sleep(wait);
      backoff = Math.min(backoff * 2, BACKOFF_MAX);
    }
  }

  // the plot moves with the clock; the readings between summaries come from the history
  async function tickLoop(gen) {
    let n = 0;
    while (gen === S.generation) {
      await sleep(5000);
      if (gen !== S.generation) return;
      n += 1;
      const name = S.selected;
      if (name !== null && n % 3 === 0) {
        const last = S.points.length ? S.points[S.points.length - 1].time : Date.now() / 1000 - WINDOW;
        try {
          const data = await api(`/domains/${encodeURIComponent(name)}/readings?since=${last}`);
          if (S.selected === name && Array.isArray(data.points)) {
            for (const p of data.points.map(asPoint)) if (p !== null && p.time > last) S.points.push(p);
          }
        } catch (e) { /* the stream's reconnect reloads everything */ }
      }
      drawPlot();
    }
  }

  // ---------------------------------------------------------------- start

  window.addEventListener("resize", debounce(drawPlot, 150));

  document.addEventListener("DOMContentLoaded", () => {
    $("login-form").addEventListener("submit", (ev) => {
      ev.preventDefault();
      const token = $("token").value.trim();
      if (token) signIn(token);
    });
    $("signout").addEventListener("click", () => signOut(""));
    $("show-nodes").addEventListener("change", () => drawEvents());
    if (S.token) signIn(S.token); else showLogin("");
  });
})();
