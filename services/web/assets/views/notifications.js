// Notifications: the list, and the live stream (notifier's Server-Sent Events) while the page
// is open. The stream is read with fetch, not EventSource, so the access token goes in the
// Authorization header and never into a URL.

import {accessToken, api, refresh} from '../api.js';
import {t, problemText} from '../i18n.js';
import {dateTime, fill, h} from '../lib.js';

/** `#/notifications`. */
export async function view(main, params, ctx) {
  if (!ctx.requireSignIn()) return;
  fill(main, h('h1', {}, t('notifications.title')), h('p', {class: 'loading'}, t('loading')));
  try {
    const page = await api('GET', '/v1/notifications?page_size=50');
    fill(main, h('h1', {}, t('notifications.title')),
      page.items.length === 0 ? h('p', {}, t('notifications.none')) :
        h('ul', {class: 'cards'}, page.items.map((n) => h('li', {class: n.readAt ? 'card' : 'card unread'},
          h('h2', {}, n.title), h('p', {}, n.body),
          h('p', {class: 'hint'}, dateTime(n.createdAt)),
          n.readAt ? null : h('button', {type: 'button', onclick: async (event) => {
            await api('POST', `/v1/notifications/${n.id}/read`, {body: {}});
            event.target.remove();
            ctx.refreshBadge();
          }}, t('notifications.markRead'))))));
  } catch (error) {
    fill(main, h('h1', {}, t('notifications.title')), h('p', {class: 'error', role: 'alert'}, problemText(error)));
  }
}

/**
 * Follows the caller's notifications until `signal` aborts: `onItem(item)` for each new one.
 * Reconnects after the retry hint (or 3 s) with Last-Event-ID, so nothing is missed.
 */
export async function follow(onItem, signal) {
  let last = null;
  let retry = 3000;
  while (!signal.aborted) {
    try {
      const headers = {Accept: 'text/event-stream', Authorization: `Bearer ${accessToken()}`};
      if (last) headers['Last-Event-ID'] = last;
      const response = await fetch('/v1/notifications/stream', {headers, signal});
      if (response.status === 401) {
        if (!(await refresh())) return;
        continue;
      }
      if (!response.ok || !response.body) throw new Error(`stream ${response.status}`);
      const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
      let buffer = '';
      for (;;) {
        const {value, done} = await reader.read();
        if (done) break;
        buffer += value;
        let end;
        while ((end = buffer.search(/\r?\n\r?\n/)) >= 0) {
          const block = buffer.slice(0, end);
          buffer = buffer.slice(end).replace(/^\r?\n\r?\n/, '');
          const event = {event: 'message', data: ''};
          for (const line of block.split(/\r?\n/)) {
            const colon = line.indexOf(':');
            if (colon === 0) continue;
            const field = colon < 0 ? line : line.slice(0, colon);
            const text = colon < 0 ? '' : line.slice(colon + 1).replace(/^ /, '');
            if (field === 'data') event.data += (event.data ? '\n' : '') + text;
            else if (field === 'id') event.id = text;
            else if (field === 'event') event.event = text;
            else if (field === 'retry' && /^\d+$/.test(text)) retry = Number(text);
          }
          if (event.id) last = event.id;
          if (event.event === 'notification' && event.data) onItem(JSON.parse(event.data));
        }
      }
    } catch (error) {
      if (signal.aborted) return;
    }
    await new Promise((resolve) => setTimeout(resolve, retry));
  }
}
