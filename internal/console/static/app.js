// dkimd brand console. Plain JavaScript, no framework, nothing loaded from
// elsewhere. Every action calls the brand REST API under
// /cloudapi/v2/mail/dkim with the session cookie and the CSRF token, so the
// console can do exactly what the API allows and shows the API's own error
// titles. The only other calls are the session endpoints under /console/.
'use strict';
(() => {
  const API = '/cloudapi/v2/mail/dkim';
  const SESSION = '/console/session';
  const PAGE = 100;
  const SEARCH_PAGE = 1000;
  const BULK_WORKERS = 4;

  const state = {
    brand: '',
    csrf: '',
    firstPage: '',
    page: '',
    searchRun: 0,
    domain: '',
    entry: null,
    historyNext: '',
    pendingNext: '',
    blobs: [],
  };

  const $ = (id) => document.getElementById(id);

  // el builds an element; text goes in as text nodes, never as HTML.
  function el(tag, props, ...kids) {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(props || {})) {
      if (v === undefined || v === null || v === false) continue;
      if (k === 'class') e.className = v;
      else if (k === 'text') e.textContent = v;
      else if (k.startsWith('on')) e.addEventListener(k.slice(2), v);
      else e.setAttribute(k, v === true ? '' : v);
    }
    for (const kid of kids.flat()) {
      if (kid === null || kid === undefined || kid === false) continue;
      e.append(kid instanceof Node ? kid : document.createTextNode(String(kid)));
    }
    return e;
  }

  function announce(text) {
    const a = $('announce');
    a.textContent = '';
    // A change of text is what screen readers announce.
    setTimeout(() => { a.textContent = text; }, 30);
  }

  // ---- the API

  class APIError extends Error {
    constructor(status, code, title) {
      super(title);
      this.status = status;
      this.code = code;
    }
  }

  function nextLink(res) {
    const link = res.headers.get('Link') || '';
    const m = link.match(/<([^>]+)>\s*;\s*rel="next"/);
    return m ? m[1] : '';
  }

  // call makes one request and returns {status, data, next}; an error
  // answer throws an APIError with the API's title.
  async function call(method, url, body) {
    const opts = { method, credentials: 'same-origin', headers: { Accept: 'application/json' } };
    if (state.csrf) opts.headers['X-CSRF-Token'] = state.csrf;
    if (body !== undefined) {
      opts.headers['Content-Type'] = 'application/json';
      opts.body = JSON.stringify(body);
    }
    let res;
    try {
      res = await fetch(url, opts);
    } catch (e) {
      throw new APIError(0, 'NETWORK', 'the server did not answer; check your connection');
    }
    const text = await res.text();
    let data = null;
    if (text) {
      try { data = JSON.parse(text); } catch (e) { data = null; }
    }
    if (!res.ok) {
      const err = data && data.errors && data.errors[0];
      const e = new APIError(res.status, err ? err.code : '', err ? err.title : `the server answered ${res.status}`);
      if (res.status === 401 && state.brand && url !== SESSION) sessionEnded(e.message);
      throw e;
    }
    return { status: res.status, data, next: nextLink(res) };
  }

  const enc = encodeURIComponent;
  const brandURL = () => `${API}/${enc(state.brand)}`;
  const domainURL = (d) => `${brandURL()}/${enc(d)}`;

  // ---- formatting

  function fmtTime(iso) {
    if (!iso) return '—';
    const d = new Date(iso);
    if (isNaN(d)) return iso;
    return d.toISOString().slice(0, 16).replace('T', ' ') + ' UTC';
  }
  function fmtDate(iso) {
    if (!iso) return '—';
    const d = new Date(iso);
    return isNaN(d) ? iso : d.toISOString().slice(0, 10);
  }
  function keyKind(s) {
    return s.algorithm === 'rsa' ? `RSA ${s.keyBits}` : s.algorithm === 'ed25519' ? 'Ed25519' : s.algorithm;
  }
  function algorithms(entry) {
    const kinds = [];
    for (const s of entry.selectors || []) {
      if (s.state === 'revoked') continue;
      const k = keyKind(s);
      if (!kinds.includes(k)) kinds.push(k);
    }
    return kinds.join(', ') || '—';
  }
  function nextRotation(entry) {
    const r = entry.rotation || {};
    if (r.pendingSwitchAt) return `switch pending ${fmtTime(r.pendingSwitchAt)}`;
    return fmtDate(r.nextRotationAt);
  }
  function statusBadge(status) {
    return el('span', { class: `badge st-${status}`, text: status });
  }
  function zoneLines(entry) {
    return (entry.selectors || []).map((s) => `${s.cname.name}. 3600 IN CNAME ${s.cname.target}.`);
  }
  function td(label, ...kids) {
    return el('td', { 'data-label': label }, ...kids);
  }

  // ---- clipboard

  async function copyText(text, what, button) {
    try {
      if (navigator.clipboard && window.isSecureContext) {
        await navigator.clipboard.writeText(text);
      } else {
        legacyCopy(text);
      }
    } catch (e) {
      try {
        legacyCopy(text);
      } catch (e2) {
        announce('Copying failed: select the text and copy it by hand');
        return;
      }
    }
    if (button) {
      button.classList.add('done');
      setTimeout(() => button.classList.remove('done'), 1500);
    }
    announce(`Copied ${what}`);
  }
  // legacyCopy is for pages served over plain HTTP from another host, where
  // the Clipboard API is not offered.
  function legacyCopy(text) {
    const ta = el('textarea', { class: 'offscreen', readonly: true });
    ta.value = text;
    document.body.append(ta);
    ta.select();
    const ok = document.execCommand('copy');
    ta.remove();
    if (!ok) throw new Error('copy refused');
  }
  function copyButton(text, what) {
    const b = el('button', { type: 'button', class: 'copy', text: 'Copy', title: `Copy ${what}` });
    b.addEventListener('click', () => copyText(text, what, b));
    return b;
  }

  // ---- session

  async function restore() {
    try {
      const { data } = await call('GET', SESSION);
      signedIn(data);
    } catch (e) {
      if (e.status !== 401) $('signin-error').textContent = e.message;
      showSignin();
    }
  }

  function signedIn(info) {
    state.brand = info.brand;
    state.csrf = info.csrfToken;
    $('who').textContent = `Signed in as ${info.brand}`;
    for (const id of ['nav', 'who', 'signout']) $(id).hidden = false;
    route(true);
  }

  function clearSession() {
    state.brand = '';
    state.csrf = '';
    for (const id of ['nav', 'who', 'signout']) $(id).hidden = true;
    $('domains-table').tBodies[0].replaceChildren();
    $('pending-list').replaceChildren();
    $('bulk-results').replaceChildren();
    $('search').value = '';
  }

  function sessionEnded(message) {
    clearSession();
    $('signin-error').textContent = message;
    showSignin();
  }

  function showSignin() {
    showView('view-signin', false);
    $('signin-secret').value = '';
    $('signin-brand').focus();
  }

  $('signin-form').addEventListener('submit', async (ev) => {
    ev.preventDefault();
    const brand = $('signin-brand').value.trim();
    const secret = $('signin-secret').value;
    const errorBox = $('signin-error');
    errorBox.textContent = '';
    if (!brand || !secret) {
      errorBox.textContent = 'Enter your brand and its secret.';
      return;
    }
    const button = ev.submitter || $('signin-form').querySelector('button');
    button.disabled = true;
    try {
      const { data } = await call('POST', SESSION, { brand, secret });
      $('signin-secret').value = '';
      if (!location.hash || location.hash === '#') history.replaceState(null, '', '#/domains');
      signedIn(data);
    } catch (e) {
      errorBox.textContent = e.message;
      $('signin-secret').select();
    } finally {
      button.disabled = false;
    }
  });

  $('signout').addEventListener('click', async () => {
    try {
      await call('DELETE', SESSION);
    } catch (e) {
      // The cookie is cleared even when the session had already ended.
    }
    clearSession();
    $('signin-error').textContent = '';
    $('signin-brand').value = '';
    history.replaceState(null, '', '#');
    showSignin();
    announce('Signed out');
  });

  // ---- views and routing

  function showView(id, focus) {
    for (const v of document.querySelectorAll('.view')) v.hidden = v.id !== id;
    const which = id === 'view-bulk' ? 'bulk' : id === 'view-signin' ? '' : 'domains';
    for (const a of document.querySelectorAll('[data-nav]')) {
      if (a.dataset.nav === which) a.setAttribute('aria-current', 'page');
      else a.removeAttribute('aria-current');
    }
    if (focus) {
      const h = document.querySelector(`#${id} h1`);
      if (h) h.focus();
    }
  }

  function route(focus) {
    if (!state.brand) return showSignin();
    const h = location.hash;
    if (h.startsWith('#/domains/')) {
      let d = h.slice('#/domains/'.length);
      try { d = decodeURIComponent(d); } catch (e) { /* shown as given */ }
      return showDomain(d, focus);
    }
    if (h === '#/bulk') return showBulk(focus);
    return showDomains(focus);
  }
  window.addEventListener('hashchange', () => route(true));

  // ---- domains list

  let flash = '';

  function showDomains(focus) {
    showView('view-domains', focus);
    document.title = 'Domains · dkimd console';
    state.firstPage = `${brandURL()}?limit=${PAGE}`;
    $('domains-flash').textContent = flash;
    flash = '';
    const q = $('search').value.trim();
    if (q) {
      search(q); // filters the maildomains without keys too
    } else {
      loadPage(state.firstPage);
      loadPending();
    }
  }

  function domainRow(entry) {
    return el('tr', {},
      td('Domain', el('a', { href: `#/domains/${enc(entry.domain)}`, text: entry.domain })),
      td('Status', statusBadge(entry.status)),
      td('Active selector', entry.activeSelector || '—'),
      td('Algorithms', algorithms(entry)),
      td('Next rotation', nextRotation(entry)));
  }

  // loadPage shows one page of the domain list.
  async function loadPage(url) {
    state.searchRun++;
    state.page = url;
    const tbody = $('domains-table').tBodies[0];
    $('domains-error').textContent = '';
    let res;
    try {
      res = await call('GET', url);
    } catch (e) {
      tbody.replaceChildren();
      $('page-next').hidden = true;
      $('page-first').hidden = true;
      if (e.code === 'NO_DKIM_ENTRIES') {
        $('domains-status').textContent = 'No domain has DKIM keys yet. Generate keys for a maildomain below, or use Bulk onboarding.';
      } else {
        $('domains-error').textContent = e.message;
      }
      return;
    }
    tbody.replaceChildren(...res.data.map(domainRow));
    $('page-next').hidden = !res.next;
    $('page-next').dataset.url = res.next;
    $('page-first').hidden = url === state.firstPage;
    const more = res.next ? ', more on the next page' : '';
    $('domains-status').textContent = `${res.data.length} domain${res.data.length === 1 ? '' : 's'} shown${more}.`;
  }

  $('page-next').addEventListener('click', () => loadPage($('page-next').dataset.url));
  $('page-first').addEventListener('click', () => loadPage(state.firstPage));

  // search walks every page of the domain list (and of the maildomains
  // without keys) in large pages and keeps what matches: the API has no
  // search of its own, and a few thousand domains are a few requests.
  async function search(q) {
    const run = ++state.searchRun;
    const needle = q.toLowerCase();
    const tbody = $('domains-table').tBodies[0];
    tbody.replaceChildren();
    $('page-next').hidden = true;
    $('page-first').hidden = true;
    $('domains-error').textContent = '';
    $('domains-status').textContent = `Searching for “${q}”…`;
    let matches = 0;
    let searched = 0;
    try {
      for (let url = `${brandURL()}?limit=${SEARCH_PAGE}`; url;) {
        let res;
        try {
          res = await call('GET', url);
        } catch (e) {
          if (e.code === 'NO_DKIM_ENTRIES') break;
          throw e;
        }
        if (run !== state.searchRun) return;
        searched += res.data.length;
        for (const entry of res.data) {
          if (entry.domain.includes(needle)) {
            matches++;
            tbody.append(domainRow(entry));
          }
        }
        url = res.next;
      }
      const pending = await allPending(run);
      if (run !== state.searchRun) return;
      renderPending(pending.filter((d) => d.domain.includes(needle)), '');
      $('domains-status').textContent =
        `${matches} of ${searched} domain${searched === 1 ? '' : 's'} match “${q}”.`;
    } catch (e) {
      if (run === state.searchRun) $('domains-error').textContent = e.message;
    }
  }

  let searchTimer = 0;
  $('search').addEventListener('input', () => {
    clearTimeout(searchTimer);
    searchTimer = setTimeout(() => {
      const q = $('search').value.trim();
      if (q) search(q);
      else {
        loadPage(state.firstPage);
        loadPending();
      }
    }, 250);
  });

  // ---- maildomains without keys

  function keyOptions(prefix) {
    return { keyBits: Number($(`${prefix}-bits`).value), ed25519: $(`${prefix}-ed25519`).checked };
  }

  async function allPending(run) {
    const out = [];
    for (let url = `${brandURL()}/maildomains?hasKeys=false&limit=${SEARCH_PAGE}`; url;) {
      const res = await call('GET', url);
      if (run !== state.searchRun) return out;
      out.push(...res.data);
      url = res.next;
    }
    return out;
  }

  async function loadPending(url, append) {
    $('pending-status').textContent = '';
    try {
      const res = await call('GET', url || `${brandURL()}/maildomains?hasKeys=false&limit=${PAGE}`);
      renderPending(res.data, res.next, append);
    } catch (e) {
      $('pending-status').textContent = e.message;
    }
  }

  function renderPending(list, next, append) {
    const ul = $('pending-list');
    const items = list.map((md) => {
      const result = el('span', { class: 'result', role: 'status' });
      const name = el('span', { class: 'dname', id: `pending-${md.domain}`, text: md.domain });
      const button = el('button', { type: 'button', 'aria-describedby': `pending-${md.domain}`, text: 'Generate keys' });
      button.addEventListener('click', () => generate(md.domain, button, result));
      return el('li', {}, name, button, result);
    });
    if (append) ul.append(...items);
    else ul.replaceChildren(...items);
    state.pendingNext = next;
    $('pending-more').hidden = !next;
    if (!ul.children.length) $('pending-status').textContent = 'Every maildomain has keys.';
  }

  $('pending-more').addEventListener('click', () => loadPending(state.pendingNext, true));

  async function generate(domain, button, result) {
    button.disabled = true;
    result.textContent = 'generating keys…';
    try {
      await call('PUT', domainURL(domain), keyOptions('pending'));
      flash = `Keys generated for ${domain}. Open it to see the CNAMEs to create.`;
      announce(flash);
      showDomains(false);
    } catch (e) {
      result.textContent = e.message;
      button.disabled = false;
    }
  }

  // ---- one domain

  async function showDomain(domain, focus) {
    state.domain = domain;
    state.entry = null;
    showView('view-domain', false);
    document.title = `${domain} · dkimd console`;
    $('domain-title').textContent = domain;
    for (const n of document.querySelectorAll('#view-domain .dname')) n.textContent = domain;
    $('domain-error').textContent = '';
    $('domain-body').hidden = true;
    closeConfirm(false);
    if (focus) $('domain-title').focus();
    let res;
    try {
      res = await call('GET', domainURL(domain));
    } catch (e) {
      if (state.domain === domain) $('domain-error').textContent = e.message;
      return;
    }
    if (state.domain !== domain) return;
    renderEntry(res.data);
    $('domain-body').hidden = false;
    $('dns-table').tBodies[0].replaceChildren();
    $('dns-status').textContent = '';
    $('action-error').textContent = '';
    loadHistory(false);
    checkDNS();
  }

  function renderEntry(entry) {
    state.entry = entry;
    $('domain-status').replaceChildren(statusBadge(entry.status));
    $('domain-reason').textContent = entry.statusReason || '';
    $('records-table').tBodies[0].replaceChildren(...entry.selectors.map((s) => el('tr', {},
      td('Selector', s.selector),
      td('Name', el('code', { text: s.cname.name }), ' ', copyButton(s.cname.name, `the name of ${s.selector}`)),
      td('Type', 'CNAME'),
      td('Target', el('code', { text: s.cname.target }), ' ', copyButton(s.cname.target, `the target of ${s.selector}`)))));
    $('zone-snippet').textContent = zoneLines(entry).join('\n');

    const r = entry.rotation || {};
    const facts = [
      ['Signing selector', entry.activeSelector || '—'],
      ['Last rotated', fmtTime(r.lastRotatedAt)],
      ['Next rotation', fmtTime(r.nextRotationAt)],
    ];
    if (r.pendingSwitchAt) {
      const next = entry.selectors.find((s) => s.state === 'next' && s.algorithm === 'rsa');
      facts.push(['Pending switch', `${next ? next.selector : 'the next key'} signs from ${fmtTime(r.pendingSwitchAt)}`]);
    } else {
      facts.push(['Pending switch', 'none']);
    }
    $('rotation-facts').replaceChildren(...facts.flatMap(([k, v]) => [el('dt', { text: k }), el('dd', { text: v })]));
    $('keys-table').tBodies[0].replaceChildren(...entry.selectors.map((s) => el('tr', {},
      td('Selector', s.selector),
      td('State', el('span', { class: `badge ks-${s.state}`, text: s.state })),
      td('Algorithm', keyKind(s)),
      td('Published', fmtTime(s.publishedAt)),
      td('Fingerprint', el('code', { class: 'fp', text: s.fingerprint || '—' })))));
  }

  // explain says what a verdict means for the person who edits the DNS.
  function explain(c) {
    const name = c.cname.name;
    const target = c.cname.target;
    if (c.error) return `The check could not be made (${c.error}). Try again in a moment.`;
    switch (c.verdict) {
      case 'ok':
        return 'Correct: the CNAME points to the expected target and the key matches. Nothing to do.';
      case 'missing':
        return `Public DNS has no record at ${name}. Create a CNAME there pointing to ${target}.`;
      case 'wrong-target':
        if (c.answeredTarget) return `${name} points elsewhere: ${c.answeredTarget}. Change the CNAME so that it points to ${target}.`;
        return `${name} holds a record of its own instead of a CNAME; it stops working at the next key rotation. Replace it with a CNAME to ${target}.`;
      case 'key-mismatch':
        return `The CNAME points to ${target}, but the key found there does not match this selector's key. A resolver may still hold an older record: check again once its TTL has passed.`;
    }
    return c.verdict;
  }
  function found(c) {
    if (c.error) return 'check failed';
    const parts = [];
    if (c.answeredTarget) parts.push(`CNAME → ${c.answeredTarget}`);
    if (c.answeredTxt) {
      const t = c.answeredTxt.length > 48 ? `${c.answeredTxt.slice(0, 48)}…` : c.answeredTxt;
      parts.push(`TXT “${t}”`);
    }
    return parts.length ? parts.join('; ') : 'no record';
  }

  async function checkDNS() {
    const domain = state.domain;
    const button = $('check-dns');
    button.disabled = true;
    $('dns-error').textContent = '';
    $('dns-status').textContent = 'Asking public DNS…';
    try {
      const { data } = await call('GET', `${domainURL(domain)}/dns`);
      if (state.domain !== domain) return;
      $('dns-table').tBodies[0].replaceChildren(...data.selectors.map((c) => el('tr', { 'data-selector': c.selector },
        td('Selector', c.selector),
        td('Verdict', el('span', { class: `verdict v-${c.verdict}${c.error ? ' v-error' : ''}`, text: c.verdict })),
        td('Expected', el('code', { text: c.cname.name }), el('br'), 'CNAME → ', el('code', { text: c.cname.target })),
        td('Found', found(c)),
        td('What to do', explain(c)))));
      const ok = data.selectors.filter((c) => c.verdict === 'ok').length;
      $('dns-status').textContent = `Checked ${fmtTime(data.checkedAt)}: ${ok} of ${data.selectors.length} selectors ok.`;
      // The check updates the domain's status at once: show it.
      const res = await call('GET', domainURL(domain));
      if (state.domain === domain) {
        renderEntry(res.data);
        loadHistory(false); // a status change is an audit record too
      }
    } catch (e) {
      if (state.domain === domain) {
        $('dns-status').textContent = '';
        $('dns-error').textContent = e.message;
      }
    } finally {
      button.disabled = false;
    }
  }
  $('check-dns').addEventListener('click', checkDNS);

  const actionWords = {
    'domain.create': 'domain created',
    'domain.delete': 'domain deleted',
    'domain.rotate': 'rotation',
    'domain.rotate-emergency': 'emergency rotation',
    'domain.status': 'status changed',
    'key.create': 'key created',
    'key.activate': 'key signs',
    'key.retire': 'key retired',
    'key.revoke': 'key revoked',
    'key.destroy': 'key destroyed',
    'maildomain.add': 'maildomain registered',
    'maildomain.remove': 'maildomain removed',
    'rotation.request': 'rotation requested',
    'rotation.schedule': 'switch scheduled',
    'rotation.wait': 'switch waits for DNS',
  };

  async function loadHistory(more) {
    const domain = state.domain;
    const tbody = $('history-table').tBodies[0];
    const url = more ? state.historyNext : `${domainURL(domain)}/audit?limit=50`;
    try {
      const res = await call('GET', url);
      if (state.domain !== domain) return;
      const rows = res.data.map((a) => el('tr', {},
        td('When', fmtTime(a.at)),
        td('Who', a.actor),
        td('What', el('span', { title: a.action, text: actionWords[a.action] || a.action })),
        td('Selector', a.selector || '—'),
        td('Detail', [a.detail, a.fingerprint ? `key ${a.fingerprint.slice(0, 16)}…` : ''].filter(Boolean).join('; ') || '—')));
      if (more) tbody.append(...rows);
      else tbody.replaceChildren(...rows);
      state.historyNext = res.next;
      $('history-more').hidden = !res.next;
    } catch (e) {
      if (state.domain === domain) $('action-error').textContent = e.message;
    }
  }
  $('history-more').addEventListener('click', () => loadHistory(true));

  $('copy-all').addEventListener('click', (ev) => {
    if (state.entry) copyText(zoneLines(state.entry).join('\n') + '\n', 'all records', ev.currentTarget);
  });

  async function rotate(emergency) {
    const domain = state.domain;
    $('action-error').textContent = '';
    const { data } = await call('POST', `${domainURL(domain)}/rotate${emergency ? '?emergency=true' : ''}`);
    if (state.domain !== domain) return;
    renderEntry(data);
    loadHistory(false);
    const r = data.rotation || {};
    announce(emergency ? `Emergency rotation done: ${data.activeSelector} signs now.`
      : r.pendingSwitchAt ? `Rotation scheduled: the switch happens ${fmtTime(r.pendingSwitchAt)}.` : 'Rotation requested.');
  }

  $('rotate').addEventListener('click', async (ev) => {
    const b = ev.currentTarget;
    b.disabled = true;
    try {
      await rotate(false);
    } catch (e) {
      $('action-error').textContent = e.message;
    } finally {
      b.disabled = false;
    }
  });

  // ---- confirmation by typing the domain

  let confirmAction = null;
  let confirmTrigger = null;

  function openConfirm(trigger, title, text, label, action) {
    confirmAction = action;
    confirmTrigger = trigger;
    $('confirm-title').textContent = title;
    $('confirm-text').textContent = text;
    $('confirm-label').textContent = `Type ${state.domain} to confirm`;
    $('confirm-ok').textContent = label;
    $('confirm-ok').disabled = true;
    $('confirm-input').value = '';
    $('actions').hidden = true;
    $('confirm').hidden = false;
    $('confirm-input').focus();
  }

  function closeConfirm(refocus) {
    $('confirm').hidden = true;
    $('actions').hidden = false;
    confirmAction = null;
    if (refocus && confirmTrigger) confirmTrigger.focus();
  }

  function typedDomain() {
    return $('confirm-input').value.trim().replace(/\.$/, '').toLowerCase() === state.domain.toLowerCase();
  }

  $('confirm-input').addEventListener('input', () => { $('confirm-ok').disabled = !typedDomain(); });
  $('confirm-input').addEventListener('keydown', (ev) => { if (ev.key === 'Escape') closeConfirm(true); });
  $('confirm-cancel').addEventListener('click', () => closeConfirm(true));
  $('confirm-form').addEventListener('submit', async (ev) => {
    ev.preventDefault();
    if (!typedDomain() || !confirmAction) return;
    const action = confirmAction;
    $('confirm-ok').disabled = true;
    try {
      await action();
      closeConfirm(true);
    } catch (e) {
      $('action-error').textContent = e.message;
      closeConfirm(true);
    }
  });

  $('emergency').addEventListener('click', (ev) => openConfirm(ev.currentTarget,
    `Emergency rotate ${state.domain}?`,
    'The signing key is revoked at once and the next key signs from now on. Mail signed with the revoked key in the last days will fail DKIM. Use this only when the key may be compromised.',
    'Emergency rotate', () => rotate(true)));

  $('delete').addEventListener('click', (ev) => openConfirm(ev.currentTarget,
    `Delete ${state.domain}?`,
    'Its keys are destroyed and its TXT records leave DNS at once: mail from this domain is no longer signed with its own key. Remove the CNAMEs afterwards.',
    'Delete', async () => {
      const domain = state.domain;
      await call('DELETE', domainURL(domain));
      flash = `${domain} deleted: its keys are destroyed. You can remove its CNAMEs now.`;
      announce(flash);
      location.hash = '#/domains';
    }));

  // ---- bulk onboarding

  function showBulk(focus) {
    showView('view-bulk', focus);
    document.title = 'Bulk onboarding · dkimd console';
  }

  // parseDomains reads one domain a line, or CSV with the domain first
  // (a header line naming the column is skipped), without duplicates.
  function parseDomains(text) {
    const seen = new Set();
    const out = [];
    text.replace(/^\uFEFF/, '').split(/\r?\n/).forEach((line, i) => {
      let d = line.split(/[,;\t]/)[0].trim().replace(/^"(.*)"$/, '$1').trim();
      if (!d || d.startsWith('#')) return;
      if (i === 0 && /^(domain|maildomain|name)$/i.test(d)) return;
      const key = d.toLowerCase().replace(/\.$/, '');
      if (seen.has(key)) return;
      seen.add(key);
      out.push(d);
    });
    return out;
  }

  $('bulk-file').addEventListener('change', async (ev) => {
    const f = ev.target.files[0];
    if (f) $('bulk-domains').value = await f.text();
  });

  function resultOf(e) {
    switch (e.code) {
      case 'MAILDOMAIN_NOT_PROVISIONED': return 'not a maildomain';
      case 'LABEL_CLASH':
      case 'DOMAIN_HELD_BY_OTHER_BRAND': return 'label taken';
      case 'INVALID_DOMAIN':
      case 'LABEL_TOO_LONG':
      case 'INVALID_BODY': return 'invalid';
    }
    return 'failed';
  }

  // onboardOne looks first and creates only what is not there, so that an
  // existing domain keeps its settings whatever the options say.
  async function onboardOne(domain, opts) {
    if (!/^[^\s/\\?#%]+$/.test(domain) || /^\.+$/.test(domain)) {
      return { result: 'invalid', title: 'not a domain name' };
    }
    try {
      const { data } = await call('GET', domainURL(domain));
      return { result: 'exists', entry: data };
    } catch (e) {
      if (e.status === 401) throw e;
      if (e.code !== 'DOMAIN_NOT_FOUND') return { result: resultOf(e), title: e.message };
    }
    try {
      const { status, data } = await call('PUT', domainURL(domain), opts);
      return { result: status === 201 ? 'created' : 'exists', entry: data };
    } catch (e) {
      if (e.status === 401) throw e;
      return { result: resultOf(e), title: e.message };
    }
  }

  function setProgress(done, total) {
    const pct = total ? Math.round((done * 100) / total) : 100;
    const bar = $('bulk-progress');
    bar.setAttribute('aria-valuenow', String(pct));
    bar.setAttribute('aria-valuetext', `${done} of ${total} domains`);
    bar.firstElementChild.style.width = `${pct}%`;
    $('bulk-progress-label').textContent = `Progress: ${done} of ${total} domains (${pct}%)`;
  }

  function download(id, text, type) {
    const url = URL.createObjectURL(new Blob([text], { type }));
    state.blobs.push(url);
    $(id).href = url;
  }

  function csvField(s) {
    return /[",\n]/.test(s) ? `"${s.replace(/"/g, '""')}"` : s;
  }

  $('bulk-form').addEventListener('submit', async (ev) => {
    ev.preventDefault();
    const domains = parseDomains($('bulk-domains').value);
    const summary = $('bulk-summary');
    $('bulk-run').hidden = false;
    $('bulk-downloads').hidden = true;
    for (const u of state.blobs.splice(0)) URL.revokeObjectURL(u);
    const list = $('bulk-results');
    list.replaceChildren();
    if (!domains.length) {
      setProgress(0, 0);
      summary.textContent = 'No domain to onboard: paste one domain a line.';
      return;
    }
    const go = $('bulk-go');
    go.disabled = true;
    const opts = keyOptions('bulk');
    const results = new Array(domains.length);
    const items = domains.map((d) => {
      const li = el('li', {}, el('span', { class: 'dname', text: d }), ' ', el('span', { class: 'result', text: 'waiting' }));
      list.append(li);
      return li;
    });
    let done = 0;
    let next = 0;
    setProgress(0, domains.length);
    summary.textContent = `Onboarding ${domains.length} domains…`;
    let stopped = null;
    async function worker() {
      while (next < domains.length && !stopped) {
        const i = next++;
        try {
          results[i] = await onboardOne(domains[i], opts);
        } catch (e) {
          stopped = e;
          results[i] = { result: 'failed', title: e.message };
        }
        const r = results[i];
        const li = items[i];
        li.className = `r-${r.result.replace(/ /g, '-')}`;
        li.replaceChildren(...[el('span', { class: 'dname', text: domains[i] }), ' ',
          el('span', { class: 'result', text: r.result }),
          r.title ? el('span', { class: 'detail', text: ` (${r.title})` }) : ''].filter(Boolean));
        setProgress(++done, domains.length);
      }
    }
    await Promise.all(Array.from({ length: BULK_WORKERS }, worker));
    go.disabled = false;
    if (stopped && !state.brand) return;

    const counts = {};
    for (const r of results) if (r) counts[r.result] = (counts[r.result] || 0) + 1;
    summary.textContent = `Done: ${Object.entries(counts).map(([k, n]) => `${n} ${k}`).join(', ')}.`;
    announce(summary.textContent);
    const withKeys = results.filter((r) => r && r.entry).map((r) => r.entry);
    const csv = ['domain,selector,name,type,target'];
    const zone = [`; DKIM CNAMEs for ${withKeys.length} domains of brand ${state.brand}, made by the dkimd console`];
    for (const e of withKeys) {
      for (const s of e.selectors) csv.push([e.domain, s.selector, s.cname.name, 'CNAME', s.cname.target].map(csvField).join(','));
      zone.push(...zoneLines(e));
    }
    download('bulk-csv', csv.join('\r\n') + '\r\n', 'text/csv');
    download('bulk-zone', zone.join('\n') + '\n', 'text/plain');
    $('bulk-downloads').hidden = withKeys.length === 0;
  });

  restore();
})();
