// /attempts: the attempt list with filters kept in the query string (state, workflow, since, until,
// q, before), cursor paging, and rows updated or inserted live from the `attempts` channel.
// Also exports attemptRow/attemptsTable, used by the workflow page's recent attempts.

import {api, query} from '../api.js';
import {el, clear, errorBox, fmtTime, fmtDuration, durationMs, shortId, cssToken, isoToInput, inputToIso,
  ATTEMPT_STATES} from '../util.js';

const COLUMNS = ['Attempt', 'Workflow', 'State', 'Reason', 'Worker', 'Inserted (UTC)', 'Duration'];

export function attemptRow(a) {
  const errorText = [a.error_type, a.error_message].filter(Boolean).join(': ');
  return el('tr', {'data-attempt-id': a.id, 'data-state': a.state, 'data-final': a.final ? '1' : '0'},
    el('td', {class: 'id'}, el('a', {href: '/attempts/' + encodeURIComponent(a.id), title: a.id}, shortId(a.id))),
    el('td', {class: 'workflow'}, a.workflow ? el('a', {href: '/workflows/' + encodeURIComponent(a.workflow)}, a.workflow) : ''),
    el('td', {class: 'state state-' + cssToken(a.state)}, a.state ?? ''),
    el('td', {class: 'reason', title: errorText || null}, a.reason ?? ''),
    el('td', {class: 'worker'}, a.worker ?? ''),
    el('td', {class: 'time'}, fmtTime(a.inserted_at)),
    el('td', {class: 'duration'}, fmtDuration(durationMs(a.started_at, a.finished_at))));
}

export function emptyRow(text) {
  return el('tr', {class: 'empty'}, el('td', {colspan: COLUMNS.length}, text));
}

export function attemptsTable(id, attempts, emptyText = 'No attempts match.') {
  const tbody = el('tbody', null, attempts.length ? attempts.map(attemptRow) : emptyRow(emptyText));
  return el('table', {id, class: 'attempts'}, el('thead', null, el('tr', null, COLUMNS.map((c) => el('th', null, c)))), tbody);
}

function readFilters(q) {
  const f = {};
  for (const k of ['state', 'workflow', 'since', 'until', 'q', 'before']) f[k] = q.get(k) || '';
  return f;
}

function matchesFilters(a, f) {
  if (f.state && a.state !== f.state) return false;
  if (f.workflow && a.workflow !== f.workflow) return false;
  if (f.q) return false; // log text can only be searched by the server
  const t = Date.parse(a.inserted_at);
  if (f.since && !(t >= Date.parse(f.since))) return false;
  if (f.until && !(t <= Date.parse(f.until))) return false;
  return true;
}

function select(id, anyLabel, values, current) {
  const s = el('select', {id}, el('option', {value: ''}, anyLabel), values.map((v) => el('option', {value: v}, v)));
  if (current && !values.includes(current)) s.appendChild(el('option', {value: current}, current));
  s.value = current;
  return s;
}

export function render(ctx) {
  document.title = 'Attempts · Lightning';
  const f = readFilters(ctx.query);
  const stateSel = select('filter-state', 'any state', ATTEMPT_STATES, f.state);
  const workflowSel = select('filter-workflow', 'any workflow', [], f.workflow);
  const since = el('input', {id: 'filter-since', type: 'datetime-local', step: '1', value: isoToInput(f.since)});
  const until = el('input', {id: 'filter-until', type: 'datetime-local', step: '1', value: isoToInput(f.until)});
  const q = el('input', {id: 'filter-q', type: 'search', placeholder: 'text in the log', value: f.q});
  const apply = el('button', {id: 'filter-apply', type: 'submit'}, 'Apply');
  const field = (label, input) => el('label', {class: 'field'}, el('span', null, label), input);
  const form = el('form', {id: 'filters', class: 'filters', action: '/attempts', method: 'get'},
    field('State', stateSel), field('Workflow', workflowSel), field('Since (UTC)', since),
    field('Until (UTC)', until), field('Log text', q), apply);
  const error = el('div', {id: 'attempts-error'});
  const tbody = el('tbody');
  const table = attemptsTable('attempts', []);
  table.replaceChild(tbody, table.tBodies[0]);
  const older = el('button', {id: 'page-next', type: 'button'}, 'Older');
  const newest = el('button', {id: 'page-newest', type: 'button'}, 'Newest');
  older.hidden = true;
  newest.hidden = !f.before;
  ctx.root.append(el('h1', null, 'Attempts'), form, error, table, el('div', {class: 'pager'}, newest, older));

  const go = (filters) => {
    const params = {state: filters.state, workflow: filters.workflow, since: filters.since, until: filters.until,
      q: filters.q, before: filters.before};
    ctx.navigate('/attempts' + query(params));
  };
  form.addEventListener('submit', (e) => {
    e.preventDefault();
    go({state: stateSel.value, workflow: workflowSel.value, since: inputToIso(since.value),
      until: inputToIso(until.value), q: q.value.trim()});
  });
  newest.addEventListener('click', () => go({...f, before: ''}));

  // The page counts as shown (body.dataset.page) once both the rows and the workflow choices are in.
  const workflowsLoaded = api.get('/api/workflows').then((r) => {
    if (!ctx.alive()) return;
    const names = (r.workflows || []).map((w) => w.name).sort();
    const fresh = select('filter-workflow', 'any workflow', names, f.workflow);
    const chosen = workflowSel.value;
    clear(workflowSel).append(...fresh.childNodes);
    workflowSel.value = chosen;
  }, (e) => console.warn('workflows', e));

  const rows = new Map(); // attempt id → <tr>
  const row = (a) => {
    const tr = attemptRow(a);
    tr.dataset.at = String(Date.parse(a.inserted_at) || 0);
    return tr;
  };
  let nextBefore = null;
  let loaded = false;
  let queue = [];

  const load = async () => {
    loaded = false;
    let r;
    try {
      r = await api.get('/api/attempts' + query({state: f.state, workflow: f.workflow, since: f.since,
        until: f.until, q: f.q, before: f.before, limit: 50}));
    } catch (e) {
      if (!ctx.alive()) return;
      clear(error).append(errorBox(e.message));
      workflowsLoaded.then(() => { if (ctx.alive()) document.body.dataset.page = 'attempts'; });
      return;
    }
    if (!ctx.alive()) return;
    clear(error);
    clear(tbody);
    rows.clear();
    const list = r.attempts || [];
    for (const a of list) {
      const tr = row(a);
      rows.set(a.id, tr);
      tbody.appendChild(tr);
    }
    if (!list.length) tbody.appendChild(emptyRow('No attempts match.'));
    nextBefore = r.next_before || null;
    older.hidden = !nextBefore;
    loaded = true;
    const pending = queue;
    queue = [];
    pending.forEach(applyChange);
    workflowsLoaded.then(() => { if (ctx.alive()) document.body.dataset.page = 'attempts'; });
  };
  older.addEventListener('click', () => { if (nextBefore) go({...f, before: nextBefore}); });

  function applyChange(a) {
    if (!a || !a.id) return;
    if (!loaded) { queue.push(a); return; }
    const existing = rows.get(a.id);
    if (existing) {
      if (existing.dataset.final === '1' && !a.final) return; // an older change arriving late
      const tr = row(a);
      existing.replaceWith(tr);
      rows.set(a.id, tr);
      return;
    }
    if (f.before || !matchesFilters(a, f)) return;
    // Newest first: place it by inserted_at; skip it if it belongs on an older page.
    const t = Date.parse(a.inserted_at) || Date.now();
    let before = null;
    for (const tr of tbody.children) {
      if (tr.dataset.attemptId && Number(tr.dataset.at || 0) <= t) { before = tr; break; }
    }
    if (!before && nextBefore) return;
    const tr = row(a);
    const empty = tbody.querySelector('tr.empty');
    if (empty) empty.remove();
    tbody.insertBefore(tr, before);
    rows.set(a.id, tr);
  }

  const channel = ctx.socket.channel('attempts', () => ({}));
  // Every join reloads, the first one too: the server starts sending changes only once the join is done, so a
  // change between the first read and the join (or while disconnected) would otherwise be missed.
  channel.onJoin(() => load());
  channel.on('attempt:changed', applyChange);
  channel.join();
  load();

  return () => channel.leave();
}
