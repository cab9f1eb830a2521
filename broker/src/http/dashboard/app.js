// Herald dashboard: reads `v1/stats/stream` (Server-Sent Events, one `stats`
// snapshot per interval) and shows the cluster's numbers: totals summed over
// every node that reports (the node answering plus its peers' latest
// one-second samples), each node's own, the busiest topics, and charts of
// the cluster-wide rates over the last WINDOW_MS with a time axis. No
// dependencies, no requests to any other origin. Paths are relative to
// /dashboard, so the page also works behind a path prefix.
'use strict';

(() => {
  const WINDOW_MS = 5 * 60 * 1000;
  const MIN_SPAN_MS = 60 * 1000;
  // Chart geometry (SVG user units; the SVG scales to the card's width).
  const W = 640;
  const H = 280;
  const M = { left: 56, right: 14, top: 14, bottom: 34 };
  const TIME_STEPS_S = [5, 10, 15, 30, 60, 120, 300, 600];
  const SVG_NS = 'http://www.w3.org/2000/svg';

  const el = (id) => document.querySelector(`[data-testid="${id}"]`);
  const pageQuery = new URLSearchParams(location.search);
  const intervalMs = pageQuery.get('interval_ms');
  let token = pageQuery.get('token') || sessionStorage.getItem('herald_token') || '';

  /** name → [{t, v}] cluster-wide rate points inside the window */
  const series = { publish: [], delivery: [], slow: [] };
  let last = null; // latest snapshot
  let lastRatesTs = 0; // rates_ts of the last chart point
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
    if (v >= 100) return Math.round(v).toLocaleString('en-US');
    if (v >= 10) return v.toFixed(1);
    return v.toFixed(2);
  }
  /** Short axis labels: 950, 1.5k, 12k, 3.4M. */
  function fmtAxis(v) {
    const a = Math.abs(v);
    const trim = (x, digits = 1) => String(Number(x.toFixed(digits)));
    if (a >= 1e6) return `${trim(v / 1e6)}M`;
    if (a >= 1e4) return `${trim(v / 1e3)}k`;
    if (a >= 10 || v === 0) return String(Math.round(v));
    return trim(v, 2);
  }
  const fmtClock = (t) => new Date(t).toLocaleTimeString('en-GB');
  function fmtAge(ms) {
    if (ms < 1000) return 'now';
    const s = Math.round(ms / 1000);
    if (s < 120) return `${s} s ago`;
    const m = Math.round(s / 60);
    if (m < 120) return `${m} min ago`;
    return `${Math.round(m / 60)} h ago`;
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

  /** A chart point per new sampling window (rates change once a second). */
  function addRates(s) {
    if (s.rates_ts === lastRatesTs) return;
    lastRatesTs = s.rates_ts;
    const points = {
      publish: s.totals.rates.publish,
      delivery: s.totals.rates.delivery,
      slow: s.totals.rates.slow_consumer_actions,
    };
    for (const [name, v] of Object.entries(points)) {
      const list = series[name];
      list.push({ t: s.ts, v });
      while (list.length && list[0].t < s.ts - WINDOW_MS) list.shift();
    }
  }

  /** A round upper bound for the y axis, and how many round steps divide it. */
  function niceScale(v) {
    if (!(v > 0)) return { max: 1, steps: 5 };
    const p = Math.pow(10, Math.floor(Math.log10(v)));
    for (const [m, steps] of [[1, 5], [2, 4], [2.5, 5], [5, 5], [10, 5]]) {
      if (v <= m * p) return { max: m * p, steps };
    }
    return { max: 10 * p, steps: 5 };
  }

  function svg(name, attrs, text) {
    const node = document.createElementNS(SVG_NS, name);
    for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, String(v));
    if (text !== undefined) node.textContent = text;
    return node;
  }

  function drawChart(name, now) {
    const chart = el(`chart-${name}`);
    const line = el(`chart-${name}-path`);
    const area = chart.querySelector('path.area');
    const grid = chart.querySelector('g.grid');
    const points = series[name];
    const { max, steps } = niceScale(Math.max(0, ...points.map((p) => p.v)));
    // A young history fills the width (at least MIN_SPAN_MS), growing to the window.
    const first = points.length ? points[0].t : now;
    const span = Math.min(WINDOW_MS, Math.max(MIN_SPAN_MS, now - first));
    const x0 = M.left;
    const x1 = W - M.right;
    const y0 = H - M.bottom;
    const y1 = M.top;
    const x = (t) => x0 + ((t - (now - span)) / span) * (x1 - x0);
    const y = (v) => y0 - (v / max) * (y0 - y1);
    const coords = points.map((p) => `${x(p.t).toFixed(1)},${y(p.v).toFixed(1)}`);
    const d = coords.length ? `M${coords.join('L')}` : '';
    line.setAttribute('d', d);
    area.setAttribute(
      'd',
      coords.length
        ? `${d}L${x(points[points.length - 1].t).toFixed(1)},${y0}L${x(points[0].t).toFixed(1)},${y0}Z`
        : '',
    );
    chart.dataset.points = String(points.length);
    chart.dataset.span = String(span);
    chart.dataset.max = String(max);
    chart.dataset.last = points.length ? String(points[points.length - 1].v) : '0';

    grid.replaceChildren();
    // y axis: rules at round values, labelled on the left.
    for (let i = 0; i <= steps; i++) {
      const v = (max * i) / steps;
      const gy = y(v).toFixed(1);
      grid.append(svg('line', { x1: x0, x2: x1, y1: gy, y2: gy, class: i ? 'rule' : 'axis' }));
      grid.append(svg('text', { x: x0 - 8, y: Number(gy) + 5, class: 'y' }, fmtAxis(v)));
    }
    // x axis: wall-clock ticks at a round step, at most 6 over the span.
    const step = (TIME_STEPS_S.find((s) => (span / 1000) / s <= 6) ?? 600) * 1000;
    let ticks = 0;
    for (let t = Math.ceil((now - span) / step) * step; t <= now; t += step) {
      const gx = x(t).toFixed(1);
      grid.append(svg('line', { x1: gx, x2: gx, y1: y1, y2: y0 + 4, class: 'tick' }));
      // A label would be clipped at the right edge.
      if (Number(gx) <= W - 34) grid.append(svg('text', { x: gx, y: H - 10, class: 'x' }, fmtClock(t)));
      ticks++;
    }
    chart.dataset.ticks = String(ticks);
  }

  function cell(text, className) {
    const td = document.createElement('td');
    td.textContent = text;
    if (className) td.className = className;
    return td;
  }

  function renderNodes(s) {
    const body = el('nodes');
    body.replaceChildren();
    for (const n of s.nodes) {
      const row = document.createElement('tr');
      row.dataset.testid = 'node-row';
      row.dataset.nodeId = n.id;
      const st = n.stats;
      row.append(
        cell(n.id),
        cell(n.self ? 'this node' : 'peer'),
        cell(n.live ? 'live' : 'down', n.live ? 'ok' : 'bad'),
        cell(n.ready === null ? '–' : n.ready ? 'ready' : 'not ready', n.ready === null ? '' : n.ready ? 'ok' : 'bad'),
        cell(st ? fmtInt(st.connections) : '–', 'num'),
        cell(st ? fmtInt(st.subscriptions) : '–', 'num'),
        cell(st ? fmtInt(st.published_total) : '–', 'num'),
        cell(st ? fmtRate(st.rates.publish) : '–', 'num'),
        cell(st ? fmtInt(st.delivered_total) : '–', 'num'),
        cell(st ? fmtRate(st.rates.delivery) : '–', 'num'),
        cell(st ? (n.self ? 'live' : fmtAge(st.age_ms)) : 'no stats yet', st ? '' : 'warn'),
      );
      if (st) row.dataset.published = String(st.published_total);
      body.append(row);
    }
    const reporting = s.totals.nodes;
    const mode = s.cluster
      ? `cluster of ${s.nodes.length}${reporting < s.nodes.length ? `, ${reporting} reporting` : ''}`
      : 'single node';
    setText('cluster-mode', mode, s.cluster ? reporting : 1);
  }

  function renderTopics(s) {
    const body = el('top-topics');
    body.replaceChildren();
    for (const t of s.top_topics) {
      const row = document.createElement('tr');
      row.dataset.testid = 'topic-row';
      row.dataset.topic = t.topic;
      row.dataset.lastSeq = String(t.last_seq);
      row.dataset.subscribers = String(t.subscribers);
      row.dataset.rate = String(t.rate);
      const name = cell('');
      const code = document.createElement('code');
      code.textContent = t.topic;
      name.append(code);
      row.append(
        name,
        cell(fmtRate(t.rate), 'num'),
        cell(fmtInt(t.last_seq), 'num'),
        cell(fmtInt(t.subscribers), 'num'),
        cell(t.last_ts ? fmtAge(Math.max(0, s.ts - t.last_ts)) : '–'),
      );
      body.append(row);
    }
    el('top-topics-empty').hidden = s.top_topics.length > 0;
  }

  function render(s) {
    addRates(s);
    last = s;
    const tot = s.totals;
    setText('node-id', s.node);
    const ready = el('ready');
    ready.textContent = s.ready ? 'ready' : `not ready: ${s.not_ready_reason || '?'}`;
    ready.dataset.value = String(s.ready);
    ready.className = `badge ${s.ready ? 'ok' : 'bad'}`;
    setText('uptime', fmtUptime(s.uptime_seconds));
    setText('updated', fmtClock(s.ts), s.ts);
    setText(
      'scope',
      s.cluster
        ? `Cluster totals over ${tot.nodes} node${tot.nodes === 1 ? '' : 's'}; “this node” lines are the node serving this page.`
        : 'Single node: every number is this node’s.',
    );
    for (const node of document.querySelectorAll('.chart-scope')) {
      node.textContent = s.cluster ? 'cluster-wide' : 'this node';
    }
    for (const t of ['ws', 'sse', 'poll']) {
      setText(`conn-${t}`, fmtInt(tot.connections[t]), tot.connections[t]);
      setText(`delivered-${t}`, fmtInt(tot.delivered_total[t]), tot.delivered_total[t]);
    }
    const conns = sumTransports(tot.connections);
    setText('conn-total', fmtInt(conns), conns);
    setText('conn-node', fmtInt(sumTransports(s.connections)), sumTransports(s.connections));
    setText('subscriptions', fmtInt(tot.subscriptions), tot.subscriptions);
    setText('subscriptions-node', fmtInt(s.subscriptions), s.subscriptions);
    setText('topics', fmtInt(s.topics), s.topics);
    setText('published-total', fmtInt(tot.published_total), tot.published_total);
    setText('published-node', fmtInt(s.published_total), s.published_total);
    const delivered = sumTransports(tot.delivered_total);
    setText('delivered-total', fmtInt(delivered), delivered);
    const deliveredNode = sumTransports(s.delivered_total);
    setText('delivered-node', fmtInt(deliveredNode), deliveredNode);
    setText('slow-actions-total', fmtInt(tot.slow_consumer_actions_total), tot.slow_consumer_actions_total);
    setText('slow-consumers-total', fmtInt(tot.slow_consumers_total), tot.slow_consumers_total);
    setText('publish-rate', fmtRate(tot.rates.publish), tot.rates.publish);
    setText('delivery-rate', fmtRate(tot.rates.delivery), tot.rates.delivery);
    setText('slow-actions-rate', fmtRate(tot.rates.slow_consumer_actions), tot.rates.slow_consumer_actions);
    for (const name of Object.keys(series)) drawChart(name, s.ts);
    renderNodes(s);
    renderTopics(s);
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
