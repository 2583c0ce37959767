// /workflows: every workflow with its version, concurrency and absolute webhook URLs.

import {api} from '../api.js';
import {el, clear, errorBox} from '../util.js';

export function webhookList(paths) {
  const list = (paths || []).map((p) => el('li', null, el('code', {class: 'webhook'}, location.origin + p)));
  return list.length ? el('ul', {class: 'webhooks plain'}, list) : el('span', {class: 'muted'}, 'none');
}

export function render(ctx) {
  document.title = 'Workflows · Lightning';
  const tbody = el('tbody');
  const status = el('div', {id: 'workflows-error'});
  ctx.root.append(el('h1', null, 'Workflows'), status,
    el('table', {id: 'workflows'},
      el('thead', null, el('tr', null, ['Name', 'Version', 'Concurrency', 'Webhooks'].map((h) => el('th', null, h)))),
      tbody));
  api.get('/api/workflows').then((r) => {
    if (!ctx.alive()) return;
    const list = r.workflows || [];
    for (const w of list) {
      tbody.appendChild(el('tr', {'data-workflow-name': w.name, 'data-workflow-id': w.id},
        el('td', {class: 'name'}, el('a', {href: `/workflows/${encodeURIComponent(w.name)}`}, w.name)),
        el('td', {class: 'version'}, String(w.version ?? '')),
        el('td', {class: 'concurrency'}, w.concurrency === null || w.concurrency === undefined ? 'unlimited' : String(w.concurrency)),
        el('td', {class: 'webhooks'}, webhookList(w.webhooks))));
    }
    if (!list.length) tbody.appendChild(el('tr', {class: 'empty'}, el('td', {colspan: 4}, 'No workflows.')));
    document.body.dataset.page = 'workflows';
  }, (e) => {
    if (!ctx.alive()) return;
    clear(status).append(errorBox(e.message));
    document.body.dataset.page = 'workflows';
  });
}
