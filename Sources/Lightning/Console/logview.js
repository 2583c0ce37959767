// The virtual log viewer: a fixed-height scroller with a spacer as tall as all the (filtered) lines,
// holding only the absolutely positioned lines in view plus an overscan. Appends are batched per
// animation frame and create DOM only for new lines in view. Also: level/text filter with <mark>ed
// matches, follow mode, #L<seq> line links, and the window.consoleLog test hook.

import {el, clear, fmtMicros, cssToken} from './util.js';
import {LogModel, LogFilter, displaySegments, plainLower, findMatches, bsearch} from './logmodel.js';

export const LINE_HEIGHT = 18; // px; must match .line in app.css (also set on each line)
const OVERSCAN = 50;
const MAX_RENDERED = 800;
const MAX_CHARS = 4000; // characters of one message put in the DOM

export function parseLineHash(hash) {
  const m = /^#L(\d+)$/.exec(hash || '');
  return m ? Number(m[1]) : null;
}

export class LogView {
  constructor(container, {follow = true, onFollowChange = null, onCountsChange = null, onFilterReset = null} = {}) {
    this.container = container;
    this.onFilterReset = onFilterReset;
    this.onFollowChange = onFollowChange;
    this.onCountsChange = onCountsChange;
    this.model = new LogModel();
    this.filter = new LogFilter();
    this.filtered = null; // indices into model.lines while a filter is active
    this.rendered = new Map(); // seq → .line element
    this.raf = 0;
    this.target = null;
    this.pendingTarget = parseLineHash(location.hash);
    this.follow = this.pendingTarget === null && follow;
    this.lastTop = 0;

    clear(container);
    container.classList.add('log');
    container.tabIndex = 0;
    container.dataset.count = '0';
    container.dataset.lastSeq = '0';
    this.spacer = el('div', {class: 'log-spacer'});
    container.appendChild(this.spacer);

    this.handlers = {
      scroll: () => this.onScroll(),
      wheel: (e) => { if (e.deltaY < 0) this.setFollow(false); },
      keydown: (e) => { if (['ArrowUp', 'PageUp', 'Home'].includes(e.key)) this.setFollow(false); },
      click: (e) => this.onClick(e),
      hashchange: () => { const seq = parseLineHash(location.hash); if (seq !== null) this.goToLine(seq); },
    };
    container.addEventListener('scroll', this.handlers.scroll, {passive: true});
    container.addEventListener('wheel', this.handlers.wheel, {passive: true});
    container.addEventListener('keydown', this.handlers.keydown);
    container.addEventListener('click', this.handlers.click);
    window.addEventListener('hashchange', this.handlers.hashchange);
    if (typeof ResizeObserver === 'function') {
      this.resizeObserver = new ResizeObserver(() => { if (this.follow) this.scrollToBottom(); this.render(); });
      this.resizeObserver.observe(container);
    }
    this.exposeTestHook();
  }

  exposeTestHook() {
    const view = this;
    this.hook = Object.freeze({
      count: () => view.model.count,
      lastSeq: () => view.model.lastSeq,
      seqs: () => view.model.seqs(),
      visibleCount: () => view.container.querySelectorAll('.line').length,
      filteredCount: () => view.visibleLength(),
    });
    Object.defineProperty(window, 'consoleLog', {value: this.hook, configurable: true, writable: false, enumerable: false});
  }

  destroy() {
    cancelAnimationFrame(this.raf);
    window.removeEventListener('hashchange', this.handlers.hashchange);
    if (this.resizeObserver) this.resizeObserver.disconnect();
    if (window.consoleLog === this.hook) delete window.consoleLog;
  }

  lastSeq() { return this.model.lastSeq; }
  hasGap() { return this.model.hasGap(); }
  visibleLength() { return this.filtered ? this.filtered.length : this.model.lines.length; }
  lineAt(pos) { return this.model.lines[this.filtered ? this.filtered[pos] : pos]; }

  /** Position (row) of `seq` among the shown lines, or -1. */
  positionOf(seq) {
    const idx = this.model.indexOf(seq);
    if (idx < 0 || !this.filtered) return idx;
    return bsearch(this.filtered.length, (i) => this.filtered[i], idx);
  }

  /** Adds lines (deduplicated, in seq order); returns {appended, gap}. */
  append(lines) {
    const result = this.model.add(lines);
    this.afterAppend(result.appended);
    return result;
  }

  /** Shows lines buffered behind a gap that the server cannot fill. */
  forceDrain() {
    this.afterAppend(this.model.forceDrain());
  }

  afterAppend(appended) {
    if (!appended.length) return;
    if (this.filtered) {
      const base = this.model.lines.length - appended.length;
      appended.forEach((line, i) => { if (this.filter.matches(line)) this.filtered.push(base + i); });
    }
    this.container.dataset.count = String(this.model.count);
    this.container.dataset.lastSeq = String(this.model.lastSeq);
    if (!this.raf) this.raf = requestAnimationFrame(() => { this.raf = 0; this.flush(); });
  }

  /** Brings the DOM up to date now (spacer height, follow/target scrolling, visible lines). */
  flush() {
    if (this.raf) { cancelAnimationFrame(this.raf); this.raf = 0; }
    this.spacer.style.height = this.visibleLength() * LINE_HEIGHT + 'px';
    if (this.pendingTarget !== null && this.model.lastSeq >= this.pendingTarget) {
      const seq = this.pendingTarget;
      this.pendingTarget = null;
      this.setFollow(false);
      if (this.filtered && this.positionOf(seq) < 0 && this.model.indexOf(seq) >= 0) {
        this.setFilter('all', ''); // the line asked for is filtered out: show everything
        if (this.onFilterReset) this.onFilterReset();
      }
      this.setTarget(seq);
      this.scrollToSeq(seq);
    } else if (this.follow) {
      this.scrollToBottom();
    }
    this.render();
    if (this.onCountsChange) this.onCountsChange(this);
  }

  setFilter(minLevel, query) {
    const anchor = this.follow ? null : this.firstVisibleSeq();
    this.filter = new LogFilter(minLevel, query);
    if (!this.filter.active) {
      this.filtered = null;
    } else {
      const f = [];
      const lines = this.model.lines;
      for (let i = 0; i < lines.length; i++) if (this.filter.matches(lines[i])) f.push(i);
      this.filtered = f;
    }
    for (const div of this.rendered.values()) div.remove();
    this.rendered.clear();
    this.spacer.style.height = this.visibleLength() * LINE_HEIGHT + 'px';
    if (anchor !== null) {
      // keep the first line that was in view (or the next one shown) at the top
      let pos = 0;
      const idx = this.model.indexOf(anchor);
      if (this.filtered) {
        let lo = 0;
        let hi = this.filtered.length;
        while (lo < hi) { const mid = (lo + hi) >> 1; if (this.filtered[mid] < idx) lo = mid + 1; else hi = mid; }
        pos = lo;
      } else pos = Math.max(0, idx);
      this.container.scrollTop = pos * LINE_HEIGHT;
      this.lastTop = this.container.scrollTop;
    }
    this.flush();
  }

  firstVisibleSeq() {
    const n = this.visibleLength();
    if (!n) return null;
    const pos = Math.min(n - 1, Math.floor(this.container.scrollTop / LINE_HEIGHT));
    return this.lineAt(pos).seq;
  }

  setFollow(on) {
    on = !!on;
    if (on === this.follow) return;
    this.follow = on;
    if (on) { this.scrollToBottom(); this.render(); }
    if (this.onFollowChange) this.onFollowChange(on);
  }

  atBottom() {
    const c = this.container;
    return c.scrollTop + c.clientHeight >= c.scrollHeight - 2;
  }

  scrollToBottom() {
    const c = this.container;
    c.scrollTop = c.scrollHeight;
    this.lastTop = c.scrollTop;
  }

  onScroll() {
    const top = this.container.scrollTop;
    if (this.follow && top < this.lastTop - 1 && !this.atBottom()) this.setFollow(false);
    this.lastTop = top;
    this.render();
  }

  onClick(e) {
    const a = e.target && e.target.closest ? e.target.closest('a.ln') : null;
    if (!a || !this.container.contains(a) || e.button !== 0 || e.metaKey || e.ctrlKey || e.shiftKey || e.altKey) return;
    e.preventDefault();
    const seq = Number(a.closest('.line').dataset.seq);
    history.replaceState(history.state, '', location.pathname + location.search + '#L' + seq);
    this.setFollow(false);
    this.setTarget(seq);
  }

  /** Scrolls to line `seq` (once it has arrived), highlights it and stops following. */
  goToLine(seq) {
    this.pendingTarget = seq;
    this.setFollow(false);
    this.flush();
  }

  setTarget(seq) {
    const old = this.rendered.get(this.target);
    if (old) old.classList.remove('target');
    this.target = seq;
    const div = this.rendered.get(seq);
    if (div) div.classList.add('target');
  }

  scrollToSeq(seq) {
    const pos = this.positionOf(seq);
    if (pos < 0) return false;
    const c = this.container;
    c.scrollTop = Math.max(0, pos * LINE_HEIGHT - Math.floor(c.clientHeight / 3));
    this.lastTop = c.scrollTop;
    this.render();
    return true;
  }

  render() {
    const c = this.container;
    const n = this.visibleLength();
    const top = c.scrollTop;
    const h = c.clientHeight || 600;
    const first = Math.max(0, Math.floor(top / LINE_HEIGHT) - OVERSCAN);
    const last = Math.min(n, first + MAX_RENDERED, Math.ceil((top + h) / LINE_HEIGHT) + OVERSCAN);
    let minPos = Infinity;
    for (const div of this.rendered.values()) minPos = Math.min(minPos, div._pos);
    const keep = new Set();
    const before = document.createDocumentFragment();
    const after = document.createDocumentFragment();
    for (let pos = first; pos < last; pos++) {
      const line = this.lineAt(pos);
      keep.add(line.seq);
      let div = this.rendered.get(line.seq);
      if (!div) {
        div = this.lineElement(line);
        this.rendered.set(line.seq, div);
        (pos < minPos ? before : after).appendChild(div);
      }
      if (div._pos !== pos) { div._pos = pos; div.style.top = pos * LINE_HEIGHT + 'px'; }
    }
    for (const [seq, div] of this.rendered) {
      if (!keep.has(seq)) { div.remove(); this.rendered.delete(seq); }
    }
    this.spacer.insertBefore(before, this.spacer.firstChild);
    this.spacer.appendChild(after);
  }

  lineElement(line) {
    const level = String(line.level ?? '');
    const div = el('div', {class: line.seq === this.target ? 'line target' : 'line', 'data-seq': line.seq},
      el('a', {class: 'ln', href: '#L' + line.seq}, String(line.seq)),
      el('span', {class: 'ts'}, fmtMicros(line.timestamp)),
      el('span', {class: 'lvl lvl-' + cssToken(level)}, level),
      el('span', {class: 'src'}, String(line.source ?? '')),
      this.messageElement(line));
    div.style.height = LINE_HEIGHT + 'px';
    return div;
  }

  messageElement(line) {
    const msg = el('span', {class: 'msg'});
    const segs = displaySegments(line);
    const ranges = this.filter.query ? findMatches(plainLower(line), this.filter.query) : [];
    let offset = 0;
    let ri = 0;
    let budget = MAX_CHARS;
    let total = 0;
    for (const seg of segs) total += seg.text.length;
    for (const seg of segs) {
      if (budget <= 0) break;
      const text = seg.text.length > budget ? seg.text.slice(0, budget) : seg.text;
      budget -= text.length;
      const parent = seg.classes.length ? el('span', {class: seg.classes.join(' ')}) : msg;
      let p = 0;
      while (p < text.length) {
        while (ri < ranges.length && ranges[ri][1] <= offset + p) ri++;
        const r = ranges[ri];
        if (!r || r[0] >= offset + text.length) { parent.append(text.slice(p)); break; }
        const s = Math.max(r[0] - offset, p);
        if (s > p) parent.append(text.slice(p, s));
        const e = Math.min(r[1] - offset, text.length);
        parent.appendChild(el('mark', null, text.slice(s, e)));
        p = e;
      }
      if (parent !== msg) msg.appendChild(parent);
      offset += seg.text.length;
    }
    if (total > MAX_CHARS) msg.appendChild(el('span', {class: 'truncated'}, ` … (${total - MAX_CHARS} more characters)`));
    return msg;
  }
}
