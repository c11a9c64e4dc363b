// The viewer's only ways out of the page: HTTP calls to this server (the read key goes in an
// Authorization header and nowhere else) and the browser's own storage.

/** The directory the page was served from: the API sits beside it, also behind a prefix. */
export const BASE = new URL(".", document.baseURI);
const SCOPE = `immutablelog:${BASE.pathname}`;
const READ_KEY = `${SCOPE}:read-key`;
const VIEWER_LINK = `${SCOPE}:viewer-link`;

export class ApiError extends Error {
  constructor(status, reason, message) {
    super(message);
    this.status = status;
    this.reason = reason;
  }
}

// The read key lives in sessionStorage only: gone when the tab closes, never in a URL,
// a cookie or localStorage.
export const session = {
  key: () => sessionStorage.getItem(READ_KEY),
  signIn: (key) => sessionStorage.setItem(READ_KEY, key),
  signOut: () => {
    sessionStorage.removeItem(READ_KEY);
    sessionStorage.removeItem(VIEWER_LINK);
  },
  /** The filter and expiry of the viewer link signed in with, if it is one (public values). */
  link: () => {
    try {
      return JSON.parse(sessionStorage.getItem(VIEWER_LINK));
    } catch {
      return null;
    }
  },
  setLink: (link) =>
    link ? sessionStorage.setItem(VIEWER_LINK, JSON.stringify(link)) : sessionStorage.removeItem(VIEWER_LINK),
};

/**
 * A viewer link's token arrives in the page's fragment (`#token=…`), which browsers never
 * send to a server, so no access log or proxy sees it. It is taken out of the address bar
 * (and so out of history and bookmarks) at once, before anything else runs.
 */
export function takeFragmentToken() {
  const params = new URLSearchParams(location.hash.slice(1));
  const token = params.get("token");
  if (token === null) return null;
  history.replaceState(null, "", `${location.pathname}${location.search}`);
  return token.trim();
}

/** What this browser remembers about the log across visits: public values only. */
export const memory = {
  get(name) {
    try {
      return JSON.parse(localStorage.getItem(`${SCOPE}:${name}`));
    } catch {
      return null;
    }
  },
  set(name, value) {
    localStorage.setItem(`${SCOPE}:${name}`, JSON.stringify(value));
  },
  remove(name) {
    localStorage.removeItem(`${SCOPE}:${name}`);
  },
};

export function apiURL(path, params = {}) {
  const url = new URL(path, BASE);
  for (const [name, value] of Object.entries(params)) {
    if (value !== undefined && value !== null && value !== "") url.searchParams.set(name, String(value));
  }
  return url;
}

/**
 * One call to the API. With ``signal`` (an AbortController's), aborting it cancels the
 * request: the browser closes the connection, and the server stops what it can (a count).
 * An aborted call rejects with the AbortError itself, never an ApiError.
 */
export async function request(path, params = {}, { key = session.key(), accept, body, signal } = {}) {
  const headers = {};
  if (key) headers.Authorization = `Bearer ${key}`;
  if (accept) headers.Accept = accept;
  if (body !== undefined) headers["Content-Type"] = "application/json";
  let response;
  try {
    response = await fetch(apiURL(path, params), {
      method: body === undefined ? "GET" : "POST",
      body: body === undefined ? undefined : JSON.stringify(body),
      headers,
      cache: "no-store",
      credentials: "omit",
      referrerPolicy: "no-referrer",
      signal,
    });
  } catch (failure) {
    if (signal?.aborted) throw failure;
    throw new ApiError(0, "network", "the server could not be reached");
  }
  if (!response.ok) {
    let body = {};
    try {
      body = await response.json();
    } catch {
      // Not our JSON error body (a proxy's page, say): the status says enough.
    }
    throw new ApiError(response.status, body.reason || `http_${response.status}`, body.message || response.statusText);
  }
  return response;
}

export async function getJSON(path, params, options) {
  return (await request(path, params, options)).json();
}

export async function postJSON(path, body, options = {}) {
  return (await request(path, {}, { ...options, body })).json();
}

/** Records a sign-in or an export in the log itself, before it happens. */
export function recordAccess(action, details = {}, options = {}) {
  return postJSON("v1/viewer/access", { action, ...details }, options);
}

/** A text body decoded strictly: invalid UTF-8 is an error, never silently replaced. */
export async function getText(path, params, options) {
  const bytes = await (await request(path, params, options)).arrayBuffer();
  try {
    return new TextDecoder("utf-8", { fatal: true }).decode(bytes);
  } catch {
    throw new ApiError(0, "invalid_utf8", `${path} did not answer valid UTF-8`);
  }
}
