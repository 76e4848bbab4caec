// The node's JSON API, called with the user's bearer token (same origin).
// Errors keep the node's {code, message} so the page can show them as sent.

export class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
  // The route does not exist on this node (an older tipd, or a feature
  // it was built without).
  get unavailable() {
    return this.status === 404 && this.code === 'not_found';
  }
  get unauthorized() {
    return this.status === 401;
  }
}

export class Api {
  constructor(token, fetchImpl) {
    this.token = token;
    this.fetchImpl = fetchImpl || ((...a) => fetch(...a));
  }

  async request(method, path, body) {
    const headers = {Authorization: 'Bearer ' + this.token, Accept: 'application/json'};
    const init = {method, headers, cache: 'no-store'};
    if (body !== undefined) {
      headers['Content-Type'] = 'application/json';
      init.body = JSON.stringify(body);
    }
    let res;
    try {
      res = await this.fetchImpl(path, init);
    } catch (e) {
      throw new ApiError(0, 'NETWORK', 'the node did not answer (' + e.message + ')');
    }
    let json = null;
    const text = await res.text();
    if (text) {
      try {
        json = JSON.parse(text);
      } catch (e) {
        json = null;
      }
    }
    if (!res.ok) {
      const code = (json && json.code) || 'HTTP_' + res.status;
      const message = (json && json.message) || res.statusText || 'request failed';
      throw new ApiError(res.status, code, message);
    }
    return json || {};
  }

  get(path) {
    return this.request('GET', path);
  }
}
