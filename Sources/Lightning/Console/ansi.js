// ANSI escape parsing for log messages: parseAnsi(text) → [{text, classes}] where SGR codes (bold,
// italic, underline, 16 colours, 256/RGB colours approximated to the 16) become CSS classes and every
// other escape sequence or control character (except tab and newlines) is dropped. Pure; no DOM.

// xterm's 16 colours, used to approximate 256-colour and RGB codes.
const PALETTE = [
  [0, 0, 0], [205, 0, 0], [0, 205, 0], [205, 205, 0], [0, 0, 238], [205, 0, 205], [0, 205, 205], [229, 229, 229],
  [127, 127, 127], [255, 0, 0], [0, 255, 0], [255, 255, 0], [92, 92, 255], [255, 0, 255], [0, 255, 255], [255, 255, 255],
];
const CUBE = [0, 95, 135, 175, 215, 255];

export function rgbTo16(r, g, b) {
  let best = 0;
  let bestD = Infinity;
  PALETTE.forEach(([pr, pg, pb], i) => {
    const d = (pr - r) ** 2 + (pg - g) ** 2 + (pb - b) ** 2;
    if (d < bestD) { bestD = d; best = i; }
  });
  return best;
}

export function color256(n) {
  if (!Number.isInteger(n) || n < 0 || n > 255) return null;
  if (n < 16) return n;
  if (n >= 232) { const v = 8 + (n - 232) * 10; return rgbTo16(v, v, v); }
  const m = n - 16;
  return rgbTo16(CUBE[Math.floor(m / 36)], CUBE[Math.floor(m / 6) % 6], CUBE[m % 6]);
}

function freshState() {
  return {bold: false, dim: false, italic: false, underline: false, fg: null, bg: null};
}

function classesOf(st) {
  const c = [];
  if (st.bold) c.push('ansi-bold');
  if (st.dim) c.push('ansi-dim');
  if (st.italic) c.push('ansi-italic');
  if (st.underline) c.push('ansi-underline');
  if (st.fg !== null) c.push('ansi-fg-' + st.fg);
  if (st.bg !== null) c.push('ansi-bg-' + st.bg);
  return c;
}

/** Reads an extended colour (after 38 or 48) at p[i]; returns [colour or null, number of params used]. */
function extendedColour(p, i) {
  if (p[i] === 5) return [color256(p[i + 1]), 2];
  if (p[i] === 2) {
    const [r, g, b] = [p[i + 1], p[i + 2], p[i + 3]].map((v) => Math.max(0, Math.min(255, v || 0)));
    return [rgbTo16(r, g, b), 4];
  }
  return [null, 0];
}

function applySgr(st, params) {
  if (!/^[0-9;:]*$/.test(params)) return; // private-mode sequences: ignore
  const p = params === '' ? [0] : params.split(/[;:]/).map((s) => (s === '' ? 0 : parseInt(s, 10)));
  for (let i = 0; i < p.length; i++) {
    const n = p[i];
    if (n === 0) Object.assign(st, freshState());
    else if (n === 1) st.bold = true;
    else if (n === 2) st.dim = true;
    else if (n === 3) st.italic = true;
    else if (n === 4) st.underline = true;
    else if (n === 22) { st.bold = false; st.dim = false; }
    else if (n === 23) st.italic = false;
    else if (n === 24) st.underline = false;
    else if (n >= 30 && n <= 37) st.fg = n - 30;
    else if (n >= 90 && n <= 97) st.fg = n - 90 + 8;
    else if (n === 39) st.fg = null;
    else if (n >= 40 && n <= 47) st.bg = n - 40;
    else if (n >= 100 && n <= 107) st.bg = n - 100 + 8;
    else if (n === 49) st.bg = null;
    else if (n === 38 || n === 48) {
      const [colour, used] = extendedColour(p, i + 1);
      if (n === 38) st.fg = colour; else st.bg = colour;
      i += used;
    }
  }
}

// Control characters to act on: ESC, C1 (incl. CSI U+009B), and the C0 ones other than \t \n \r.
const SPECIAL = /[\u0000-\u0008\u000b\u000c\u000e-\u001f\u007f-\u009f]/g;
const inRange = (code, lo, hi) => code >= lo && code <= hi;

export function parseAnsi(input) {
  const text = input === null || input === undefined ? '' : String(input);
  const out = [];
  const st = freshState();
  let buf = '';
  const flush = () => {
    if (!buf) return;
    const classes = classesOf(st);
    const last = out[out.length - 1];
    if (last && last.classes.join(' ') === classes.join(' ')) last.text += buf;
    else out.push({text: buf, classes});
    buf = '';
  };
  const n = text.length;
  let i = 0;
  while (i < n) {
    SPECIAL.lastIndex = i;
    const m = SPECIAL.exec(text);
    if (!m) { buf += text.slice(i); break; }
    buf += text.slice(i, m.index);
    i = m.index;
    const c = text.charCodeAt(i);
    let csiStart = -1;
    if (c === 0x9b) csiStart = i + 1;
    else if (c === 0x1b && text[i + 1] === '[') csiStart = i + 2;
    if (csiStart >= 0) {
      let k = csiStart;
      while (k < n && inRange(text.charCodeAt(k), 0x30, 0x3f)) k++;
      const params = text.slice(csiStart, k);
      const interStart = k;
      while (k < n && inRange(text.charCodeAt(k), 0x20, 0x2f)) k++;
      if (k >= n) break; // an unfinished sequence at the end: drop it
      if (!inRange(text.charCodeAt(k), 0x40, 0x7e)) { i = k; continue; } // malformed: drop the prefix
      if (text[k] === 'm' && k === interStart) { flush(); applySgr(st, params); }
      i = k + 1;
      continue;
    }
    if (c === 0x1b) {
      const next = text[i + 1];
      if (next === ']' || next === 'P' || next === '_' || next === '^' || next === 'X') {
        // OSC / DCS / APC / PM / SOS: up to BEL or ST (ESC \)
        let k = i + 2;
        while (k < n) {
          const kc = text.charCodeAt(k);
          if (kc === 0x07) { k++; break; }
          if (kc === 0x1b && text[k + 1] === '\\') { k += 2; break; }
          k++;
        }
        i = k;
        continue;
      }
      let k = i + 1;
      while (k < n && inRange(text.charCodeAt(k), 0x20, 0x2f)) k++;
      i = Math.min(n, k + 1); // ESC, intermediates, final
      continue;
    }
    i++; // any other control character
  }
  flush();
  return out;
}

export function stripAnsi(text) {
  return parseAnsi(text).map((s) => s.text).join('');
}
