// The self-service key page of tower-api-keys (feature `ui`).
//
// Talks to the key-management API at the base path the host put into the
// page (<meta name="tower-api-keys-api">), on the same origin. Markup is built
// with createElement and textContent only: nothing read from the API is ever
// parsed as HTML (the page's Content-Security-Policy enforces it with Trusted
// Types). Secrets live in variables and the DOM of this page only: never in
// storage, a cookie or a URL.
'use strict';

(() => {
  const meta = (name) => document.querySelector(`meta[name="${name}"]`)?.content ?? '';
  const API = meta('tower-api-keys-api');
  const SIGN_IN_FORM = meta('tower-api-keys-sign-in') === 'form';
  const USAGE_DAYS = 30;
  const SVG = 'http://www.w3.org/2000/svg';

  const $ = (id) => document.getElementById(id);

  // With the sign-in form: the bearer token and account id, in memory only.
  let session = null;

  // ---- small DOM helpers ----------------------------------------------

  function el(tag, attributes = {}, ...children) {
    const node = document.createElement(tag);
    for (const [name, value] of Object.entries(attributes)) {
      if (name === 'text') node.textContent = value;
      else node.setAttribute(name, value);
    }
    node.append(...children);
    return node;
  }

  function svg(tag, attributes = {}) {
    const node = document.createElementNS(SVG, tag);
    for (const [name, value] of Object.entries(attributes)) node.setAttribute(name, String(value));
    return node;
  }

  // "2026-12-06T05:12:33.123Z" → "2026-12-06 05:12 UTC".
  function when(timestamp, none) {
    if (!timestamp) return none;
    const date = new Date(timestamp);
    if (Number.isNaN(date.getTime())) return String(timestamp);
    return `${date.toISOString().slice(0, 16).replace('T', ' ')} UTC`;
  }

  function say(message) {
    $('status').textContent = message;
  }

  // ---- problems -------------------------------------------------------

  class Problem extends Error {
    constructor(detail, status = 0, fields = []) {
      super(detail);
      this.status = status;
      this.fields = fields;
    }
  }

  function showProblem(error, doing) {
    const problem = error instanceof Problem ? error : new Problem(String(error?.message ?? error));
    $('problem-detail').textContent = `${doing} failed: ${problem.message}`;
    const list = $('problem-fields');
    list.replaceChildren(
      ...problem.fields.map((field) => el('li', { text: `${field.field}: ${field.message}` })),
    );
    $('problem').hidden = false;
    if (problem.status === 401 && SIGN_IN_FORM) {
      // The token no longer works: ask for it again, keep the rest of the page.
      showSignIn();
    }
  }

  function clearProblem() {
    $('problem').hidden = true;
    $('problem-detail').textContent = '';
    $('problem-fields').replaceChildren();
  }

  // ---- the API --------------------------------------------------------

  async function api(method, path, body) {
    const headers = { Accept: 'application/json, application/problem+json' };
    if (SIGN_IN_FORM) {
      if (!session) throw new Problem('Sign in first.', 401);
      headers.Authorization = `Bearer ${session.token}`;
      headers['X-Account-Id'] = session.account;
    }
    if (body !== undefined) headers['Content-Type'] = 'application/json';
    let response;
    try {
      response = await fetch(API + path, {
        method,
        headers,
        body: body === undefined ? undefined : JSON.stringify(body),
        credentials: 'same-origin',
        cache: 'no-store',
        redirect: 'manual',
      });
    } catch (error) {
      throw new Problem(`the server could not be reached (${error.message})`);
    }
    if (response.type === 'opaqueredirect') {
      throw new Problem('the server redirected the request, probably to a login page: sign in again and reload this page', 401);
    }
    const text = await response.text();
    let document_ = null;
    try {
      document_ = text ? JSON.parse(text) : null;
    } catch (_) {
      document_ = undefined;
    }
    if (!response.ok) {
      const detail = typeof document_?.detail === 'string' && document_.detail
        ? document_.detail
        : `the server answered ${response.status} ${response.statusText}`.trim();
      const fields = Array.isArray(document_?.errors)
        ? document_.errors.filter((e) => e && typeof e === 'object').map((e) => ({
          field: String(e.field ?? ''),
          message: String(e.message ?? ''),
        }))
        : [];
      throw new Problem(detail, response.status, fields);
    }
    if (document_ === undefined) {
      throw new Problem(`the server answered ${response.status} with something that is not JSON`, response.status);
    }
    return document_;
  }

  const keyPath = (keyId) => `/${encodeURIComponent(keyId)}`;

  // ---- sign-in --------------------------------------------------------

  function showSignIn() {
    session = null;
    $('sign-in').hidden = false;
    $('sign-out').hidden = true;
    $('app').hidden = true;
    hideSecret();
    $('keys').replaceChildren();
    $('sign-in-token').value = '';
    $('sign-in-token').focus();
  }

  function showApp() {
    $('sign-in').hidden = true;
    $('sign-out').hidden = !SIGN_IN_FORM;
    $('app').hidden = false;
  }

  $('sign-in').addEventListener('submit', (event) => {
    event.preventDefault();
    const token = $('sign-in-token').value.trim();
    const account = $('sign-in-account').value.trim();
    if (!token || !account) {
      showProblem(new Problem('enter the admin token and the account id'), 'Signing in');
      return;
    }
    session = { token, account };
    $('sign-in-token').value = '';
    clearProblem();
    showApp();
    loadKeys().then((ok) => {
      if (ok) say(`Signed in to account ${account}.`);
    });
  });

  $('sign-out').addEventListener('click', () => {
    clearProblem();
    showSignIn();
    say('Signed out. The token is forgotten.');
  });

  // ---- the credential, shown once -------------------------------------

  function showSecret(created, note) {
    const credential = created.token || `${created.public_key}:${created.secret_key}`;
    $('secret-value').value = credential;
    $('secret-note').textContent = note;
    $('secret-copied').textContent = '';
    $('secret').hidden = false;
    $('secret-heading').focus();
  }

  function hideSecret() {
    $('secret-value').value = '';
    $('secret-note').textContent = '';
    $('secret-copied').textContent = '';
    $('secret').hidden = true;
  }

  $('secret-copy').addEventListener('click', async () => {
    const field = $('secret-value');
    try {
      await navigator.clipboard.writeText(field.value);
      $('secret-copied').textContent = 'Copied to the clipboard.';
    } catch (_) {
      field.focus();
      field.select();
      $('secret-copied').textContent = 'The browser refused the clipboard: the credential is selected, press Ctrl+C (⌘C) to copy it.';
    }
  });

  $('secret-done').addEventListener('click', () => {
    hideSecret();
    say('The credential is gone from this page.');
    $('create-title').focus();
  });

  // ---- create ---------------------------------------------------------

  $('create').addEventListener('submit', async (event) => {
    event.preventDefault();
    clearProblem();
    const scopes = $('create-scopes').value.split(/[\s,]+/).filter(Boolean);
    const description = $('create-description').value;
    const expiry = $('create-expiry').value;
    const body = {
      title: $('create-title').value,
      description: description === '' ? null : description,
      expires_in_days: expiry === '' ? null : Number(expiry),
    };
    if (scopes.length) body.scopes = scopes;
    const button = event.submitter ?? $('create').querySelector('button[type=submit]');
    button.disabled = true;
    say('Creating the key…');
    try {
      const created = await api('POST', '', body);
      $('create').reset();
      showSecret(created, `Key “${created.title}” was created.`);
      say(`Key “${created.title}” was created.`);
      await loadKeys();
    } catch (error) {
      say('');
      showProblem(error, 'Creating the key');
    } finally {
      button.disabled = false;
    }
  });

  // ---- confirmation ---------------------------------------------------

  // Resolves with the chosen grace period (rotation), true (revocation) or
  // null when cancelled.
  function confirmAction({ title, text, action, grace }) {
    const dialog = $('confirm');
    $('confirm-title').textContent = title;
    $('confirm-text').textContent = text;
    $('confirm-ok').textContent = action;
    $('confirm-grace-row').hidden = !grace;
    $('confirm-grace').value = '0';
    const opener = document.activeElement;
    return new Promise((resolve) => {
      const done = (answer) => {
        $('confirm-ok').removeEventListener('click', ok);
        $('confirm-cancel').removeEventListener('click', cancel);
        dialog.removeEventListener('cancel', cancel);
        if (dialog.open) dialog.close();
        opener?.focus?.();
        resolve(answer);
      };
      const ok = () => done(grace ? Number($('confirm-grace').value) : true);
      const cancel = (event) => {
        event?.preventDefault?.();
        done(null);
      };
      $('confirm-ok').addEventListener('click', ok);
      $('confirm-cancel').addEventListener('click', cancel);
      dialog.addEventListener('cancel', cancel);
      dialog.showModal();
      $('confirm-cancel').focus();
    });
  }

  // ---- revoke and rotate ----------------------------------------------

  async function revoke(key) {
    const answer = await confirmAction({
      title: 'Revoke this key?',
      text: `Key “${key.title}” (${key.public_key}) stops working at once, everywhere. This cannot be undone.`,
      action: 'Revoke key',
    });
    if (!answer) return;
    clearProblem();
    say('Revoking the key…');
    try {
      await api('PATCH', `${keyPath(key.key_id)}/revoke`);
      say(`Key “${key.title}” was revoked.`);
      await loadKeys();
    } catch (error) {
      say('');
      showProblem(error, 'Revoking the key');
    }
  }

  async function rotate(key) {
    const grace = await confirmAction({
      title: 'Rotate this key?',
      text: `A new key replaces “${key.title}” (${key.public_key}), with the same title, scopes and limits. Its credential is shown once.`,
      action: 'Rotate key',
      grace: true,
    });
    if (grace === null) return;
    clearProblem();
    say('Rotating the key…');
    try {
      const created = await api('POST', `${keyPath(key.key_id)}/rotate`, { grace_period_seconds: grace });
      let note = 'The old key stopped working at once.';
      if (grace > 0) {
        const old = await api('GET', keyPath(key.key_id)).catch(() => null);
        note = `The old key keeps working until ${when(old?.expires_at, 'the grace period ends')}.`;
      }
      showSecret(created, `Key “${created.title}” was rotated. ${note}`);
      say(`Key “${created.title}” was rotated. ${note}`);
      await loadKeys();
    } catch (error) {
      say('');
      showProblem(error, 'Rotating the key');
    }
  }

  // ---- usage chart ----------------------------------------------------

  function chart(days) {
    // Oldest on the left.
    const series = [...days].reverse();
    const width = 300;
    const height = 80;
    const gap = 2;
    const bar = (width - gap * (series.length - 1)) / series.length;
    const peak = Math.max(1, ...series.map((day) => day.requests));
    const total = series.reduce((sum, day) => sum + day.requests, 0);
    const picture = svg('svg', {
      viewBox: `0 0 ${width} ${height + 1}`,
      class: 'chart',
      role: 'img',
      'aria-label': `Requests per day over the last ${series.length} days, ${total} in all, at most ${peak === 1 && total === 0 ? 0 : peak} on one day`,
      preserveAspectRatio: 'none',
    });
    series.forEach((day, index) => {
      const tall = day.requests === 0 ? 0 : Math.max(2, (day.requests / peak) * height);
      const rect = svg('rect', {
        x: (index * (bar + gap)).toFixed(2),
        y: (height - tall).toFixed(2),
        width: bar.toFixed(2),
        height: tall.toFixed(2),
        class: 'bar',
      });
      const title = svg('title');
      title.textContent = `${day.date}: ${day.requests} request${day.requests === 1 ? '' : 's'}`;
      rect.append(title);
      picture.append(rect);
    });
    picture.append(svg('line', { x1: 0, y1: height + 0.5, x2: width, y2: height + 0.5, class: 'axis' }));
    return { picture, total, first: series[0]?.date ?? '', last: series[series.length - 1]?.date ?? '' };
  }

  async function loadUsage(key, box) {
    box.setAttribute('aria-busy', 'true');
    box.replaceChildren(el('p', { class: 'state', text: 'Loading usage…' }));
    try {
      const usage = await api('GET', `${keyPath(key.key_id)}/usage?days=${USAGE_DAYS}`);
      const days = Array.isArray(usage?.days) ? usage.days : [];
      const { picture, total, first, last } = chart(days);
      const totalText = el('p', { class: 'usage-total' },
        'Total: ', el('strong', { 'data-total': '', text: String(total) }),
        ` request${total === 1 ? '' : 's'} from ${first} to ${last} (UTC days; the latest requests may take a few seconds to appear).`);
      box.replaceChildren(picture, el('div', { class: 'row spread axis-labels' },
        el('span', { text: first }), el('span', { text: last })), totalText);
    } catch (error) {
      const problem = error instanceof Problem ? error : new Problem(String(error));
      box.replaceChildren(el('p', { class: 'problem', role: 'alert', text: `Loading usage failed: ${problem.message}` }));
      if (problem.status === 401) showProblem(problem, 'Loading usage');
    } finally {
      box.removeAttribute('aria-busy');
    }
  }

  // ---- the list -------------------------------------------------------

  function field(name, value) {
    return [el('dt', { text: name }), el('dd', { text: value })];
  }

  function keyItem(key) {
    const titleId = `key-${key.key_id}-title`;
    const status = String(key.status);
    const scopes = Array.isArray(key.scopes)
      ? (key.scopes.length ? key.scopes.join(', ') : 'none')
      : 'unrestricted';
    const heading = el('div', { class: 'row spread' },
      el('h3', { id: titleId, text: key.title }),
      el('span', { class: `status status-${status.replace(/[^a-z]/g, '')}`, text: status }));
    const details = el('dl', {},
      ...field('Public key', key.public_key),
      ...field('Scopes', scopes),
      ...field('Created', when(key.created_at, '')),
      ...field('Last used', when(key.last_used_at, 'never')),
      ...field('Expires', when(key.expires_at, 'never')));
    const article = el('article', { 'aria-labelledby': titleId }, heading);
    if (key.description) article.append(el('p', { class: 'description', text: key.description }));
    article.append(details);

    if (status === 'active') {
      const rotateButton = el('button', { type: 'button', class: 'rotate', 'aria-label': `Rotate key “${key.title}”`, text: 'Rotate' });
      rotateButton.addEventListener('click', () => rotate(key));
      const revokeButton = el('button', { type: 'button', class: 'revoke danger', 'aria-label': `Revoke key “${key.title}”`, text: 'Revoke' });
      revokeButton.addEventListener('click', () => revoke(key));
      article.append(el('div', { class: 'row actions' }, rotateButton, revokeButton));
    }

    const box = el('div', { class: 'usage' });
    const refresh = el('button', { type: 'button', class: 'usage-refresh', 'aria-label': `Refresh the usage of key “${key.title}”`, text: 'Refresh usage' });
    refresh.addEventListener('click', () => loadUsage(key, box));
    const usage = el('details', { class: 'usage-details' },
      el('summary', { text: `Usage, last ${USAGE_DAYS} days` }), box, refresh);
    usage.addEventListener('toggle', () => {
      if (usage.open && !box.hasChildNodes()) loadUsage(key, box);
    });
    article.append(usage);
    return el('li', { class: 'key', 'data-key-id': key.key_id }, article);
  }

  // Resolves true when the list was loaded.
  async function loadKeys() {
    const state = $('keys-state');
    const list = $('keys');
    list.setAttribute('aria-busy', 'true');
    state.className = 'state';
    state.textContent = 'Loading keys…';
    try {
      const keys = await api('GET', '');
      if (!Array.isArray(keys)) throw new Problem('the server did not answer with a list of keys');
      list.replaceChildren(...keys.map(keyItem));
      state.textContent = keys.length
        ? `${keys.length} key${keys.length === 1 ? '' : 's'}, newest first.`
        : 'No keys yet. Create one above: its credential is shown once.';
      return true;
    } catch (error) {
      state.className = 'state problem';
      state.textContent = 'The keys could not be loaded (see the message above).';
      showProblem(error, 'Loading the keys');
      return false;
    } finally {
      list.removeAttribute('aria-busy');
    }
  }

  $('keys-refresh').addEventListener('click', () => {
    clearProblem();
    loadKeys();
  });

  // ---- start ----------------------------------------------------------

  if (!API.startsWith('/')) {
    showProblem(new Problem('the page was served without the API base path'), 'Starting');
  } else if (SIGN_IN_FORM) {
    showSignIn();
  } else {
    showApp();
    loadKeys();
  }
})();
