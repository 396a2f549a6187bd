// Sluice console: a page per view (overview, topic, group, plugin group), refreshed every
// second from /v1/overview. Everything shown is built with textContent, never innerHTML: record
// keys, values and plugin errors are untrusted text.
'use strict';

const POLL_MS = 1000;
const HISTORY_POINTS = 120;
const RECORDS_PER_PAGE = 50;
const COLORS = ['#2457c5', '#c5412a', '#1c7c3a', '#a86400', '#7b3fb5', '#0f7f8c', '#b0256e', '#59606d'];

const state = {
  overview: null,
  previous: null,
  // group -> [{t, partitions: {partition: lag}}]
  history: new Map(),
  token: sessionStorage.getItem('sluice-token') || '',
  view: null,
};

// ---- DOM helpers ----------------------------------------------------------------------

function h(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (name.startsWith('on')) node.addEventListener(name.slice(2), value);
    else if (name === 'class') node.className = value;
    // Through the CSSOM: the content security policy refuses style attributes.
    else if (name === 'style') Object.assign(node.style, value);
    else node.setAttribute(name, value === true ? '' : String(value));
  }
  for (const child of children.flat()) {
    if (child === undefined || child === null || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

function table(headers, rows, attrs) {
  const head = h('tr', {}, headers.map((title) => {
    const numeric = title.startsWith('#');
    return h('th', { class: numeric ? 'num' : undefined }, numeric ? title.slice(1) : title);
  }));
  const body = rows.map((cells) => h('tr', {}, cells.map((cell, i) =>
    h('td', { class: headers[i] && headers[i].startsWith('#') ? 'num' : undefined }, cell))));
  return h('div', { class: 'scroll' }, h('table', attrs || {}, h('thead', {}, head), h('tbody', {}, body)));
}

function stat(label, value, attrs) {
  return h('div', Object.assign({ class: 'stat' }, attrs || {}), h('b', {}, value), h('span', {}, label));
}

function badge(status) {
  const word = String(status).split(/[: ]/)[0];
  return h('span', { class: `badge ${word}`, title: status, 'data-status': word }, word);
}

function number(n) {
  return typeof n === 'number' ? n.toLocaleString('en') : '–';
}

function bytes(n) {
  if (typeof n !== 'number') return '–';
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) { n /= 1024; i += 1; }
  return `${n.toFixed(i === 0 ? 0 : 1)} ${units[i]}`;
}

function time(ms) {
  return typeof ms === 'number' ? new Date(ms).toISOString().replace('T', ' ').replace('Z', '') : '–';
}

function toast(text) {
  const node = h('div', { class: 'toast', role: 'status' }, text);
  document.body.append(node);
  setTimeout(() => node.remove(), 4000);
}

function link(href, text) {
  return h('a', { href }, text);
}

const enc = encodeURIComponent;

// ---- the API ---------------------------------------------------------------------------

class ApiError extends Error {
  constructor(status, message) { super(message); this.status = status; }
}

async function api(path, options) {
  const init = Object.assign({ headers: {} }, options || {});
  if (state.token) init.headers.Authorization = `Bearer ${state.token}`;
  if (init.body !== undefined && typeof init.body !== 'string') {
    init.body = JSON.stringify(init.body);
    init.headers['Content-Type'] = 'application/json';
  }
  const response = await fetch(path, init);
  if (response.status === 401) {
    askToken();
    throw new ApiError(401, 'this needs the admin token');
  }
  const text = await response.text();
  const body = text ? JSON.parse(text) : null;
  if (!response.ok) throw new ApiError(response.status, (body && body.message) || response.statusText);
  return body;
}

// ---- the token -------------------------------------------------------------------------

function askToken() {
  const dialog = document.getElementById('token-dialog');
  if (!dialog.open) dialog.showModal();
}

function showSignedIn() {
  const button = document.getElementById('token-button');
  button.textContent = state.token ? 'Sign out' : 'Sign in';
}

function setupToken() {
  const dialog = document.getElementById('token-dialog');
  dialog.addEventListener('close', () => {
    const input = document.getElementById('token-input');
    if (dialog.returnValue === 'ok' && input.value.trim()) {
      state.token = input.value.trim();
      sessionStorage.setItem('sluice-token', state.token);
      showSignedIn();
      render();
    }
    input.value = '';
  });
  document.getElementById('token-button').addEventListener('click', () => {
    if (state.token) {
      state.token = '';
      sessionStorage.removeItem('sluice-token');
      showSignedIn();
      render();
    } else {
      askToken();
    }
  });
  showSignedIn();
}

// ---- polling ---------------------------------------------------------------------------

async function poll() {
  const live = document.getElementById('live');
  try {
    const overview = await api('/v1/overview');
    state.previous = state.overview;
    state.overview = overview;
    remember(overview);
    live.textContent = `live · ${new Date(overview.time_ms).toLocaleTimeString()}`;
    live.classList.remove('stale');
    refresh();
  } catch (error) {
    live.textContent = `disconnected: ${error.message}`;
    live.classList.add('stale');
  }
  setTimeout(poll, POLL_MS);
}

function remember(overview) {
  for (const group of overview.groups) {
    const key = `${group.kind}/${group.group}`;
    const points = state.history.get(key) || [];
    const lags = {};
    for (const p of group.partitions) lags[`${p.topic}/${p.partition}`] = p.lag;
    points.push({ t: overview.time_ms, lags });
    while (points.length > HISTORY_POINTS) points.shift();
    state.history.set(key, points);
  }
}

// ---- routing ---------------------------------------------------------------------------

function route() {
  const parts = location.hash.replace(/^#\/?/, '').split('/').map(decodeURIComponent);
  const [kind, name] = parts;
  if (kind === 'topic' && name) return { kind: 'topic', name };
  if (kind === 'group' && name) return { kind: 'group', name };
  if (kind === 'plugin' && name) return { kind: 'plugin', name };
  return { kind: 'overview' };
}

// A view has `render()` (once, when shown) and `refresh()` (each poll); a view keeps the
// parts the user works with (forms, fetched records) across refreshes.
function render() {
  const view = route();
  const main = document.getElementById('main');
  main.replaceChildren();
  state.view = { ...view, refresh: () => {} };
  if (!state.overview) { main.append(h('p', { class: 'muted' }, 'Loading…')); return; }
  const views = { overview: overviewView, topic: topicView, group: groupView, plugin: pluginView };
  views[view.kind](main, view);
}

function refresh() {
  if (!state.view) render();
  else state.view.refresh();
}

// ---- overview --------------------------------------------------------------------------

function topicRecords(topic) {
  return topic.partitions.reduce((n, p) => n + p.high_watermark - p.log_start_offset, 0);
}

function produceRate(name) {
  const { overview, previous } = state;
  if (!previous) return null;
  const now = overview.topics.find((t) => t.name === name);
  const before = previous.topics.find((t) => t.name === name);
  if (!now || !before) return null;
  const end = (t) => t.partitions.reduce((n, p) => n + p.high_watermark, 0);
  const seconds = (overview.time_ms - previous.time_ms) / 1000;
  return seconds > 0 ? Math.max(0, (end(now) - end(before)) / seconds) : null;
}

function overviewView(main) {
  const body = h('div', {});
  main.append(h('h1', {}, 'Overview'), body);
  const draw = () => {
    const o = state.overview;
    const topics = o.topics.map((t) => [
      link(`#/topic/${enc(t.name)}`, t.name),
      number(t.partitions.length),
      number(topicRecords(t)),
      bytes(t.partitions.reduce((n, p) => n + p.size_bytes, 0)),
      (() => { const r = produceRate(t.name); return r === null ? '–' : `${number(Math.round(r))}/s`; })(),
    ]);
    const groups = o.groups.map((g) => [
      link(`#/${g.kind === 'plugin' ? 'plugin' : 'group'}/${enc(g.group)}`, g.group),
      g.kind,
      [...new Set(g.partitions.map((p) => p.topic))].join(', '),
      h('span', { 'data-lag': g.group }, number(g.total_lag)),
    ]);
    const plugins = o.plugins.map((p) => [
      link(`#/plugin/${enc(p.group)}`, p.group),
      badge(p.paused ? 'paused' : p.status),
      p.topic,
      `v${p.active_version}`,
      number(p.processed_records),
      number(p.dead_letters),
      number(p.total_lag),
    ]);
    body.replaceChildren(
      h('section', { class: 'card' }, h('h2', {}, 'Topics'),
        topics.length ? table(['Topic', '#Partitions', '#Records', '#Size', '#Produce rate'], topics, { id: 'topics' })
          : h('p', { class: 'muted' }, 'No topics yet: sluice topic create NAME')),
      h('section', { class: 'card' }, h('h2', {}, 'Consumer groups and plugin groups'),
        groups.length ? table(['Group', 'Kind', 'Topics', '#Lag'], groups, { id: 'groups' })
          : h('p', { class: 'muted' }, 'No groups yet.')),
      h('section', { class: 'card' }, h('h2', {}, 'Plugin groups'),
        plugins.length ? table(['Group', 'Status', 'Topic', 'Version', '#Processed', '#Dead letters', '#Lag'], plugins, { id: 'plugins' })
          : h('p', { class: 'muted' }, 'No plugin deployed: sluice plugin deploy')),
    );
  };
  draw();
  state.view.refresh = draw;
}

// ---- topic: partitions, records, archive ------------------------------------------------

function topicView(main, view) {
  const topic = () => state.overview.topics.find((t) => t.name === view.name);
  if (!topic()) { main.append(h('h1', {}, view.name), h('p', { class: 'error' }, 'No such topic.')); return; }
  const partitions = h('div', {});
  const drawPartitions = () => {
    const t = topic();
    if (!t) return;
    partitions.replaceChildren(table(['#Partition', '#Log start', '#Archive start', '#High watermark', '#Size', '#Segments'],
      t.partitions.map((p) => [p.partition, number(p.log_start_offset),
        p.archive_start_offset === undefined ? '–' : number(p.archive_start_offset),
        number(p.high_watermark), bytes(p.size_bytes), p.segments]), { id: 'partitions' }));
  };
  drawPartitions();
  state.view.refresh = drawPartitions;

  const select = h('select', { id: 'browse-partition', name: 'partition' },
    topic().partitions.map((p) => h('option', { value: p.partition }, `partition ${p.partition}`)));
  const mode = h('select', { id: 'browse-mode' }, h('option', { value: 'offset' }, 'from offset'), h('option', { value: 'time' }, 'from time'));
  const offset = h('input', { id: 'browse-offset', type: 'number', min: 0, value: 0 });
  const when = h('input', { id: 'browse-time', type: 'datetime-local', step: 1 });
  const offsetLabel = h('label', {}, 'Offset', offset);
  const whenLabel = h('label', { hidden: true }, 'Time', when);
  mode.addEventListener('change', () => { offsetLabel.hidden = mode.value !== 'offset'; whenLabel.hidden = mode.value !== 'time'; });
  const records = h('div', { id: 'records' });
  const more = h('button', { type: 'button', hidden: true }, 'Next page');
  let next = null;
  const browse = async (from) => {
    const partition = select.value;
    const query = from !== undefined ? `offset=${from}`
      : mode.value === 'time' ? `timestamp=${new Date(when.value).getTime()}` : `offset=${offset.value || 0}`;
    try {
      const fetched = await api(`/v1/topics/${enc(view.name)}/partitions/${partition}/records?${query}&max_records=${RECORDS_PER_PAGE}`);
      next = fetched.next_offset;
      more.hidden = fetched.next_offset >= fetched.high_watermark;
      records.replaceChildren(fetched.records.length ? recordTable(fetched.records)
        : h('p', { class: 'muted' }, `No records there (the partition holds ${number(fetched.log_start_offset)}..${number(fetched.high_watermark)}).`));
    } catch (error) {
      records.replaceChildren(h('p', { class: 'error' }, error.message));
    }
  };
  more.addEventListener('click', () => browse(next));
  const form = h('form', { class: 'inline', onsubmit: (e) => { e.preventDefault(); browse(); } },
    h('label', {}, 'Partition', select), h('label', {}, 'Start', mode), offsetLabel,
    whenLabel, h('button', { type: 'submit', class: 'primary', id: 'browse' }, 'Show records'));

  const archive = h('div', { id: 'archive' }, h('p', { class: 'muted' }, 'Loading the archive…'));
  main.append(
    h('h1', {}, `Topic ${view.name}`),
    h('section', { class: 'card' }, h('h2', {}, 'Partitions'), partitions),
    h('section', { class: 'card' }, h('h2', {}, 'Records'),
      h('p', { class: 'muted' }, 'Offsets below the log start are read from the archive.'), form, records, more),
    h('section', { class: 'card' }, h('h2', {}, 'Archive'), archive),
  );
  browse();
  showArchive(view.name, archive);
}

function recordTable(records) {
  return table(['#Offset', 'Timestamp', 'Key', 'Value', 'Headers'], records.map((r) => [
    number(r.offset),
    time(r.timestamp),
    r.key !== undefined ? r.key : (r.key_base64 !== undefined ? `base64:${r.key_base64}` : h('span', { class: 'muted' }, 'null')),
    valueCell(r),
    headersCell(r.headers),
  ]), { class: 'records' });
}

function valueCell(record) {
  if (record.value === undefined) {
    return record.value_base64 !== undefined ? h('pre', {}, `base64:${record.value_base64}`) : h('span', { class: 'muted' }, 'null');
  }
  try {
    const parsed = JSON.parse(record.value);
    if (parsed !== null && typeof parsed === 'object') return h('pre', { class: 'json' }, JSON.stringify(parsed, null, 2));
  } catch (_) { /* not JSON: shown as text */ }
  return h('pre', {}, record.value);
}

function headersCell(headers) {
  const entries = Object.entries(headers || {});
  if (!entries.length) return '';
  return h('pre', {}, entries.map(([k, v]) => `${k}: ${v === null ? 'null' : v}`).join('\n'));
}

async function showArchive(topic, node) {
  let listing;
  try {
    listing = await api(`/v1/topics/${enc(topic)}/archive`);
  } catch (error) {
    node.replaceChildren(h('p', { class: 'error' }, error.message));
    return;
  }
  const files = listing.partitions.flatMap((p) => p.files.map((f) => ({ partition: p.partition, ...f })));
  if (!files.length) {
    node.replaceChildren(h('p', { class: 'muted' }, 'Nothing archived. Set archive = true on the topic; sealed segments are archived before retention deletes them (sluice archive run archives them now).'));
    return;
  }
  const verdict = h('span', { id: 'verify-result', class: 'muted' }, 'not verified in this session');
  const verify = h('button', { type: 'button', id: 'verify' }, 'Verify the files');
  verify.addEventListener('click', async () => {
    verify.disabled = true;
    try {
      const result = await api(`/v1/archive/verify?topic=${enc(topic)}`, { method: 'POST' });
      verdict.textContent = result.problems.length ? `${result.problems.length} problems: ${result.problems.join('; ')}`
        : `${result.files_checked} files checked: all match their summaries`;
      verdict.className = result.problems.length ? 'error' : '';
    } catch (error) {
      verdict.textContent = error.message;
      verdict.className = 'error';
    }
    verify.disabled = false;
  });
  const timelines = listing.partitions.filter((p) => p.files.length).map((p) => {
    const t = state.overview.topics.find((x) => x.name === topic);
    const part = t && t.partitions.find((x) => x.partition === p.partition);
    const end = Math.max(part ? part.high_watermark : 0, ...p.files.map((f) => f.last_offset + 1), 1);
    const bar = h('div', { class: 'timeline', title: `partition ${p.partition}: offsets 0..${end}` },
      p.files.map((f) => h('span', { style: { left: `${(100 * f.first_offset) / end}%`, width: `${(100 * f.rows) / end}%` }, title: `${f.file}: offsets ${f.first_offset}..${f.last_offset}` })),
      part ? h('span', { class: 'log', style: { left: `${(100 * part.log_start_offset) / end}%`, width: `${(100 * (part.high_watermark - part.log_start_offset)) / end}%` }, title: 'in the log' }) : null);
    return h('div', {}, h('span', { class: 'muted' }, `partition ${p.partition}`), bar);
  });
  node.replaceChildren(
    h('div', { class: 'legend' }, h('span', {}, h('i', { style: { background: '#8fb0ee' } }), 'archived files'), h('span', {}, h('i', { style: { background: '#c9d3e3' } }), 'in the log')),
    ...timelines,
    table(['#Partition', 'File', '#Offsets', 'Times', '#Size'], files.map((f) => [f.partition, f.file,
      `${number(f.first_offset)}..${number(f.last_offset)}`,
      `${time(f.min_timestamp)} – ${time(f.max_timestamp)}`, bytes(f.bytes)]), { id: 'archive-files' }),
    h('div', { class: 'actions' }, verify, verdict),
  );
}

// ---- lag charts --------------------------------------------------------------------------

function lagChart(key) {
  const canvas = h('canvas', { class: 'chart', 'aria-label': 'lag over time' });
  const legend = h('div', { class: 'legend' });
  const draw = () => {
    const points = state.history.get(key) || [];
    const series = [...new Set(points.flatMap((p) => Object.keys(p.lags)))].sort();
    const ratio = window.devicePixelRatio || 1;
    const width = canvas.clientWidth || 600;
    const height = canvas.clientHeight || 180;
    canvas.width = width * ratio;
    canvas.height = height * ratio;
    const ctx = canvas.getContext('2d');
    ctx.scale(ratio, ratio);
    ctx.clearRect(0, 0, width, height);
    const max = Math.max(1, ...points.flatMap((p) => Object.values(p.lags)));
    ctx.fillStyle = '#5d6677';
    ctx.font = '11px system-ui';
    ctx.fillText(`${number(max)} records`, 4, 12);
    ctx.strokeStyle = '#d9dee7';
    ctx.beginPath(); ctx.moveTo(0, height - 0.5); ctx.lineTo(width, height - 0.5); ctx.stroke();
    series.forEach((name, i) => {
      ctx.strokeStyle = COLORS[i % COLORS.length];
      ctx.lineWidth = 2;
      ctx.beginPath();
      points.forEach((p, j) => {
        const x = points.length > 1 ? (j / (HISTORY_POINTS - 1)) * width : 0;
        const y = height - 2 - ((p.lags[name] || 0) / max) * (height - 18);
        if (j === 0) ctx.moveTo(x, y); else ctx.lineTo(x, y);
      });
      ctx.stroke();
    });
    legend.replaceChildren(...series.map((name, i) => h('span', {}, h('i', { style: { background: COLORS[i % COLORS.length] } }), name)));
  };
  return { node: h('div', {}, canvas, legend), draw };
}

function groupPartitions(group) {
  return table(['Topic', '#Partition', '#Committed', '#High watermark', '#Lag'], group.partitions.map((p) => [
    p.topic, p.partition, p.committed === null || p.committed === undefined ? '–' : number(p.committed),
    number(p.high_watermark), h('span', { 'data-partition-lag': p.partition }, number(p.lag))]), { id: 'group-partitions' });
}

function groupView(main, view) {
  const find = () => state.overview.groups.find((g) => g.kind === 'consumer' && g.group === view.name);
  if (!find()) { main.append(h('h1', {}, view.name), h('p', { class: 'error' }, 'No such consumer group.')); return; }
  const chart = lagChart(`consumer/${view.name}`);
  const partitions = h('div', {});
  const total = h('b', { id: 'total-lag' });
  main.append(h('h1', {}, `Consumer group ${view.name}`),
    h('section', { class: 'card' }, h('h2', {}, 'Lag'), h('p', {}, 'Total: ', total), chart.node),
    h('section', { class: 'card' }, h('h2', {}, 'Partitions'), partitions));
  const draw = () => {
    const g = find();
    if (!g) return;
    total.textContent = number(g.total_lag);
    partitions.replaceChildren(groupPartitions(g));
    chart.draw();
  };
  draw();
  state.view.refresh = draw;
}

// ---- plugin groups -------------------------------------------------------------------------

function pluginView(main, view) {
  const summary = () => state.overview.plugins.find((p) => p.group === view.name);
  const progress = () => state.overview.groups.find((g) => g.kind === 'plugin' && g.group === view.name);
  if (!summary()) { main.append(h('h1', {}, view.name), h('p', { class: 'error' }, 'No such plugin group.')); return; }
  const stats = h('div', { class: 'grid', id: 'plugin-stats' });
  const chart = lagChart(`plugin/${view.name}`);
  const partitions = h('div', {});
  const details = h('div', { id: 'plugin-details' });
  const dlq = h('div', { id: 'dead-letters' });
  const actions = h('div', { class: 'actions', id: 'plugin-actions' });
  main.append(h('h1', {}, `Plugin group ${view.name}`),
    h('section', { class: 'card' }, stats, actions),
    h('section', { class: 'card' }, h('h2', {}, 'Lag'), chart.node, partitions),
    h('section', { class: 'card' }, h('h2', {}, 'Versions, settings and last error'), details),
    h('section', { class: 'card' }, h('h2', {}, 'Dead letters'), dlq));

  let lastDeadLetters = -1;
  const draw = () => {
    const p = summary();
    if (!p) return;
    stats.replaceChildren(
      stat('status', badge(p.paused ? 'paused' : p.status), { id: 'plugin-status' }),
      stat('version', `v${p.active_version}${p.running_version && p.running_version !== p.active_version ? ` (running v${p.running_version})` : ''}`),
      stat('input topic', p.topic),
      stat('lag', number(p.total_lag), { id: 'plugin-lag' }),
      stat('processed', number(p.processed_records)),
      stat('emitted', number(p.emitted_records)),
      stat('dead letters', number(p.dead_letters), { id: 'plugin-dead-letters' }),
      stat('failed calls', number(p.failed_calls)),
      stat('state', bytes(p.state_bytes)),
      stat('instance memory', bytes(p.instance_memory_bytes)),
    );
    const g = progress();
    if (g) partitions.replaceChildren(groupPartitions(g));
    chart.draw();
    if (p.dead_letters !== lastDeadLetters) {
      lastDeadLetters = p.dead_letters;
      showDeadLetters(p, dlq);
    }
  };
  draw();
  state.view.refresh = draw;
  showActions(view.name, actions);
  showDetails(view.name, details);
}

async function act(group, path, body, what) {
  try {
    await api(`/v1/plugins/${enc(group)}/${path}`, { method: 'POST', body: body || {} });
    toast(`${what}: done`);
  } catch (error) {
    toast(`${what}: ${error.message}`);
  }
}

function showActions(group, node) {
  if (!state.token) {
    node.replaceChildren(h('span', { class: 'muted' }, 'Read-only. '),
      h('button', { type: 'button', onclick: askToken, id: 'sign-in-to-act' }, 'Sign in to pause, resume or roll back'));
    return;
  }
  const snapshots = h('select', { id: 'snapshot' }, h('option', { value: '' }, 'no snapshot'));
  api(`/v1/plugins/${enc(group)}/snapshots`).then((list) => {
    for (const s of list.snapshots) snapshots.append(h('option', { value: s.name }, s.name));
  }).catch(() => {});
  node.replaceChildren(
    h('button', { type: 'button', id: 'pause', onclick: () => act(group, 'pause', {}, 'Pause') }, 'Pause'),
    h('button', { type: 'button', id: 'resume', onclick: () => act(group, 'resume', {}, 'Resume') }, 'Resume'),
    h('button', { type: 'button', id: 'rollback', onclick: () => {
      const snapshot = snapshots.value || undefined;
      if (confirm(snapshot ? `Roll back to snapshot ${snapshot} (state and offsets too)?` : 'Roll back to the previous version?')) {
        act(group, 'rollback', snapshot ? { snapshot } : {}, 'Rollback');
      }
    } }, 'Roll back'),
    h('label', { class: 'muted' }, ' to ', snapshots),
  );
}

async function showDetails(group, node) {
  if (!state.token) {
    node.replaceChildren(h('p', { class: 'muted' }, 'Sign in to see the versions, settings and last error.'));
    return;
  }
  try {
    const d = await api(`/v1/plugins/${enc(group)}`);
    node.replaceChildren(
      d.last_error ? h('p', { class: 'error', id: 'last-error' }, `Last error: ${d.last_error}`) : h('p', { class: 'muted' }, 'No error.'),
      table(['#Version', 'Deployed', 'Digest', 'Settings'], d.versions.map((v) => [
        `v${v.version}${v.version === d.active_version ? ' (active)' : ''}`,
        time(v.deployed_ms), h('code', {}, String(v.digest || '').slice(0, 12)),
        h('pre', {}, Object.entries(v.config || {}).map(([k, val]) => `${k} = ${val}`).join('\n'))]), { id: 'versions' }),
      h('h2', {}, 'Limits'), h('pre', {}, JSON.stringify(d.limits, null, 2)),
    );
  } catch (error) {
    node.replaceChildren(h('p', { class: 'error' }, error.message));
  }
}

async function showDeadLetters(plugin, node) {
  const topic = state.overview.topics.find((t) => t.name === plugin.dlq_topic);
  if (!topic) { node.replaceChildren(h('p', { class: 'muted' }, 'No dead letters.')); return; }
  const letters = [];
  for (const p of topic.partitions) {
    try {
      const from = Math.max(p.log_start_offset, p.high_watermark - RECORDS_PER_PAGE);
      const fetched = await api(`/v1/topics/${enc(topic.name)}/partitions/${p.partition}/records?offset=${from}&max_records=${RECORDS_PER_PAGE}`);
      letters.push(...fetched.records.map((r) => ({ partition: p.partition, ...r })));
    } catch (error) {
      node.replaceChildren(h('p', { class: 'error' }, error.message));
      return;
    }
  }
  const header = (r, name) => (r.headers || {})[`sluice.dlq.${name}`];
  const replay = h('button', { type: 'button', id: 'replay', disabled: !state.token || undefined,
    title: state.token ? 'Run the dead letters through the plugin again' : 'Sign in to replay',
    onclick: () => act(plugin.group, 'dlq/replay', {}, 'Replay') }, 'Replay dead letters');
  node.replaceChildren(
    h('p', { class: 'muted' }, `Topic ${topic.name}: the newest ${RECORDS_PER_PAGE} per partition.`),
    letters.length ? table(['#Offset', 'From', 'Error', 'Version', '#Attempts', 'Value'], letters.map((r) => [
      `${r.partition}/${r.offset}`,
      `${header(r, 'topic') || '?'}/${header(r, 'partition') || '?'} @ ${header(r, 'offset') || '?'}`,
      h('span', { class: 'error' }, header(r, 'error') || ''),
      header(r, 'plugin-version') || '',
      header(r, 'attempts') || '',
      valueCell(r)]), { id: 'dead-letter-table' }) : h('p', { class: 'muted' }, 'No dead letters.'),
    h('div', { class: 'actions' }, replay),
  );
}

// ---- start -------------------------------------------------------------------------------

window.addEventListener('hashchange', render);
setupToken();
poll();
