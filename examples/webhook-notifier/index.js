// webhook-notifier: an example of a notifier written outside hmgate, in plain JavaScript with a
// plain JSON Schema for its options, loaded by path. It POSTs each start or stop order hmgate
// decides on to a URL of your choice as JSON; see README.md in this folder.
//
// The contract it follows (README.md "Writing a plugin"): send(order) resolves when the order was
// delivered and throws when it was not; hmgate then keeps the order and tries again next cycle.

// The one import a plugin needs: hmgate's SDK (`hmgate/sdk` once hmgate is installed; inside this
// repository it resolves to the built package itself). maskUrl keeps credentials in a URL out of
// every log line and error message.
import { definePlugin, maskUrl } from 'hmgate/sdk';

export default definePlugin({
  name: 'webhook-notifier',
  kind: 'sink',
  family: 'common',
  description: 'POSTs each start and stop order as JSON to a URL.',
  optionsSchema: {
    type: 'object',
    properties: {
      url: {
        type: 'string',
        pattern: '^https?://',
        description: 'Where each order is POSTed (http:// or https://).',
      },
      headers: {
        type: 'object',
        additionalProperties: { type: 'string' },
        default: {},
        description: 'Extra request headers, e.g. { Authorization: "Bearer ${WEBHOOK_TOKEN}" }. Never logged.',
      },
      timeout_ms: {
        type: 'integer',
        minimum: 1,
        default: 5000,
        description: 'A request without an answer after this many milliseconds is a failed send.',
      },
    },
    required: ['url'],
    additionalProperties: false,
  },

  create(options, ctx) {
    const url = options.url;
    const shownUrl = maskUrl(url);
    const timeoutMs = options.timeout_ms ?? 5000;
    // JSON unless a configured header says otherwise; header names are case-insensitive.
    const headers = new Headers({ 'content-type': 'application/json' });
    for (const [name, value] of Object.entries(options.headers ?? {})) headers.set(name, value);
    let lastError = null;

    async function post(body) {
      let res;
      try {
        res = await fetch(url, { method: 'POST', headers, body, signal: AbortSignal.timeout(timeoutMs) });
      } catch (err) {
        if (err?.name === 'TimeoutError') throw new Error(`webhook ${shownUrl} did not answer within ${timeoutMs}ms`, { cause: err });
        const cause = err?.cause?.code ?? err?.cause?.message ?? err?.message ?? String(err);
        throw new Error(`webhook ${shownUrl} could not be reached: ${maskUrl(String(cause))}`, { cause: err });
      }
      // Read the answer to the end so the connection can be reused.
      const text = await res.text().catch(() => '');
      if (!res.ok) {
        const excerpt = text.trim().split('\n')[0].slice(0, 120);
        throw new Error(`webhook ${shownUrl} answered ${res.status}${excerpt ? ` (${excerpt})` : ''}`);
      }
    }

    return {
      async send(order) {
        const body = JSON.stringify({ foundation: ctx.foundation, sink: ctx.id, order });
        try {
          await post(body);
        } catch (err) {
          lastError = `${order.action} ${order.reason} for ${order.app}/${order.index} not sent: ${err.message}`;
          throw err;
        }
        lastError = null;
        ctx.logger.info(
          { action: order.action, reason: order.reason, app: order.app, index: order.index, message_id: order.messageId, url: shownUrl },
          `webhook: sent ${order.action} (${order.reason})`,
        );
      },
      health() {
        return { healthy: lastError === null, last_error: lastError };
      },
    };
  },

  summary: (options) => `webhook-notifier POSTs each start and stop to ${maskUrl(options.url)}`,
});
