// The app: the header, the router (the part after `#`), the language and the live
// notifications of a signed-in user.

import {api, currentUser, onSessionChange, restore, signOut} from './api.js';
import {language, setLanguage, t} from './i18n.js';
import {fill, focusHeading, h, settings} from './lib.js';
import * as appointments from './views/appointments.js';
import * as find from './views/find.js';
import * as notifications from './views/notifications.js';
import * as sale from './views/sale.js';
import * as signin from './views/signin.js';

const CHOICE = 'pulse.language';
const LANGUAGE_NAMES = {fr: 'Français', de: 'Deutsch', en: 'English'};

const ROUTES = {
  '': find.search,
  'practitioners': find.practitioner,
  'sign-in': signin.view,
  'appointments': appointments.view,
  'notifications': notifications.view,
  'sale': (main, params, ctx) => (ctx.path[1] ? sale.campaign : sale.list)(main, params, ctx),
  'orders': sale.order,
  'wallet': sale.wallet,
};

const main = document.getElementById('main');
const nav = document.getElementById('nav');
const toasts = document.getElementById('toasts');
let leave = new AbortController();
let unread = 0;
let stream = null;

function route() {
  const hash = location.hash.replace(/^#\/?/, '');
  const [path, query] = hash.split('?');
  return {path: path.split('/').filter(Boolean).map(decodeURIComponent), params: new URLSearchParams(query || '')};
}

function toast(text) {
  const item = h('p', {class: 'toast'}, text);
  toasts.append(item);
  setTimeout(() => item.remove(), 8000);
}

/** Draws the view of the current address; timers of the previous view stop. */
async function render({focus = true} = {}) {
  leave.abort();
  leave = new AbortController();
  const signal = leave.signal;
  const {path, params} = route();
  const view = ROUTES[path[0] || ''] || find.search;
  // Each view draws into its own element: one left behind (its request answered after the
  // user moved on) fills an element no longer on the page, instead of the page.
  const page = h('div', {class: 'view'});
  main.replaceChildren(page);
  const ctx = {
    path, settings, signal, toast,
    go: (hash) => {
      if (location.hash === hash) render();
      else location.hash = hash;
    },
    reload: () => render({focus: false}),
    every: (ms, fn) => {
      const timer = setInterval(() => {
        if (!signal.aborted) fn();
      }, ms);
      signal.addEventListener('abort', () => clearInterval(timer));
    },
    requireSignIn: () => {
      if (currentUser()) return true;
      fill(page, h('h1', {}, t('signin.title')), signin.signInForm(() => render()));
      focusHeading(main);
      return false;
    },
    refreshBadge,
  };
  drawNav();
  await view(page, params, ctx);
  if (focus && !signal.aborted) focusHeading(main);
}

function link(hash, text, extra) {
  const here = `#/${route().path[0] || ''}` === hash.split('?')[0] || (hash === '#/' && !route().path[0]);
  return h('a', {href: hash, 'aria-current': here ? 'page' : false}, text, extra);
}

function drawNav() {
  const select = h('select', {id: 'language', 'aria-label': t('nav.language'), onchange: () => choose(select.value)},
    settings.languages.map((lang) => h('option', {value: lang, selected: lang === language(), lang}, LANGUAGE_NAMES[lang])));
  const signedIn = currentUser() !== null;
  fill(nav,
    h('ul', {},
      h('li', {}, link('#/', t('nav.find'))),
      h('li', {}, link('#/sale', t('nav.sale'))),
      signedIn ? [
        h('li', {}, link('#/appointments', t('nav.appointments'))),
        h('li', {}, link('#/wallet', t('nav.wallet'))),
        h('li', {}, link('#/notifications', t('nav.notifications'),
          unread ? h('span', {class: 'count', 'aria-label': t('nav.unread', {count: unread})}, String(unread)) : null)),
        h('li', {}, h('button', {type: 'button', class: 'link', onclick: async () => {
          await signOut();
          location.hash = '#/';
        }}, t('nav.signOut'))),
      ] : h('li', {}, link(`#/sign-in?next=${encodeURIComponent(location.hash || '#/')}`, t('nav.signIn'))),
      h('li', {class: 'language'}, select)));
  document.querySelector('.skip').textContent = t('skip');
}

/** The user picked a language: kept in this browser and, signed in, in the profile. */
async function choose(lang) {
  setLanguage(lang);
  localStorage.setItem(CHOICE, lang);
  if (currentUser()) {
    api('PATCH', '/v1/me/profile', {body: {language: lang}}).catch(() => {});
  }
  await render({focus: false});
  document.getElementById('language')?.focus();
}

async function refreshBadge() {
  try {
    unread = (await api('GET', '/v1/notifications?page_size=1')).unreadCount;
  } catch {
    return;
  }
  drawNav();
}

onSessionChange(async (user) => {
  stream?.abort();
  stream = null;
  unread = 0;
  if (!user) {
    drawNav();
    return;
  }
  // The user's preference, kept in the profile, wins over the country's language.
  try {
    const profile = await api('GET', '/v1/me/profile');
    const before = language();
    if (!localStorage.getItem(CHOICE) && profile.language && setLanguage(profile.language) && language() !== before) {
      await render({focus: false});
    }
  } catch {
    // A development token without a profile: the country's language stays.
  }
  stream = new AbortController();
  notifications.follow((item) => {
    unread += 1;
    toast(`${item.title} — ${item.body}`);
    drawNav();
  }, stream.signal);
  refreshBadge();
});

window.addEventListener('hashchange', () => render());

setLanguage(localStorage.getItem(CHOICE) || settings.languages[0]);
await restore();
await render({focus: false});
document.body.dataset.ready = 'true';
