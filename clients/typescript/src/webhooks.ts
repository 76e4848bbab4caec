// Verifying a webhook delivery (Standard Webhooks, npm `standardwebhooks`).
//
// The node POSTs each event to an endpoint with the headers `webhook-id`
// ("evt_<event id>", the same on every retry: deduplicate on it),
// `webhook-timestamp` (Unix seconds) and `webhook-signature`
// ("v1,<base64 HMAC-SHA256>", two during a secret rotation). Verify the RAW
// body (the bytes received, before any JSON parsing) with the endpoint's
// secret ("whsec_...", shown once by POST /v1/webhooks).
import { Webhook, WebhookVerificationError } from 'standardwebhooks';
import type { components } from './schema.js';

export { WebhookVerificationError };

// Returns the event, or throws WebhookVerificationError (bad or missing
// signature, or a timestamp more than 5 minutes off: a replay).
export function verifyWebhook(
  secret: string,
  rawBody: string | Buffer,
  headers: Record<string, string | string[] | undefined>,
): components['schemas']['Event'] {
  const flat: Record<string, string> = {};
  for (const [k, v] of Object.entries(headers)) {
    if (v !== undefined) flat[k.toLowerCase()] = Array.isArray(v) ? v.join(' ') : v;
  }
  return new Webhook(secret).verify(rawBody, flat) as components['schemas']['Event'];
}
