// The session and every call to Pulse's APIs (same origin, through the Ingress).
//
// The access token lives in this module's memory only; the refresh token is an HttpOnly,
// Secure, SameSite=Strict cookie that identity sets and script never sees. A reload restores
// the session by one refresh; an access token that expires is refreshed once, for every call
// waiting on it (a refresh token works once: two refreshes at a time would revoke the session).

/** A refused or failed call: `status` (0 without an answer) and the problem's `slug`. */
export class ApiError extends Error {
  constructor(status, problem) {
    super(problem.detail || problem.title || `HTTP ${status}`);
    this.status = status;
    this.problem = problem;
    this.slug = String(problem.type || '').split('/').pop();
  }
}

const HINT = 'pulse.session';
let access = null;
let userId = null;
let refreshing = null;
const listeners = new Set();

/** The signed-in user's id, or null. */
export const currentUser = () => userId;

/** Calls `fn(userId)` whenever the session starts or ends. */
export function onSessionChange(fn) {
  listeners.add(fn);
}

function started(tokens) {
  access = tokens.accessToken;
  userId = tokens.userId;
  localStorage.setItem(HINT, '1');
  for (const fn of listeners) fn(userId);
}

function ended() {
  const had = access !== null;
  access = null;
  userId = null;
  localStorage.removeItem(HINT);
  if (had) for (const fn of listeners) fn(null);
}

async function send(method, path, {body, key, token}) {
  const headers = {Accept: 'application/json'};
  if (body !== undefined) headers['Content-Type'] = 'application/json';
  if (token) headers.Authorization = `Bearer ${token}`;
  if (key) headers['Idempotency-Key'] = key;
  try {
    return await fetch(path, {
      method, headers, credentials: 'same-origin',
      body: body === undefined ? undefined : JSON.stringify(body),
    });
  } catch {
    throw new ApiError(0, {type: 'network', title: 'network'});
  }
}

async function answer(response) {
  if (response.status === 204) return null;
  const text = await response.text();
  let data = null;
  try {
    data = text ? JSON.parse(text) : null;
  } catch {
    data = {title: text};
  }
  if (!response.ok) throw new ApiError(response.status, data || {title: response.statusText});
  return data;
}

/** One refresh at a time across this browser's tabs, where the browser can tell them apart. */
const exclusive = (fn) => (navigator.locks ? navigator.locks.request('pulse-refresh', fn) : fn());

/** Exchanges the refresh cookie for a new access token; one exchange at a time. */
export function refresh() {
  refreshing ??= (async () => {
    try {
      // Another tab's refresh may hold the lock: this one then sends the cookie it rotated.
      const response = await exclusive(() => send('POST', '/v1/auth/refresh', {body: {}}));
      if (response.status === 401) {
        ended();
        return false;
      }
      started(await answer(response));
      return true;
    } finally {
      refreshing = null;
    }
  })();
  return refreshing;
}

/**
 * Calls the API: `api('POST', '/v1/appointments', {body, key})`. A 401 with a session
 * refreshes it once and retries (with the same `Idempotency-Key`).
 */
export async function api(method, path, options = {}) {
  let response = await send(method, path, {...options, token: access});
  if (response.status === 401 && access !== null && (await refresh())) {
    response = await send(method, path, {...options, token: access});
  }
  return answer(response);
}

/** Restores the session of a previous visit, if the browser still holds its cookie. */
export async function restore() {
  if (localStorage.getItem(HINT) !== '1') return false;
  try {
    return await refresh();
  } catch {
    return false;
  }
}

/** Asks identity for a sign-in code; in development the sandbox returns it (`sandboxCode`). */
export const sendCode = (phone) => api('POST', '/v1/auth/otp', {body: {phone}});

/** Signs in with the code; the refresh token comes back as a cookie. */
export async function signIn(phone, code) {
  started(await api('POST', '/v1/auth/token', {body: {phone, code, refreshTokenIn: 'cookie'}}));
}

/** Signs out: the session is revoked and the cookie cleared. */
export async function signOut() {
  try {
    await api('POST', '/v1/auth/logout', {body: {}});
  } finally {
    ended();
  }
}

/** The access token, for the notification stream. */
export const accessToken = () => access;
