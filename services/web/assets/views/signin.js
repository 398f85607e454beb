// Sign-in with a phone code. In a development deployment the sandbox SMS provider hands the
// code back, and the form shows it.

import {sendCode, signIn} from '../api.js';
import {t, problemText} from '../i18n.js';
import {fill, h, settings} from '../lib.js';

const EXAMPLE_PHONE = {FR: '06 12 34 56 78', DE: '0151 12345678'};

/** A sign-in form; `done()` runs once signed in. */
export function signInForm(done) {
  const status = h('p', {role: 'status'});
  const phone = h('input', {id: 'phone', name: 'phone', type: 'tel', autocomplete: 'tel', required: true,
    placeholder: EXAMPLE_PHONE[settings.country] || '', 'aria-describedby': 'phone-hint'});
  const code = h('input', {id: 'code', name: 'code', inputmode: 'numeric', autocomplete: 'one-time-code',
    pattern: '[0-9]{6}', maxlength: '6'});
  const codeStep = h('div', {class: 'field', hidden: true}, h('label', {for: 'code'}, t('signin.code')), code);
  // One submit button: Enter sends the code, then signs in.
  const submit = h('button', {type: 'submit', class: 'primary'}, t('signin.send'));
  let stage = 'phone';
  const fail = (error) => {
    status.className = 'error';
    status.setAttribute('role', 'alert');
    status.textContent = problemText(error);
  };
  const send = async () => {
    if (!phone.reportValidity()) return;
    submit.disabled = true;
    try {
      const sent = await sendCode(phone.value);
      stage = 'code';
      codeStep.hidden = false;
      code.required = true;
      submit.textContent = t('signin.submit');
      status.className = '';
      status.setAttribute('role', 'status');
      status.textContent = t('signin.sent');
      if (sent.sandboxCode) {
        status.append(' ', h('strong', {class: 'sandbox'}, t('signin.sandbox', {code: sent.sandboxCode})));
      }
      code.focus();
    } catch (error) {
      fail(error);
    } finally {
      submit.disabled = false;
    }
  };
  const form = h('form', {class: 'signin', onsubmit: async (event) => {
    event.preventDefault();
    if (stage === 'phone') return send();
    if (!code.reportValidity()) return;
    try {
      await signIn(phone.value, code.value.trim());
      done();
    } catch (error) {
      fail(error);
    }
  }},
  h('div', {class: 'field'},
    h('label', {for: 'phone'}, t('signin.phone')), phone,
    h('p', {id: 'phone-hint', class: 'hint'}, t('signin.phoneHint'))),
  codeStep, h('div', {class: 'actions'}, submit), status);
  return form;
}

/** `#/sign-in?next=`: the form alone. */
export function view(main, params, ctx) {
  const next = params.get('next') || '#/appointments';
  fill(main, h('h1', {}, t('signin.title')), signInForm(() => ctx.go(next)));
}
