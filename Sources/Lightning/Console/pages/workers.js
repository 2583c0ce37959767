// /workers: the worker fleet (status, running/capacity, version, host, deployment, how it authenticates,
// last seen), refreshed every 5 s. Read-only: fleet control is `lightning workers drain|pause|resume|revoke`
// (docs/workers.md).

import {api} from '../api.js';
import {el, clear, errorBox, fmtTime} from '../util.js';

function running(w) {
  const c = w.current_attempts;
  return Array.isArray(c) ? c.length : Number(c ?? 0);
}

function workerRow(w) {
  // idle, busy, paused, draining, drained, disconnected, registered (never connected) or revoked.
  const status = String(w.status ?? (w.connected ? 'idle' : 'disconnected'));
  const since = w.connected ? w.connected_at : w.disconnected_at;
  return el('tr', {'data-worker-name': w.name, 'data-status': status, 'data-connected': String(Boolean(w.connected))},
    el('td', {class: 'name'}, w.name ?? ''),
    el('td', {class: `status status-${status}`}, status),
    el('td', {class: 'running'}, `${running(w)} / ${w.capacity ?? '?'}`),
    el('td', {class: 'version'}, w.version ?? ''),
    el('td', {class: 'host'}, w.host ?? ''),
    el('td', {class: 'deployment'}, w.deployment_id ?? ''),
    el('td', {class: 'auth'}, w.auth_mode === 'token' ? 'registered' : (w.auth_mode === 'secret' ? 'shared secret' : '')),
    el('td', {class: 'last-seen'}, fmtTime(w.last_seen_at)),
    el('td', {class: 'since'}, since ? fmtTime(since) : ''));
}

export function render(ctx) {
  document.title = 'Workers · Lightning';
  const tbody = el('tbody');
  const status = el('div', {id: 'workers-error'});
  const updated = el('p', {id: 'workers-updated', class: 'muted'});
  ctx.root.append(el('h1', null, 'Workers'), status,
    el('table', {id: 'workers'},
      el('thead', null, el('tr', null,
        ['Name', 'Status', 'Running / capacity', 'Version', 'Host', 'Deployment', 'Credential', 'Last seen (UTC)', 'Since (UTC)']
          .map((h) => el('th', null, h)))),
      tbody),
    updated);

  const load = async () => {
    try {
      const r = await api.get('/api/workers');
      if (!ctx.alive()) return;
      const list = [...(r.workers || [])].sort((a, b) => (b.connected - a.connected) || String(a.name).localeCompare(String(b.name)));
      clear(tbody).append(...list.map(workerRow));
      if (!list.length) tbody.appendChild(el('tr', {class: 'empty'}, el('td', {colspan: 9}, 'No workers have connected.')));
      clear(status);
      updated.textContent = `Updated ${fmtTime(new Date().toISOString())}; refreshes every 5 s.`;
    } catch (e) {
      if (ctx.alive()) clear(status).append(errorBox(e.message));
    }
    if (ctx.alive()) document.body.dataset.page = 'workers';
  };
  load();
  const timer = setInterval(load, 5000);
  return () => clearInterval(timer);
}
