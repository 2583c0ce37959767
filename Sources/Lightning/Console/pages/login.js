// /login: exchanges an operator token for the session cookie (POST /console/session), then goes to
// the same-origin `next` path (or /attempts). The token is sent in the body only, never in a URL.

import {api} from '../api.js';
import {el, safeNext} from '../util.js';

export function render(ctx) {
  document.title = 'Sign in · Lightning';
  const next = safeNext(ctx.query.get('next'), location.origin);
  const token = el('input', {id: 'login-token', type: 'password', name: 'token', autocomplete: 'current-password',
    spellcheck: 'false', placeholder: 'lro_…', required: true});
  const submit = el('button', {id: 'login-submit', type: 'submit'}, 'Sign in');
  const error = el('p', {id: 'login-error', class: 'error', role: 'alert'});
  const form = el('form', {id: 'login-form', class: 'login', method: 'post', action: '/login', novalidate: true},
    el('h1', null, 'Lightning console'),
    el('label', {for: 'login-token'}, 'Operator token'),
    token, submit, error);

  const done = (s) => {
    if (!ctx.alive()) return;
    ctx.setSession(s);
    ctx.navigate(next, {replace: true});
  };

  form.addEventListener('submit', async (e) => {
    e.preventDefault();
    const value = token.value.trim();
    if (!value) {
      error.textContent = 'Enter an operator token.';
      return;
    }
    submit.disabled = true;
    error.textContent = '';
    try {
      done(await api.post('/console/session', {token: value}, {authRedirect: false}));
    } catch (err) {
      if (ctx.alive()) error.textContent = err.message;
    } finally {
      submit.disabled = false;
    }
  });

  ctx.root.append(form);
  token.focus();
  document.body.dataset.page = 'login';
}
