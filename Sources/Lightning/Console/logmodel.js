// The log's data model, without DOM: lines held in seq order with no duplicates, pushes that arrive
// after a gap buffered until the missing lines are fetched, and the level/text filter. Pure.

import {parseAnsi} from './ansi.js';

export const LEVELS = ['debug', 'info', 'warn', 'error'];

/** debug 0, info 1, warn 2, error 3; other levels count as info. */
export function levelRank(level) {
  const l = String(level ?? '').toLowerCase();
  if (l === 'warning') return 2;
  const i = LEVELS.indexOf(l);
  return i < 0 ? 1 : i;
}

/** A line's message as display segments: ANSI parsed, trailing newlines dropped, inner ones shown as ↵. */
export function displaySegments(line) {
  if (!line._segs) {
    const msg = String(line.message ?? '').replace(/[\r\n]+$/, '');
    line._segs = parseAnsi(msg).map((s) => ({text: s.text.replace(/\r\n|\r|\n/g, '↵'), classes: s.classes}));
  }
  return line._segs;
}

export function plainLower(line) {
  if (line._lower === undefined) line._lower = displaySegments(line).map((s) => s.text).join('').toLowerCase();
  return line._lower;
}

/** [[start, end], ...] of the non-overlapping occurrences of `needle` (already lower-case) in `hay`. */
export function findMatches(hay, needle) {
  const out = [];
  if (!needle) return out;
  let i = hay.indexOf(needle);
  while (i >= 0) {
    out.push([i, i + needle.length]);
    i = hay.indexOf(needle, i + needle.length);
  }
  return out;
}

export class LogFilter {
  constructor(minLevel = 'all', query = '') {
    this.minLevel = minLevel;
    this.rank = minLevel === 'all' ? -1 : levelRank(minLevel);
    this.query = String(query || '').toLowerCase();
  }

  get active() { return this.rank >= 0 || this.query !== ''; }

  matches(line) {
    if (this.rank >= 0 && levelRank(line.level) < this.rank) return false;
    if (this.query && !plainLower(line).includes(this.query)) return false;
    return true;
  }
}

export class LogModel {
  constructor() {
    this.lines = [];
    this.pending = new Map(); // seq → line, received after a gap
  }

  get count() { return this.lines.length; }
  get lastSeq() { return this.lines.length ? this.lines[this.lines.length - 1].seq : 0; }
  hasGap() { return this.pending.size > 0; }
  seqs() { return this.lines.map((l) => l.seq); }

  /**
   * Adds lines (any order, duplicates allowed). Lines with seq <= lastSeq are ignored; the next one
   * in sequence is appended (and any buffered ones that follow); later ones are buffered.
   * Returns {appended: [lines appended, in order], gap: whether lines are missing before a buffered one}.
   */
  add(lines) {
    const appended = [];
    const sorted = [...(lines || [])]
      .filter((l) => l && Number.isInteger(Number(l.seq)))
      .map((l) => (typeof l.seq === 'number' ? l : {...l, seq: Number(l.seq)}))
      .sort((a, b) => a.seq - b.seq);
    for (const line of sorted) {
      const last = this.lastSeq;
      if (line.seq <= last) continue;
      if (line.seq === last + 1) {
        // A copy may have been buffered when it first came early: it must not look like a gap later.
        this.pending.delete(line.seq);
        this.lines.push(line);
        appended.push(line);
        this.drain(appended);
      } else if (!this.pending.has(line.seq)) {
        this.pending.set(line.seq, line);
      }
    }
    return {appended, gap: this.hasGap()};
  }

  drain(appended) {
    let next = this.lastSeq + 1;
    while (this.pending.has(next)) {
      const line = this.pending.get(next);
      this.pending.delete(next);
      this.lines.push(line);
      appended.push(line);
      next++;
    }
  }

  /** Accepts the buffered lines despite the gap (the server has nothing to fill it). */
  forceDrain() {
    const appended = [];
    for (const seq of [...this.pending.keys()].sort((a, b) => a - b)) {
      const line = this.pending.get(seq);
      this.pending.delete(seq);
      if (seq > this.lastSeq) { this.lines.push(line); appended.push(line); }
    }
    return appended;
  }

  /** Index of the line with `seq` in this.lines, or -1. */
  indexOf(seq) {
    return bsearch(this.lines.length, (i) => this.lines[i].seq, seq);
  }
}

/** Binary search over a sorted sequence of length n read by key(i); index of `target` or -1. */
export function bsearch(n, key, target) {
  let lo = 0;
  let hi = n - 1;
  while (lo <= hi) {
    const mid = (lo + hi) >> 1;
    const k = key(mid);
    if (k === target) return mid;
    if (k < target) lo = mid + 1; else hi = mid - 1;
  }
  return -1;
}
