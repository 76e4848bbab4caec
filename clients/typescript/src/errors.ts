// A non-2xx answer of the node: the HTTP status and its ApiError
// ({code, message}). Thrown by `unwrap`; passed to followEvents' onError when
// the node ends an event stream (e.g. 401 TOKEN_REVOKED).
export class TipdApiError extends Error {
  constructor(
    readonly status: number,
    readonly code: string,
    message: string,
  ) {
    super(`${status} ${code}: ${message}`);
    this.name = 'TipdApiError';
  }
}
