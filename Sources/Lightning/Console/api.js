// fetch wrapper for the console's JSON API: same-origin cookie credentials, JSON bodies, errors thrown
// as ApiError carrying the server's {"error": ...} message; a 401 sends the browser to /login?next=<here>.

export class ApiError extends Error {
  constructor(message, status, data) {
    super(message);
    this.name = 'ApiError';
    this.status = status;
    this.data = data;
  }
}

let redirecting = false;

export function redirectToLogin() {
  if (redirecting || location.pathname === '/login') return;
  redirecting = true;
  const here = location.pathname + location.search + location.hash;
  location.assign('/login?next=' + encodeURIComponent(here));
}

/** request('GET', '/api/attempts', {body, authRedirect}) → parsed JSON (or null for an empty body). */
export async function request(method, path, {body, authRedirect = true} = {}) {
  const opts = {method, credentials: 'same-origin', headers: {Accept: 'application/json'}, cache: 'no-store'};
  if (body !== undefined) {
    opts.headers['Content-Type'] = 'application/json';
    opts.body = JSON.stringify(body);
  }
  let res;
  try {
    res = await fetch(path, opts);
  } catch (e) {
    throw new ApiError(`network error: ${e && e.message ? e.message : e}`, 0, null);
  }
  const text = await res.text().catch(() => '');
  let data = null;
  if (text) {
    try { data = JSON.parse(text); } catch { data = null; }
  }
  if (!res.ok) {
    const message = (data && typeof data.error === 'string' && data.error) ||
      `${res.status} ${res.statusText || 'error'}`.trim();
    if (res.status === 401 && authRedirect) redirectToLogin();
    throw new ApiError(message, res.status, data);
  }
  return data;
}

export const api = {
  get: (path, opts) => request('GET', path, opts),
  post: (path, body, opts) => request('POST', path, {...opts, body: body === undefined ? {} : body}),
  del: (path, opts) => request('DELETE', path, opts),
};

/** "?a=1&b=2" from an object, skipping empty values ('' if nothing is left). */
export function query(params) {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) {
    if (v !== undefined && v !== null && v !== '') q.set(k, String(v));
  }
  const s = q.toString();
  return s ? '?' + s : '';
}
