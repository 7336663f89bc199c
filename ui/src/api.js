// The API, as the CLI uses it: the bearer token the operator logged in
// with, kept in this tab's session storage (never in a URL).

const TOKEN_KEY = 'flotilla.apiToken';

export const token = () => sessionStorage.getItem(TOKEN_KEY) || '';
export const setToken = (value) => sessionStorage.setItem(TOKEN_KEY, value);
export const forgetToken = () => sessionStorage.removeItem(TOKEN_KEY);

/** An answer the API refused: its status and its JSON error's text. */
export class ApiError extends Error {
  constructor(status, message, reason) {
    super(message);
    this.status = status;
    this.reason = reason;
  }
}

function headers(json) {
  const h = { Authorization: `Bearer ${token()}` };
  if (json) h['Content-Type'] = 'application/json';
  return h;
}

async function refusal(response) {
  const text = await response.text();
  try {
    const body = JSON.parse(text);
    return new ApiError(response.status, body.error || text, body.reason || '');
  } catch {
    return new ApiError(response.status, text || response.statusText, '');
  }
}

/** A JSON request; throws ApiError when refused. */
export async function api(method, path, body) {
  const response = await fetch(path, {
    method,
    headers: headers(body !== undefined),
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  if (!response.ok) throw await refusal(response);
  const text = await response.text();
  return text ? JSON.parse(text) : null;
}

/** A text answer with its headers (pod logs). */
export async function text(path) {
  const response = await fetch(path, { headers: headers(false) });
  if (!response.ok) throw await refusal(response);
  return { text: await response.text(), headers: response.headers };
}

/**
 * Follows `GET /api/v1/watch?resources=...` and hands every event to
 * `onEvent` until the stream ends or `signal` aborts. One connection for
 * every kind: a browser keeps six per server.
 */
export async function watch(resources, onEvent, signal) {
  // Replicas come without their spec but nodeName: most of their bytes, never shown.
  const response = await fetch(`/api/v1/watch?resources=${resources.join(',')}&summary=true`, {
    headers: headers(false),
    signal,
  });
  if (!response.ok) throw await refusal(response);
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = '';
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buffer += value;
    let end;
    while ((end = buffer.indexOf('\n')) >= 0) {
      const line = buffer.slice(0, end);
      buffer = buffer.slice(end + 1);
      if (line.trim()) onEvent(JSON.parse(line));
    }
  }
}

export const objectPath = (resource, namespace, name) =>
  namespace
    ? `/api/v1/namespaces/${encodeURIComponent(namespace)}/${resource}/${encodeURIComponent(name)}`
    : `/api/v1/${resource}/${encodeURIComponent(name)}`;

/**
 * Reads an object, changes it and writes it back with its resourceVersion
 * as the precondition; on a conflict (someone wrote in between) reads it
 * again and retries, as `flotilla rollout` does with one try.
 */
export async function modify(resource, namespace, name, change) {
  const path = objectPath(resource, namespace, name);
  for (let attempt = 0; ; attempt++) {
    const object = await api('GET', path);
    change(object);
    try {
      return await api('PUT', path, object);
    } catch (error) {
      if (!(error instanceof ApiError && error.status === 409) || attempt >= 4) throw error;
    }
  }
}
