// Find a practitioner (specialty, city, near me), see a week of free slots, book or move an
// appointment. One booking is one Idempotency-Key: a double click or a retry books once.

import {ApiError, api, currentUser} from '../api.js';
import {t, problemText} from '../i18n.js';
import {addDays, dateTime, day, fill, h, localDate, money, newKey, shortDay, time} from '../lib.js';
import {signInForm} from './signin.js';

/** `1 rue de la Paix, Paris`, without the city twice when the address already names it. */
const place = (who) => (who.address.endsWith(who.city) ? who.address : `${who.address}, ${who.city}`);

const SPECIALTIES = [
  'general-practice', 'dentistry', 'dermatology', 'pediatrics', 'ophthalmology',
  'gynecology', 'cardiology', 'physiotherapy', 'psychiatry',
];

/** `#/?specialty=&city=&near=`: the search form and its results. */
export async function search(main, params, ctx) {
  const specialty = params.get('specialty') || '';
  const city = params.get('city') || '';
  const near = params.get('near') || '';
  const pageNumber = Math.max(1, Number.parseInt(params.get('page') || '1', 10) || 1);
  const results = h('section', {'aria-labelledby': 'results-title', class: 'results'});
  const locating = h('p', {class: 'hint', role: 'status'});
  const form = h('form', {class: 'search', role: 'search', onsubmit: (event) => {
    event.preventDefault();
    const data = new FormData(form);
    const query = new URLSearchParams();
    for (const name of ['specialty', 'city']) if (data.get(name)) query.set(name, data.get(name));
    ctx.go(`#/?${query}`);
  }},
  h('div', {class: 'field'},
    h('label', {for: 'specialty'}, t('search.specialty')),
    h('select', {id: 'specialty', name: 'specialty'},
      h('option', {value: ''}, t('search.anySpecialty')),
      SPECIALTIES.map((s) => h('option', {value: s, selected: s === specialty}, t(`specialty.${s}`))))),
  h('div', {class: 'field'},
    h('label', {for: 'city'}, t('search.city')),
    h('input', {id: 'city', name: 'city', value: city, autocomplete: 'address-level2', placeholder: t('search.cityExample')})),
  h('div', {class: 'actions'},
    h('button', {type: 'submit', class: 'primary'}, t('search.submit')),
    h('button', {type: 'button', onclick: () => nearMe(specialty, locating, ctx)}, t('search.nearMe'))));
  fill(main,
    h('h1', {}, t('search.title')),
    form, locating, results);
  if (!specialty && !city && !near) {
    fill(results, h('h2', {id: 'results-title', class: 'visually-hidden'}, t('search.results')),
      h('p', {class: 'hint'}, t('search.start')));
    return;
  }
  const query = new URLSearchParams({page_size: '20', page: String(pageNumber)});
  if (specialty) query.set('specialty', specialty);
  if (city) query.set('city', city);
  if (near) query.set('near', near);
  fill(results, h('p', {class: 'loading'}, t('loading')));
  try {
    const page = await api('GET', `/v1/practitioners?${query}`);
    fill(results,
      h('h2', {id: 'results-title'}, t('search.found', {count: page.total})),
      page.items.length === 0 ? h('p', {}, t('search.none')) :
        h('ul', {class: 'cards'}, page.items.map((hit) => h('li', {class: 'card'},
          h('h3', {}, h('a', {href: `#/practitioners/${hit.id}`}, hit.name)),
          h('p', {}, t(`specialty.${hit.specialty}`, {}, hit.specialty), ' · ', place(hit),
            hit.distanceKm == null ? '' : ` · ${t('search.distance', {km: hit.distanceKm.toFixed(1)})}`),
          h('p', {}, t('search.price', {price: money(hit.consultationPriceMinor, hit.currency)})),
          hit.availableSlots.length ?
            h('p', {}, t('search.next', {when: dateTime(hit.availableSlots[0].start)})) :
            h('p', {class: 'hint'}, t('search.noSlot')),
          h('a', {class: 'button', href: `#/practitioners/${hit.id}`,
            'aria-label': t('search.seeSlotsOf', {name: hit.name})}, t('search.seeSlots'))))),
      pager(params, pageNumber, page.page * page.pageSize < page.total));
  } catch (error) {
    fill(results, h('p', {class: 'error', role: 'alert'}, problemText(error)));
  }
}

/** Links to the previous and next pages of results. */
function pager(params, pageNumber, more) {
  const to = (n) => {
    const query = new URLSearchParams(params);
    query.set('page', String(n));
    return `#/?${query}`;
  };
  if (pageNumber === 1 && !more) return null;
  return h('nav', {class: 'week-nav', 'aria-label': t('search.pages')},
    pageNumber > 1 ? h('a', {class: 'button', href: to(pageNumber - 1)}, t('search.previousPage')) : null,
    more ? h('a', {class: 'button', href: to(pageNumber + 1)}, t('search.nextPage')) : null);
}

function nearMe(specialty, status, ctx) {
  if (!navigator.geolocation) {
    status.textContent = t('search.noLocation');
    return;
  }
  status.textContent = t('search.locating');
  navigator.geolocation.getCurrentPosition((position) => {
    const query = new URLSearchParams();
    if (specialty) query.set('specialty', specialty);
    query.set('near', `${position.coords.latitude.toFixed(4)},${position.coords.longitude.toFixed(4)}`);
    ctx.go(`#/?${query}`);
  }, () => {
    status.textContent = t('search.noLocation');
  }, {timeout: 10000});
}

/**
 * `#/practitioners/<id>?week=YYYY-MM-DD&reschedule=<appointment>`: a week of free slots; a
 * slot opens the confirmation (signing in first if needed).
 */
export async function practitioner(main, params, ctx) {
  const id = ctx.path[1];
  const today = localDate(Date.now());
  const week = params.get('week') || today;
  const moving = params.get('reschedule');
  fill(main, h('p', {class: 'loading'}, t('loading')));
  let who;
  let list;
  try {
    [who, list] = await Promise.all([
      api('GET', `/v1/practitioners/${encodeURIComponent(id)}`),
      api('GET', `/v1/practitioners/${encodeURIComponent(id)}/slots?from=${week}&to=${addDays(week, 6)}`),
    ]);
  } catch (error) {
    fill(main, h('h1', {}, t('practitioner.title')), h('p', {class: 'error', role: 'alert'}, problemText(error)));
    return;
  }
  const confirm = h('section', {class: 'confirm', 'aria-labelledby': 'confirm-title', hidden: true});
  const days = [];
  for (let i = 0; i < 7; i++) {
    const date = addDays(week, i);
    const slots = list.slots.filter((slot) => slot.start.slice(0, 10) === date);
    days.push(h('section', {class: 'day', 'aria-label': day(`${date}T12:00:00Z`)},
      h('h3', {}, shortDay(`${date}T12:00:00Z`)),
      slots.length === 0 ? h('p', {class: 'hint'}, t('practitioner.noSlot')) :
        h('ul', {class: 'slots'}, slots.map((slot) => h('li', {},
          h('button', {type: 'button', class: 'slot',
            'aria-label': t('practitioner.slotLabel', {when: dateTime(slot.start)}),
            onclick: () => openConfirmation(confirm, who, slot, moving, ctx)}, time(slot.start)))))));
  }
  const nav = (offset, label) => h('a', {class: 'button', href: `#/practitioners/${id}?${new URLSearchParams({
    week: addDays(week, offset), ...(moving ? {reschedule: moving} : {}),
  })}`}, label);
  fill(main,
    h('h1', {}, who.name),
    h('p', {}, t(`specialty.${who.specialty}`, {}, who.specialty), ' · ', place(who)),
    h('p', {}, t('search.price', {price: money(who.consultationPriceMinor, who.currency)}),
      who.languages.length ? ` · ${t('practitioner.speaks', {languages: who.languages.join(', ')})}` : ''),
    moving ? h('p', {class: 'notice'}, t('practitioner.moving')) : null,
    h('h2', {}, t('practitioner.week', {day: day(`${week}T12:00:00Z`)})),
    h('div', {class: 'week-nav'},
      week > today ? nav(-7, t('practitioner.previous')) : null,
      nav(7, t('practitioner.next'))),
    h('div', {class: 'week'}, days),
    confirm);
}

/** The confirmation of one slot; its key is made once, so a second click cannot book twice. */
function openConfirmation(panel, who, slot, moving, ctx) {
  const key = newKey();
  const title = h('h2', {id: 'confirm-title', tabindex: '-1'},
    moving ? t('confirm.moveTitle') : t('confirm.title'));
  // Room for the status line from the start: a double tap must not land on a button that moved.
  const status = h('p', {role: 'status', class: 'status-line'});
  panel.hidden = false;
  const show = () => {
    if (!currentUser()) {
      fill(panel, title, h('p', {}, t('confirm.signInFirst')),
        signInForm(() => show(), ctx));
      return;
    }
    const button = h('button', {type: 'button', class: 'primary', onclick: async () => {
      if (button.disabled) return;
      button.disabled = true;
      status.className = 'status-line';
      status.textContent = t('confirm.booking');
      try {
        const appointment = moving ?
          await api('POST', `/v1/appointments/${encodeURIComponent(moving)}/reschedule`, {body: {slotId: slot.id}, key}) :
          await api('POST', '/v1/appointments', {body: {slotId: slot.id}, key});
        fill(panel, h('h2', {id: 'confirm-title', tabindex: '-1'}, t('confirm.done')),
          h('p', {role: 'status'}, t('confirm.doneText', {when: dateTime(appointment.start), name: who.name})),
          h('a', {class: 'button primary', href: '#/appointments'}, t('nav.appointments')));
        panel.querySelector('h2').focus();
      } catch (error) {
        status.className = 'status-line error';
        status.setAttribute('role', 'alert');
        status.textContent = problemText(error);
        // The same key again: a retry after a lost answer gets the first answer.
        if (error instanceof ApiError && error.status === 0) button.disabled = false;
        else button.remove();
      }
    }}, moving ? t('confirm.move') : t('confirm.book'));
    fill(panel, title,
      h('p', {}, t('confirm.text', {when: dateTime(slot.start), name: who.name,
        price: money(who.consultationPriceMinor, who.currency)})),
      h('div', {class: 'actions'}, button,
        h('button', {type: 'button', onclick: () => {
          panel.hidden = true;
        }}, t('confirm.other'))),
      status);
  };
  show();
  title.focus();
}
