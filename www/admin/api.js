// The admin API as the console calls it: one function per endpoint, the token from the
// session, and one error type. A 401 means the token is missing, wrong or revoked; the
// console then shows the sign-in form again (see app.js).

/** An answer other than 2xx, or no answer at all (`status` 0). */
export class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

/**
 * A client bound to `token`. `onUnauthorized(error)` runs once for every 401 before the
 * call rejects, so each page only has to show its own errors.
 */
export function createApi(token, onUnauthorized) {
  async function request(method, path, body, { raw = false } = {}) {
    const headers = { Authorization: `Bearer ${token}` };
    if (body !== undefined) headers['Content-Type'] = 'application/json';
    let response;
    try {
      response = await fetch(`/admin/v1${path}`, {
        method,
        headers,
        body: body === undefined ? undefined : JSON.stringify(body),
      });
    } catch (cause) {
      throw new ApiError(0, 'unreachable', `the collector did not answer (${cause.message})`);
    }
    if (response.ok) {
      if (response.status === 204) return null;
      return raw ? response.text() : response.json();
    }

    let code = 'http_error';
    let message = `the collector answered ${response.status} ${response.statusText}`;
    try {
      const answer = await response.json();
      code = answer.error ?? code;
      message = answer.message ?? message;
    } catch {
      // Not JSON (a proxy's page, say): keep the status line.
    }
    const error = new ApiError(response.status, code, message);
    if (response.status === 401) onUnauthorized(error);
    throw error;
  }

  const env = (id) => `/environments/${encodeURIComponent(id)}`;
  const user = (id, environment) =>
    `/users/${encodeURIComponent(id)}?environment=${encodeURIComponent(environment)}`;

  return {
    environments: () => request('GET', '/environments'),
    createEnvironment: (name) => request('POST', '/environments', { name }),
    renameEnvironment: (id, name) => request('PATCH', env(id), { name }),
    rotateWriteKey: (id) => request('POST', `${env(id)}/write-key`),
    setIdentitySecret: (id) => request('POST', `${env(id)}/identity-secret`),
    removeIdentitySecret: (id) => request('DELETE', `${env(id)}/identity-secret`),
    purge: (id, confirm) => request('POST', `${env(id)}/purge`, { confirm }),

    retention: (id) => request('GET', `${env(id)}/retention`),
    setRetention: (id, rule) => request('PUT', `${env(id)}/retention`, rule),
    sweep: (id) => request('POST', `${env(id)}/retention/sweep`),

    segmentPreview: (id, filter) => request('POST', `${env(id)}/segments/preview`, { filter }),
    segmentUsers: (id, filter, limit, offset) =>
      request('POST', `${env(id)}/segments/users`, { filter, limit, offset }),
    deleteSegment: (id, filter) => request('POST', `${env(id)}/segments/delete`, { filter }),
    job: (id, jobId) => request('GET', `${env(id)}/jobs/${encodeURIComponent(jobId)}`),
    cancelJob: (id, jobId) =>
      request('POST', `${env(id)}/jobs/${encodeURIComponent(jobId)}/cancel`),

    user: (environment, id) => request('GET', user(id, environment)),
    deleteUser: (environment, id) => request('DELETE', user(id, environment)),
    exportUser: (environment, id) =>
      request('GET', `/users/${encodeURIComponent(id)}/export?format=json` +
        `&environment=${encodeURIComponent(environment)}`, undefined, { raw: true }),

    audit: ({ environment, before, limit = 50 } = {}) => {
      const query = new URLSearchParams({ limit: String(limit) });
      if (environment) query.set('environment', environment);
      if (before) query.set('before', String(before));
      return request('GET', `/audit?${query}`);
    },
    verifyAudit: () => request('GET', '/audit/verify'),
  };
}
