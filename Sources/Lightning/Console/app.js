// The console's entry point: the router (location.pathname, history.pushState, same-origin link
// interception), the session check, the shared header and the one operator socket for all pages.

import {api} from './api.js';
import {el, clear, errorBox} from './util.js';
import {Socket} from './phoenix.js';
import * as loginPage from './pages/login.js';
import * as attemptsPage from './pages/attempts.js';
import * as attemptPage from './pages/attempt.js';
import * as workflowsPage from './pages/workflows.js';
import * as workflowPage from './pages/workflow.js';
import * as workersPage from './pages/workers.js';

const ROUTES = [
  {re: /^\/login$/, page: loginPage, signedIn: false},
  {re: /^\/attempts$/, page: attemptsPage, nav: 'attempts'},
  {re: /^\/attempts\/([^/]+)$/, page: attemptPage, nav: 'attempts'},
  {re: /^\/workflows$/, page: workflowsPage, nav: 'workflows'},
  {re: /^\/workflows\/([^/]+)$/, page: workflowPage, nav: 'workflows'},
  {re: /^\/workers$/, page: workersPage, nav: 'workers'},
];

const NAV = [['attempts', '/attempts', 'Attempts'], ['workflows', '/workflows', 'Workflows'], ['workers', '/workers', 'Workers']];

let session = null;
let socket = null;
let cleanup = null;
let routeToken = 0;
let routedAt = null; // pathname + search of the page shown

function normalPath(pathname) {
  return pathname.length > 1 ? pathname.replace(/\/+$/, '') : pathname;
}

function matchRoute(pathname) {
  const path = normalPath(pathname);
  for (const r of ROUTES) {
    const m = r.re.exec(path);
    if (m) {
      let params;
      try { params = m.slice(1).map(decodeURIComponent); } catch { params = m.slice(1); }
      return {route: r, params};
    }
  }
  return null;
}

function isAppPath(pathname) {
  return normalPath(pathname) === '/' || matchRoute(pathname) !== null;
}

export function navigate(path, {replace = false} = {}) {
  const current = location.pathname + location.search + location.hash;
  if (replace || path === current) history.replaceState(null, '', path);
  else {
    history.pushState(null, '', path);
    window.scrollTo(0, 0);
  }
  route();
}

function setSession(s) {
  session = s;
}

function ensureSocket() {
  if (socket) return socket;
  const url = (location.protocol === 'https:' ? 'wss://' : 'ws://') + location.host + '/socket/websocket?vsn=2.0.0';
  socket = new Socket(url);
  socket.onOpen(() => setConnStatus('live'));
  socket.onClose(() => {
    setConnStatus('reconnecting');
    // A socket refused or closed because the session ended (sign-out elsewhere, expiry, a revoked token) looks
    // like any other drop: ask the server, which answers 401 and so sends the page to sign in again.
    api.get('/console/session').catch(() => {});
  });
  socket.connect();
  return socket;
}

function setConnStatus(state) {
  const node = document.getElementById('conn-status');
  if (!node) return;
  node.dataset.state = state;
  node.textContent = state === 'live' ? 'live' : state === 'reconnecting' ? 'reconnecting…' : 'connecting…';
}

function renderHeader(activeNav) {
  const header = document.getElementById('header');
  if (!header.firstChild) {
    const signOut = el('button', {id: 'sign-out', type: 'button'}, 'Sign out');
    signOut.addEventListener('click', async () => {
      signOut.disabled = true;
      try { await api.del('/console/session', {authRedirect: false}); } catch (e) { console.warn('sign out', e); }
      if (socket) socket.disconnect();
      location.assign('/login');
    });
    header.append(
      el('a', {class: 'brand', href: '/attempts'}, 'Lightning'),
      el('nav', null, NAV.map(([key, href, label]) => el('a', {href, 'data-nav': key}, label))),
      el('span', {class: 'spacer'}),
      el('span', {id: 'conn-status', 'data-state': 'connecting'}, 'connecting…'),
      el('span', {id: 'nav-user'}),
      signOut);
    if (socket) setConnStatus(socket.isConnected() ? 'live' : 'reconnecting');
  }
  document.getElementById('nav-user').textContent = `${session.name} (${session.role})`;
  for (const a of header.querySelectorAll('nav a')) {
    const active = a.dataset.nav === activeNav;
    a.classList.toggle('active', active);
    if (active) a.setAttribute('aria-current', 'page'); else a.removeAttribute('aria-current');
  }
  header.hidden = false;
}

async function route() {
  const token = ++routeToken;
  if (cleanup) {
    try { cleanup(); } catch (e) { console.error('page cleanup failed', e); }
    cleanup = null;
  }
  delete document.body.dataset.page;
  if (normalPath(location.pathname) === '/') history.replaceState(null, '', '/attempts' + location.search + location.hash);
  routedAt = location.pathname + location.search;
  const root = document.getElementById('app');
  const match = matchRoute(location.pathname);
  const signedIn = !match || match.route.signedIn !== false;

  if (signedIn) {
    if (!session) {
      try {
        session = await api.get('/console/session');
      } catch (e) {
        if (token !== routeToken || e.status === 401) return; // 401: on the way to /login
        clear(root).append(errorBox(`Could not check the session: ${e.message}`, 'page-error'));
        return;
      }
      if (token !== routeToken) return;
    }
    renderHeader(match ? match.route.nav : null);
    ensureSocket();
  } else {
    document.getElementById('header').hidden = true;
  }

  clear(root);
  if (!match) {
    document.title = 'Not found · Lightning';
    root.append(el('h1', null, 'Not found'), el('p', null, 'There is no page at ', el('code', null, location.pathname), '.'));
    document.body.dataset.page = 'notfound';
    return;
  }
  const ctx = {
    params: match.params,
    query: new URLSearchParams(location.search),
    session,
    socket,
    root,
    navigate,
    setSession,
    alive: () => token === routeToken,
  };
  try {
    cleanup = match.route.page.render(ctx) || null;
  } catch (e) {
    console.error(e);
    root.append(errorBox(`This page failed: ${e.message}`, 'page-error'));
  }
}

document.addEventListener('click', (e) => {
  if (e.defaultPrevented || e.button !== 0 || e.metaKey || e.ctrlKey || e.shiftKey || e.altKey) return;
  const a = e.target && e.target.closest ? e.target.closest('a[href]') : null;
  if (!a || (a.target && a.target !== '_self') || a.hasAttribute('download')) return;
  let url;
  try { url = new URL(a.getAttribute('href'), location.href); } catch { return; }
  if (url.origin !== location.origin || !isAppPath(url.pathname)) return;
  if (url.pathname === location.pathname && url.search === location.search && url.hash) return; // in-page anchor
  e.preventDefault();
  navigate(url.pathname + url.search + url.hash);
});

window.addEventListener('popstate', () => {
  // A hash-only history step stays on the page (the log viewer follows hashchange).
  if (location.pathname + location.search === routedAt) return;
  route();
});

route();
