import { describe, expect, it } from 'vitest';
import { makeValidator } from '../../src/config/validate.js';
import { BusNotConnectedError } from '../../src/sdk/bus.js';
import type { StartOrder, StopOrder } from '../../src/sdk/orders.js';
import { makeStageContext } from '../../test/helpers/stage-context.js';
import plugin, { formatOrderMessage, formatStartMessage, formatStopMessage, Notifier, subjectsFor } from './index.js';

const start: StartOrder = { action: 'start', messageId: 'msg-1', app: 'app-guid-1', version: 'v-1', index: 1, reason: 'MISSING', priority: 1 };
const stop: StopOrder = {
  action: 'stop',
  messageId: 'msg-2',
  app: 'app-guid-1',
  version: 'v-1',
  instance: 'inst-guid-9',
  index: 1,
  isDuplicate: true,
  reason: 'DUPLICATE',
};

/** Options as the config loader hands them over: validated, defaults filled, durations in ms. */
function options(raw: Record<string, unknown>) {
  const data = structuredClone(raw);
  const problems = makeValidator({ heartbeatMs: 10_000, convertDurations: true }).validate(plugin.optionsSchema, data);
  return { problems: problems.map((p) => p.message), data: data as Parameters<typeof plugin.create>[0] };
}

async function setup(raw: Record<string, unknown> = {}) {
  const t = makeStageContext({ id: 'cloud_controller', kind: 'sink' });
  const { problems, data } = options(raw);
  expect(problems).toEqual([]);
  const notifier = (await plugin.create(data, t.ctx)) as Notifier;
  return { ...t, notifier };
}

async function createError(raw: Record<string, unknown>): Promise<string> {
  const { ctx } = makeStageContext({ id: 'cc', kind: 'sink' });
  const { problems, data } = options(raw);
  expect(problems).toEqual([]);
  try {
    const stage = await plugin.create(data, ctx);
    await stage.stop?.();
  } catch (err) {
    return (err as Error).message;
  }
  throw new Error('create() accepted the options');
}

async function sendsCounted(metrics: ReturnType<typeof makeStageContext>['metrics']) {
  const metric = metrics.getSingleMetric('hmgate_notifier_sends_total');
  if (!metric) return {};
  return Object.fromEntries((await metric.get()).values.map((v) => [`${v.labels.protocol} ${v.labels.action} ${v.labels.result}`, v.value]));
}

describe('wire messages (docs/hm9000.md#start-and-stop-messages)', () => {
  it('formats a start message with the keys in Go struct order', () => {
    expect(formatStartMessage(start)).toBe('{"message_id":"msg-1","droplet":"app-guid-1","version":"v-1","instance_index":1}');
  });

  it('formats a stop message with the keys in Go struct order', () => {
    expect(formatStopMessage(stop)).toBe(
      '{"message_id":"msg-2","droplet":"app-guid-1","version":"v-1","instance_guid":"inst-guid-9","instance_index":1,"is_duplicate":true}',
    );
    expect(formatStopMessage({ ...stop, index: 0, isDuplicate: false })).toBe(
      '{"message_id":"msg-2","droplet":"app-guid-1","version":"v-1","instance_guid":"inst-guid-9","instance_index":0,"is_duplicate":false}',
    );
  });

  it('needs only the fields on the wire', () => {
    expect(formatStartMessage({ messageId: 'm', app: 'a', version: 'v', index: 0 })).toBe('{"message_id":"m","droplet":"a","version":"v","instance_index":0}');
  });

  it('picks the message by action', () => {
    expect(formatOrderMessage(start)).toBe(formatStartMessage(start));
    expect(formatOrderMessage(stop)).toBe(formatStopMessage(stop));
  });

  it("escapes strings as Go's encoding/json does (HTML-safe, invalid UTF-16 as U+FFFD)", () => {
    expect(formatStartMessage({ ...start, app: 'a<b>&"c"\\\u2028', version: 'v\ud800' })).toBe(
      '{"message_id":"msg-1","droplet":"a\\u003cb\\u003e\\u0026\\"c\\"\\\\\\u2028","version":"v\ufffd","instance_index":1}',
    );
    expect(formatStartMessage({ ...start, app: 'é😀' })).toBe('{"message_id":"msg-1","droplet":"é😀","version":"v-1","instance_index":1}');
  });
});

describe('notifier, protocol hm9000 (NATS)', () => {
  it('publishes a start on hm9000.start, byte for byte', async () => {
    const { bus, notifier } = await setup();
    await notifier.send(start);
    expect(bus.published).toEqual([
      { subject: 'hm9000.start', data: '{"message_id":"msg-1","droplet":"app-guid-1","version":"v-1","instance_index":1}', reply: undefined },
    ]);
  });

  it('publishes a stop on hm9000.stop, byte for byte', async () => {
    const { bus, notifier } = await setup();
    await notifier.send(stop);
    expect(bus.published).toEqual([
      {
        subject: 'hm9000.stop',
        data: '{"message_id":"msg-2","droplet":"app-guid-1","version":"v-1","instance_guid":"inst-guid-9","instance_index":1,"is_duplicate":true}',
        reply: undefined,
      },
    ]);
  });

  it('uses the configured subjects', async () => {
    const { bus, notifier } = await setup({ start_subject: 'cc.hm.start', stop_subject: 'cc.hm.stop' });
    await notifier.send(start);
    await notifier.send(stop);
    expect(bus.published.map((p) => p.subject)).toEqual(['cc.hm.start', 'cc.hm.stop']);
  });

  it('logs each sent order once at info with its reason and ids, and counts it', async () => {
    const { logs, metrics, notifier } = await setup();
    await notifier.send(start);
    await notifier.send(stop);
    const sent = logs.filter((l) => typeof l.msg === 'string' && l.msg.startsWith('Sent '));
    expect(sent).toEqual([
      expect.objectContaining({
        level: 30,
        msg: 'Sent start message (MISSING)',
        reason: 'MISSING',
        action: 'start',
        message_id: 'msg-1',
        app: 'app-guid-1',
        version: 'v-1',
        index: 1,
        subject: 'hm9000.start',
        protocol: 'hm9000',
      }),
      expect.objectContaining({
        level: 30,
        msg: 'Sent stop message (DUPLICATE)',
        reason: 'DUPLICATE',
        action: 'stop',
        message_id: 'msg-2',
        instance: 'inst-guid-9',
        is_duplicate: true,
        subject: 'hm9000.stop',
      }),
    ]);
    expect(await sendsCounted(metrics)).toEqual({ 'hm9000 start ok': 1, 'hm9000 stop ok': 1 });
  });

  it('rethrows a publish error (NATS down) so the message is kept, and is unhealthy until a send succeeds', async () => {
    const { bus, metrics, notifier } = await setup();
    expect(notifier.health()).toEqual({ healthy: true, last_error: null });
    const publish = bus.publish.bind(bus);
    bus.publish = () => {
      throw new BusNotConnectedError('NATS is not connected (nats://127.0.0.1:4222: connection refused)');
    };
    const failed = notifier.send(start);
    await expect(failed).rejects.toBeInstanceOf(BusNotConnectedError);
    await expect(failed).rejects.toThrow('NATS is not connected');
    expect(notifier.health()).toEqual({
      healthy: false,
      last_error: 'start MISSING for app-guid-1/1 not sent: NATS is not connected (nats://127.0.0.1:4222: connection refused)',
    });
    expect(bus.published).toEqual([]);

    bus.publish = publish;
    await notifier.send(stop);
    expect(notifier.health()).toEqual({ healthy: true, last_error: null });
    expect(await sendsCounted(metrics)).toEqual({ 'hm9000 start failed': 1, 'hm9000 stop ok': 1 });
  });

  it('shares one counter between stages on one registry', async () => {
    const t = makeStageContext({ id: 'a', kind: 'sink' });
    const a = (await plugin.create(options({}).data, t.ctx)) as Notifier;
    const b = (await plugin.create(options({}).data, { ...t.ctx, id: 'b' })) as Notifier;
    await a.send(start);
    await b.send(start);
    expect(await sendsCounted(t.metrics)).toEqual({ 'hm9000 start ok': 2 });
  });
});

describe('notifier options', () => {
  it('defaults to protocol hm9000 on hm9000.start / hm9000.stop, timeout 10s, verifying certificates', () => {
    const { data } = options({});
    expect(data).toEqual({ protocol: 'hm9000', timeout: 10_000, skip_cert_verify: false });
    expect(subjectsFor(data)).toEqual({ start: 'hm9000.start', stop: 'hm9000.stop' });
  });

  it('rejects unknown keys, unknown protocols and bad durations through the schema', () => {
    expect(options({ protocl: 'hm9000' }).problems).toEqual(['unknown key "protocl" (did you mean "protocol"?)']);
    expect(options({ protocol: 'smtp' }).problems).toEqual([
      'protocol must be one of "hm9000", "hm9000-http", "health", "cc-partition", not the string "smtp"',
    ]);
    expect(options({ protocol: 'hm9000-http', cc_url: 'ftp://cc' }).problems).toHaveLength(1);
    expect(options({ timeout: 'soon' }).problems).toHaveLength(1);
  });

  it('describes every option and names the HM9000 key where there is one', () => {
    const props = (plugin.optionsSchema as unknown as { properties: Record<string, { description?: string }>; additionalProperties: boolean }).properties;
    for (const [key, schema] of Object.entries(props)) expect(schema.description, key).toBeTruthy();
    expect(props.start_subject!.description).toContain('sender_nats_start_subject');
    expect(props.stop_subject!.description).toContain('sender_nats_stop_subject');
    expect(props.cc_url!.description).toContain('cc_internal_url');
    expect(props.skip_cert_verify!.description).toContain('skip_cert_verify');
    expect((plugin.optionsSchema as unknown as { additionalProperties: boolean }).additionalProperties).toBe(false);
    expect(plugin.kind).toBe('sink');
  });

  it('hm9000-http without cc_url', async () => {
    expect(await createError({ protocol: 'hm9000-http', user: 'u', password: 'p' })).toBe(
      "sinks.cc.cc_url is required with protocol: hm9000-http: the Cloud Controller's internal base URL (HM9000's cc_internal_url), e.g. https://cloud-controller-ng.service.cf.internal:9023",
    );
  });

  it('hm9000-http without credentials, or with only one of them', async () => {
    expect(await createError({ protocol: 'hm9000-http', cc_url: 'http://127.0.0.1:9022' })).toMatch(
      /^sinks\.cc\.user and sinks\.cc\.password are required with protocol: hm9000-http/,
    );
    expect(await createError({ protocol: 'hm9000-http', cc_url: 'http://127.0.0.1:9022', user: 'u' })).toMatch(/^sinks\.cc\.password is required/);
  });

  it('HTTP options with protocol hm9000', async () => {
    expect(await createError({ cc_url: 'http://127.0.0.1:9022', password: 'p' })).toBe(
      'sinks.cc.cc_url, sinks.cc.password apply only to protocol: hm9000-http, and this stage publishes on NATS (protocol: hm9000): remove them or set protocol: hm9000-http',
    );
    expect(await createError({ skip_cert_verify: true })).toMatch(/^sinks\.cc\.skip_cert_verify applies only to protocol: hm9000-http/);
  });

  it('NATS subjects with protocol hm9000-http', async () => {
    expect(await createError({ protocol: 'hm9000-http', cc_url: 'http://127.0.0.1:9022', user: 'u', password: 'p', stop_subject: 'x.stop' })).toBe(
      'sinks.cc.stop_subject applies only to the NATS protocols (hm9000, health, cc-partition), and this stage POSTs to the Cloud Controller',
    );
  });

  it('credentials in cc_url, never echoing the password', async () => {
    const message = await createError({ protocol: 'hm9000-http', cc_url: 'https://u:s3cret@cc.internal:9023', user: 'u', password: 'p' });
    expect(message).toBe('sinks.cc.cc_url carries credentials: put them in sinks.cc.user and sinks.cc.password instead');
    expect(message).not.toContain('s3cret');
  });

  it('a cc_url with a query, TLS options on http://, and ca_file with skip_cert_verify', async () => {
    const http = { protocol: 'hm9000-http', user: 'u', password: 'p' };
    expect(await createError({ ...http, cc_url: 'http://cc/?x=1' })).toMatch(/cc_url must be a base URL without \?query/);
    expect(await createError({ ...http, cc_url: 'http://cc', ca_file: 'ca.pem' })).toBe('sinks.cc.ca_file applies only to an https:// cc_url');
    expect(await createError({ ...http, cc_url: 'https://cc', ca_file: 'ca.pem', skip_cert_verify: true })).toMatch(
      /^sinks\.cc\.ca_file and sinks\.cc\.skip_cert_verify: true contradict each other/,
    );
  });

  it('reports every problem at once', async () => {
    const problems = (await createError({ protocol: 'hm9000-http', start_subject: 'x' })).split('; ');
    expect(problems.map((p) => p.split(' ')[0])).toEqual(['sinks.cc.cc_url', 'sinks.cc.user', 'sinks.cc.start_subject']);
  });

  it('a ca_file that cannot be read, or holds no certificate, relative to the config directory', async () => {
    const http = { protocol: 'hm9000-http', cc_url: 'https://127.0.0.1:9023', user: 'u', password: 'p' };
    const { ctx } = makeStageContext({ id: 'cc', kind: 'sink', configDir: '/nonexistent-dir' });
    await expect(plugin.create(options({ ...http, ca_file: 'ca.pem' }).data, ctx)).rejects.toThrow(
      /^sinks\.cc\.ca_file: cannot read \/nonexistent-dir\/ca\.pem: ENOENT/,
    );
    const here = makeStageContext({ id: 'cc', kind: 'sink', configDir: import.meta.dirname });
    await expect(plugin.create(options({ ...http, ca_file: 'notifier.test.ts' }).data, here.ctx)).rejects.toThrow(/holds no PEM certificate/);
  });
});
