/**
 * The dashboard page: one HTML file, one stylesheet and one script, no framework (uPlot, served
 * from its npm package by ./routes.ts, draws the plot over time). Kept as strings so the compiled
 * server (dist/) carries them without a copy step; tests/ui runs the script in Chromium.
 * `{{AUTH}}` in the HTML becomes the server's auth mode, so the page asks for a token before its
 * first request instead of after a refusal.
 */

export const INDEX_HTML = String.raw`<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>PolicyGuard dashboard</title>
<link rel="icon" href="data:,">
<link rel="stylesheet" href="uplot.css">
<link rel="stylesheet" href="dashboard.css">
<script src="uplot.js" defer></script>
<script src="dashboard.js" defer></script>
</head>
<body data-auth="{{AUTH}}">
<header>
  <h1>PolicyGuard</h1>
  <span id="status" class="pill">…</span>
  <span id="scope"></span>
  <span class="spacer"></span>
  <span id="generated"></span>
  <label>Range <select id="range"><option value="1h">last hour</option><option value="24h" selected>last 24 hours</option><option value="7d">last 7 days</option></select></label>
  <button id="refresh" type="button">Refresh</button>
</header>
<form id="login" hidden>
  <p id="login-message"></p>
  <input id="token" type="password" autocomplete="off" placeholder="Bearer token" aria-label="Bearer token" required>
  <button type="submit">Show dashboard</button>
</form>
<p id="error" hidden></p>
<main id="main" hidden>
  <section class="cards">
    <div class="card" id="card-total"><div class="muted">Decisions</div><div class="value"></div></div>
    <div class="card allow" id="card-allow"><div class="muted">Allowed</div><div class="value"></div></div>
    <div class="card deny" id="card-deny"><div class="muted">Denied</div><div class="value"></div></div>
    <div class="card approval" id="card-approval"><div class="muted">Approval needed</div><div class="value"></div></div>
    <div class="card" id="card-rate"><div class="muted">Not allowed (denied or approval needed)</div><div class="value"></div></div>
  </section>
  <section><h2>Decisions over time</h2><div id="timeline"></div></section>
  <section class="two">
    <div><h2>Top denied tools <span class="muted">(denied or approval needed)</span></h2><div id="top-tools"></div></div>
    <div><h2>Top denied agents <span class="muted">(denied or approval needed)</span></h2><div id="top-agents"></div></div>
  </section>
  <section><h2>Agents</h2><table id="agents"></table></section>
  <section><h2>Recent incidents <span id="incident-total" class="muted"></span></h2><table id="incidents"></table></section>
  <section><h2>Policies</h2><table id="policies"></table>
    <div id="problems-block" hidden><h2>Not fully in force</h2><ul id="problems"></ul></div>
  </section>
  <section id="approvals"><h2>Pending approvals <span id="approval-count" class="muted"></span></h2><table id="approval-list"></table>
    <p class="muted">This page never decides: run the command shown (<code>deny</code> instead of <code>approve</code> to refuse, <code>--reason</code> to say why). In a cluster that takes verb <code>approve</code> on guardapprovals, as someone other than the agent and its caller.</p>
  </section>
</main>
<footer>Counts come from the audit log, as <code>get_compliance_status</code> reports them, and cover only what you may read. In a cluster with the file audit sink each replica shows only its own decisions; with the ConfigMap sink (the Helm chart's default) every replica's.</footer>
</body>
</html>
`;

export const DASHBOARD_CSS = String.raw`:root { --fg: #1f2933; --muted: #616e7c; --line: #e4e7eb; --bg: #f5f7fa; --card: #fff; --good: #2e7d32; --bad: #c62828; --warn: #ef8f00; }
* { box-sizing: border-box; }
body { margin: 0; font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; color: var(--fg); background: var(--bg); }
header { display: flex; flex-wrap: wrap; gap: 12px; align-items: center; padding: 12px 20px; background: var(--card); border-bottom: 1px solid var(--line); }
header h1 { font-size: 18px; margin: 0 8px 0 0; }
header .spacer { flex: 1; }
main, #login, #error { max-width: 1200px; margin: 16px auto; padding: 0 20px; }
section { background: var(--card); border: 1px solid var(--line); border-radius: 6px; padding: 12px 16px; margin-bottom: 16px; }
h2 { font-size: 15px; margin: 0 0 8px; }
.muted, footer, #scope, #generated { color: var(--muted); }
.pill { padding: 2px 10px; border-radius: 10px; font-weight: 600; text-transform: uppercase; font-size: 12px; background: var(--line); }
.pill.healthy { background: #e3f1e4; color: var(--good); }
.pill.warning { background: #fff2de; color: #a65f00; }
.pill.critical { background: #fde5e5; color: var(--bad); }
.cards { display: grid; grid-template-columns: repeat(auto-fit, minmax(150px, 1fr)); gap: 12px; background: none; border: 0; padding: 0; }
.card { background: var(--card); border: 1px solid var(--line); border-radius: 6px; padding: 10px 14px; }
.card .value { font-size: 24px; font-weight: 600; }
.card.allow .value { color: var(--good); }
.card.deny .value { color: var(--bad); }
.card.approval .value { color: var(--warn); }
.two { display: grid; grid-template-columns: 1fr 1fr; gap: 16px; background: none; border: 0; padding: 0; }
.two > div { background: var(--card); border: 1px solid var(--line); border-radius: 6px; padding: 12px 16px; }
@media (max-width: 800px) { .two { grid-template-columns: 1fr; } }
.bar-row { display: grid; grid-template-columns: minmax(80px, 35%) 1fr auto; gap: 8px; align-items: center; margin: 4px 0; }
.bar-label { overflow: hidden; text-overflow: ellipsis; white-space: nowrap; font-family: ui-monospace, monospace; font-size: 13px; }
.bar-track { background: var(--bg); border-radius: 3px; height: 14px; }
.bar { background: var(--bad); height: 14px; border-radius: 3px; min-width: 2px; }
.bar-count { font-variant-numeric: tabular-nums; min-width: 3ch; text-align: right; }
table { border-collapse: collapse; width: 100%; }
th, td { text-align: left; padding: 5px 8px; border-bottom: 1px solid var(--line); vertical-align: top; }
td { overflow-wrap: break-word; unicode-bidi: isolate; }
/* The whole preview, in the order it is stored: right-to-left letters do not reorder what is around them. */
.preview { display: block; max-height: 16em; overflow: auto; direction: ltr; unicode-bidi: bidi-override; }
.wrap { overflow-wrap: anywhere; }
th { font-weight: 600; color: var(--muted); font-size: 12px; text-transform: uppercase; }
.good { color: var(--good); font-weight: 600; }
.bad, .severity.critical, .severity.high { color: var(--bad); font-weight: 600; }
.severity.medium { color: #a65f00; }
.trust.admin { font-weight: 600; }
#login form, #login { display: block; }
#login input { width: min(480px, 100%); padding: 6px 8px; font: inherit; }
#login button, header button, header select { font: inherit; padding: 4px 10px; }
#error { color: var(--bad); font-weight: 600; }
#problems-block { margin-top: 16px; }
main code { font-family: ui-monospace, monospace; font-size: 13px; }
.cmd { user-select: all; color: var(--fg); }
.nowrap, #approval-list td:nth-child(n+6) { white-space: nowrap; }
tr.above td { border-bottom: 0; padding-bottom: 0; }
tr.below td { padding-top: 2px; }
footer { max-width: 1200px; margin: 0 auto 24px; padding: 0 20px; font-size: 12px; }
[hidden] { display: none !important; }
`;

export const DASHBOARD_JS = String.raw`// PolicyGuard dashboard: fetches /ui/api/dashboard (with the bearer token the user typed, when
// the server has auth on) and draws it. No framework; uPlot draws the plot over time. Every
// string from the server goes into the page as text, never as HTML: targets, agent ids,
// incident descriptions and approval arguments come from callers.
(() => {
  'use strict';
  const $ = (id) => document.getElementById(id);
  const auth = document.body.dataset.auth;
  let token = null;
  let timeline = null;

  const el = (tag, text, cls) => {
    const e = document.createElement(tag);
    if (text !== undefined && text !== null) e.textContent = String(text);
    if (cls) e.className = cls;
    return e;
  };
  const fmt = (n) => Number(n).toLocaleString('en');
  const when = (iso) => new Date(iso).toLocaleString('en', { dateStyle: 'short', timeStyle: 'medium' });
  // '3m ago' / 'in 52m' from the server's clock (generated_at), as 'policyguard approvals list' shows times.
  const relative = (iso, now) => {
    const ms = Date.parse(iso) - Date.parse(now);
    const abs = Math.abs(ms);
    const text = abs < 120000 ? Math.round(abs / 1000) + 's' : abs < 7200000 ? Math.round(abs / 60000) + 'm' : abs < 172800000 ? Math.round(abs / 3600000) + 'h' : Math.round(abs / 86400000) + 'd';
    return ms > 0 ? 'in ' + text : text + ' ago';
  };

  function show(id, visible) {
    $(id).hidden = !visible;
  }

  function askForToken(message) {
    show('main', false);
    show('login', true);
    $('login-message').textContent = message;
    $('token').focus();
  }

  function failed(message) {
    $('error').textContent = message;
    show('error', true);
  }

  async function load() {
    if (auth !== 'none' && token === null) return askForToken('This server requires a bearer token (--auth ' + auth + '). It is sent with each request and kept only in this tab.');
    show('error', false);
    $('refresh').disabled = true;
    try {
      const headers = token === null ? {} : { authorization: 'Bearer ' + token };
      const res = await fetch('api/dashboard?range=' + encodeURIComponent($('range').value), { headers, cache: 'no-store' });
      const body = await res.json().catch(() => ({}));
      const message = (body.error && body.error.message) || body.error || res.statusText;
      if (res.status === 401) {
        token = null;
        return askForToken('Token refused: ' + message);
      }
      if (!res.ok) return failed('Could not load the dashboard: ' + message);
      show('login', false);
      show('main', true);
      render(body);
    } catch (err) {
      failed('Could not load the dashboard: ' + err);
    } finally {
      $('refresh').disabled = false;
    }
  }

  function render(d) {
    $('status').textContent = d.status;
    $('status').className = 'pill ' + d.status;
    $('status').title = d.status_message;
    $('scope').textContent = d.scope.all ? 'All agents' : 'Your agents: ' + (d.scope.agents.join(', ') || 'none') + ' (and your own calls), as ' + d.scope.caller;
    $('generated').textContent = 'Generated ' + when(d.generated_at);
    cards(d);
    drawTimeline(d.series);
    bars('top-tools', d.top_denied_tools.map((t) => [t.target, t.denied]), 'No denied tools in this range.');
    bars('top-agents', d.top_denied_agents.map((a) => [a.agent_id, a.violations]), 'No denied agents in this range.');
    table('agents', ['Agent', 'Namespace', 'Trust', 'Suspended', 'Decisions', 'Denied'], d.agents, (a) => [
      a.id, a.namespace || '-', el('span', a.trust, 'trust ' + a.trust), a.suspended ? el('span', 'suspended', 'bad') : 'no', fmt(a.decisions), fmt(a.denied),
    ], { title: (a) => (a.suspension ? 'Suspended: ' + a.suspension : '') });
    $('incident-total').textContent = d.incidents.total > d.incidents.recent.length ? '(' + d.incidents.recent.length + ' most recent of ' + fmt(d.incidents.total) + ')' : '';
    table('incidents', ['Time', 'Severity', 'Type', 'Agent', 'Description'], d.incidents.recent, (i) => [
      when(i.timestamp), el('span', i.severity, 'severity ' + i.severity), i.type, i.agent_id || '-', el('span', i.description, 'wrap'),
    ]);
    table('policies', ['Policy', 'Namespace', 'Enforcement', 'Priority', 'Rules', 'Ready'], d.policies, (p) => [
      p.name, p.namespace || '-', p.enforcement, p.priority, p.rules, el('span', p.ready ? 'True' : 'False (' + p.reason + ')', p.ready ? 'good' : 'bad'),
    ], { title: (p) => p.message });
    const ap = d.approvals;
    $('approval-count').textContent = '(' + (ap.count > ap.pending.length ? ap.pending.length + ' newest of ' + fmt(ap.count) : fmt(ap.count)) + ')';
    table('approval-list', ['Approval', 'Agent', 'Action', 'Target', 'Arguments', 'Why', 'Requested', 'Expires'], ap.pending, (a) => [
      named(a.name, a.namespace), a.agent_id, a.action_type, a.upstream ? a.upstream + ': ' + a.target : a.target, el('code', a.arguments_preview, 'wrap preview'), el('span', a.message, 'wrap'),
      relative(a.requested_at, d.generated_at), relative(a.expires_at, d.generated_at),
    ], {
      title: (a) => 'Requested ' + when(a.requested_at) + ', expires ' + when(a.expires_at),
      below: (a) => {
        const line = el('span', 'Approve with ', 'muted');
        line.append(el('code', a.approve_command, 'cmd'));
        return line;
      },
      empty: 'No approvals waiting.',
    });
    const problems = $('problems');
    problems.replaceChildren(...d.problems.map((p) => el('li', p)));
    show('problems-block', d.problems.length > 0);
  }

  // A name, with its namespace (in a cluster) on a line of its own.
  function named(name, namespace) {
    const e = el('div', name, 'nowrap');
    if (namespace) e.append(el('div', namespace, 'muted'));
    return e;
  }

  function cards(d) {
    const m = d.metrics;
    const values = { total: m.total_actions, allow: d.by_decision.allow, deny: d.by_decision.deny, approval: d.by_decision.require_approval, rate: m.denial_rate + ' %' };
    for (const [key, value] of Object.entries(values)) {
      const card = $('card-' + key);
      card.querySelector('.value').textContent = typeof value === 'number' ? fmt(value) : value;
      card.dataset.value = String(typeof value === 'number' ? value : m.denial_rate);
    }
  }

  const SERIES = [
    { key: 'allow', label: 'Allowed', color: '#2e7d32' },
    { key: 'deny', label: 'Denied', color: '#c62828' },
    { key: 'require_approval', label: 'Approval needed', color: '#ef8f00' },
  ];

  // Stacked bars: each series is drawn from zero up to the sum of itself and the series after it,
  // the tallest first, so the visible parts stack; the legend shows each series' own count.
  function drawTimeline(series) {
    const box = $('timeline');
    const own = SERIES.map((s) => series[s.key]);
    const stacked = own.map((_v, i) => series.t.map((_t, j) => own.slice(i).reduce((sum, values) => sum + values[j], 0)));
    if (timeline) timeline.destroy();
    timeline = new uPlot({
      width: Math.max(320, box.clientWidth),
      height: 260,
      scales: {
        // Half a bucket of room at each end, so the first and last bars are drawn whole.
        x: { time: true, range: (_u, min, max) => [min - series.bucket_ms / 2000, max + series.bucket_ms / 2000] },
        y: { range: (_u, _min, max) => [0, Math.max(1, max)] },
      },
      axes: [{}, { label: 'decisions per ' + span(series.bucket_ms) }],
      series: [{}, ...SERIES.map((s, i) => ({
        label: s.label,
        stroke: s.color,
        fill: s.color,
        width: 0,
        paths: uPlot.paths.bars({ size: [0.8, 40] }),
        points: { show: false },
        value: (_u, _v, _si, idx) => (idx === null || idx === undefined ? '--' : fmt(own[i][idx])),
      }))],
    }, [series.t, ...stacked], box);
    // What was drawn, read back from the plot, for people reading the page and for the browser
    // test: the tallest stack's total (every decision) and each series' own total.
    const drawn = timeline.data.slice(1).map((values) => values.reduce((a, b) => a + b, 0));
    box.dataset.total = String(drawn[0]);
    for (const [i, s] of SERIES.entries()) box.dataset[s.key === 'require_approval' ? 'approval' : s.key] = String(drawn[i] - (drawn[i + 1] || 0));
    box.dataset.points = String(timeline.data[0].length);
  }

  function span(ms) {
    if (ms % 3600000 === 0) return ms / 3600000 + ' h';
    if (ms % 60000 === 0) return ms / 60000 + ' min';
    return Math.round(ms / 1000) + ' s';
  }

  function bars(id, rows, empty) {
    const box = $(id);
    const max = Math.max(1, ...rows.map((r) => r[1]));
    box.replaceChildren(...(rows.length === 0 ? [el('p', empty, 'muted')] : rows.map(([label, count]) => {
      const row = el('div', undefined, 'bar-row');
      row.dataset.label = label;
      row.dataset.count = String(count);
      const bar = el('div', undefined, 'bar');
      bar.style.width = (100 * count / max).toFixed(1) + '%';
      row.append(el('span', label, 'bar-label'), el('div', undefined, 'bar-track'), el('span', fmt(count), 'bar-count'));
      row.children[1].append(bar);
      row.title = label + ': ' + count;
      return row;
    })));
  }

  // A table of one row per item; opts.title: the row's tooltip, opts.below: a node shown in a
  // full-width row under the item's, opts.empty: what to say when there are no items.
  function table(id, headings, items, cells, opts = {}) {
    const t = $(id);
    const head = el('tr');
    head.append(...headings.map((h) => el('th', h)));
    const wide = (content, cls) => {
      const tr = el('tr', undefined, cls);
      const td = el('td');
      td.colSpan = headings.length;
      td.append(content);
      tr.append(td);
      return tr;
    };
    const rows = items.flatMap((item) => {
      const tr = el('tr', undefined, opts.below ? 'above' : undefined);
      tr.append(...cells(item).map((c) => {
        const td = el('td');
        if (c instanceof Node) td.append(c);
        else td.textContent = String(c);
        return td;
      }));
      if (opts.title) tr.title = opts.title(item);
      return opts.below ? [tr, wide(opts.below(item), 'below')] : [tr];
    });
    if (rows.length === 0) rows.push(wide(el('span', opts.empty || 'None.', 'muted')));
    t.replaceChildren(el('thead'), el('tbody'));
    t.tHead.append(head);
    t.tBodies[0].append(...rows);
  }

  $('login').addEventListener('submit', (e) => {
    e.preventDefault();
    token = $('token').value.trim();
    $('token').value = '';
    void load();
  });
  $('refresh').addEventListener('click', () => void load());
  $('range').addEventListener('change', () => void load());
  let resizing = 0;
  window.addEventListener('resize', () => {
    clearTimeout(resizing);
    resizing = setTimeout(() => timeline && timeline.setSize({ width: Math.max(320, $('timeline').clientWidth), height: 260 }), 100);
  });
  void load();
})();
`;
