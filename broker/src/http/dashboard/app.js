// Herald dashboard: reads `v1/stats/stream` (Server-Sent Events, one `stats`
// snapshot per interval), turns counters into rates between consecutive
// snapshots and draws the last WINDOW_MS as SVG paths. No dependencies, no
// requests to any other origin. Paths are relative to /dashboard, so the
// page also works behind a path prefix.
'use strict';

(() => {
  const WINDOW_MS = 3 * 60 * 1000;
  const MIN_SPAN_MS = 30 * 1000;
  const W = 600;
  const H = 160;
  const PAD_TOP = 12;
  const PAD_BOTTOM = 4;
  const SVG_NS = 'http://www.w3.org/2000/svg';

  const el = (id) => document.querySelector(`[data-testid="${id}"]`);
  const pageQuery = new URLSearchParams(location.search);
  const intervalMs = pageQuery.get('interval_ms');
  let token = pageQuery.get('token') || sessionStorage.getItem('herald_token') || '';

  /** name → [{t, v}] rate points inside the window */
  const series = { publish: [], delivery: [], slow: [] };
  let last = null; // previous snapshot
  let source = null; // EventSource
  let retryTimer = null;

  function url(path, extra = {}) {
    const q = new URLSearchParams(extra);
    if (token) q.set('token', token);
    const s = q.toString();
    return s ? `${path}?${s}` : path;
  }

  function setText(id, text, value) {
    const node = el(id);
    if (!node) return;
    node.textContent = text;
    if (value !== undefined) node.dataset.value = String(value);
  }

  const fmtInt = (n) => Number(n).toLocaleString('en-US');
  function fmtRate(v) {
    if (v >= 100) return v.toFixed(0);
    if (v >= 10) return v.toFixed(1);
    return v.toFixed(2);
  }
  function fmtUptime(s) {
    s = Math.floor(s);
    const d = Math.floor(s / 86400);
    const h = Math.floor((s % 86400) / 3600);
    const m = Math.floor((s % 3600) / 60);
    const parts = [];
    if (d) parts.push(`${d}d`);
    if (d || h) parts.push(`${h}h`);
    if (d || h || m) parts.push(`${m}m`);
    parts.push(`${s % 60}s`);
    return parts.join(' ');
  }

  function setStatus(state) {
    const node = el('stream-status');
    node.textContent = state;
    node.dataset.value = state;
    node.className = `badge ${state === 'live' ? 'ok' : state === 'unauthorized' ? 'bad' : 'warn'}`;
  }

  const sumTransports = (o) => o.ws + o.sse + o.poll;

  /** Adds a rate point (per second) between `prev` and `cur` for each series. */
  function addRates(prev, cur) {
    const dt = (cur.ts - prev.ts) / 1000;
    if (!(dt > 0) || prev.node !== cur.node) return;
    const rate = (a, b) => (b >= a ? (b - a) / dt : null); // a drop means a restart
    const points = {
      publish: rate(prev.published_total, cur.published_total),
      delivery: rate(sumTransports(prev.delivered_total), sumTransports(cur.delivered_total)),
      slow: rate(prev.slow_consumer_actions_total, cur.slow_consumer_actions_total),
    };
    for (const [name, v] of Object.entries(points)) {
      if (v === null) continue;
      const list = series[name];
      list.push({ t: cur.ts, v });
      while (list.length && list[0].t < cur.ts - WINDOW_MS) list.shift();
    }
  }

  /** A round upper bound for the y axis. */
  function niceMax(v) {
    if (!(v > 0)) return 1;
    const p = Math.pow(10, Math.floor(Math.log10(v)));
    for (const m of [1, 2, 2.5, 5, 10]) if (v <= m * p) return m * p;
    return 10 * p;
  }

  function drawChart(name, now) {
    const svg = el(`chart-${name}`);
    const line = el(`chart-${name}-path`);
    const area = svg.querySelector('path.area');
    const grid = svg.querySelector('g.grid');
    const points = series[name];
    const max = niceMax(Math.max(0, ...points.map((p) => p.v)));
    // A young history fills the width (at least MIN_SPAN_MS), growing to the window.
    const first = points.length ? points[0].t : now;
    const span = Math.min(WINDOW_MS, Math.max(MIN_SPAN_MS, now - first));
    const x = (t) => ((t - (now - span)) / span) * W;
    const y = (v) => H - PAD_BOTTOM - (v / max) * (H - PAD_TOP - PAD_BOTTOM);
    const coords = points.map((p) => `${x(p.t).toFixed(1)},${y(p.v).toFixed(1)}`);
    const d = coords.length ? `M${coords.join('L')}` : '';
    line.setAttribute('d', d);
    area.setAttribute(
      'd',
      coords.length
        ? `${d}L${x(points[points.length - 1].t).toFixed(1)},${y(0)}L${x(points[0].t).toFixed(1)},${y(0)}Z`
        : '',
    );
    svg.dataset.points = String(points.length);
    svg.dataset.span = String(span);
    svg.dataset.max = String(max);
    svg.dataset.last = points.length ? String(points[points.length - 1].v) : '0';
    // Grid: baseline, half and top, with labels.
    grid.replaceChildren();
    for (const f of [0, 0.5, 1]) {
      const gy = y(max * f);
      const rule = document.createElementNS(SVG_NS, 'line');
      rule.setAttribute('x1', '0');
      rule.setAttribute('x2', String(W));
      rule.setAttribute('y1', gy.toFixed(1));
      rule.setAttribute('y2', gy.toFixed(1));
      grid.append(rule);
      if (f > 0) {
        const label = document.createElementNS(SVG_NS, 'text');
        label.setAttribute('x', '4');
        label.setAttribute('y', (gy + 11).toFixed(1));
        label.textContent = fmtRate(max * f);
        grid.append(label);
      }
    }
    const age = document.createElementNS(SVG_NS, 'text');
    age.setAttribute('x', String(W - 4));
    age.setAttribute('y', String(H - PAD_BOTTOM - 4));
    age.setAttribute('class', 'span');
    age.textContent = `last ${span >= 60_000 ? `${Math.round(span / 60_000)} min` : `${Math.round(span / 1000)} s`}`;
    grid.append(age);
  }

  function renderNodes(s) {
    const body = el('nodes');
    body.replaceChildren();
    for (const n of s.nodes) {
      const row = document.createElement('tr');
      row.dataset.testid = 'node-row';
      row.dataset.nodeId = n.id;
      const cells = [
        n.id,
        n.self ? 'this node' : 'peer',
        n.live ? 'live' : 'down',
        n.ready === null ? '–' : n.ready ? 'ready' : 'not ready',
      ];
      for (const [i, text] of cells.entries()) {
        const td = document.createElement('td');
        td.textContent = text;
        if (i === 2) td.className = n.live ? 'ok' : 'bad';
        if (i === 3 && n.ready !== null) td.className = n.ready ? 'ok' : 'bad';
        row.append(td);
      }
      body.append(row);
    }
    setText('cluster-mode', s.cluster ? `cluster of ${s.nodes.length}` : 'single node');
  }

  function render(s) {
    if (last) addRates(last, s);
    last = s;
    setText('node-id', s.node);
    const ready = el('ready');
    ready.textContent = s.ready ? 'ready' : `not ready: ${s.not_ready_reason || '?'}`;
    ready.dataset.value = String(s.ready);
    ready.className = `badge ${s.ready ? 'ok' : 'bad'}`;
    setText('uptime', fmtUptime(s.uptime_seconds));
    setText('updated', new Date(s.ts).toLocaleTimeString('en-GB'), s.ts);
    for (const t of ['ws', 'sse', 'poll']) {
      setText(`conn-${t}`, fmtInt(s.connections[t]), s.connections[t]);
      setText(`delivered-${t}`, fmtInt(s.delivered_total[t]), s.delivered_total[t]);
    }
    const conns = sumTransports(s.connections);
    setText('conn-total', fmtInt(conns), conns);
    setText('subscriptions', fmtInt(s.subscriptions), s.subscriptions);
    setText('topics', fmtInt(s.topics), s.topics);
    setText('published-total', fmtInt(s.published_total), s.published_total);
    const delivered = sumTransports(s.delivered_total);
    setText('delivered-total', fmtInt(delivered), delivered);
    setText('slow-actions-total', fmtInt(s.slow_consumer_actions_total), s.slow_consumer_actions_total);
    setText('slow-consumers-total', fmtInt(s.slow_consumers_total), s.slow_consumers_total);
    const lastRate = (name) => (series[name].length ? series[name][series[name].length - 1].v : 0);
    for (const [id, name] of [
      ['publish-rate', 'publish'],
      ['delivery-rate', 'delivery'],
      ['slow-actions-rate', 'slow'],
    ]) {
      const v = lastRate(name);
      setText(id, fmtRate(v), v);
    }
    for (const name of Object.keys(series)) drawChart(name, s.ts);
    renderNodes(s);
  }

  function showAuth(message) {
    el('auth').hidden = false;
    setText('auth-message', message);
    setStatus('unauthorized');
  }

  function scheduleProbe(ms) {
    clearTimeout(retryTimer);
    retryTimer = setTimeout(probe, ms);
  }

  /** Checks access with one snapshot, then opens the stream. */
  async function probe() {
    if (source) {
      source.close();
      source = null;
    }
    let res;
    try {
      res = await fetch(url('v1/stats'), { cache: 'no-store' });
    } catch {
      setStatus('offline');
      scheduleProbe(2000);
      return;
    }
    if (res.status === 401 || res.status === 403) {
      const body = await res.json().catch(() => ({}));
      showAuth(
        `${res.status === 401 ? 'Credentials required' : 'Not allowed'}: ${body.error?.message ?? res.statusText}. ` +
          'Enter an API key or a token that may subscribe to ">".',
      );
      return;
    }
    if (!res.ok) {
      setStatus(`error ${res.status}`);
      scheduleProbe(2000);
      return;
    }
    el('auth').hidden = true;
    render(await res.json());
    connect();
  }

  function connect() {
    setStatus('connecting');
    source = new EventSource(url('v1/stats/stream', intervalMs ? { interval_ms: intervalMs } : {}));
    source.addEventListener('open', () => setStatus('live'));
    source.addEventListener('stats', (e) => {
      setStatus('live');
      render(JSON.parse(e.data));
    });
    source.addEventListener('error', () => {
      if (source && source.readyState === EventSource.CLOSED) {
        // Refused (e.g. a token expired): find out why before retrying.
        setStatus('reconnecting');
        scheduleProbe(2000);
      } else {
        setStatus('reconnecting'); // the browser retries by itself
      }
    });
  }

  el('auth-form').addEventListener('submit', (e) => {
    e.preventDefault();
    token = el('auth-token').value.trim();
    if (token) sessionStorage.setItem('herald_token', token);
    else sessionStorage.removeItem('herald_token');
    probe();
  });

  // For tests and debugging: the raw series and the last snapshot.
  window.heraldDashboard = { series, get last() { return last; } };
  probe();
})();
