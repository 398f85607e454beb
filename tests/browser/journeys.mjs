// The web app's journeys in Debian's Chromium, headless, driven by playwright-core, against
// real `pulse serve --target all` processes (started by services/pulse/tests/browser.rs, which
// passes them in PULSE_BROWSER_COUNTRIES). Each country runs at a desktop and a phone viewport:
// find a practitioner (city, near me), a week of slots, sign in with the sandbox code, book with
// a double click (one Idempotency-Key, one appointment), the live notification, reschedule,
// a cancellation the country's rules refuse (in words), a cancellation; the flash sale
// (countdown, live stock, buy, pay on the sandbox's checkout page, the wallet, already bought,
// sold out). One run books with the keyboard alone. axe-core checks each page: no serious or
// critical violation. Exits non-zero on the first broken expectation.

import {createRequire} from 'node:module';
import {readFileSync} from 'node:fs';
import assert from 'node:assert/strict';

const modules = process.env.PULSE_BROWSER_MODULES;
assert.ok(modules, 'PULSE_BROWSER_MODULES: the node_modules with playwright-core and axe-core (./dev installs them)');
const require = createRequire(`${modules}/`);
const {chromium} = require('playwright-core');
const AXE = readFileSync(require.resolve('axe-core/axe.min.js'), 'utf8');
const countries = JSON.parse(process.env.PULSE_BROWSER_COUNTRIES);
const only = process.env.PULSE_BROWSER_ONLY || '';

const WORDS = {
  fr: {search: 'Trouver un praticien', signIn: 'Recevoir un code', signInSubmit: 'Se connecter', book: 'Réserver ce rendez-vous',
    booked: 'Votre rendez-vous est réservé', appointments: 'Mes rendez-vous', cancel: 'Annuler', yesCancel: 'Oui, l’annuler',
    tooLate: 'trop tard', cancelled: 'Annulé', reschedule: 'Déplacer', move: 'Déplacer mon rendez-vous ici', nearMe: 'Autour de moi',
    seeSlots: 'Voir les créneaux', buy: 'Acheter', pay: 'Payer', paid: 'Payé', alreadyBought: 'déjà acheté', soldOut: 'Épuisé',
    startsIn: 'Début dans', left: 'Il reste', pending: 'En attente de paiement', wallet: 'Portefeuille', search_: 'Rechercher',
    city: 'Ville', next: 'Semaine suivante', specialty: 'Spécialité'},
  de: {search: 'Arzt finden', signIn: 'Code senden', signInSubmit: 'Anmelden', book: 'Diesen Termin buchen',
    booked: 'Ihr Termin ist gebucht', appointments: 'Meine Termine', cancel: 'Absagen', yesCancel: 'Ja, absagen',
    tooLate: 'zu spät', cancelled: 'Abgesagt', reschedule: 'Verlegen', move: 'Meinen Termin hierher verlegen', nearMe: 'In meiner Nähe',
    seeSlots: 'Freie Termine ansehen', buy: 'Jetzt kaufen', pay: 'Jetzt bezahlen', paid: 'Bezahlt', alreadyBought: 'schon gekauft',
    soldOut: 'Ausverkauft', startsIn: 'Beginnt in', left: 'Noch', pending: 'Wartet auf Zahlung', wallet: 'Gutscheine',
    search_: 'Suchen', city: 'Stadt', next: 'Nächste Woche', specialty: 'Fachrichtung'},
};

const VIEWPORTS = {
  desktop: {viewport: {width: 1280, height: 900}},
  phone: {viewport: {width: 390, height: 844}, isMobile: true, hasTouch: true, deviceScaleFactor: 2},
};

const log = (...args) => console.log(new Date().toISOString().slice(11, 23), ...args);

async function call(country, method, path, body, token = country.adminToken) {
  const response = await fetch(`${country.url}${path}`, {
    method,
    headers: {'Content-Type': 'application/json', Authorization: `Bearer ${token}`, 'Idempotency-Key': crypto.randomUUID()},
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await response.text();
  assert.ok(response.ok, `${method} ${path}: ${response.status} ${text}`);
  return text ? JSON.parse(text) : null;
}

/** axe-core on the page as it is: no serious or critical violation. */
async function accessible(page, where) {
  await page.evaluate(AXE);
  const result = await page.evaluate(async () => {
    // eslint-disable-next-line no-undef
    const run = await axe.run(document, {resultTypes: ['violations']});
    return run.violations.map((v) => ({id: v.id, impact: v.impact, help: v.help, nodes: v.nodes.map((n) => n.target.join(' ')).slice(0, 3)}));
  });
  const bad = result.filter((v) => v.impact === 'serious' || v.impact === 'critical');
  assert.deepEqual(bad, [], `${where}: accessibility violations ${JSON.stringify(bad, null, 1)}`);
}

/** On a phone nothing is wider than the screen. */
async function fitsTheScreen(page, where) {
  const [scroll, width] = await page.evaluate(() => [document.documentElement.scrollWidth, window.innerWidth]);
  assert.ok(scroll <= width, `${where}: the page is ${scroll}px wide on a ${width}px screen`);
}

async function practitionerFor(country, run) {
  const allDay = [{start: '00:00', end: '23:30'}];
  const city = `Testville ${run}`;
  const created = await call(country, 'POST', '/v1/practitioners', {
    name: `Dr ${run}`, specialty: 'dermatology', city, address: '1 place du Test',
    latitude: country.lat, longitude: country.lng, languages: [country.lang], consultationPriceMinor: 2500,
    schedule: {slotMinutes: 30, weekly: {Mon: allDay, Tue: allDay, Wed: allDay, Thu: allDay, Fri: allDay, Sat: allDay, Sun: allDay}},
  });
  return {id: created.id, name: created.name, city};
}

async function signInOnPage(page, country, words, phone, {keyboard = false} = {}) {
  const field = page.getByLabel(country.lang === 'fr' ? 'Téléphone mobile' : 'Mobiltelefon');
  if (keyboard) {
    await field.focus();
    await page.keyboard.type(phone);
    await page.keyboard.press('Enter');
  } else {
    await field.fill(phone);
    await page.getByRole('button', {name: words.signIn}).click();
  }
  const sandbox = page.locator('.sandbox');
  await sandbox.waitFor();
  const code = (await sandbox.textContent()).match(/\d{6}/)[0];
  // The code field has the focus once the code is sent.
  await page.keyboard.type(code);
  if (keyboard) await page.keyboard.press('Enter');
  else await page.getByRole('button', {name: words.signInSubmit, exact: true}).click();
}

async function bookingJourney(page, country, words, run, {keyboard}) {
  const doctor = await practitionerFor(country, run);
  const phone = country.phone(run);
  const posts = [];
  page.on('request', (request) => {
    if (request.method() === 'POST' && new URL(request.url()).pathname === '/v1/appointments') {
      posts.push(request.headers()['idempotency-key']);
    }
  });

  // Find: by city, then near me (the browser's position is the practitioner's).
  await page.goto(`${country.url}/`);
  await page.waitForSelector('body[data-ready="true"]');
  assert.equal(await page.locator('h1').textContent(), words.search);
  assert.equal(await page.getAttribute('html', 'lang'), country.lang);
  await accessible(page, `${run} search`);
  if (keyboard) {
    // Keyboard alone: Tab to the city field, type, Enter submits.
    await page.keyboard.press('Tab');
    let focused = '';
    for (let i = 0; i < 30 && focused !== 'city'; i++) {
      await page.keyboard.press('Tab');
      focused = await page.evaluate(() => document.activeElement.id);
    }
    assert.equal(focused, 'city', 'the city field is reachable with Tab');
    await page.keyboard.type(doctor.city);
    await page.keyboard.press('Enter');
  } else {
    await page.getByLabel(words.specialty).selectOption('dermatology');
    await page.getByLabel(words.city).fill(doctor.city);
    await page.getByRole('button', {name: words.search_, exact: true}).click();
  }
  const card = page.locator('.card', {hasText: doctor.name});
  await card.waitFor();
  if (!keyboard) assert.match(page.url(), /specialty=dermatology/, 'the search names the specialty');
  await page.getByRole('button', {name: words.nearMe}).click();
  await page.waitForURL(/near=/);
  await page.locator('.card', {hasText: doctor.name}).waitFor();
  assert.match(await page.locator('.card', {hasText: doctor.name}).textContent(), /km/);
  if (country.viewport === 'phone') await fitsTheScreen(page, `${run} results`);

  // A week of slots, in the country's time zone (the browser runs in another one).
  const open = page.locator('.card', {hasText: doctor.name}).getByRole('link', {name: new RegExp(doctor.name)}).last();
  if (keyboard) {
    await open.focus();
    await page.keyboard.press('Enter');
  } else {
    await open.click();
  }
  await page.locator('h1', {hasText: doctor.name}).waitFor();
  const first = page.locator('button.slot').first();
  await first.waitFor();
  const firstApi = (await call(country, 'GET', `/v1/practitioners/${doctor.id}/slots`)).slots[0];
  assert.equal(await first.textContent(), firstApi.start.slice(11, 16), 'slot times are the country\'s local times');

  // Next week: its first day is a week from today; a slot there opens the confirmation,
  // which asks to sign in first.
  const nextWeek = page.getByRole('link', {name: words.next});
  if (keyboard) {
    await nextWeek.focus();
    await page.keyboard.press('Enter');
  } else {
    await nextWeek.click();
  }
  await page.waitForURL(/week=/);
  const farDate = new URLSearchParams(new URL(page.url()).hash.split('?')[1]).get('week');
  const far = (await call(country, 'GET', `/v1/practitioners/${doctor.id}/slots?from=${farDate}&to=${farDate}`)).slots[20];
  const farButton = page.locator('section.day').first().locator('button.slot', {hasText: far.start.slice(11, 16)});
  await farButton.waitFor();
  if (keyboard) {
    await farButton.focus();
    await page.keyboard.press('Enter');
  } else {
    await farButton.click();
  }
  await signInOnPage(page, country, words, phone, {keyboard});
  const confirm = page.getByRole('button', {name: words.book});
  await confirm.waitFor();
  await accessible(page, `${run} confirmation`);
  if (keyboard) {
    await confirm.focus();
    await page.keyboard.press('Enter');
    await page.keyboard.press('Enter');
  } else {
    await confirm.dblclick();
  }
  await page.locator('h2', {hasText: words.booked}).waitFor();
  assert.ok(posts.length >= 1 && new Set(posts).size === 1, `one Idempotency-Key for the booking: ${posts}`);

  // The notifier's live stream brings the confirmation while the page is open.
  await page.locator('.toast').first().waitFor({timeout: 30000});

  // My appointments: exactly one, at the booked time.
  await page.goto(`${country.url}/#/appointments`);
  await page.locator('h1', {hasText: words.appointments}).waitFor();
  const upcoming = page.locator('li.card', {has: page.getByRole('button', {name: words.cancel, exact: true})});
  await upcoming.first().waitFor();
  assert.equal(await upcoming.count(), 1, 'a double click booked once');
  await accessible(page, `${run} appointments`);
  if (country.viewport === 'phone') await fitsTheScreen(page, `${run} appointments`);

  // Reschedule to the next day.
  await upcoming.first().getByRole('link', {name: words.reschedule}).click();
  await page.locator('.notice').waitFor();
  // The week shown starts on the appointment's day: the next day is the second column.
  const movedDate = new URLSearchParams(new URL(page.url()).hash.split('?')[1]).get('week');
  assert.equal(movedDate, farDate);
  const dayAfter = new Date(Date.parse(`${farDate}T12:00:00Z`) + 86400e3).toISOString().slice(0, 10);
  const later = (await call(country, 'GET', `/v1/practitioners/${doctor.id}/slots?from=${dayAfter}&to=${dayAfter}`)).slots[24];
  await page.locator('section.day').nth(1).locator('button.slot', {hasText: later.start.slice(11, 16)}).click();
  await page.getByRole('button', {name: words.move}).click();
  await page.locator('h2', {hasText: words.booked}).waitFor();

  // A slot within the cancellation cut-off: booked, then the refusal to cancel in words.
  await page.goto(`${country.url}/#/practitioners/${doctor.id}`);
  await page.locator('button.slot').first().click();
  await page.getByRole('button', {name: words.book}).click();
  await page.locator('h2', {hasText: words.booked}).waitFor();
  await page.goto(`${country.url}/#/appointments`);
  await page.locator('h1', {hasText: words.appointments}).waitFor();
  const cards = page.locator('li.card', {has: page.getByRole('button', {name: words.cancel, exact: true})});
  await cards.first().waitFor();
  assert.equal(await cards.count(), 2);
  await cards.first().getByRole('button', {name: words.cancel, exact: true}).click();
  await page.getByRole('button', {name: words.yesCancel}).click();
  const refusal = page.getByRole('alert');
  await refusal.waitFor();
  const text = await refusal.textContent();
  assert.ok(text.includes(words.tooLate) && text.includes('24'), `the refusal explains the rule: ${text}`);

  // The moved appointment (the second upcoming one) can be cancelled.
  await page.locator('li.card').nth(1).getByRole('button', {name: words.cancel, exact: true}).click();
  await page.getByRole('button', {name: words.yesCancel}).click();
  await page.locator('.badge.cancelled', {hasText: words.cancelled}).first().waitFor();
  log(run, 'booking journey done');
  return {phone};
}

/** A sale of 5 vouchers starting `inMs` from now. */
async function scheduleSale(country, run, inMs) {
  const id = `web-${run}-${Math.random().toString(36).slice(2, 6)}`.toLowerCase().replace(/[^a-z0-9-]/g, '-');
  const startsAt = Date.now() + inMs;
  await call(country, 'PUT', `/v1/campaigns/${id}`, {
    voucherTitle: `Voucher ${run}`, voucherValueMinor: 2000, currency: 'EUR', priceMinor: 990, stock: 5,
    perUserLimit: 1, startsAt: new Date(startsAt).toISOString(), endsAt: new Date(startsAt + 600e3).toISOString(),
  });
  return {id, startsAt};
}

async function saleJourney(page, country, words, run, scheduled) {
  // Scheduled before the booking journey, so its countdown mostly ran meanwhile; one that
  // starts too soon (the countdown must be seen) or too late (waiting) is replaced.
  const left = scheduled.startsAt - Date.now();
  const sale = left > 8000 && left < 16000 ? scheduled : await scheduleSale(country, run, 10000);
  const id = sale.id;
  await page.goto(`${country.url}/#/sale`);
  await page.locator(`a[href="#/sale/${id}"]`).click();
  await page.locator('.countdown', {hasText: words.startsIn}).waitFor();
  assert.match(await page.locator('.countdown').textContent(), /\d\d:\d\d:\d\d/);
  const buy = page.getByRole('button', {name: words.buy});
  assert.ok(await buy.isDisabled(), 'no buying before the start');
  await accessible(page, `${run} sale`);
  await page.locator('.stock', {hasText: '5'}).waitFor();
  await buy.click({timeout: 45000});
  await page.waitForURL(/#\/orders\//, {timeout: 20000});
  await page.locator('.badge', {hasText: words.pending}).waitFor({timeout: 20000});
  const orderUrl = page.url();
  await accessible(page, `${run} order`);

  // Someone else buys: the stock moves on an open page.
  await page.goto(`${country.url}/#/sale/${id}`);
  await page.locator('.stock', {hasText: '4'}).waitFor();
  await call(country, 'POST', `/v1/seckill/${id}/orders`, undefined);
  await page.locator('.stock', {hasText: '3'}).waitFor({timeout: 10000});
  // Already bought, in words.
  await page.getByRole('button', {name: words.buy}).click();
  const already = page.getByRole('alert');
  await already.waitFor();
  assert.ok((await already.textContent()).includes(words.alreadyBought), await already.textContent());

  // Pay on the provider's checkout page, come back to a paid order, see the voucher.
  await page.goto(orderUrl);
  await page.getByRole('button', {name: words.pay}).click();
  await page.waitForURL(/\/v1\/payments\/sandbox\//);
  await accessible(page, `${run} checkout`);
  if (country.viewport === 'phone') await fitsTheScreen(page, `${run} checkout`);
  await page.locator('form[action$="/pay"] button, button[formaction$="/pay"]').first().click();
  await page.waitForURL(/#\/orders\//);
  await page.locator('.badge', {hasText: words.paid}).waitFor({timeout: 20000});
  await page.goto(`${country.url}/#/wallet`);
  const voucher = page.locator('li.card', {hasText: `Voucher ${run}`});
  for (let i = 0; i < 30 && !(await voucher.count()); i++) {
    await page.waitForTimeout(1000);
    await page.reload();
    await page.waitForSelector('body[data-ready="true"]');
  }
  await voucher.waitFor({timeout: 5000});
  await accessible(page, `${run} wallet`);

  // Sold out, in words.
  const gone = `${id}-gone`;
  await call(country, 'PUT', `/v1/campaigns/${gone}`, {
    voucherTitle: `Gone ${run}`, voucherValueMinor: 2000, currency: 'EUR', priceMinor: 990, stock: 1,
    perUserLimit: 1, startsAt: new Date(Date.now() - 1000).toISOString(), endsAt: new Date(Date.now() + 600e3).toISOString(),
  });
  await call(country, 'POST', `/v1/seckill/${gone}/orders`, undefined);
  await page.goto(`${country.url}/#/sale/${gone}`);
  await page.locator('.badge', {hasText: words.soldOut}).waitFor();
  assert.ok(await page.getByRole('button', {name: words.buy}).isDisabled());
  log(run, 'sale journey done');
}

/** The language selector: the page switches, the profile keeps the choice, a reload keeps it. */
async function languageChoice(page, country) {
  await page.goto(`${country.url}/#/`);
  await page.waitForSelector('body[data-ready="true"]');
  const saved = page.waitForResponse((r) => r.request().method() === 'PATCH' && r.url().endsWith('/v1/me/profile'));
  await page.getByLabel('Sprache').selectOption('en');
  await page.locator('h1', {hasText: 'Find a practitioner'}).waitFor();
  assert.equal(await page.getAttribute('html', 'lang'), 'en');
  const answer = await saved;
  assert.equal(answer.status(), 200, 'the profile keeps the language');
  assert.equal((await answer.json()).language, 'en');
  await page.reload();
  await page.waitForSelector('body[data-ready="true"]');
  assert.equal(await page.locator('h1').textContent(), 'Find a practitioner');
}

const browser = await chromium.launch({
  executablePath: process.env.PULSE_CHROMIUM || '/usr/bin/chromium',
  args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking',
    '--disable-component-update', '--disable-sync', '--disable-dev-shm-usage'],
});
let failed = false;
try {
  for (const country of countries) {
    const words = WORDS[country.lang];
    country.phone = (run) => country.phoneBase + String(Math.floor(Math.random() * 1e6)).padStart(6, '0');
    for (const viewport of ['desktop', 'phone']) {
      const run = `${country.code}-${viewport}-${Math.random().toString(36).slice(2, 7)}`;
      if (only && !run.startsWith(only)) continue;
      const context = await browser.newContext({
        ...VIEWPORTS[viewport],
        // Another language and time zone than the country's: the app follows the country.
        locale: 'en-US', timezoneId: 'America/New_York',
        geolocation: {latitude: country.lat, longitude: country.lng}, permissions: ['geolocation'],
      });
      const page = await context.newPage();
      page.on('pageerror', (error) => {
        console.error(run, 'page error:', error.message);
        failed = true;
      });
      // The first load's JavaScript and CSS, as sent (compressed).
      const sizes = [];
      page.on('requestfinished', async (request) => {
        if (/\/assets\/.*\.(js|css)$/.test(request.url())) sizes.push((await request.sizes()).responseBodySize);
      });
      try {
        const sale = await scheduleSale(country, run, 30000);
        await bookingJourney(page, {...country, viewport}, words, run, {keyboard: country.code === 'FR' && viewport === 'desktop'});
        const firstLoad = sizes.reduce((a, b) => a + b, 0);
        assert.ok(firstLoad > 0 && firstLoad < 150 * 1024, `first load: ${firstLoad} bytes of compressed JS and CSS`);
        await saleJourney(page, {...country, viewport}, words, run, sale);
        if (country.code === 'DE' && viewport === 'desktop') await languageChoice(page, country);
      } catch (error) {
        failed = true;
        console.error(`${run}: ${error.stack || error}`);
        await page.screenshot({path: `${process.env.PULSE_BROWSER_ARTIFACTS || '/tmp'}/${run}.png`, fullPage: true}).catch(() => {});
        console.error(`${run}: screenshot ${process.env.PULSE_BROWSER_ARTIFACTS || '/tmp'}/${run}.png; page text:\n${(await page.locator('body').innerText().catch(() => '')).slice(0, 2000)}`);
      } finally {
        await context.close();
      }
      log(run, failed ? 'FAILED' : 'passed');
      if (failed) break;
    }
    if (failed) break;
  }
} finally {
  await browser.close();
}
process.exit(failed ? 1 : 0);
