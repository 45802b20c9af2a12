// Tollgate usage dashboard. Plain ES2020, no dependencies: the gateway serves this file as
// is, so every chart is drawn here as inline SVG. Data comes from the Admin API on the same
// origin (/analytics/usage, /analytics/top, /analytics/status, /status, /quotas).
//
// Contract for automated checks: every chart container has data-chart="<name>"; after a
// render it carries data-rendered="true" and data-points="<points drawn>" when it drew real
// data, or data-rendered="false" (plus data-empty / data-error) otherwise. When all fetches
// of a refresh have settled, <body data-ready="true">.
'use strict';
(() => {
  // Ranges map to an API bucket plus a client-side step, so that a chart has at most ~200
  // points: the API only knows minute/hour/day, so 6 h of minutes is re-bucketed to 5 min.
  const RANGES = {
    '1h': { span: 3600, bucket: 'minute', step: 60, label: 'last hour' },
    '6h': { span: 6 * 3600, bucket: 'minute', step: 300, label: 'last 6 hours' },
    '24h': { span: 86400, bucket: 'hour', step: 3600, label: 'last 24 hours' },
    '7d': { span: 7 * 86400, bucket: 'hour', step: 3600, label: 'last 7 days' },
    '30d': { span: 30 * 86400, bucket: 'day', step: 86400, label: 'last 30 days' },
  };
  const REFRESH_MS = 30000;
  const FETCH_TIMEOUT_MS = 20000;
  const MAX_SERIES = 7; // more than this are folded into "other" to keep legends readable
  const TOKEN_KEY = 'tollgate.adminToken';
  const RANGE_KEY = 'tollgate.dashboardRange';
  const SVGNS = 'http://www.w3.org/2000/svg';

  const state = {
    range: '24h',
    token: null,
    gen: 0, // bumped per refresh so a slow, superseded refresh never paints over a newer one
    busy: false,
    needAuth: false,
    last: null, // last results, kept to redraw on resize without refetching
  };

  const $ = (sel, root = document) => root.querySelector(sel);
  const chartEl = (name) => $(`[data-chart="${name}"]`);

  // ---------- formatting ----------

  const sum = (a) => a.reduce((s, v) => s + (v || 0), 0);
  const trim0 = (s) => s.replace(/\.0$/, '');

  // 1234 -> "1.2k", 3400000 -> "3.4M"; small numbers keep up to one decimal.
  function fmtNum(n) {
    if (n == null || !isFinite(n)) return '–';
    const a = Math.abs(n);
    if (a < 1000) return a >= 100 || Number.isInteger(n) ? String(Math.round(n)) : trim0(n.toFixed(1));
    const units = ['k', 'M', 'B', 'T'];
    let v = n / 1000, u = 0;
    while (Math.abs(v) >= 999.95 && u < units.length - 1) { v /= 1000; u++; }
    return trim0(v.toFixed(1)) + units[u];
  }

  // Costs are often fractions of a cent: 4 decimals below $1, cents above, compact past $10k.
  function fmtCost(c) {
    if (c == null || !isFinite(c)) return '–';
    if (c === 0) return '$0';
    const a = Math.abs(c);
    if (a < 0.00005) return c < 0 ? '-<$0.0001' : '<$0.0001';
    if (a < 1) return '$' + c.toFixed(4);
    if (a < 10000) return '$' + c.toFixed(2);
    return '$' + fmtNum(c);
  }
  // Axis labels: same as fmtCost but without trailing zeros ("$0.5", not "$0.5000").
  function fmtCostAxis(c) {
    const a = Math.abs(c);
    if (c === 0 || a >= 1) return fmtCost(c);
    return '$' + (a < 1e-6 ? c.toExponential(1) : String(+c.toPrecision(3)));
  }

  function fmtMs(ms) {
    if (ms == null || !isFinite(ms)) return '–';
    if (ms < 1000) return Math.round(ms) + ' ms';
    return trim0((ms / 1000).toFixed(ms < 10000 ? 2 : 1)) + ' s';
  }

  function fmtPct(p) {
    if (p == null || !isFinite(p)) return '–';
    if (p === 0) return '0%';
    if (p < 0.1) return '<0.1%';
    return trim0(p.toFixed(p < 10 ? 1 : 0)) + '%';
  }

  function fmtWindow(w) {
    const s = Number(w);
    if (!isFinite(s) || s <= 0) return String(w ?? '');
    if (s % 86400 === 0) return s / 86400 + ' d';
    if (s % 3600 === 0) return s / 3600 + ' h';
    if (s % 60 === 0) return s / 60 + ' min';
    return s + ' s';
  }

  const keyLabel = (k) => (k == null || k === '' ? '(none)' : String(k));

  // Day buckets are aligned to UTC midnight by the API, so they are shown in UTC.
  const dtf = (opts, utc) => new Intl.DateTimeFormat(undefined, utc ? { ...opts, timeZone: 'UTC' } : opts);
  function fmtBucket(t, step) {
    if (step >= 86400) return dtf({ weekday: 'short', month: 'short', day: 'numeric' }, true).format(t * 1000) + ' (UTC)';
    const f = dtf({ weekday: 'short', hour: '2-digit', minute: '2-digit' });
    const g = dtf({ hour: '2-digit', minute: '2-digit' });
    return f.format(t * 1000) + ' – ' + g.format((t + step) * 1000);
  }

  // ---------- DOM helpers (data never goes through innerHTML: keys are user-controlled) ----------

  function el(tag, attrs, ...kids) {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (k === 'class') e.className = v;
      else if (k === 'text') e.textContent = v;
      else if (v != null) e.setAttribute(k, v);
    }
    for (const c of kids) if (c != null) e.append(c);
    return e;
  }

  function svg(tag, attrs, parent) {
    const e = document.createElementNS(SVGNS, tag);
    for (const [k, v] of Object.entries(attrs || {})) if (v != null) e.setAttribute(k, v);
    if (parent) parent.appendChild(e);
    return e;
  }

  function svgText(parent, x, y, text, attrs) {
    const t = svg('text', { x: x.toFixed(1), y: y.toFixed(1), ...attrs }, parent);
    t.textContent = text;
    return t;
  }

  const ellipsis = (s, n) => (s.length > n ? s.slice(0, n - 1) + '…' : s);

  // ---------- tooltip ----------

  const tip = () => $('#tip');

  // rows: [{cls, name, value}] — cls picks the swatch colour.
  function showTip(clientX, clientY, title, rows) {
    const t = tip();
    t.replaceChildren(el('div', { class: 'tip-title', text: title }));
    for (const r of rows) {
      t.append(el('div', { class: 'tip-row' + (r.strong ? ' strong' : '') },
        el('span', { class: 'sw ' + (r.cls || 'none') }),
        el('span', { class: 'tip-name', text: r.name }),
        el('span', { class: 'tip-val', text: r.value })));
    }
    t.hidden = false;
    // Keep the tooltip on screen: flip to the left/top of the pointer near the edges.
    const w = t.offsetWidth, h = t.offsetHeight, pad = 14;
    let x = clientX + pad, y = clientY + pad;
    if (x + w > window.innerWidth - 4) x = Math.max(4, clientX - w - pad);
    if (y + h > window.innerHeight - 4) y = Math.max(4, clientY - h - pad);
    t.style.left = x + 'px';
    t.style.top = y + 'px';
  }
  const hideTip = () => { tip().hidden = true; };

  // ---------- scales ----------

  // Rounds max up to a "nice" top with ~count ticks (1, 2, 2.5, 5 × 10^n steps).
  function niceScale(max, count, integer) {
    if (!(max > 0)) max = 1;
    let step = max / count;
    const mag = 10 ** Math.floor(Math.log10(step));
    const norm = step / mag;
    step = (norm <= 1 ? 1 : norm <= 2 ? 2 : norm <= 2.5 ? 2.5 : norm <= 5 ? 5 : 10) * mag;
    if (integer) step = Math.max(1, Math.round(step));
    const top = Math.ceil(max / step - 1e-9) * step;
    const ticks = [];
    for (let i = 0; i * step <= top + step / 2; i++) ticks.push(+(i * step).toPrecision(12));
    return { top: +top.toPrecision(12), ticks };
  }

  const TICK_STEPS = [60, 300, 600, 900, 1800, 3600, 7200, 10800, 21600, 43200, 86400, 172800, 604800, 1209600];

  // Time-axis ticks on round local-clock times (UTC for day buckets), at most `count`.
  function timeTicks(t0, t1, step, count) {
    const span = Math.max(t1 - t0, step);
    const iv = TICK_STEPS.find((s) => s >= step && span / s <= count) || TICK_STEPS[TICK_STEPS.length - 1];
    const utc = step >= 86400;
    const off = utc ? 0 : -new Date(t0 * 1000).getTimezoneOffset() * 60;
    const ticks = [];
    for (let t = Math.ceil((t0 + off) / iv) * iv - off; t <= t1; t += iv) ticks.push(t);
    const fmt = iv < 86400 ? dtf({ hour: '2-digit', minute: '2-digit' }, utc)
      : iv === 86400 ? dtf({ weekday: 'short', day: 'numeric' }, utc)
      : dtf({ month: 'short', day: 'numeric' }, utc);
    return ticks.map((t) => ({ t, label: fmt.format(t * 1000) }));
  }

  // ---------- chart containers ----------

  function markRendered(box, points) {
    box.dataset.rendered = 'true';
    box.dataset.points = String(points);
    delete box.dataset.empty;
    delete box.dataset.error;
  }

  function emptyState(box, message) {
    box.replaceChildren(el('div', { class: 'empty', text: message || 'No traffic in this range' }));
    box.dataset.rendered = 'false';
    box.dataset.points = '0';
    box.dataset.empty = 'true';
    delete box.dataset.error;
  }

  function errorState(box, message) {
    box.replaceChildren(el('div', { class: 'empty error', text: message }));
    box.dataset.rendered = 'false';
    box.dataset.points = '0';
    box.dataset.error = 'true';
    delete box.dataset.empty;
  }

  function legend(items) {
    const ul = el('ul', { class: 'legend' });
    for (const it of items) {
      ul.append(el('li', { title: it.name },
        el('span', { class: 'sw ' + it.cls + (it.dash ? ' dash' : '') }),
        el('span', { class: 'l-name', text: it.name }),
        it.value != null ? el('span', { class: 'l-val', text: it.value }) : null));
    }
    return ul;
  }

  const boxWidth = (box) => Math.max(300, Math.floor(box.clientWidth || box.getBoundingClientRect().width || 640));

  // ---------- time chart (areas, stacked areas, lines; optional right axis) ----------
  //
  // o.series: [{name, cls, values[], kind: 'area'|'line', right?, dash?}] (null = no value,
  // drawn as a gap). Returns the number of points drawn.
  function timeChart(box, ctx, o) {
    const times = ctx.times, n = times.length;
    const W = boxWidth(box), H = o.height || 230;
    const left = o.series.filter((s) => !s.right);
    const right = o.series.filter((s) => s.right);

    // Stack (or not) the left-axis series; lows/highs are per-series arrays.
    let acc = new Array(n).fill(0);
    const lows = new Map(), highs = new Map();
    for (const s of left) {
      if (o.stacked) {
        const hi = acc.map((a, i) => a + (s.values[i] || 0));
        lows.set(s, acc); highs.set(s, hi); acc = hi;
      } else {
        lows.set(s, new Array(n).fill(0)); highs.set(s, s.values);
      }
    }
    for (const s of right) highs.set(s, s.values);
    const maxOf = (list) => Math.max(0, ...list.flatMap((s) => highs.get(s).filter((v) => v != null)));

    const yl = niceScale(maxOf(left), 4, o.integer);
    const yr = right.length ? niceScale(Math.min(o.rightCap || Infinity, maxOf(right)), 4, false) : null;
    const lLabels = yl.ticks.map(o.fmt);
    const rLabels = yr ? yr.ticks.map(o.fmtRight) : [];
    const charW = 7.2; // ~average glyph width of the 12px axis font, to size the margins
    const padL = 10 + charW * Math.max(...lLabels.map((s) => s.length));
    const padR = yr ? 10 + charW * Math.max(...rLabels.map((s) => s.length)) : 14;
    const padT = 10, padB = 26;
    const pw = W - padL - padR, ph = H - padT - padB;
    const t0 = times[0], t1 = times[n - 1];
    const xT = (t) => padL + (t1 > t0 ? ((t - t0) / (t1 - t0)) * pw : pw / 2);
    const x = (i) => xT(times[i]);
    const yL = (v) => padT + ph - (v / yl.top) * ph;
    const yR = (v) => padT + ph - (Math.min(v, yr.top) / yr.top) * ph;

    const root = svg('svg', {
      viewBox: `0 0 ${W} ${H}`, width: W, height: H, class: 'tchart' + (o.stacked ? ' stacked' : ''), role: 'img',
      tabindex: '0', 'aria-label': o.label,
    });
    svg('title', {}, root).textContent = o.label;

    // Grid and axes.
    const axes = svg('g', { class: 'axis' }, root);
    yl.ticks.forEach((v, i) => {
      const yy = yL(v);
      svg('line', { x1: padL, x2: W - padR, y1: yy, y2: yy, class: i === 0 ? 'base' : 'grid' }, axes);
      svgText(axes, padL - 6, yy + 4, lLabels[i], { 'text-anchor': 'end' });
    });
    if (yr) yr.ticks.forEach((v, i) => svgText(axes, W - padR + 6, yR(v) + 4, rLabels[i], { 'text-anchor': 'start', class: 'r' }));
    const ticks = timeTicks(t0, t1, ctx.step, Math.max(2, Math.floor(pw / 110)));
    for (const tk of ticks) {
      const xx = xT(tk.t);
      svg('line', { x1: xx, x2: xx, y1: padT + ph, y2: padT + ph + 4, class: 'base' }, axes);
      const anchor = xx - padL < 24 ? 'start' : W - padR - xx < 24 ? 'end' : 'middle';
      svgText(axes, xx, H - 8, tk.label, { 'text-anchor': anchor });
    }

    // Series, drawn in order (first = bottom of the stack). Null values split the path.
    let drawn = 0;
    const f1 = (v) => v.toFixed(1);
    for (const s of o.series) {
      const g = svg('g', { class: 'ser ' + s.cls + (s.dash ? ' dash' : '') }, root);
      const hi = highs.get(s), lo = lows.get(s), Y = s.right ? yR : yL;
      let seg = [];
      const flush = () => {
        if (!seg.length) return;
        const top = seg.map((i) => `${f1(x(i))},${f1(Y(hi[i]))}`);
        if (s.kind === 'area') {
          const bottom = seg.slice().reverse().map((i) => `${f1(x(i))},${f1(yL(lo[i]))}`);
          svg('path', { class: 'area', d: 'M' + top.join('L') + 'L' + bottom.join('L') + 'Z' }, g);
        }
        svg('path', { class: 'line', d: 'M' + top.join('L') }, g);
        if (seg.length === 1) svg('circle', { class: 'dot', cx: f1(x(seg[0])), cy: f1(Y(hi[seg[0]])), r: 3 }, g);
        drawn += seg.length;
        seg = [];
      };
      for (let i = 0; i < n; i++) {
        if (hi[i] == null) flush(); else seg.push(i);
      }
      flush();
    }

    // Hover/keyboard read-out: a crosshair, a dot per series and the tooltip.
    const cross = svg('line', { class: 'cross', y1: padT, y2: padT + ph, visibility: 'hidden' }, root);
    const dots = o.series.map((s) => svg('circle', { class: 'hdot ' + s.cls, r: 4, visibility: 'hidden' }, root));
    const hit = svg('rect', { class: 'hit', x: padL, y: padT, width: Math.max(1, pw), height: ph }, root);
    let cur = -1;
    const show = (i, cx, cy) => {
      cur = i;
      const xx = x(i);
      cross.setAttribute('x1', xx); cross.setAttribute('x2', xx); cross.setAttribute('visibility', 'visible');
      o.series.forEach((s, k) => {
        const v = highs.get(s)[i];
        const d = dots[k];
        if (v == null) { d.setAttribute('visibility', 'hidden'); return; }
        d.setAttribute('cx', f1(xx)); d.setAttribute('cy', f1((s.right ? yR : yL)(v)));
        d.setAttribute('visibility', 'visible');
      });
      const rows = o.series.map((s) => ({ cls: s.cls, name: s.name, value: s.values[i] == null ? '–' : (s.right ? o.fmtRight : o.fmtTip || o.fmt)(s.values[i]) }));
      if (o.stacked && left.length > 1) rows.push({ name: 'Total', value: (o.fmtTip || o.fmt)(acc[i]), strong: true });
      if (o.extraTip) rows.push(...o.extraTip(i));
      showTip(cx, cy, fmtBucket(times[i], ctx.step), rows);
    };
    const hide = () => {
      cur = -1;
      cross.setAttribute('visibility', 'hidden');
      dots.forEach((d) => d.setAttribute('visibility', 'hidden'));
      hideTip();
    };
    const indexAt = (clientX) => {
      const r = root.getBoundingClientRect();
      const sx = ((clientX - r.left) * W) / (r.width || W);
      if (t1 <= t0) return 0;
      // Nearest bucket by time (buckets are evenly spaced).
      return Math.max(0, Math.min(n - 1, Math.round(((sx - padL) / pw) * (n - 1))));
    };
    hit.addEventListener('pointermove', (e) => show(indexAt(e.clientX), e.clientX, e.clientY));
    hit.addEventListener('pointerleave', hide);
    const anchorPoint = (i) => {
      const r = root.getBoundingClientRect();
      return [r.left + (x(i) * r.width) / W, r.top + padT + 10];
    };
    root.addEventListener('focus', () => show(n - 1, ...anchorPoint(n - 1)));
    root.addEventListener('blur', hide);
    root.addEventListener('keydown', (e) => {
      const step = { ArrowLeft: -1, ArrowRight: 1, Home: -n, End: n }[e.key];
      if (!step) { if (e.key === 'Escape') hide(); return; }
      e.preventDefault();
      const i = Math.max(0, Math.min(n - 1, (cur < 0 ? n - 1 : cur) + step));
      show(i, ...anchorPoint(i));
    });

    box.replaceChildren(root, legend(o.legend || o.series.map((s) => ({ name: s.name, cls: s.cls, dash: s.dash }))));
    if (o.note) box.append(el('p', { class: 'chart-note', text: o.note }));
    return drawn;
  }

  // ---------- horizontal bar chart ----------

  // rows: [{name, value, tip: [{name, value}]}]. Returns the number of bars drawn.
  function barChart(box, rows, o) {
    const W = boxWidth(box), rowH = 30, barH = 18, padT = 4;
    const H = padT * 2 + rows.length * rowH;
    const labelW = Math.min(190, Math.round(W * 0.34));
    const valueW = 84;
    const bw = Math.max(40, W - labelW - valueW - 12);
    const max = Math.max(0, ...rows.map((r) => r.value)) || 1;
    const root = svg('svg', { viewBox: `0 0 ${W} ${H}`, width: W, height: H, class: 'bchart', role: 'img', 'aria-label': o.label });
    svg('title', {}, root).textContent = o.label;
    const maxChars = Math.max(6, Math.floor((labelW - 10) / 7.2));
    rows.forEach((r, i) => {
      const y = padT + i * rowH, mid = y + rowH / 2;
      const g = svg('g', { class: 'brow ' + o.cls }, root);
      svg('title', {}, g).textContent = `${r.name}: ${o.fmt(r.value)}`;
      svgText(g, labelW - 10, mid + 4, ellipsis(r.name, maxChars), { 'text-anchor': 'end', class: 'blabel' });
      svg('rect', { class: 'track', x: labelW, y: mid - barH / 2, width: bw, height: barH, rx: 3 }, g);
      // At least 2px so a zero-cost row is still visibly a row, not a rendering glitch.
      svg('rect', { class: 'bar', x: labelW, y: mid - barH / 2, width: Math.max(2, (r.value / max) * bw).toFixed(1), height: barH, rx: 3 }, g);
      svgText(g, labelW + bw + 8, mid + 4, o.fmt(r.value), { class: 'bvalue' });
      const hit = svg('rect', { class: 'hit', x: 0, y, width: W, height: rowH }, g);
      hit.addEventListener('pointermove', (e) => showTip(e.clientX, e.clientY, r.name, r.tip));
      hit.addEventListener('pointerleave', hideTip);
    });
    box.replaceChildren(root);
    if (o.note) box.append(el('p', { class: 'chart-note', text: o.note }));
    return rows.length;
  }

  // ---------- data shaping ----------

  // The bucket starts covering [from, to), gaps included (the API omits empty buckets).
  function makeCtx(from, to, step) {
    const times = [];
    for (let t = Math.floor(from / step) * step; t < to; t += step) times.push(t);
    return { from, to, step, times };
  }

  // Re-buckets one series' points to ctx.step and indexes them by bucket start. Latency is
  // averaged weighted by requests, so a 5-minute bucket is the true mean of its minutes.
  function byTime(points, step) {
    const m = new Map();
    for (const p of points || []) {
      const t = Math.floor(p.t / step) * step;
      let a = m.get(t);
      if (!a) {
        a = { requests: 0, prompt_tokens: 0, completion_tokens: 0, total_tokens: 0, cost: 0, errors: 0, unauthenticated: 0, latSum: 0, latency_ms_max: null };
        m.set(t, a);
      }
      const req = +p.requests || 0;
      for (const k of ['requests', 'prompt_tokens', 'completion_tokens', 'total_tokens', 'cost', 'errors', 'unauthenticated']) a[k] += +p[k] || 0;
      a.latSum += (+p.latency_ms_avg || 0) * req;
      if (p.latency_ms_max != null) a.latency_ms_max = Math.max(a.latency_ms_max || 0, +p.latency_ms_max);
    }
    for (const a of m.values()) a.latency_ms_avg = a.requests ? a.latSum / a.requests : null;
    return m;
  }

  // One value array per series for `measure`, zero-filled, largest first, the tail folded
  // into "other" so stacks and legends stay readable.
  function seriesOf(ans, measure, ctx) {
    const list = (ans.series || []).map((s) => {
      const m = byTime(s.points, ctx.step);
      const values = ctx.times.map((t) => (m.has(t) ? m.get(t)[measure] : 0));
      return { name: keyLabel(s.key), values, total: sum(values), points: (s.points || []).length };
    });
    list.sort((a, b) => b.total - a.total || a.name.localeCompare(b.name));
    if (list.length > MAX_SERIES + 1) {
      const rest = list.splice(MAX_SERIES);
      list.push({
        name: `other (${rest.length})`, other: true,
        values: ctx.times.map((_, i) => sum(rest.map((r) => r.values[i]))),
        total: sum(rest.map((r) => r.total)), points: sum(rest.map((r) => r.points)),
      });
    }
    list.forEach((s, i) => { s.cls = s.other ? 'so' : 's' + i; });
    return list;
  }

  const hasTraffic = (ans) => (ans.series || []).some((s) => (s.points || []).length > 0);

  // ---------- panels ----------

  // A usage chart grouped by a dimension: stacked areas (or lines) of one measure.
  function renderGrouped(name, res, ctx, o) {
    const box = chartEl(name);
    if (!box) return;
    if (res.error) return errorState(box, res.error.message);
    const ans = res.value;
    if (!hasTraffic(ans)) return emptyState(box);
    const series = seriesOf(ans, o.measure, ctx).map((s) => ({ ...s, kind: o.stacked ? 'area' : 'line' }));
    const grand = sum(series.map((s) => s.total));
    const top = series[0];
    const drawn = timeChart(box, ctx, {
      series, stacked: o.stacked, fmt: o.fmtAxis || o.fmt, fmtTip: o.fmt, integer: o.integer,
      legend: series.map((s) => ({ name: s.name, cls: s.cls, value: o.fmt(s.total) })),
      label: `${o.title}, ${ctx.label}: ${o.fmt(grand)} in total across ${series.length} ${o.noun}` +
        (top ? `; largest ${top.name} with ${o.fmt(top.total)}.` : '.'),
      // Traffic without this measure (e.g. no prices configured) is still drawn, but said.
      note: grand === 0 ? o.zeroNote : null,
    });
    markRendered(box, drawn);
  }

  function renderRequests(res, ctx) {
    const box = chartEl('requests');
    if (res.error) return errorState(box, res.error.message);
    if (!hasTraffic(res.value)) return emptyState(box);
    const m = byTime((res.value.series[0] || {}).points, ctx.step);
    const get = (k) => ctx.times.map((t) => (m.has(t) ? m.get(t)[k] : 0));
    const req = get('requests'), err = get('errors'), unauth = get('unauthenticated');
    // The rate is over the applications' requests (key-auth's refusals are not theirs); no
    // such requests in a bucket means no rate, not a 0% rate: leave a gap.
    const rate = req.map((r, i) => (r - unauth[i] > 0 ? (err[i] / (r - unauth[i])) * 100 : null));
    const totalReq = sum(req), totalErr = sum(err), totalUnauth = sum(unauth);
    const appReq = totalReq - totalUnauth;
    const drawn = timeChart(box, ctx, {
      series: [
        { name: 'Requests', cls: 'sreq', kind: 'area', values: req },
        { name: 'Errors (4xx/5xx)', cls: 'serr', kind: 'area', values: err },
        { name: 'Unauthenticated (401)', cls: 'sunauth', kind: 'area', values: unauth },
        { name: 'Error rate', cls: 'srate', kind: 'line', dash: true, right: true, values: rate },
      ],
      fmt: fmtNum, fmtRight: fmtPct, rightCap: 100, integer: true,
      legend: [
        { name: 'Requests', cls: 'sreq', value: fmtNum(totalReq) },
        { name: 'Errors (4xx/5xx)', cls: 'serr', value: fmtNum(totalErr) },
        { name: 'Unauthenticated (401)', cls: 'sunauth', value: fmtNum(totalUnauth) },
        { name: 'Error rate (right axis)', cls: 'srate', dash: true, value: fmtPct(appReq > 0 ? (totalErr / appReq) * 100 : null) },
      ],
      label: `Requests and errors, ${ctx.label}: ${fmtNum(totalReq)} requests, ${fmtNum(totalErr)} errors, ${fmtNum(totalUnauth)} unauthenticated.`,
    });
    markRendered(box, drawn);
  }

  function renderLatency(res, ctx) {
    const box = chartEl('latency');
    if (res.error) return errorState(box, res.error.message);
    if (!hasTraffic(res.value)) return emptyState(box);
    const m = byTime((res.value.series[0] || {}).points, ctx.step);
    const avg = ctx.times.map((t) => (m.has(t) ? m.get(t).latency_ms_avg : null));
    const max = ctx.times.map((t) => (m.has(t) ? m.get(t).latency_ms_max : null));
    const lat = latencyTotals(res.value, ctx);
    const drawn = timeChart(box, ctx, {
      series: [
        { name: 'Average', cls: 'slat', kind: 'area', values: avg },
        { name: 'Max', cls: 'smax', kind: 'line', dash: true, values: max },
      ],
      fmt: fmtMs,
      legend: [
        { name: 'Average', cls: 'slat', value: fmtMs(lat.avg) },
        { name: 'Max', cls: 'smax', dash: true, value: fmtMs(lat.max) },
      ],
      extraTip: (i) => [{ name: 'Requests', value: fmtNum(m.has(ctx.times[i]) ? m.get(ctx.times[i]).requests : 0) }],
      label: `Latency, ${ctx.label}: average ${fmtMs(lat.avg)}, max ${fmtMs(lat.max)}.`,
    });
    markRendered(box, drawn);
  }

  function latencyTotals(ans, ctx) {
    const m = byTime((ans.series[0] || {}).points, ctx.step);
    let req = 0, latSum = 0, max = null;
    for (const a of m.values()) {
      req += a.requests; latSum += a.latSum;
      if (a.latency_ms_max != null) max = Math.max(max || 0, a.latency_ms_max);
    }
    return { avg: req ? latSum / req : null, max };
  }

  function renderTop(name, res, o) {
    const box = chartEl(name);
    if (res.error) return errorState(box, res.error.message);
    const data = res.value.data || [];
    if (!data.length) return emptyState(box);
    const rows = data.map((d) => ({
      name: keyLabel(d.key), value: +d[o.measure] || 0,
      tip: [
        { name: 'Total tokens', value: fmtNum(d.total_tokens) },
        { name: 'Prompt / completion', value: `${fmtNum(d.prompt_tokens)} / ${fmtNum(d.completion_tokens)}` },
        { name: 'Cost', value: fmtCost(d.cost) },
        { name: 'Requests', value: fmtNum(d.requests) },
        { name: 'Errors', value: fmtNum(d.errors) },
      ],
    }));
    const allZero = rows.every((r) => r.value === 0);
    const drawn = barChart(box, rows, {
      fmt: o.fmt, cls: o.cls,
      label: `${o.title}: ` + rows.slice(0, 5).map((r) => `${r.name} ${o.fmt(r.value)}`).join(', ') + '.',
      note: allZero ? o.zeroNote : null,
    });
    markRendered(box, drawn);
  }

  function renderQuotas(res) {
    const card = $('#quotas-card');
    const box = chartEl('quotas');
    // Older gateways have no /quotas: hide the panel rather than show an error.
    if (res.error && res.error.status === 404) {
      card.hidden = true;
      box.dataset.rendered = 'false';
      box.dataset.points = '0';
      box.dataset.unavailable = 'true';
      return;
    }
    card.hidden = false;
    delete box.dataset.unavailable;
    if (res.error) return errorState(box, res.error.message);
    const data = (res.value && res.value.data) || [];
    if (!data.length) return emptyState(box, 'No active quota counters on this node');
    const ratio = (q) => (q.limit > 0 ? q.used / q.limit : q.used > 0 ? Infinity : 0);
    const rows = data.slice().sort((a, b) => ratio(b) - ratio(a) || String(a.key).localeCompare(String(b.key)));
    const ul = el('ul', { class: 'quotas' });
    for (const q of rows) {
      const used = +q.used || 0, limit = +q.limit || 0;
      const r = ratio(q);
      const pct = Math.min(100, r * 100);
      const level = r >= 1 ? 'full' : r >= 0.9 ? 'bad' : r >= 0.7 ? 'warn' : 'ok';
      const desc = `${fmtNum(used)} of ${fmtNum(limit)} per ${fmtWindow(q.window)}`;
      const fill = el('span', { class: 'q-fill' });
      fill.style.width = pct.toFixed(1) + '%'; // CSSOM, not a style attribute: CSP-friendly
      ul.append(el('li', { class: 'q ' + level },
        el('span', { class: 'q-key', title: String(q.key ?? ''), text: keyLabel(q.key) }),
        el('div', {
          class: 'q-bar', role: 'progressbar', 'aria-label': `${keyLabel(q.key)} (${q.plugin || 'quota'})`,
          'aria-valuemin': '0', 'aria-valuemax': String(limit), 'aria-valuenow': String(Math.min(used, limit || used)),
          'aria-valuetext': desc,
        }, fill),
        el('div', { class: 'q-foot' },
          el('span', { class: 'q-meta', text: [q.plugin, q.plugin_id].filter(Boolean).join(' · ') }),
          el('span', { class: 'q-val', text: `${desc} · ${fmtPct(isFinite(r) ? r * 100 : 100)}` }))));
    }
    box.replaceChildren(ul);
    markRendered(box, rows.length);
  }

  function setTile(name, value, hint, level, raw) {
    const t = $(`[data-tile="${name}"]`);
    if (!t) return;
    $('.t-value', t).textContent = value;
    $('.t-hint', t).textContent = hint || '';
    t.classList.remove('ok', 'warn', 'bad');
    if (level) t.classList.add(level);
    if (raw != null && isFinite(raw)) t.dataset.value = String(raw); else delete t.dataset.value;
  }

  function renderTiles(none, status, ctx) {
    if (none.value) {
      const tot = none.value.totals || {};
      const req = +tot.requests || 0, errs = +tot.errors || 0, unauth = +tot.unauthenticated || 0;
      // Refused keys are not an application failing: the rate is over the applications' requests.
      const appReq = req - unauth;
      const rate = appReq > 0 ? (errs / appReq) * 100 : null;
      const lat = latencyTotals(none.value, ctx);
      setTile('requests', fmtNum(req), ctx.label, null, req);
      setTile('tokens', fmtNum(tot.total_tokens || 0), `${fmtNum(tot.prompt_tokens || 0)} prompt · ${fmtNum(tot.completion_tokens || 0)} completion`, null, tot.total_tokens || 0);
      setTile('cost', fmtCost(+tot.cost || 0), req ? `${fmtCost((+tot.cost || 0) / req)} per request` : '', null, +tot.cost || 0);
      // Answers ai-semantic-cache gave without calling the provider, and what they saved.
      const cached = +tot.cached || 0;
      setTile('cached', fmtNum(cached), `saved ${fmtCost(+tot.saved_cost || 0)}${req ? ` · ${fmtPct((cached / req) * 100)} of requests` : ''}`, null, cached);
      setTile('error-rate', fmtPct(rate), `${fmtNum(errs)} errors (4xx/5xx) · ${fmtNum(unauth)} unauthenticated (401 from key-auth)`,
        rate == null ? null : rate >= 20 ? 'bad' : rate >= 5 ? 'warn' : 'ok', rate);
      setTile('latency', fmtMs(lat.avg), lat.max != null ? `max ${fmtMs(lat.max)}` : '', null, lat.avg);
    } else {
      for (const n of ['requests', 'tokens', 'cost', 'cached', 'error-rate', 'latency']) setTile(n, '–', 'unavailable');
    }
    const q = status.value && status.value.quotas;
    if (q) {
      const rej = +q.rejections || 0, se = +q.store_errors || 0;
      setTile('quota-rejections', fmtNum(rej), 'since this node started' + (se ? ` · ${fmtNum(se)} store errors` : ''),
        se ? 'bad' : rej ? 'warn' : null, rej);
    } else {
      setTile('quota-rejections', '–', 'unavailable');
    }
  }

  function renderHealth(store, status) {
    const p = $('#store');
    p.classList.remove('warn', 'bad');
    if (store.value) {
      const s = store.value;
      const n = (k) => fmtNum(+s[k] || 0);
      p.textContent = `Usage store: ${s.store || '?'} · written ${n('written')} · spilled ${n('spilled')} · replayed ${n('replayed')} · dropped ${n('dropped')} · store errors ${n('store_errors')}`;
      if (+s.dropped || +s.store_errors) p.classList.add('bad');
      else if (+s.spilled > +s.replayed) p.classList.add('warn'); // records waiting in the spill file
      if (s.spill_file && (+s.spilled || +s.dropped)) p.textContent += ` · spill file ${s.spill_file}`;
    } else {
      p.textContent = 'Usage store: ' + (store.error ? store.error.message : 'unknown');
      p.classList.add('warn');
    }
    const srv = status.value && status.value.server;
    $('#node').textContent = srv
      ? `This node: ${fmtNum(+srv.connections_active || 0)} active connections · ${fmtNum(+srv.total_requests || 0)} requests since start`
      : '';
  }

  // ---------- fetching ----------

  class ApiError extends Error {
    constructor(message, status, path) { super(message); this.status = status; this.path = path; }
  }

  async function api(path) {
    const headers = { Accept: 'application/json' };
    if (state.token) headers.Authorization = 'Bearer ' + state.token;
    const ctl = new AbortController();
    const timer = setTimeout(() => ctl.abort(), FETCH_TIMEOUT_MS);
    let r;
    try {
      r = await fetch(path, { headers, cache: 'no-store', credentials: 'same-origin', signal: ctl.signal });
    } catch (e) {
      throw new ApiError(e.name === 'AbortError' ? 'timed out' : 'network error: ' + e.message, 0, path);
    } finally {
      clearTimeout(timer);
    }
    let body = null;
    try { body = await r.json(); } catch (_) { /* not JSON: handled below */ }
    if (r.status === 401) throw new ApiError('Admin token required', 401, path);
    if (!r.ok) throw new ApiError((body && body.message) || `HTTP ${r.status}`, r.status, path);
    if (body == null) throw new ApiError('answer is not JSON', r.status, path);
    return body;
  }

  const settle = (p) => p.then((value) => ({ value }), (error) => ({ error }));

  async function refresh(userInitiated) {
    if (state.needAuth && !userInitiated) return; // wait for a token rather than poll 401s
    const gen = ++state.gen;
    state.busy = true;
    if (userInitiated) document.body.dataset.ready = 'false';
    document.body.classList.add('loading');
    const r = RANGES[state.range];
    const to = Math.floor(Date.now() / 1000);
    const from = to - r.span;
    const qs = (o) => new URLSearchParams({ from, to, ...o }).toString();
    const usage = (g) => settle(api('/analytics/usage?' + qs({ bucket: r.bucket, group_by: g })));
    const top = (by, measure) => settle(api('/analytics/top?' + qs({ by, measure, limit: 10 })));
    const names = ['none', 'consumer', 'model', 'application', 'topConsumers', 'topModels', 'store', 'status', 'quotas'];
    const values = await Promise.all([
      usage('none'), usage('consumer'), usage('model'), usage('application'),
      top('consumer', 'total_tokens'), top('model', 'cost'),
      settle(api('/analytics/status')), settle(api('/status')), settle(api('/quotas')),
    ]);
    if (gen !== state.gen) return; // a newer refresh (e.g. range change) owns the page now
    const res = Object.fromEntries(names.map((n, i) => [n, values[i]]));
    const ctx = { ...makeCtx(from, to, r.step), label: r.label };
    state.last = { res, ctx };
    try {
      renderAll(res, ctx);
      showErrors(res);
      $('#updated').textContent = 'Updated ' + dtf({ hour: '2-digit', minute: '2-digit', second: '2-digit' }).format(new Date());
    } catch (e) {
      // A rendering bug must not leave the page "loading" forever: say so and carry on.
      setBanner([`Dashboard error: ${e.message}`]);
      console.error(e);
    } finally {
      state.busy = false;
      document.body.classList.remove('loading');
      document.body.dataset.refreshes = String((+document.body.dataset.refreshes || 0) + 1);
      document.body.dataset.ready = 'true';
    }
  }

  function renderAll(res, ctx) {
    for (const s of document.querySelectorAll('.range-label')) s.textContent = ctx.label;
    renderTiles(res.none, res.status, ctx);
    renderGrouped('tokens-by-consumer', res.consumer, ctx, {
      measure: 'total_tokens', stacked: true, fmt: fmtNum, integer: true, title: 'Tokens by consumer', noun: 'consumers',
      zeroNote: 'Traffic in this range, but no tokens were counted.',
    });
    renderGrouped('tokens-by-model', res.model, ctx, {
      measure: 'total_tokens', stacked: false, fmt: fmtNum, integer: true, title: 'Tokens by model', noun: 'models',
      zeroNote: 'Traffic in this range, but no tokens were counted.',
    });
    renderGrouped('cost-by-application', res.application, ctx, {
      measure: 'cost', stacked: true, fmt: fmtCost, fmtAxis: fmtCostAxis, title: 'Cost by application', noun: 'applications',
      zeroNote: 'Traffic in this range, but no cost: are model prices configured?',
    });
    renderRequests(res.none, ctx);
    renderLatency(res.none, ctx);
    renderTop('top-consumers', res.topConsumers, {
      measure: 'total_tokens', fmt: fmtNum, cls: 's0', title: 'Top consumers by total tokens',
      zeroNote: 'No tokens counted in this range.',
    });
    renderTop('top-models', res.topModels, {
      measure: 'cost', fmt: fmtCost, cls: 's1', title: 'Top models by cost',
      zeroNote: 'No cost in this range: are model prices configured?',
    });
    renderQuotas(res.quotas);
    renderHealth(res.store, res.status);
  }

  function setBanner(lines) {
    const b = $('#banner');
    if (!lines.length) { b.hidden = true; b.replaceChildren(); return; }
    b.replaceChildren(...lines.map((l) => el('div', { text: l })));
    b.hidden = false;
  }

  function showErrors(res) {
    const errs = Object.entries(res).filter(([n, r]) => r.error && !(n === 'quotas' && r.error.status === 404));
    const unauthorized = errs.some(([, r]) => r.error.status === 401);
    setAuth(unauthorized);
    // One line per distinct message: "analytics are off" would otherwise repeat 7 times.
    const seen = new Map(); // insertion-ordered set of messages
    for (const [, r] of errs) {
      const e = r.error;
      const msg = e.status === 401
        ? (state.token ? 'The admin token was refused (401 Unauthorized): paste a valid token below.' : 'The Admin API requires a token (401 Unauthorized): paste it below.')
        : `${String(e.path || '').split('?')[0]}: ${e.message}${e.status ? ` (HTTP ${e.status})` : ''}`;
      seen.set(msg, true);
    }
    setBanner([...seen.keys()]);
  }

  // ---------- auth ----------

  function setAuth(show) {
    state.needAuth = show;
    const a = $('#auth');
    a.hidden = !show;
    if (show) {
      $('#auth-msg').textContent = state.token
        ? 'The Admin API refused the token in use (401 Unauthorized). Paste a valid admin token; it is kept only in this tab\'s session storage.'
        : 'The Admin API answered 401 Unauthorized. Paste the admin token to continue; it is kept only in this tab\'s session storage.';
    }
  }

  function saveToken(tok) {
    state.token = tok || null;
    try {
      if (tok) sessionStorage.setItem(TOKEN_KEY, tok); else sessionStorage.removeItem(TOKEN_KEY);
    } catch (_) { /* storage blocked: keep it in memory for this page only */ }
  }

  // `#token=…` (and optionally `range=…`) in the fragment: the fragment never reaches the
  // server or its logs; the token is then removed from the address bar and history.
  function readFragment() {
    const h = location.hash.replace(/^#/, '');
    if (!h) return;
    const p = new URLSearchParams(h);
    const range = p.get('range');
    if (range && RANGES[range]) state.range = range;
    if (p.has('token')) {
      const tok = (p.get('token') || '').trim();
      if (tok) saveToken(tok);
      p.delete('token');
      const rest = p.toString();
      history.replaceState(history.state, '', location.pathname + location.search + (rest ? '#' + rest : ''));
    }
  }

  // ---------- start ----------

  function init() {
    try { state.token = sessionStorage.getItem(TOKEN_KEY); } catch (_) { /* storage blocked */ }
    try { const r = localStorage.getItem(RANGE_KEY); if (r && RANGES[r]) state.range = r; } catch (_) { /* ignore */ }
    readFragment();

    const sel = $('#range');
    sel.value = state.range;
    sel.addEventListener('change', () => {
      state.range = RANGES[sel.value] ? sel.value : '24h';
      try { localStorage.setItem(RANGE_KEY, state.range); } catch (_) { /* ignore */ }
      refresh(true);
    });
    $('#refresh').addEventListener('click', () => refresh(true));
    // A token (or range) pasted into the fragment of an open page takes effect at once.
    window.addEventListener('hashchange', () => {
      const before = [state.token, state.range];
      readFragment();
      sel.value = state.range;
      if (before[0] !== state.token || before[1] !== state.range) refresh(true);
    });

    $('#auth-form').addEventListener('submit', (e) => {
      e.preventDefault();
      const input = $('#token');
      const tok = input.value.trim();
      if (!tok) return;
      saveToken(tok);
      input.value = '';
      setAuth(false);
      refresh(true);
    });

    // Auto-refresh; skipped while the tab is hidden or a refresh is still running.
    setInterval(() => {
      if ($('#auto').checked && !document.hidden && !state.busy) refresh(false);
    }, REFRESH_MS);
    document.addEventListener('visibilitychange', () => {
      if (!document.hidden && $('#auto').checked && !state.busy) refresh(false);
    });

    // Charts are sized to their container in pixels (crisp text), so redraw on resize.
    let resizeTimer = 0, lastW = window.innerWidth;
    window.addEventListener('resize', () => {
      if (window.innerWidth === lastW) return;
      lastW = window.innerWidth;
      clearTimeout(resizeTimer);
      resizeTimer = setTimeout(() => { if (state.last) renderAll(state.last.res, state.last.ctx); }, 150);
    });

    refresh(true);
  }

  if (document.readyState === 'loading') document.addEventListener('DOMContentLoaded', init);
  else init();
})();
