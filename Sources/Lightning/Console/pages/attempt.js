// /attempts/<id>: the attempt's header, steps timeline (with input/output dataclips), admin cancel and
// rerun, and the live log: joined on `attempt:<id>` with since = the last seq held, gaps filled over
// HTTP, header/steps refetched (at most every 500 ms) when the attempt changes.

import {api} from '../api.js';
import {el, clear, fill, errorBox, fmtTime, fmtDuration, durationMs, shortId, cssToken} from '../util.js';
import {LogView} from '../logview.js';

const enc = encodeURIComponent;

function stepState(step, attempt) {
  if (step.reason) return step.reason;
  if (step.finished_at) return 'finished';
  return attempt.final ? 'unfinished' : 'running';
}

export function render(ctx) {
  const id = ctx.params[0];
  const isAdmin = ctx.session && ctx.session.role === 'admin';
  ctx.root.append(el('p', {class: 'muted'}, 'Loading…'));
  const state = {cleanup: []};
  document.title = `Attempt ${shortId(id)} · Lightning`;
  api.get(`/api/attempts/${enc(id)}`).then((attempt) => {
    if (ctx.alive()) build(ctx, id, isAdmin, attempt, state);
  }, (e) => {
    if (!ctx.alive()) return;
    clear(ctx.root).append(el('h1', null, `Attempt ${shortId(id)}`), errorBox(e.message, 'page-error'));
    document.body.dataset.page = 'attempt';
  });
  return () => state.cleanup.forEach((fn) => fn());
}

function build(ctx, id, isAdmin, initial, state) {
  let attempt = initial;
  const root = clear(ctx.root);
  const dd = (key) => el('dd', {id: key});
  const f = {
    workflow: dd('attempt-workflow'), state: el('span', {id: 'attempt-state'}), reason: dd('attempt-reason'),
    error: dd('attempt-error'), worker: dd('attempt-worker'), inserted: dd('attempt-inserted'),
    started: dd('attempt-started'), finished: dd('attempt-finished'), duration: dd('attempt-duration'),
    number: dd('attempt-number'), others: dd('work-order-attempts'),
  };
  const row = (label, node) => [el('dt', null, label), node];
  const pageError = el('div', {id: 'page-error'});
  root.append(
    el('h1', null, 'Attempt ', el('span', {id: 'attempt-id', class: 'mono'}, id)),
    el('dl', {id: 'attempt-meta', class: 'meta'},
      row('Workflow', f.workflow), row('State', el('dd', null, f.state)), row('Reason', f.reason), row('Error', f.error),
      row('Worker', f.worker), row('Inserted', f.inserted), row('Started', f.started), row('Finished', f.finished),
      row('Duration', f.duration), row('Attempt', f.number), row('Work order', f.others)),
    pageError);

  // Admin actions
  const message = el('span', {id: 'action-message', role: 'status'});
  const cancel = el('button', {id: 'cancel', type: 'button', class: 'danger'}, 'Cancel');
  const rerunFrom = el('select', {id: 'rerun-from'});
  const rerun = el('button', {id: 'rerun', type: 'button'}, 'Rerun');
  if (isAdmin) {
    root.append(el('div', {id: 'attempt-actions', class: 'actions'}, cancel,
      el('label', {class: 'field inline'}, el('span', null, 'Rerun from'), rerunFrom), rerun, message));
  }
  const showMessage = (text, isError) => {
    message.textContent = text;
    message.classList.toggle('error', !!isError);
  };
  cancel.addEventListener('click', async () => {
    cancel.disabled = true;
    showMessage('Cancelling…');
    try {
      const r = await api.post(`/api/attempts/${enc(id)}/cancel`, {});
      showMessage(r && (r.message || r.state) ? (r.message || r.state) : 'Cancel requested.');
      refresh.request();
    } catch (e) {
      showMessage(e.message, true);
    } finally {
      cancel.disabled = false;
    }
  });
  rerun.addEventListener('click', async () => {
    rerun.disabled = true;
    showMessage('Starting a rerun…');
    try {
      const r = await api.post(`/api/attempts/${enc(id)}/rerun`, rerunFrom.value ? {from: rerunFrom.value} : {});
      if (ctx.alive()) ctx.navigate(`/attempts/${enc(r.attempt_id)}`);
    } catch (e) {
      showMessage(e.message, true);
      rerun.disabled = false;
    }
  });

  // Steps
  const stepsList = el('ol', {id: 'steps', class: 'steps'});
  const stepEls = new Map();
  root.append(el('h2', null, 'Steps'), stepsList);

  // Log
  const level = el('select', {id: 'log-level'},
    [['all', 'all levels'], ['debug', 'debug+'], ['info', 'info+'], ['warn', 'warn+'], ['error', 'error']]
      .map(([v, label]) => el('option', {value: v}, label)));
  const search = el('input', {id: 'log-search', type: 'search', placeholder: 'Search the log'});
  const matches = el('span', {id: 'log-matches', class: 'muted', 'data-count': '0'});
  const followBtn = el('button', {id: 'log-follow', type: 'button'}, 'Follow');
  const logDiv = el('div', {id: 'log'});
  const logError = el('div', {id: 'log-error'});
  root.append(el('h2', null, 'Log'),
    el('div', {class: 'log-controls'}, level, search, matches, el('span', {class: 'spacer'}), followBtn),
    logDiv, logError);

  const setFollowText = (on) => {
    followBtn.textContent = on ? 'Following' : 'Follow';
    followBtn.setAttribute('aria-pressed', on ? 'true' : 'false');
    followBtn.classList.toggle('on', on);
  };
  const showCounts = (v) => {
    const n = v.visibleLength();
    const total = v.model.count;
    matches.dataset.count = String(n);
    if (v.filter.query) matches.textContent = `${n} matching line${n === 1 ? '' : 's'}`;
    else if (v.filter.active) matches.textContent = `${n} of ${total} lines`;
    else matches.textContent = `${total} line${total === 1 ? '' : 's'}`;
  };
  const view = new LogView(logDiv, {follow: !attempt.final, onFollowChange: setFollowText, onCountsChange: showCounts,
    onFilterReset: () => { level.value = 'all'; search.value = ''; }});
  state.cleanup.push(() => view.destroy());
  setFollowText(view.follow);
  showCounts(view);
  followBtn.addEventListener('click', () => view.setFollow(!view.follow));
  let searchTimer = null;
  const applyFilter = () => { clearTimeout(searchTimer); view.setFilter(level.value, search.value); };
  level.addEventListener('change', applyFilter);
  search.addEventListener('input', () => { clearTimeout(searchTimer); searchTimer = setTimeout(applyFilter, 150); });
  search.addEventListener('keydown', (e) => { if (e.key === 'Enter') applyFilter(); });
  state.cleanup.push(() => clearTimeout(searchTimer));

  // Rendering the attempt
  function renderHeader() {
    const a = attempt;
    fill(f.workflow, a.workflow ? el('a', {href: `/workflows/${enc(a.workflow)}`}, a.workflow) : '—');
    f.state.textContent = a.state ?? '';
    f.state.className = 'state state-' + cssToken(a.state);
    f.reason.textContent = a.reason ?? '';
    f.error.textContent = [a.error_type, a.error_message].filter(Boolean).join(': ');
    f.worker.textContent = a.worker ?? '';
    f.inserted.textContent = fmtTime(a.inserted_at);
    f.started.textContent = fmtTime(a.started_at);
    f.finished.textContent = fmtTime(a.finished_at);
    f.duration.textContent = fmtDuration(durationMs(a.started_at, a.finished_at, !a.final)) || '—';
    fill(f.number, `#${a.attempt_number ?? '?'}`,
      a.retry_of ? [' · retry of ', el('a', {href: `/attempts/${enc(a.retry_of)}`}, shortId(a.retry_of))] : null,
      a.starting_job_name ? [' · ', el('span', {id: 'attempt-rerun-from'}, `rerun from ${a.starting_job_name}`)] : null);
    const others = a.work_order_attempts || [];
    fill(f.others, el('span', {class: 'mono muted'}, shortId(a.work_order_id)), ' ',
      others.map((o) => {
        const label = `#${o.attempt_number} ${o.state}`;
        const node = o.id === a.id ? el('strong', {class: 'current'}, label)
          : el('a', {href: `/attempts/${enc(o.id)}`, 'data-attempt-id': o.id}, label);
        node.classList.add('state-' + cssToken(o.state));
        return [node, ' '];
      }));
    cancel.hidden = !!a.final;
    document.title = `${a.workflow || 'Attempt'} ${shortId(a.id)} (${a.state}) · Lightning`;
  }

  function renderSteps() {
    const a = attempt;
    const steps = a.steps || [];
    const now = Date.now();
    const starts = steps.map((s) => Date.parse(s.started_at)).filter(Number.isFinite);
    const ends = steps.map((s) => Date.parse(s.finished_at)).filter(Number.isFinite);
    const t0 = Date.parse(a.started_at) || (starts.length ? Math.min(...starts) : now);
    const t1 = Date.parse(a.finished_at) || (a.final ? Math.max(t0, ...ends, ...starts) : now);
    const total = Math.max(1, t1 - t0);
    const seen = new Set();
    for (const s of steps) {
      seen.add(s.id);
      let item = stepEls.get(s.id);
      if (!item) { item = stepItem(s); stepEls.set(s.id, item); }
      const st = stepState(s, a);
      item.li.dataset.state = st;
      item.name.textContent = s.job_name || s.job_id || 'step';
      item.state.textContent = st;
      item.state.className = 'step-state state state-' + cssToken(st);
      item.state.title = [s.error_type, s.error_message].filter(Boolean).join(': ');
      const s0 = Date.parse(s.started_at);
      const s1 = Date.parse(s.finished_at) || (st === 'running' ? now : s0);
      item.duration.textContent = fmtDuration(Number.isFinite(s0) ? Math.max(0, s1 - s0) : null);
      const left = Number.isFinite(s0) ? Math.min(100, Math.max(0, ((s0 - t0) / total) * 100)) : 0;
      const width = Number.isFinite(s0) ? Math.max(0.5, Math.min(100 - left, ((s1 - s0) / total) * 100)) : 0;
      item.bar.style.left = left.toFixed(2) + '%';
      item.bar.style.width = width.toFixed(2) + '%';
      item.bar.className = 'step-bar state-' + cssToken(st);
      item.setClip('input', s.input_dataclip_id);
      item.setClip('output', s.output_dataclip_id);
      stepsList.appendChild(item.li); // keeps start order
    }
    for (const [sid, item] of stepEls) {
      if (!seen.has(sid)) { item.li.remove(); stepEls.delete(sid); }
    }
    if (!steps.length && !stepsList.querySelector('.empty')) stepsList.appendChild(el('li', {class: 'empty muted'}, 'No steps yet.'));
    if (steps.length) stepsList.querySelectorAll('.empty').forEach((n) => n.remove());
    renderRerunOptions(steps);
  }

  function stepItem(s) {
    const name = el('span', {class: 'step-name'});
    const stateEl = el('span', {class: 'step-state'});
    const duration = el('span', {class: 'step-duration'});
    const bar = el('div', {class: 'step-bar'});
    const clips = el('div', {class: 'step-clips'});
    const buttons = {};
    const panels = {};
    const ids = {};
    const toggles = ['input', 'output'].map((kind) => {
      const b = el('button', {type: 'button', class: 'dataclip-toggle', 'data-kind': kind, 'aria-expanded': 'false'}, kind);
      buttons[kind] = b;
      b.addEventListener('click', () => toggleClip(kind));
      return b;
    });
    const li = el('li', {'data-step-id': s.id},
      el('div', {class: 'step-head'}, name, stateEl, duration, el('div', {class: 'step-track'}, bar), ...toggles), clips);

    function toggleClip(kind) {
      const clipId = ids[kind];
      if (!clipId) return;
      let panel = panels[kind];
      if (panel && panel.dataset.clipId === clipId) {
        panel.hidden = !panel.hidden;
      } else {
        if (panel) panel.remove();
        panel = el('pre', {class: 'dataclip', 'data-kind': kind, 'data-clip-id': clipId}, 'loading…');
        panels[kind] = panel;
        if (kind === 'input') clips.insertBefore(panel, clips.firstChild); else clips.appendChild(panel);
        api.get(`/api/dataclips/${enc(clipId)}`).then((d) => {
          panel.textContent = JSON.stringify(d ? d.body : null, null, 2) ?? 'undefined';
        }, (e) => {
          panel.textContent = `Could not load the dataclip: ${e.message}`;
          panel.classList.add('error');
        });
      }
      buttons[kind].setAttribute('aria-expanded', panel.hidden ? 'false' : 'true');
      buttons[kind].classList.toggle('on', !panel.hidden);
    }

    return {
      li, name, state: stateEl, duration, bar,
      setClip(kind, clipId) {
        ids[kind] = clipId || null;
        buttons[kind].disabled = !clipId;
        buttons[kind].title = clipId ? `${kind} dataclip ${clipId}` : `no ${kind} dataclip`;
      },
    };
  }

  let rerunKey = null;
  function renderRerunOptions(steps) {
    const key = steps.map((s) => s.id + ':' + (s.job_name || '')).join('|');
    if (key === rerunKey) return;
    rerunKey = key;
    const chosen = rerunFrom.value;
    fill(rerunFrom, el('option', {value: ''}, 'the start'),
      steps.map((s) => el('option', {value: s.id}, s.job_name || s.job_id || s.id)));
    rerunFrom.value = steps.some((s) => s.id === chosen) ? chosen : '';
  }

  function applyAttempt(a) {
    if (!a) return;
    const steps = Array.isArray(a.steps) ? a.steps : attempt.steps;
    const others = Array.isArray(a.work_order_attempts) ? a.work_order_attempts : attempt.work_order_attempts;
    attempt = {...attempt, ...a, steps, work_order_attempts: others};
    renderHeader();
    renderSteps();
  }

  // Header/steps refetch, at most one per 500 ms (a trailing one if asked meanwhile).
  const refresh = (() => {
    let last = 0;
    let timer = null;
    let inflight = false;
    let again = false;
    const run = async () => {
      timer = null;
      inflight = true;
      last = Date.now();
      try {
        const a = await api.get(`/api/attempts/${enc(id)}`);
        if (ctx.alive()) { applyAttempt(a); clear(pageError); }
      } catch (e) {
        if (ctx.alive()) clear(pageError).append(errorBox(`Could not refresh: ${e.message}`));
      } finally {
        inflight = false;
        if (again) { again = false; request(); }
      }
    };
    const request = () => {
      if (inflight) { again = true; return; }
      if (timer) return;
      timer = setTimeout(run, Math.max(0, last + 500 - Date.now()));
    };
    state.cleanup.push(() => clearTimeout(timer));
    return {request};
  })();

  // Log catch-up over HTTP: until no gap is left and the log reaches `target` (one loop at a time).
  let wanted = 0;
  let catching = null;
  function catchUp(target = 0, force = false) {
    wanted = Math.max(wanted, target || 0);
    if (catching) return catching;
    catching = (async () => {
      try {
        for (let i = 0; i < 10000; i++) {
          if (!ctx.alive()) return;
          if (!force && !view.hasGap() && view.lastSeq() >= wanted) return;
          force = false;
          const before = view.lastSeq();
          const r = await api.get(`/api/attempts/${enc(id)}/logs?since=${before}&limit=10000`);
          if (!ctx.alive()) return;
          if (r && Number.isFinite(r.last_seq)) wanted = Math.max(wanted, r.last_seq);
          view.append((r && r.logs) || []);
          if (view.lastSeq() === before) { // nothing more to fetch
            if (view.hasGap()) view.forceDrain();
            return;
          }
        }
      } catch (e) {
        if (ctx.alive()) clear(logError).append(errorBox(`Could not load log lines: ${e.message}`));
      } finally {
        catching = null;
      }
    })();
    return catching;
  }

  const markReady = () => {
    if (!ctx.alive()) return;
    view.flush();
    logDiv.dataset.ready = '1';
  };

  // Live: the attempt channel
  let joined = false;
  // batch: the server sends lines as `logs` pushes of many lines (one frame each) instead of a `log` push per line.
  const channel = ctx.socket.channel(`attempt:${id}`, () => ({since: view.lastSeq(), batch: true}));
  channel.onJoin((resp) => {
    joined = true;
    clear(logError);
    if (resp.attempt) applyAttempt(resp.attempt);
    const r = view.append(resp.logs || []);
    const target = (resp.attempt && resp.attempt.last_seq) || 0;
    if (resp.more) {
      // The server sends the rest of the backlog as pushes, in order: wait for it rather than fetch it twice.
      readyAt = target;
      if (r.gap) catchUp();
      return;
    }
    const need = r.gap || view.lastSeq() < target;
    (need ? catchUp(target) : Promise.resolve()).then(markReady);
  });
  channel.onJoinError((resp) => {
    clear(logError).append(errorBox(`Live log unavailable: ${(resp && (resp.reason || resp.error)) || 'join refused'}`));
  });
  let readyAt = null;
  const live = (lines) => {
    const r = view.append(lines);
    if (r.gap) catchUp();
    if (readyAt !== null && view.lastSeq() >= readyAt) { readyAt = null; markReady(); }
  };
  channel.on('log', (line) => live([line]));
  channel.on('logs', (batch) => live((batch && batch.lines) || []));
  for (const event of ['step:start', 'step:complete', 'attempt:update']) channel.on(event, () => refresh.request());
  channel.on('attempt:complete', (a) => {
    applyAttempt(a);
    refresh.request();
    if (a && a.last_seq > view.lastSeq()) catchUp(a.last_seq);
  });
  channel.join();
  state.cleanup.push(() => channel.leave());

  // Without the socket, still show the stored log after a while.
  const fallback = setTimeout(() => {
    if (joined || !ctx.alive()) return;
    catchUp(attempt.last_seq || 0, true).then(markReady);
  }, 5000);
  state.cleanup.push(() => clearTimeout(fallback));

  // Running times tick while the attempt is live.
  const tick = setInterval(() => {
    if (attempt.final) return;
    f.duration.textContent = fmtDuration(durationMs(attempt.started_at, attempt.finished_at, true)) || '—';
    renderSteps();
  }, 1000);
  state.cleanup.push(() => clearInterval(tick));

  renderHeader();
  renderSteps();
  document.body.dataset.page = 'attempt';
}
