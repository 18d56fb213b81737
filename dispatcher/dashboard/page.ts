/**
 * The dashboard the dispatcher serves at `/`: one self-contained page (inline CSS and JS, no CDN,
 * no build step) kept as a string so that `tsc` alone puts it in dist. It is static: it holds no
 * data and no secret, so `/` needs no token. The data comes from the JSON API it polls:
 * - `/api/status` every second (queue, rates, executors, cache, the provisioner when there is one);
 * - `/api/sessions` after each status;
 * - `/api/tasks?state=failed|timed_out|lost&limit=20` when those counts change (at most every 3 s), with
 *   `/api/tasks/ID` for a failure whose list entry carries no result (the list leaves results out).
 * Off loopback the API needs the client token: the page takes it from the URL fragment
 * (`/#token=…`, which browsers never send to the server) or a prompt, keeps it in sessionStorage,
 * drops it from the address bar, and sends `Authorization: Bearer …` on each request.
 * The charts are SVG polylines over a ring buffer of the last 5 minutes of samples kept in the page.
 * The page's JS uses no backticks or `${`: it lives inside a template literal.
 */
export const DASHBOARD_HTML = String.raw`<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="referrer" content="no-referrer">
<title>falconet</title>
<style>
  :root { --bg:#0f1419; --panel:#171d24; --line:#2a333d; --fg:#d8dee6; --dim:#8a96a3; --q:#e0a84a; --r:#4aa3e0; --ok:#5cc98a; --bad:#e06464; --sub:#b58ce0; }
  * { box-sizing: border-box; }
  body { margin:0; font:13px/1.4 system-ui, -apple-system, "Segoe UI", sans-serif; background:var(--bg); color:var(--fg); }
  header { display:flex; align-items:baseline; gap:16px; padding:10px 16px; border-bottom:1px solid var(--line); }
  header h1 { font-size:18px; margin:0; letter-spacing:.5px; }
  header .dim { color:var(--dim); }
  #conn { margin-left:auto; padding:2px 8px; border-radius:10px; font-size:12px; background:#333; }
  #conn.live { background:#1d4d33; color:#bff0d2; }
  #conn.error { background:#5a2222; color:#ffd0d0; }
  #banner { display:none; margin:12px 16px; padding:10px 12px; border:1px solid var(--bad); border-radius:6px; background:#2a1717; }
  #banner.show { display:block; }
  main { padding:12px 16px; display:grid; gap:12px; grid-template-columns:repeat(auto-fit, minmax(480px, 1fr)); }
  main.nodata { display:none; }
  section { background:var(--panel); border:1px solid var(--line); border-radius:6px; padding:10px 12px; min-width:0; overflow-x:auto; }
  section.wide { grid-column:1 / -1; }
  h2 { font-size:13px; text-transform:uppercase; letter-spacing:.8px; color:var(--dim); margin:0 0 8px; font-weight:600; }
  .tiles { display:flex; flex-wrap:wrap; gap:8px; }
  .tile { flex:1 1 110px; background:#1d252e; border-radius:5px; padding:6px 10px; }
  .tile .v { font-size:22px; font-variant-numeric:tabular-nums; }
  .tile .k { color:var(--dim); font-size:11px; text-transform:uppercase; letter-spacing:.5px; }
  .v.bad { color:var(--bad); } .v.ok { color:var(--ok); }
  svg.chart { width:100%; height:160px; display:block; }
  svg.chart .grid { stroke:var(--line); stroke-width:1; }
  svg.chart text { fill:var(--dim); font-size:10px; }
  svg.chart polyline { fill:none; stroke-width:1.6; vector-effect:non-scaling-stroke; }
  .legend { display:flex; gap:14px; color:var(--dim); font-size:12px; margin-top:4px; }
  .legend i { display:inline-block; width:10px; height:3px; margin-right:5px; vertical-align:middle; }
  table { width:100%; border-collapse:collapse; font-variant-numeric:tabular-nums; }
  th, td { text-align:left; padding:3px 6px; border-bottom:1px solid var(--line); white-space:nowrap; overflow:hidden; text-overflow:ellipsis; max-width:360px; }
  th { color:var(--dim); font-weight:600; font-size:11px; text-transform:uppercase; }
  td.num, th.num { text-align:right; }
  td.id { max-width:220px; } td.id.short { max-width:150px; }
  .pill { display:inline-block; padding:0 6px; border-radius:8px; font-size:11px; background:#2a333d; }
  .st-busy { background:#1f3d5a; } .st-idle { background:#1d4d33; } .st-draining { background:#5a4a1d; } .st-disconnected, .st-terminated, .st-boot-failed { background:#5a2222; }
  .code { color:var(--bad); font-family:ui-monospace, Menlo, monospace; }
  .empty { color:var(--dim); font-style:italic; }
  details > summary { cursor:pointer; color:var(--dim); margin:6px 0; }
  .kv { display:grid; grid-template-columns:max-content 1fr; gap:2px 12px; margin-bottom:8px; }
  .kv dt { color:var(--dim); } .kv dd { margin:0; }
  button { background:#2a333d; color:var(--fg); border:1px solid var(--line); border-radius:4px; padding:3px 10px; cursor:pointer; }
</style>
</head>
<body>
<header>
  <h1>falconet</h1>
  <span class="dim">dispatcher dashboard</span>
  <span class="dim" id="uptime"></span>
  <span id="conn">connecting…</span>
</header>
<div id="banner"><span id="banner-text"></span> <button id="token-button" type="button">Enter token</button></div>
<main id="main" class="nodata">
  <section class="wide" id="overview">
    <h2>Overview</h2>
    <div class="tiles">
      <div class="tile"><div class="v" data-stat="executors-connected">–</div><div class="k">executors connected</div></div>
      <div class="tile"><div class="v" data-stat="slots-busy">–</div><div class="k">slots busy</div></div>
      <div class="tile"><div class="v" data-stat="slots-total">–</div><div class="k">slots total</div></div>
      <div class="tile"><div class="v" data-stat="queued">–</div><div class="k">queued</div></div>
      <div class="tile"><div class="v" data-stat="running">–</div><div class="k">running</div></div>
      <div class="tile"><div class="v" data-stat="submitted">–</div><div class="k">submitted</div></div>
      <div class="tile"><div class="v ok" data-stat="succeeded">–</div><div class="k">succeeded</div></div>
      <div class="tile"><div class="v bad" data-stat="failed">–</div><div class="k">failed</div></div>
      <div class="tile"><div class="v bad" data-stat="timed_out">–</div><div class="k">timed out</div></div>
      <div class="tile"><div class="v bad" data-stat="lost">–</div><div class="k">lost</div></div>
      <div class="tile"><div class="v" data-stat="cancelled">–</div><div class="k">cancelled</div></div>
      <div class="tile"><div class="v" data-stat="rate-finished">–</div><div class="k">finished/s (10 s)</div></div>
      <div class="tile"><div class="v" data-stat="cache-hit-ratio">–</div><div class="k">cache hit ratio</div></div>
      <div class="tile"><div class="v" data-stat="sessions">–</div><div class="k">sessions connected / total</div></div>
    </div>
  </section>
  <section>
    <h2>Queue by state <span class="dim" data-chart-span="queue"></span></h2>
    <svg class="chart" id="chart-queue" viewBox="0 0 600 160" preserveAspectRatio="none"></svg>
    <div class="legend"><span><i style="background:var(--q)"></i>queued</span><span><i style="background:var(--r)"></i>running</span></div>
  </section>
  <section>
    <h2>Tasks per second <span class="dim" data-chart-span="rate"></span></h2>
    <svg class="chart" id="chart-rate" viewBox="0 0 600 160" preserveAspectRatio="none"></svg>
    <div class="legend"><span><i style="background:var(--ok)"></i>finished/s</span><span><i style="background:var(--sub)"></i>submitted/s</span></div>
  </section>
  <section class="wide" id="executors">
    <h2>Executors</h2>
    <div class="tiles" id="executor-states"></div>
    <details id="executor-details">
      <summary>Each executor (<span data-stat="executors-total">0</span>)</summary>
      <table>
        <thead><tr><th>id</th><th>state</th><th class="num">slots</th><th class="num">running</th><th class="num">completed</th><th>mode</th><th>addresses</th><th>host</th><th>last seen</th><th>cache</th></tr></thead>
        <tbody id="executor-rows"></tbody>
      </table>
    </details>
  </section>
  <section id="cluster" hidden>
    <h2>Dispatchers</h2>
    <table>
      <thead><tr><th>url</th><th class="num">partitions</th><th>role</th></tr></thead>
      <tbody id="dispatcher-rows"></tbody>
    </table>
  </section>
  <section id="provisioner" hidden>
    <h2>Provisioner</h2>
    <dl class="kv" id="provisioner-kv"></dl>
    <details open><summary>Decisions (as this page saw them change)</summary><table><tbody id="decision-rows"></tbody></table></details>
    <details open><summary>Instances (<span data-stat="instances">0</span>)</summary>
      <table>
        <thead><tr><th>id</th><th>state</th><th>executor</th><th>requested</th><th>reason</th></tr></thead>
        <tbody id="instance-rows"></tbody>
      </table>
    </details>
  </section>
  <section id="sessions">
    <h2>Sessions</h2>
    <table>
      <thead><tr><th>id</th><th>client</th><th class="num">submitted</th><th class="num">finished</th><th class="num">unfinished</th><th class="num">unacked</th><th>created</th></tr></thead>
      <tbody id="session-rows"></tbody>
    </table>
  </section>
  <section class="wide" id="failures">
    <h2>Recent failures</h2>
    <table>
      <thead><tr><th>task</th><th>state</th><th>code</th><th>message</th><th>exit</th><th>executor</th><th>session</th><th>finished</th></tr></thead>
      <tbody id="failure-rows"></tbody>
    </table>
  </section>
</main>
<script>
(function () {
  'use strict';
  var TOKEN_KEY = 'falconet.token';
  var KEEP_MS = 5 * 60 * 1000;
  var RING = 400;
  var FAIL_STATES = ['failed', 'timed_out', 'lost'];

  // ---- the token: from the fragment, else sessionStorage, else a prompt on the first 401 ----
  var token = null;
  var m = /(?:^#|&)token=([^&]*)/.exec(location.hash);
  if (m) {
    token = decodeURIComponent(m[1]);
    try { sessionStorage.setItem(TOKEN_KEY, token); } catch (e) {}
    history.replaceState(null, '', location.pathname + location.search);
  } else {
    try { token = sessionStorage.getItem(TOKEN_KEY); } catch (e) {}
  }
  var prompted = false;
  var needToken = false;

  function askToken() {
    var t = window.prompt('This dispatcher needs the client token');
    prompted = true;
    if (t) {
      token = t.trim();
      try { sessionStorage.setItem(TOKEN_KEY, token); } catch (e) {}
      needToken = false;
      banner(null);
      tick();
    }
  }
  document.getElementById('token-button').addEventListener('click', askToken);

  function Unauthorized() {}

  function api(path) {
    var headers = { accept: 'application/json' };
    if (token) headers.authorization = 'Bearer ' + token;
    return fetch(path, { headers: headers, cache: 'no-store', credentials: 'omit' }).then(function (res) {
      if (res.status === 401) throw new Unauthorized();
      if (!res.ok) return res.text().then(function (t) { throw new Error(path + ': HTTP ' + res.status + ' ' + t.slice(0, 200)); });
      return res.json();
    });
  }

  // ---- small DOM helpers; all data goes in as text ----
  function $(id) { return document.getElementById(id); }
  function el(tag, cls, text) {
    var e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text !== undefined && text !== null) e.textContent = String(text);
    return e;
  }
  function row(cells) {
    var tr = document.createElement('tr');
    cells.forEach(function (c) {
      var td;
      if (c instanceof Node) { td = document.createElement('td'); td.appendChild(c); }
      else if (c && typeof c === 'object') { td = el('td', c.cls, c.text); if (c.title) td.title = c.title; }
      else td = el('td', null, c);
      tr.appendChild(td);
    });
    return tr;
  }
  function fill(tbody, rows, cols, emptyText) {
    var frag = document.createDocumentFragment();
    if (rows.length === 0) {
      var td = el('td', 'empty', emptyText);
      td.colSpan = cols;
      var tr = document.createElement('tr');
      tr.appendChild(td);
      frag.appendChild(tr);
    } else rows.forEach(function (r) { frag.appendChild(r); });
    tbody.replaceChildren(frag);
  }
  function stat(name, value) {
    var nodes = document.querySelectorAll('[data-stat="' + name + '"]');
    for (var i = 0; i < nodes.length; i++) nodes[i].textContent = String(value);
  }
  function pill(state) { return el('span', 'pill st-' + state, state); }
  function fmtInt(n) { return typeof n === 'number' ? String(n) : '–'; }
  function fmtAgo(ms) {
    if (ms < 1000) return Math.max(0, Math.round(ms)) + ' ms ago';
    if (ms < 120000) return (ms / 1000).toFixed(1) + ' s ago';
    if (ms < 7200000) return Math.round(ms / 60000) + ' min ago';
    return Math.round(ms / 3600000) + ' h ago';
  }
  function fmtTime(t) { return t ? new Date(t).toLocaleTimeString() : '–'; }
  function fmtDuration(ms) {
    var s = Math.floor(ms / 1000), h = Math.floor(s / 3600), mi = Math.floor((s % 3600) / 60);
    return (h ? h + 'h ' : '') + (h || mi ? mi + 'm ' : '') + (s % 60) + 's';
  }
  function banner(text) {
    $('banner').classList.toggle('show', !!text);
    $('banner-text').textContent = text || '';
  }
  function conn(cls, text) {
    var c = $('conn');
    c.className = cls;
    c.textContent = text;
  }

  // ---- the ring buffer of samples and the charts ----
  var samples = [];
  var last = null;
  function record(s) {
    var finished = 0;
    for (var k in s.tasks.finished) finished += s.tasks.finished[k];
    var sample = { at: s.now, queued: s.tasks.queued, running: s.tasks.running, finishedRate: 0, submittedRate: 0 };
    if (last && s.now > last.at) {
      var dt = (s.now - last.at) / 1000;
      sample.finishedRate = Math.max(0, (finished - last.finished) / dt);
      sample.submittedRate = Math.max(0, (s.tasks.submitted - last.submitted) / dt);
    } else if (last && s.now <= last.at) return; // the same snapshot twice
    last = { at: s.now, finished: finished, submitted: s.tasks.submitted };
    samples.push(sample);
    while (samples.length > RING || (samples.length > 2 && s.now - samples[0].at > KEEP_MS)) samples.shift();
  }
  var SVGNS = 'http://www.w3.org/2000/svg';
  function svg(tag, attrs, text) {
    var e = document.createElementNS(SVGNS, tag);
    for (var k in attrs) e.setAttribute(k, attrs[k]);
    if (text !== undefined) e.textContent = text;
    return e;
  }
  function niceMax(v) {
    if (v <= 4) return 4;
    var p = Math.pow(10, Math.floor(Math.log10(v))), n = v / p;
    return (n <= 1 ? 1 : n <= 2 ? 2 : n <= 5 ? 5 : 10) * p;
  }
  function chart(id, series) {
    var box = $(id), W = 600, H = 160, L = 44, T = 8, B = 16;
    var now = samples.length ? samples[samples.length - 1].at : Date.now();
    // The last 5 minutes, or since the page opened (at least 30 s) while it has less.
    var span = Math.min(KEEP_MS, Math.max(30000, samples.length ? now - samples[0].at : 0));
    var t0 = now - span;
    var max = 0;
    samples.forEach(function (p) { series.forEach(function (s) { max = Math.max(max, p[s.key]); }); });
    max = niceMax(max);
    var nodes = [];
    for (var g = 0; g <= 4; g++) {
      var y = T + (H - T - B) * g / 4;
      nodes.push(svg('line', { x1: L, x2: W, y1: y, y2: y, class: 'grid' }));
      var v = max * (4 - g) / 4;
      nodes.push(svg('text', { x: L - 4, y: y + 3, 'text-anchor': 'end' }, v === Math.round(v) ? String(v) : v.toFixed(1)));
    }
    nodes.push(svg('text', { x: L, y: H - 3 }, span >= 120000 ? '-' + Math.round(span / 60000) + ' min' : '-' + Math.round(span / 1000) + ' s'));
    nodes.push(svg('text', { x: W - 2, y: H - 3, 'text-anchor': 'end' }, 'now'));
    series.forEach(function (s) {
      var pts = samples.map(function (p) {
        var x = L + (W - L) * Math.max(0, p.at - t0) / span;
        var y = T + (H - T - B) * (1 - p[s.key] / max);
        return x.toFixed(1) + ',' + y.toFixed(1);
      });
      nodes.push(svg('polyline', { points: pts.join(' '), stroke: s.color, 'data-series': s.key }));
    });
    box.replaceChildren.apply(box, nodes);
  }

  // ---- rendering ----
  var decisions = [];
  function renderStatus(s) {
    var connected = s.executors.filter(function (e) { return e.state !== 'disconnected'; }).length;
    stat('executors-connected', connected);
    stat('executors-total', s.executors.length);
    stat('slots-busy', s.slots.busy);
    stat('slots-total', s.slots.total);
    stat('queued', s.tasks.queued);
    stat('running', s.tasks.running);
    stat('submitted', s.tasks.submitted);
    ['succeeded', 'failed', 'timed_out', 'lost', 'cancelled'].forEach(function (k) { stat(k, fmtInt(s.tasks.finished[k])); });
    stat('rate-finished', s.rates.finished);
    var ratio = s.data && s.data.cacheHitRatio;
    stat('cache-hit-ratio', typeof ratio === 'number' ? (ratio * 100).toFixed(1) + '%' : '–');
    stat('sessions', s.sessions.connected + ' / ' + s.sessions.total);
    $('uptime').textContent = 'up ' + fmtDuration(s.uptimeMs);

    var byState = {};
    s.executors.forEach(function (e) { byState[e.state] = (byState[e.state] || 0) + 1; });
    var tiles = ['idle', 'busy', 'draining', 'disconnected'].concat(Object.keys(byState).filter(function (k) { return ['idle', 'busy', 'draining', 'disconnected'].indexOf(k) < 0; }));
    $('executor-states').replaceChildren.apply($('executor-states'), tiles.map(function (k) {
      var t = el('div', 'tile');
      var v = el('div', 'v', byState[k] || 0);
      v.setAttribute('data-executor-state', k);
      t.appendChild(v);
      t.appendChild(el('div', 'k', k));
      return t;
    }));
    var rows = s.executors.slice().sort(function (a, b) { return a.id < b.id ? -1 : a.id > b.id ? 1 : 0; }).map(function (e) {
      var tr = row([
        { text: e.id, title: e.instanceId ? 'instance ' + e.instanceId : e.id },
        pill(e.state),
        { text: e.slots, cls: 'num' },
        { text: e.running, cls: 'num' },
        { text: e.completed, cls: 'num' },
        e.mode,
        { text: e.addresses.join(', '), title: e.addresses.join(', ') },
        e.hostname + (e.pid ? ' (pid ' + e.pid + ')' : ''),
        fmtAgo(e.lastSeenMsAgo),
        typeof e.cached === 'number' ? e.cached + ' inputs' : '–',
      ]);
      tr.setAttribute('data-executor', e.id);
      return tr;
    });
    fill($('executor-rows'), rows, 10, 'no executor has registered');

    var ds = s.dispatchers || [];
    $('cluster').hidden = ds.length === 0;
    fill($('dispatcher-rows'), ds.map(function (d) {
      var tr = row([d.url, String(d.partitions), [d.self ? 'this one' : '', d.leader ? 'provisioner' : ''].filter(Boolean).join(', ') || '–']);
      tr.setAttribute('data-dispatcher', d.url);
      return tr;
    }), 3, 'no dispatcher');

    var p = s.provisioner;
    $('provisioner').hidden = !p;
    if (p) {
      var kv = [
        ['backend', p.backend], ['policy', p.policy], ['min – max', p.min + ' – ' + p.max],
        ['breaker', p.breaker.open ? 'OPEN: ' + (p.breaker.reason || '') : 'closed (' + p.breaker.failures + ' failed boots)'],
        ['last decision', p.lastDecision], ['last error', p.lastError || '–'],
      ];
      var frag = document.createDocumentFragment();
      kv.forEach(function (x) { frag.appendChild(el('dt', null, x[0])); var dd = el('dd', null, x[1]); if (x[0] === 'last decision') dd.setAttribute('data-stat', 'last-decision'); frag.appendChild(dd); });
      $('provisioner-kv').replaceChildren(frag);
      if (!decisions.length || decisions[0].text !== p.lastDecision) {
        decisions.unshift({ at: s.now, text: p.lastDecision });
        if (decisions.length > 20) decisions.pop();
      }
      fill($('decision-rows'), decisions.map(function (d) { return row([fmtTime(d.at), { text: d.text, title: d.text }]); }), 2, 'none yet');
      var inst = p.instances.slice().sort(function (a, b) { return b.requestedAt - a.requestedAt; });
      stat('instances', inst.length);
      fill($('instance-rows'), inst.map(function (i) {
        return row([{ text: i.id + (i.adopted ? ' (adopted)' : ''), title: i.console || i.id }, pill(i.state), i.executorId || '–', fmtTime(i.requestedAt), { text: i.reason || '', title: i.reason || '' }]);
      }), 5, 'no instances');
    }
    record(s);
    chart('chart-queue', [{ key: 'queued', color: 'var(--q)' }, { key: 'running', color: 'var(--r)' }]);
    chart('chart-rate', [{ key: 'finishedRate', color: 'var(--ok)' }, { key: 'submittedRate', color: 'var(--sub)' }]);
  }

  function renderSessions(list) {
    var rows = list.slice().sort(function (a, b) { return b.createdAt - a.createdAt; }).slice(0, 50).map(function (x) {
      return row([{ text: x.id, title: x.id, cls: 'id short' }, x.connected ? 'connected' : 'away', { text: x.submitted, cls: 'num' }, { text: x.finished, cls: 'num' }, { text: x.unfinished, cls: 'num' }, { text: x.unacked, cls: 'num' }, fmtTime(x.createdAt)]);
    });
    fill($('session-rows'), rows, 7, 'no sessions');
  }

  // Failures: refetched when the failed/timed_out/lost counts move, at most every 3 s (a filtered
  // task list walks the sessions' finished tasks). Finished tasks never change, so a result fetched
  // once (for a list entry without one) is kept by session and id.
  var failKey = null;
  var failAt = 0;
  var results = new Map();
  var failFetch = null;
  function refreshFailures(s) {
    var key = FAIL_STATES.map(function (k) { return s.tasks.finished[k] || 0; }).join('/');
    if (key === failKey || failFetch || (failKey !== null && Date.now() - failAt < 3000)) return;
    failAt = Date.now();
    failFetch = Promise.all(FAIL_STATES.map(function (st) { return api('/api/tasks?state=' + st + '&limit=20'); }))
      .then(function (lists) {
        var tasks = [];
        lists.forEach(function (l) { tasks = tasks.concat(l.tasks); });
        return Promise.all(tasks.map(function (t) {
          var k = t.session + '\n' + t.id;
          if (t.result) results.set(k, t.result);
          if (results.has(k)) return Promise.resolve(t);
          return api('/api/tasks/' + encodeURIComponent(t.id) + '?session=' + encodeURIComponent(t.session))
            .then(function (full) { if (full.result) results.set(k, full.result); return t; }, function () { return t; });
        }));
      })
      .then(function (tasks) {
        var rows = tasks.map(function (t) { return { t: t, r: results.get(t.session + '\n' + t.id) }; });
        rows.sort(function (a, b) { return ((b.r && b.r.timings.finished) || 0) - ((a.r && a.r.timings.finished) || 0); });
        rows = rows.slice(0, 20);
        var keep = new Set(rows.map(function (x) { return x.t.session + '\n' + x.t.id; }));
        results.forEach(function (_, k) { if (!keep.has(k)) results.delete(k); });
        fill($('failure-rows'), rows.map(function (x) {
          var r = x.r, err = r && r.error;
          var tr = row([
            { text: x.t.id, title: x.t.id, cls: 'id' }, pill(x.t.state), { text: err ? err.code : '–', cls: 'code' },
            { text: err ? err.message : '', title: err ? err.message : '' },
            r ? (r.exitCode !== null ? String(r.exitCode) : r.signal || '–') : '–',
            (r && r.executor) || x.t.executor || '–', { text: x.t.session, title: x.t.session, cls: 'id' }, r ? fmtTime(r.timings.finished) : '–',
          ]);
          tr.setAttribute('data-task', x.t.id);
          return tr;
        }), 8, 'no failures');
        failKey = key;
      })
      .catch(onError)
      .then(function () { failFetch = null; });
  }

  function onError(err) {
    if (err instanceof Unauthorized) {
      needToken = true;
      $('main').classList.add('nodata');
      conn('error', 'token required');
      banner(token ? 'The token this page holds was refused.' : 'This dispatcher needs its client token: open /#token=… or enter it.');
      if (!prompted) setTimeout(askToken, 0);
      return;
    }
    conn('error', 'no answer: ' + (err && err.message ? err.message : String(err)).slice(0, 80));
  }

  var timer = null;
  function tick() {
    clearTimeout(timer);
    if (needToken) return;
    var started = Date.now();
    api('/api/status').then(function (s) {
      renderStatus(s);
      $('main').classList.remove('nodata');
      conn('live', 'live · ' + new Date(s.now).toLocaleTimeString());
      refreshFailures(s);
      return api('/api/sessions').then(function (x) { renderSessions(x.sessions); });
    }).catch(onError).then(function () {
      if (!needToken) timer = setTimeout(tick, Math.max(100, 1000 - (Date.now() - started)));
    });
  }
  tick();
})();
</script>
</body>
</html>
`;
