// /workflows/<name>: the workflow graph as SVG (triggers and jobs in longest-path layers, back edges
// ignored for layering; edges with arrowheads and condition labels, disabled ones dashed), then its
// webhooks, triggers, jobs, versions and recent attempts. layoutGraph is pure (unit-testable).

import {api} from '../api.js';
import {el, svgEl, clear, errorBox, fmtTime} from '../util.js';
import {attemptsTable} from './attempts.js';
import {webhookList} from './workflows.js';

const W = 184;
const H = 50;
const HGAP = 40;
const VGAP = 84;
const M = 24;
const LOOP = 70; // room to the right for back edges
const BULGE = 200; // control-point offset to the left for edges that skip a layer (clears the column)

const CONDITIONS = {always: 'always', on_job_success: 'on success', on_job_failure: 'on failure'};

export function conditionLabel(c) {
  if (c === null || c === undefined || c === '') return '';
  return CONDITIONS[c] || String(c);
}

export function truncate(s, n) {
  s = String(s ?? '');
  return s.length > n ? s.slice(0, n - 1) + '…' : s;
}

/** Positions nodes in layers and routes edges. Returns {width, height, nodes: [...], links: [...]}. */
export function layoutGraph(triggers, jobs, edges) {
  const nodes = new Map();
  (triggers || []).forEach((t, i) => nodes.set(t.id, {id: t.id, kind: 'trigger', data: t, order: i}));
  (jobs || []).forEach((j, i) => { if (!nodes.has(j.id)) nodes.set(j.id, {id: j.id, kind: 'job', data: j, order: 1e6 + i}); });
  const links = (edges || []).map((e) => ({id: e.id, edge: e, from: e.source_trigger_id ?? e.source_job_id, to: e.target_job_id, back: false}))
    .filter((l) => nodes.has(l.from) && nodes.has(l.to) && nodes.get(l.to).kind === 'job');
  const out = new Map([...nodes.keys()].map((k) => [k, []]));
  for (const l of links) out.get(l.from).push(l);

  // Back edges: edges to a node on the DFS stack (iterative DFS; triggers first).
  const color = new Map();
  for (const start of nodes.keys()) {
    if (color.has(start)) continue;
    const stack = [[start, 0]];
    color.set(start, 1);
    while (stack.length) {
      const top = stack[stack.length - 1];
      const outs = out.get(top[0]);
      if (top[1] < outs.length) {
        const l = outs[top[1]++];
        const c = color.get(l.to);
        if (c === 1) l.back = true;
        else if (!c) { color.set(l.to, 1); stack.push([l.to, 0]); }
      } else {
        color.set(top[0], 2);
        stack.pop();
      }
    }
  }

  // Longest-path layers over the forward edges (Kahn's order).
  const forward = links.filter((l) => !l.back);
  const preds = new Map([...nodes.keys()].map((k) => [k, []]));
  const indeg = new Map([...nodes.keys()].map((k) => [k, 0]));
  for (const l of forward) { preds.get(l.to).push(l.from); indeg.set(l.to, indeg.get(l.to) + 1); }
  const queue = [...nodes.values()].filter((n) => indeg.get(n.id) === 0);
  while (queue.length) {
    const n = queue.shift();
    const ps = preds.get(n.id);
    n.layer = n.kind === 'trigger' ? 0 : (ps.length ? 1 + Math.max(...ps.map((p) => nodes.get(p).layer)) : 1);
    for (const l of out.get(n.id)) {
      if (l.back) continue;
      indeg.set(l.to, indeg.get(l.to) - 1);
      if (indeg.get(l.to) === 0) queue.push(nodes.get(l.to));
    }
  }

  // Rows (one per distinct layer), ordered by the mean position of each node's predecessors.
  const layers = [...new Set([...nodes.values()].map((n) => n.layer))].sort((a, b) => a - b);
  const rows = layers.map((layer) => [...nodes.values()].filter((n) => n.layer === layer));
  rows.forEach((row, r) => {
    if (r > 0) {
      for (const n of row) {
        const ps = preds.get(n.id).map((p) => nodes.get(p).index);
        n.bary = ps.length ? ps.reduce((a, b) => a + b, 0) / ps.length : Infinity;
      }
      row.sort((a, b) => (a.bary - b.bary) || (a.order - b.order));
    } else row.sort((a, b) => a.order - b.order);
    row.forEach((n, i) => { n.index = i; n.row = r; });
  });
  const widest = Math.max(1, ...rows.map((row) => row.length));
  const inner = widest * W + (widest - 1) * HGAP;
  const hasLoops = links.some((l) => l.back || nodes.get(l.to).row <= nodes.get(l.from).row);
  for (const l of links) l.long = !l.back && nodes.get(l.to).row - nodes.get(l.from).row > 1;
  const left = links.some((l) => l.long) ? Math.round(BULGE * 0.75 - W / 2 + 60) : 0;
  for (const row of rows) {
    const rowWidth = row.length * W + (row.length - 1) * HGAP;
    row.forEach((n, i) => { n.x = M + left + (inner - rowWidth) / 2 + i * (W + HGAP); n.y = M + n.row * (H + VGAP); });
  }
  for (const l of links) {
    const a = nodes.get(l.from);
    const b = nodes.get(l.to);
    let p0, p1, p2, p3;
    if (!l.back && b.row > a.row) {
      p0 = [a.x + W / 2, a.y + H];
      p3 = [b.x + W / 2, b.y];
      const dy = Math.max(30, (p3[1] - p0[1]) / 2);
      const bulge = l.long ? BULGE : 0; // around the nodes in between, on the left
      p1 = [p0[0] - bulge, p0[1] + dy];
      p2 = [p3[0] - bulge, p3[1] - dy];
    } else { // back or sideways edge: loop out to the right
      p0 = [a.x + W, a.y + H / 2];
      p3 = [b.x + W, b.y + H / 2];
      p1 = [p0[0] + LOOP, p0[1]];
      p2 = [p3[0] + LOOP, p3[1]];
      if (l.from === l.to) { p1 = [p0[0] + LOOP, p0[1] - H]; p2 = [p3[0] + LOOP, p3[1] + H]; }
    }
    l.d = `M${p0[0]},${p0[1]} C${p1[0]},${p1[1]} ${p2[0]},${p2[1]} ${p3[0]},${p3[1]}`;
    l.label = [(p0[0] + 3 * p1[0] + 3 * p2[0] + p3[0]) / 8, (p0[1] + 3 * p1[1] + 3 * p2[1] + p3[1]) / 8];
  }
  return {
    width: 2 * M + left + inner + (hasLoops ? LOOP + 20 : 0),
    height: 2 * M + rows.length * H + Math.max(0, rows.length - 1) * VGAP,
    nodes: [...nodes.values()],
    links,
  };
}

function graphSvg(wf) {
  const g = layoutGraph(wf.triggers, wf.jobs, wf.edges);
  const svg = svgEl('svg', {id: 'workflow-graph', class: 'graph', width: g.width, height: g.height,
    viewBox: `0 0 ${g.width} ${g.height}`, role: 'img', 'aria-label': `Graph of ${wf.name}`},
  svgEl('defs', null, svgEl('marker', {id: 'wf-arrow', viewBox: '0 0 10 10', refX: '10', refY: '5',
    markerWidth: '8', markerHeight: '8', orient: 'auto-start-reverse', markerUnits: 'strokeWidth'},
  svgEl('path', {d: 'M0,0 L10,5 L0,10 z', class: 'arrowhead'}))));
  for (const l of g.links) {
    const enabled = l.edge.enabled !== false;
    const label = conditionLabel(l.edge.condition);
    const shown = truncate(label, 28);
    const group = svgEl('g', {class: enabled ? 'edge' : 'edge disabled', 'data-edge-id': l.id,
      'data-condition': l.edge.condition ?? '', 'data-enabled': enabled ? 'true' : 'false'},
    svgEl('title', null, `${label || 'edge'}${enabled ? '' : ' (disabled)'}`),
    svgEl('path', {class: 'edge-path', d: l.d, fill: 'none', 'marker-end': 'url(#wf-arrow)',
      'stroke-dasharray': enabled ? null : '6 4'}));
    if (shown) {
      const w = shown.length * 6.6 + 10;
      group.append(
        svgEl('rect', {class: 'edge-label-bg', x: (l.label[0] - w / 2).toFixed(1), y: (l.label[1] - 9).toFixed(1),
          width: w.toFixed(1), height: '18', rx: '4'}),
        svgEl('text', {class: 'edge-label', x: l.label[0].toFixed(1), y: (l.label[1] + 4).toFixed(1), 'text-anchor': 'middle'}, shown));
    }
    svg.appendChild(group);
  }
  for (const n of g.nodes) {
    const d = n.data;
    const title = n.kind === 'trigger' ? (d.name || d.type || 'trigger') : (d.name || 'job');
    const sub = n.kind === 'trigger'
      ? (d.type === 'cron' ? `cron ${d.cron ?? ''}` : `webhook ${d.webhook_path ?? ''}`)
      : String(d.adaptor ?? '').replace(/^@openfn\/language-/, '');
    svg.appendChild(svgEl('g', {class: `node node-${n.kind}`, 'data-node-id': n.id, 'data-kind': n.kind,
      'data-layer': n.layer, transform: `translate(${n.x},${n.y})`},
    svgEl('title', null, `${n.kind}: ${title}${sub ? ' — ' + sub : ''}`),
    svgEl('rect', {width: W, height: H, rx: '7'}),
    svgEl('text', {class: 'node-label', x: W / 2, y: 21, 'text-anchor': 'middle'}, truncate(title, 24)),
    svgEl('text', {class: 'node-sub', x: W / 2, y: 38, 'text-anchor': 'middle'}, truncate(sub, 30))));
  }
  return svg;
}

function table(id, headers, rows, empty) {
  return el('table', {id},
    el('thead', null, el('tr', null, headers.map((h) => el('th', null, h)))),
    el('tbody', null, rows.length ? rows : el('tr', {class: 'empty'}, el('td', {colspan: headers.length}, empty))));
}

export function render(ctx) {
  const name = ctx.params[0];
  document.title = `${name} · Lightning`;
  ctx.root.append(el('p', {class: 'muted'}, 'Loading…'));
  api.get(`/api/workflows/${encodeURIComponent(name)}`).then((wf) => {
    if (!ctx.alive()) return;
    const root = clear(ctx.root);
    root.append(
      el('h1', null, 'Workflow ', el('span', {id: 'workflow-name'}, wf.name)),
      el('p', {class: 'muted'}, `version ${wf.version ?? '?'} · concurrency ${wf.concurrency ?? 'unlimited'}`),
      el('div', {class: 'graph-box'}, graphSvg(wf)),
      el('h2', null, 'Webhooks'), el('div', {id: 'workflow-webhooks'}, webhookList(wf.webhooks)),
      el('h2', null, 'Triggers'),
      table('workflow-triggers', ['Name', 'Type', 'Webhook / cron'], (wf.triggers || []).map((t) =>
        el('tr', {'data-trigger-id': t.id}, el('td', null, t.name ?? ''), el('td', null, t.type ?? ''),
          el('td', {class: 'mono'}, t.type === 'cron' ? (t.cron ?? '') : (t.webhook_path ? location.origin + '/i/' + t.webhook_path.replace(/^\/+/, '') : ''))))
      , 'No triggers.'),
      el('h2', null, 'Jobs'),
      table('workflow-jobs', ['Name', 'Adaptor', 'Credential'], (wf.jobs || []).map((j) =>
        el('tr', {'data-job-id': j.id}, el('td', null, j.name ?? ''), el('td', {class: 'mono'}, j.adaptor ?? ''),
          el('td', null, j.credential ?? ''))), 'No jobs.'),
      el('h2', null, 'Versions'),
      table('workflow-versions', ['Version', 'Snapshot', 'Inserted (UTC)'], (wf.versions || []).map((v) =>
        el('tr', {'data-version': v.version}, el('td', null, String(v.version ?? '')),
          el('td', {class: 'mono'}, v.snapshot_id ?? ''), el('td', null, fmtTime(v.inserted_at)))), 'No versions.'),
      el('h2', null, 'Recent attempts'),
      attemptsTable('recent-attempts', wf.recent_attempts || [], 'No attempts yet.'));
    document.body.dataset.page = 'workflow';
  }, (e) => {
    if (!ctx.alive()) return;
    clear(ctx.root).append(el('h1', null, `Workflow ${name}`), errorBox(e.message, 'page-error'));
    document.body.dataset.page = 'workflow';
  });
}
