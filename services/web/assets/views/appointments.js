// My appointments: upcoming and past, cancel or reschedule, with the country's rules
// explained when booking refuses.

import {api} from '../api.js';
import {t, problemText} from '../i18n.js';
import {dateTime, fill, h, localDate, newKey} from '../lib.js';

const names = new Map();

async function practitionerName(id) {
  if (!names.has(id)) {
    names.set(id, api('GET', `/v1/practitioners/${encodeURIComponent(id)}`)
      .then((p) => p.name).catch(() => t('appointments.practitioner')));
  }
  return names.get(id);
}

/** `#/appointments`. */
export async function view(main, params, ctx) {
  if (!ctx.requireSignIn()) return;
  fill(main, h('h1', {}, t('appointments.title')), h('p', {class: 'loading'}, t('loading')));
  let list;
  try {
    list = await api('GET', '/v1/appointments');
  } catch (error) {
    fill(main, h('h1', {}, t('appointments.title')), h('p', {class: 'error', role: 'alert'}, problemText(error)));
    return;
  }
  const now = Date.now();
  const upcoming = list.items.filter((a) => a.status === 'booked' && new Date(a.start) > now)
    .sort((a, b) => new Date(a.start) - new Date(b.start));
  const others = list.items.filter((a) => !upcoming.includes(a))
    .sort((a, b) => new Date(b.start) - new Date(a.start));
  const who = await Promise.all(list.items.map((a) => practitionerName(a.practitionerId)));
  const nameOf = new Map(list.items.map((a, i) => [a.id, who[i]]));
  const item = (a) => {
    const status = h('p', {role: 'status'});
    const actions = h('div', {class: 'actions'});
    const row = h('li', {class: 'card'},
      h('h3', {}, dateTime(a.start)),
      h('p', {}, nameOf.get(a.id)),
      h('p', {class: `badge ${a.status}`}, t(`appointment.${a.status}`)),
      actions, status);
    if (upcoming.includes(a)) {
      const cancel = h('button', {type: 'button', onclick: () => {
        const key = newKey();
        const yes = h('button', {type: 'button', class: 'danger', onclick: async () => {
          yes.disabled = true;
          try {
            await api('POST', `/v1/appointments/${a.id}/cancel`, {key});
            ctx.toast(t('appointments.cancelled'));
            ctx.reload();
          } catch (error) {
            status.className = 'error';
            status.setAttribute('role', 'alert');
            status.textContent = problemText(error);
            fill(actions, reschedule);
          }
        }}, t('appointments.confirmCancel'));
        fill(actions, h('span', {}, t('appointments.sureCancel')), yes,
          h('button', {type: 'button', onclick: () => fill(actions, cancel, reschedule)}, t('appointments.keep')));
        yes.focus();
      }}, t('appointments.cancel'));
      const reschedule = h('a', {class: 'button',
        href: `#/practitioners/${a.practitionerId}?${new URLSearchParams({week: localDate(a.start), reschedule: a.id})}`},
      t('appointments.reschedule'));
      fill(actions, cancel, reschedule);
    }
    return row;
  };
  fill(main,
    h('h1', {}, t('appointments.title')),
    h('p', {class: 'hint'}, t('rules.cancel', {hours: Math.round(ctx.settings.cancellationCutoffMinutes / 60)})),
    h('h2', {}, t('appointments.upcoming')),
    upcoming.length ? h('ul', {class: 'cards'}, upcoming.map(item)) :
      h('p', {}, t('appointments.none'), ' ', h('a', {href: '#/'}, t('appointments.find'))),
    others.length ? [h('h2', {}, t('appointments.past')), h('ul', {class: 'cards'}, others.map(item))] : null);
}
