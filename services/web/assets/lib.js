// Small helpers shared by every view: building elements, the country's settings, formatting
// times in the country's time zone and money in its currency.

/** The country's settings, written into the page by the server. */
export const settings = JSON.parse(document.getElementById('pulse-settings').textContent);

/**
 * Builds an element: h('button', {type: 'button', onclick}, 'Text', child...).
 * Attributes starting with `on` are listeners; `false`/`null` attributes are left out.
 */
export function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs || {})) {
    if (value === false || value === null || value === undefined) continue;
    if (name.startsWith('on')) el.addEventListener(name.slice(2), value);
    else if (name === 'class') el.className = value;
    else if (value === true) el.setAttribute(name, '');
    else el.setAttribute(name, value);
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const child of children) {
    if (child === null || child === undefined || child === false) continue;
    if (Array.isArray(child)) append(el, child);
    else el.append(child instanceof Node ? child : String(child));
  }
}

/** Replaces the children of `el`. */
export function fill(el, ...children) {
  el.replaceChildren();
  append(el, children);
  return el;
}

let language = settings.languages[0];

/** Sets the language the formatters use. */
export function useLanguage(lang) {
  language = lang;
}

function locale() {
  // The country's conventions in the chosen language: `de-FR` formats like German speakers
  // in France (French currency, German words).
  return `${language}-${settings.country}`;
}

function format(options) {
  return new Intl.DateTimeFormat(locale(), {timeZone: settings.timezone, ...options});
}

/** `Tuesday 12 March`, in the country's time zone. */
export const day = (date) => format({weekday: 'long', day: 'numeric', month: 'long'}).format(new Date(date));
/** `Tue 12`, for a week's columns. */
export const shortDay = (date) => format({weekday: 'short', day: 'numeric', month: 'short'}).format(new Date(date));
/** `14:30`. */
export const time = (date) => format({hour: '2-digit', minute: '2-digit'}).format(new Date(date));
/** `Tuesday 12 March, 14:30`. */
export const dateTime = (date) =>
  format({weekday: 'long', day: 'numeric', month: 'long', hour: '2-digit', minute: '2-digit'}).format(new Date(date));

/** Money from integer minor units: `19,90 €`. Never through floats beyond display. */
export function money(minor, currency = settings.currency) {
  const formatter = new Intl.NumberFormat(locale(), {style: 'currency', currency});
  const digits = formatter.resolvedOptions().maximumFractionDigits;
  return formatter.format(minor / 10 ** digits);
}

/** The country's local date (`YYYY-MM-DD`) of an instant. */
export function localDate(date) {
  const parts = new Intl.DateTimeFormat('en-CA', {
    timeZone: settings.timezone, year: 'numeric', month: '2-digit', day: '2-digit',
  }).formatToParts(new Date(date));
  const get = (type) => parts.find((p) => p.type === type).value;
  return `${get('year')}-${get('month')}-${get('day')}`;
}

/** `YYYY-MM-DD` plus `days` (calendar arithmetic, no time zone involved). */
export function addDays(isoDate, days) {
  const d = new Date(`${isoDate}T12:00:00Z`);
  d.setUTCDate(d.getUTCDate() + days);
  return d.toISOString().slice(0, 10);
}

/** A new `Idempotency-Key`. */
export const newKey = () => crypto.randomUUID();

/** Moves the keyboard focus to the view's heading after a navigation. */
export function focusHeading(root) {
  const heading = root.querySelector('h1');
  if (heading) {
    heading.setAttribute('tabindex', '-1');
    heading.focus({preventScroll: false});
  }
}
