// DOM helpers (el/svgEl build elements with safe attributes only; text always via text nodes),
// time and duration formatting in UTC, and the same-origin `next` check.

const SAFE_ATTR = /^[a-zA-Z][a-zA-Z0-9_:.-]*$/;
const URL_ATTRS = new Set(['href', 'src', 'action', 'xlink:href', 'formaction']);

function setAttrs(node, attrs) {
  if (!attrs) return;
  for (const [name, value] of Object.entries(attrs)) {
    if (value === null || value === undefined || value === false) continue;
    if (!SAFE_ATTR.test(name) || /^on/i.test(name) || name.toLowerCase() === 'style') {
      throw new Error(`unsafe attribute: ${name}`);
    }
    let v = value === true ? '' : String(value);
    // Links stay on this origin: parsed as the browser will (so tabs, backslashes and javascript: cannot slip by).
    if (URL_ATTRS.has(name.toLowerCase()) && !sameOrigin(v)) v = '#';
    node.setAttribute(name, v);
  }
}

function sameOrigin(url) {
  try {
    const u = new URL(url, location.href);
    return (u.protocol === 'http:' || u.protocol === 'https:') && u.origin === location.origin;
  } catch (e) {
    return false;
  }
}

function addChildren(node, children) {
  for (const c of children) {
    if (c === null || c === undefined || c === false) continue;
    if (Array.isArray(c)) addChildren(node, c);
    else if (typeof c === 'object' && typeof c.nodeType === 'number') node.appendChild(c);
    else node.appendChild(document.createTextNode(String(c)));
  }
}

/** el('a', {href: '/x', class: 'y'}, 'text', otherNode) */
export function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  setAttrs(node, attrs);
  addChildren(node, children);
  return node;
}

export const SVG_NS = 'http://www.w3.org/2000/svg';

export function svgEl(tag, attrs, ...children) {
  const node = document.createElementNS(SVG_NS, tag);
  setAttrs(node, attrs);
  addChildren(node, children);
  return node;
}

export function clear(node) {
  while (node.firstChild) node.removeChild(node.firstChild);
  return node;
}

/** Replaces node's children (strings become text; arrays are flattened). */
export function fill(node, ...children) {
  clear(node);
  addChildren(node, children);
  return node;
}

export function on(node, event, fn, opts) {
  node.addEventListener(event, fn, opts);
  return node;
}

export function errorBox(message, id) {
  return el('p', {class: 'error', role: 'alert', id}, message);
}

export function shortId(id) {
  return id ? String(id).slice(0, 8) : '';
}

/** A class-name-safe version of a value ("lvl-" + cssToken(level)). */
export function cssToken(v) {
  return String(v ?? '').toLowerCase().replace(/[^a-z0-9_-]/g, '_') || 'none';
}

const pad = (n, w = 2) => String(n).padStart(w, '0');

/** "2024-05-01 12:34:56 UTC" from an ISO string; "—" for null. */
export function fmtTime(iso) {
  if (!iso) return '—';
  const d = new Date(iso);
  if (Number.isNaN(d.getTime())) return String(iso);
  return d.toISOString().slice(0, 19).replace('T', ' ') + ' UTC';
}

/** "HH:MM:SS.mmm" (UTC) from a string or number of microseconds since the epoch. */
export function fmtMicros(ts) {
  if (ts === null || ts === undefined || ts === '') return '';
  const s = String(ts).trim();
  let ms;
  if (/^\d+$/.test(s)) ms = s.length > 3 ? Number(s.slice(0, -3)) : 0;
  else ms = Date.parse(s);
  if (!Number.isFinite(ms)) return '';
  const d = new Date(ms);
  return `${pad(d.getUTCHours())}:${pad(d.getUTCMinutes())}:${pad(d.getUTCSeconds())}.${pad(d.getUTCMilliseconds(), 3)}`;
}

/** Milliseconds between two ISO times (b defaults to now when `running`), or null. */
export function durationMs(a, b, running = false) {
  if (!a) return null;
  const start = Date.parse(a);
  const end = b ? Date.parse(b) : (running ? Date.now() : NaN);
  if (!Number.isFinite(start) || !Number.isFinite(end)) return null;
  return Math.max(0, end - start);
}

export function fmtDuration(ms) {
  if (ms === null || ms === undefined || !Number.isFinite(ms)) return '';
  if (ms < 1000) return `${Math.round(ms)} ms`;
  if (ms < 60000) return `${(ms / 1000).toFixed(ms < 10000 ? 2 : 1)} s`;
  const s = Math.floor(ms / 1000);
  if (s < 3600) return `${Math.floor(s / 60)}m ${pad(s % 60)}s`;
  return `${Math.floor(s / 3600)}h ${pad(Math.floor(s / 60) % 60)}m`;
}

/** ISO time → value for <input type="datetime-local"> holding UTC ("YYYY-MM-DDTHH:MM:SS"). */
export function isoToInput(iso) {
  if (!iso) return '';
  const d = new Date(iso);
  return Number.isNaN(d.getTime()) ? '' : d.toISOString().slice(0, 19);
}

/** <input type="datetime-local"> value, read as UTC → ISO string ('' if empty/invalid). */
export function inputToIso(v) {
  if (!v) return '';
  const s = /T\d\d:\d\d$/.test(v) ? v + ':00' : v;
  const d = new Date(s + 'Z');
  return Number.isNaN(d.getTime()) ? '' : d.toISOString();
}

/** A same-origin path to go to after sign-in, or the fallback. */
export function safeNext(raw, origin, fallback = '/attempts') {
  if (typeof raw !== 'string' || !raw.startsWith('/') || raw.startsWith('//') || /[\\\u0000-\u001f]/.test(raw)) return fallback;
  try {
    const u = new URL(raw, origin);
    if (u.origin !== origin || u.pathname === '/login') return fallback;
    return u.pathname + u.search + u.hash;
  } catch {
    return fallback;
  }
}

export const ATTEMPT_STATES = ['available', 'claimed', 'started', 'success', 'failed', 'crashed',
  'cancelled', 'killed', 'exception', 'lost'];
