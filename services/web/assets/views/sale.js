// Flash sales: the campaigns, one campaign's countdown and live stock, the buy button, the
// order followed to payment through the provider's checkout page, and the wallet.

import {ApiError, api} from '../api.js';
import {t, problemText} from '../i18n.js';
import {dateTime, fill, h, money, newKey} from '../lib.js';

const phaseText = (phase) => t(`phase.${phase}`);

/** `#/sale`: the campaigns. */
export async function list(main, params, ctx) {
  fill(main, h('h1', {}, t('sale.title')), h('p', {class: 'loading'}, t('loading')));
  try {
    const {items} = await api('GET', '/v1/campaigns');
    fill(main, h('h1', {}, t('sale.title')),
      items.length === 0 ? h('p', {}, t('sale.none')) :
        h('ul', {class: 'cards'}, items.map((c) => h('li', {class: 'card'},
          h('h2', {}, h('a', {href: `#/sale/${encodeURIComponent(c.id)}`}, c.voucherTitle)),
          h('p', {}, t('sale.deal', {price: money(c.priceMinor, c.currency), value: money(c.voucherValueMinor, c.currency)})),
          h('p', {class: `badge ${c.phase}`}, phaseText(c.phase)),
          h('p', {}, c.phase === 'SCHEDULED' ? t('sale.starts', {when: dateTime(c.startsAt)}) :
            t('sale.ends', {when: dateTime(c.endsAt)}))))));
  } catch (error) {
    fill(main, h('h1', {}, t('sale.title')), h('p', {class: 'error', role: 'alert'}, problemText(error)));
  }
}

function countdown(ms) {
  const s = Math.max(0, Math.ceil(ms / 1000));
  const parts = [Math.floor(s / 3600), Math.floor(s / 60) % 60, s % 60];
  return parts.map((n) => String(n).padStart(2, '0')).join(':');
}

/** `#/sale/<campaign>`: countdown, live stock, buy. */
export async function campaign(main, params, ctx) {
  const id = ctx.path[1];
  let c;
  try {
    c = await api('GET', `/v1/campaigns/${encodeURIComponent(id)}`);
  } catch (error) {
    fill(main, h('h1', {}, t('sale.title')), h('p', {class: 'error', role: 'alert'}, problemText(error)));
    return;
  }
  const clock = h('p', {class: 'countdown'});
  const phase = h('p', {class: 'badge', role: 'status'});
  const stock = h('p', {class: 'stock'});
  const status = h('div', {'aria-live': 'assertive'});
  const key = newKey();
  const buy = h('button', {type: 'button', class: 'primary big', onclick: async () => {
    if (!ctx.requireSignIn()) return;
    buy.disabled = true;
    fill(status, h('p', {}, t('sale.buying')));
    try {
      const accepted = await api('POST', `/v1/seckill/${encodeURIComponent(id)}/orders`, {key});
      ctx.go(`#/orders/${accepted.orderId}`);
    } catch (error) {
      fill(status, h('p', {class: 'error', role: 'alert'}, problemText(error)));
      buy.disabled = !(error instanceof ApiError && [0, 429, 503].includes(error.status));
    }
  }}, t('sale.buy'));
  const draw = () => {
    const left = new Date(c.startsAt) - Date.now();
    phase.className = `badge ${c.phase}`;
    phase.textContent = phaseText(c.phase);
    clock.textContent = c.phase === 'SCHEDULED' && left > 0 ? t('sale.startsIn', {time: countdown(left)}) :
      c.phase === 'ACTIVE' ? t('sale.ends', {when: dateTime(c.endsAt)}) : '';
    stock.textContent = c.remaining == null ? '' : t('sale.remaining', {left: c.remaining, total: c.stock});
    if (c.phase !== 'ACTIVE') buy.disabled = true;
    else if (!buy.dataset.tried) buy.disabled = false;
  };
  buy.addEventListener('click', () => {
    buy.dataset.tried = '1';
  });
  fill(main,
    h('h1', {}, c.voucherTitle),
    h('p', {class: 'deal'}, t('sale.deal', {price: money(c.priceMinor, c.currency), value: money(c.voucherValueMinor, c.currency)})),
    phase, clock, stock, h('p', {class: 'hint'}, t('sale.limit', {n: c.perUserLimit})),
    buy, status);
  draw();
  // The countdown ticks locally; the phase and stock come from marketing every second.
  ctx.every(250, draw);
  ctx.every(1000, async () => {
    try {
      c = await api('GET', `/v1/campaigns/${encodeURIComponent(id)}`);
      draw();
    } catch {
      // The next tick tries again.
    }
  });
}

/** `#/orders/<id>`: an order followed to payment. */
export async function order(main, params, ctx) {
  if (!ctx.requireSignIn()) return;
  const id = ctx.path[1];
  const box = h('div', {'aria-live': 'polite'});
  fill(main, h('h1', {}, t('order.title')), box);
  let last = '';
  const payKey = newKey();
  // A paid or cancelled order changes no more: polling stops there.
  const settled = () => ['PAID', 'CANCELLED', 'REFUNDED'].includes(last);
  const poll = async () => {
    if (settled()) return;
    let o;
    try {
      o = await api('GET', `/v1/orders/${encodeURIComponent(id)}`);
    } catch (error) {
      if (error instanceof ApiError && error.status === 404) {
        if (last !== 'creating') fill(box, h('p', {}, t('order.creating')));
        last = 'creating';
        return;
      }
      fill(box, h('p', {class: 'error', role: 'alert'}, problemText(error)));
      return;
    }
    if (o.status === last) return;
    last = o.status;
    const summary = h('dl', {class: 'summary'},
      h('dt', {}, t('order.status')), h('dd', {class: `badge ${o.status}`}, t(`orderStatus.${o.status}`)),
      h('dt', {}, t('order.amount')), h('dd', {}, money(o.amountMinor, o.currency)));
    if (o.status === 'PENDING_PAYMENT') {
      const pay = h('button', {type: 'button', class: 'primary big', onclick: async () => {
        pay.disabled = true;
        try {
          const started = await api('POST', `/v1/orders/${encodeURIComponent(id)}/pay`, {key: payKey});
          location.assign(started.checkoutUrl);
        } catch (error) {
          pay.disabled = false;
          box.append(h('p', {class: 'error', role: 'alert'}, problemText(error)));
        }
      }}, t('order.pay'));
      fill(box, summary, h('p', {}, t('order.deadline', {when: dateTime(o.paymentDeadline)})), pay);
    } else if (o.status === 'PAID') {
      fill(box, summary, h('p', {class: 'success'}, t('order.paid')),
        h('a', {class: 'button primary', href: '#/wallet'}, t('nav.wallet')));
    } else if (o.status === 'CANCELLED') {
      fill(box, summary, h('p', {}, t('order.cancelled')));
    } else {
      fill(box, summary);
    }
  };
  await poll();
  ctx.every(1000, poll);
}

/** `#/wallet`: my vouchers. */
export async function wallet(main, params, ctx) {
  if (!ctx.requireSignIn()) return;
  fill(main, h('h1', {}, t('wallet.title')), h('p', {class: 'loading'}, t('loading')));
  try {
    const {items} = await api('GET', '/v1/vouchers');
    fill(main, h('h1', {}, t('wallet.title')),
      items.length === 0 ? h('p', {}, t('wallet.none'), ' ', h('a', {href: '#/sale'}, t('nav.sale'))) :
        h('ul', {class: 'cards'}, items.map((v) => h('li', {class: 'card'},
          h('h2', {}, v.title),
          h('p', {}, t('wallet.value', {value: money(v.valueMinor, v.currency)})),
          h('p', {class: `badge ${v.status}`}, t(`voucher.${v.status}`)),
          h('p', {class: 'hint'}, t('wallet.issued', {when: dateTime(v.issuedAt)}))))));
  } catch (error) {
    fill(main, h('h1', {}, t('wallet.title')), h('p', {class: 'error', role: 'alert'}, problemText(error)));
  }
}
