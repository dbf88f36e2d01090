/**
 * The Ruby Health Manager's protocols of the notifier: health (health.start / health.stop) and
 * cc-partition (cloudcontrollers.hm.requests.<partition>), byte for byte, including the bodies
 * observed from the running originals (peers/ruby-hm README, "Wire formats observed").
 */
import { describe, expect, it } from 'vitest';
import { makeValidator } from '../../src/config/validate.js';
import { BusNotConnectedError } from '../../src/sdk/bus.js';
import type { RequestOrder, StartOrder } from '../../src/sdk/orders.js';
import { createDroplet, getInstance, setDesiredState, startRequest, stopRequest, type DropletRequest } from '../../src/sdk/droplets.js';
import { makeStageContext } from '../../test/helpers/stage-context.js';
import plugin, {
  formatHealthStart,
  formatHealthStop,
  formatPartitionStart,
  formatPartitionStop,
  sentRequestTally,
  subjectsFor,
  type Notifier,
} from './index.js';

const UPDATED_AT = '2013-07-31 22:00:00 +0000'; // 1375308000

function options(raw: Record<string, unknown>) {
  const data = structuredClone(raw);
  const problems = makeValidator({ heartbeatMs: 10_000, convertDurations: true }).validate(plugin.optionsSchema, data);
  return { problems: problems.map((p) => p.message), data: data as Parameters<typeof plugin.create>[0] };
}

async function setup(raw: Record<string, unknown>) {
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
    await plugin.create(data, ctx);
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

const order = (request: DropletRequest, reason: string, priority?: number): RequestOrder => ({
  action: 'request',
  messageId: `m-${reason}`,
  app: request.droplet,
  reason,
  request,
  ...(priority !== undefined ? { priority } : {}),
});

const start = (over: Partial<DropletRequest> = {}): DropletRequest => ({
  op: 'START',
  droplet: 'app-guid-1',
  lastUpdated: 1375308000,
  version: 'app-version-1',
  running: { 'app-version-1': 1 },
  indices: [1],
  flapping: false,
  ...over,
});

const stop = (instances: { instance: string | null; version: string | null }[], over: Partial<DropletRequest> = {}): DropletRequest => ({
  op: 'STOP',
  droplet: 'app-guid',
  lastUpdated: 1371600000,
  version: 'live-ver',
  running: { 'live-ver': 3 },
  instances,
  ...over,
});

describe('protocol health: bodies (docs/ruby-hm.md#start-and-stop-requests)', () => {
  it('formats the START observed from the original, keys in its order', () => {
    expect(formatHealthStart(start())).toBe(
      '{"droplet":"app-guid-1","last_updated":1375308000,"version":"app-version-1","indices":[1],"running":{"app-version-1":1},"flapping":false}',
    );
  });

  it('formats the observed crash START sent before any desired state (nulls kept)', () => {
    expect(formatHealthStart(start({ lastUpdated: null, version: null, indices: [0], running: { 'app-version-1': 0 } }))).toBe(
      '{"droplet":"app-guid-1","last_updated":null,"version":null,"indices":[0],"running":{"app-version-1":0},"flapping":false}',
    );
  });

  it('always carries flapping, true only for a delayed restart', () => {
    expect(formatHealthStart(start({ flapping: true, indices: [0] }))).toBe(
      '{"droplet":"app-guid-1","last_updated":1375308000,"version":"app-version-1","indices":[0],"running":{"app-version-1":1},"flapping":true}',
    );
    const { flapping: _, ...withoutFlag } = start();
    expect(formatHealthStart(withoutFlag)).toMatch(/,"flapping":false\}$/);
  });

  it('formats the STOP observed for a STOPPED app (running {})', () => {
    const r = stop([{ instance: 'inst-2-0', version: 'app-version-2' }], {
      droplet: 'app-guid-2',
      lastUpdated: 1375308000,
      version: 'app-version-2',
      running: {},
    });
    expect(formatHealthStop(r)).toBe(
      '{"droplet":"app-guid-2","last_updated":1375308000,"instances":{"inst-2-0":"app-version-2"},"running":{},"version":"app-version-2"}',
    );
  });

  it('maps each instance to its version, in order, in one STOP', () => {
    const r = stop([
      { instance: 'inst-guid-a', version: 'old-ver' },
      { instance: 'inst-guid-b', version: 'live-ver' },
    ]);
    expect(formatHealthStop(r)).toBe(
      '{"droplet":"app-guid","last_updated":1371600000,"instances":{"inst-guid-a":"old-ver","inst-guid-b":"live-ver"},"running":{"live-ver":3},"version":"live-ver"}',
    );
  });

  it('keeps the order of integer-like guids, and a repeated guid in its first place', () => {
    const r = stop([
      { instance: 'b', version: 'v2' },
      { instance: '10', version: 'v1' },
      { instance: '9', version: 'v1' },
      { instance: 'b', version: 'v3' },
    ]);
    expect(formatHealthStop(r)).toContain('"instances":{"b":"v3","10":"v1","9":"v1"}');
  });

  it('renders a request built from a record as the original did', () => {
    const d = createDroplet('app-guid-1', 0);
    setDesiredState(d, { guid: 'app-guid-1', version: 'app-version-1', instances: 2, state: 'STARTED', packageState: 'STAGED', updatedAt: UPDATED_AT }, 0);
    const running = getInstance(d, 0);
    running.state = 'RUNNING';
    running.guid = 'inst-0';
    running.guidStream = ['inst-0'];
    getInstance(d, 1);
    expect(formatHealthStart(startRequest(d, 1))).toBe(
      '{"droplet":"app-guid-1","last_updated":1375308000,"version":"app-version-1","indices":[1],"running":{"app-version-1":1},"flapping":false}',
    );
    expect(formatHealthStop(stopRequest(d, [{ instance: 'inst-0', version: 'app-version-1' }]))).toBe(
      '{"droplet":"app-guid-1","last_updated":1375308000,"instances":{"inst-0":"app-version-1"},"running":{"app-version-1":1},"version":"app-version-1"}',
    );
  });
});

describe('protocol cc-partition: bodies (docs/ruby-hm.md#partitioned-requests)', () => {
  const p = { droplet: 'app-guid', lastUpdated: 1371600000, version: 'live-ver', running: { 'live-ver': 1 } };

  it('formats a plain START with op and without running or flapping', () => {
    expect(formatPartitionStart({ ...p, op: 'START', indices: [1], flapping: false })).toBe(
      '{"droplet":"app-guid","op":"START","last_updated":1371600000,"version":"live-ver","indices":[1]}',
    );
  });

  it('adds "flapping":true only to a delayed restart', () => {
    expect(formatPartitionStart({ ...p, op: 'START', indices: [0], flapping: true })).toBe(
      '{"droplet":"app-guid","op":"START","last_updated":1371600000,"version":"live-ver","indices":[0],"flapping":true}',
    );
  });

  it('keeps nulls before the first desired state', () => {
    expect(formatPartitionStart({ ...p, lastUpdated: null, version: null, op: 'START', indices: [1] })).toBe(
      '{"droplet":"app-guid","op":"START","last_updated":null,"version":null,"indices":[1]}',
    );
  });

  it('formats a STOP with an array of guids, duplicates and nulls kept, empty allowed', () => {
    const inst = (...guids: (string | null)[]) => guids.map((instance) => ({ instance, version: 'live-ver' }));
    expect(formatPartitionStop({ ...p, op: 'STOP', instances: inst('inst-guid-b', 'inst-guid-c') })).toBe(
      '{"droplet":"app-guid","op":"STOP","last_updated":1371600000,"instances":["inst-guid-b","inst-guid-c"]}',
    );
    expect(formatPartitionStop({ ...p, op: 'STOP', instances: inst('B', 'B', 'B') })).toBe(
      '{"droplet":"app-guid","op":"STOP","last_updated":1371600000,"instances":["B","B","B"]}',
    );
    expect(formatPartitionStop({ ...p, op: 'STOP', instances: inst('a', null) })).toBe(
      '{"droplet":"app-guid","op":"STOP","last_updated":1371600000,"instances":["a",null]}',
    );
    expect(formatPartitionStop({ ...p, op: 'STOP', instances: [] })).toBe('{"droplet":"app-guid","op":"STOP","last_updated":1371600000,"instances":[]}');
  });
});

describe('notifier, protocol health', () => {
  it('publishes starts on health.start and stops on health.stop, byte for byte', async () => {
    const { bus, notifier } = await setup({ protocol: 'health' });
    expect(notifier.accepts).toBe('request');
    await notifier.send(order(start(), 'MISSING', 1000));
    await notifier.send(order(stop([{ instance: 'i-1', version: 'live-ver' }]), 'EXTRA'));
    expect(bus.published).toEqual([
      {
        subject: 'health.start',
        data: '{"droplet":"app-guid-1","last_updated":1375308000,"version":"app-version-1","indices":[1],"running":{"app-version-1":1},"flapping":false}',
        reply: undefined,
      },
      {
        subject: 'health.stop',
        data: '{"droplet":"app-guid","last_updated":1371600000,"instances":{"i-1":"live-ver"},"running":{"live-ver":3},"version":"live-ver"}',
        reply: undefined,
      },
    ]);
  });

  it('uses the configured subjects', async () => {
    const { bus, notifier } = await setup({ protocol: 'health', start_subject: 'cc.start', stop_subject: 'cc.stop' });
    await notifier.send(order(start(), 'MISSING'));
    await notifier.send(order(stop([]), 'EXTRA_APP'));
    expect(bus.published.map((m) => m.subject)).toEqual(['cc.start', 'cc.stop']);
  });

  it('logs each send once at info with subject, reason and body, and counts it', async () => {
    const { logs, metrics, notifier } = await setup({ protocol: 'health' });
    await notifier.send(order(start({ flapping: true, indices: [0] }), 'FLAPPING'));
    await notifier.send(order(start(), 'MISSING', 1000));
    await notifier.send(order(stop([{ instance: 'i-1', version: 'live-ver' }]), 'EXTRA'));
    const sent = logs.filter((l) => typeof l.msg === 'string' && l.msg.startsWith('Sent '));
    const flapBody = '{"droplet":"app-guid-1","last_updated":1375308000,"version":"app-version-1","indices":[0],"running":{"app-version-1":1},"flapping":true}';
    expect(sent).toHaveLength(3);
    expect(sent[0]).toEqual(
      expect.objectContaining({
        level: 30,
        msg: `Sent START (FLAPPING) on health.start: ${flapBody}`,
        protocol: 'health',
        action: 'start',
        reason: 'FLAPPING',
        message_id: 'm-FLAPPING',
        app: 'app-guid-1',
        version: 'app-version-1',
        indices: [0],
        flapping: true,
        subject: 'health.start',
        body: flapBody,
      }),
    );
    expect(sent[0]).not.toHaveProperty('priority');
    expect(sent[1]).toEqual(expect.objectContaining({ reason: 'MISSING', priority: 1000, flapping: false }));
    expect(sent[2]).toEqual(
      expect.objectContaining({
        msg: expect.stringMatching(/^Sent STOP \(EXTRA\) on health\.stop: \{/),
        action: 'stop',
        instances: ['i-1'],
        subject: 'health.stop',
      }),
    );
    expect(await sendsCounted(metrics)).toEqual({ 'health start ok': 2, 'health stop ok': 1 });
    expect(sentRequestTally(metrics)).toEqual({ start: 2, stop: 1 });
  });

  it('rethrows a publish error (NATS down), is unhealthy until a send succeeds, and counts neither as sent', async () => {
    const { bus, metrics, notifier } = await setup({ protocol: 'health' });
    const publish = bus.publish.bind(bus);
    bus.publish = () => {
      throw new BusNotConnectedError('NATS is not connected');
    };
    await expect(notifier.send(order(start(), 'MISSING'))).rejects.toBeInstanceOf(BusNotConnectedError);
    expect(notifier.health()).toEqual({ healthy: false, last_error: 'START MISSING for app-guid-1 not sent on health.start: NATS is not connected' });
    expect(sentRequestTally(metrics)).toEqual({ start: 0, stop: 0 });
    bus.publish = publish;
    await notifier.send(order(start(), 'MISSING'));
    expect(notifier.health()).toEqual({ healthy: true, last_error: null });
    expect(await sendsCounted(metrics)).toEqual({ 'health start failed': 1, 'health start ok': 1 });
  });

  it("refuses HM9000's orders with the fix, logging it once", async () => {
    const { bus, logs, metrics, notifier } = await setup({ protocol: 'health' });
    const hm: StartOrder = { action: 'start', messageId: 'x', app: 'a', version: 'v', index: 0, reason: 'MISSING', priority: 1 };
    const message =
      "protocol health cannot send HM9000's start order (MISSING for a/0): set sinks.cloud_controller.protocol to hm9000 or hm9000-http (HM9000 presets), or use event policies with this sink";
    await expect(notifier.send(hm)).rejects.toThrow(message);
    await expect(notifier.send(hm)).rejects.toThrow(message);
    expect(bus.published).toEqual([]);
    expect(notifier.health()).toEqual({ healthy: false, last_error: message });
    expect(logs.filter((l) => l.msg === message)).toHaveLength(1);
    expect(await sendsCounted(metrics)).toEqual({ 'health start failed': 2 });
  });
});

describe('notifier, protocol cc-partition', () => {
  it('publishes starts and stops on cloudcontrollers.hm.requests.default', async () => {
    const { bus, notifier } = await setup({ protocol: 'cc-partition' });
    await notifier.send(order(start({ droplet: 'app-guid', lastUpdated: 1371600000, version: 'live-ver' }), 'MISSING', 1000));
    await notifier.send(
      order(
        stop([
          { instance: 'inst-guid-b', version: 'live-ver' },
          { instance: 'inst-guid-b', version: 'live-ver' },
        ]),
        'DUPLICATE',
      ),
    );
    expect(bus.published).toEqual([
      {
        subject: 'cloudcontrollers.hm.requests.default',
        data: '{"droplet":"app-guid","op":"START","last_updated":1371600000,"version":"live-ver","indices":[1]}',
        reply: undefined,
      },
      {
        subject: 'cloudcontrollers.hm.requests.default',
        data: '{"droplet":"app-guid","op":"STOP","last_updated":1371600000,"instances":["inst-guid-b","inst-guid-b"]}',
        reply: undefined,
      },
    ]);
  });

  it('names the subject after cc_partition; explicit subjects win', async () => {
    const ng = await setup({ protocol: 'cc-partition', cc_partition: 'ng' });
    await ng.notifier.send(order(start(), 'MISSING'));
    expect(ng.bus.published.map((m) => m.subject)).toEqual(['cloudcontrollers.hm.requests.ng']);
    expect(subjectsFor({ protocol: 'cc-partition', cc_partition: 'ng', stop_subject: 'x.stop' })).toEqual({
      start: 'cloudcontrollers.hm.requests.ng',
      stop: 'x.stop',
    });
  });

  it('counts per protocol and action', async () => {
    const { metrics, notifier } = await setup({ protocol: 'cc-partition' });
    await notifier.send(order(stop([]), 'EXTRA_APP'));
    expect(await sendsCounted(metrics)).toEqual({ 'cc-partition stop ok': 1 });
    expect(sentRequestTally(metrics)).toEqual({ start: 0, stop: 1 });
  });
});

describe('notifier protocols and orders', () => {
  it('an hm9000 stage refuses the requests of event policies with the fix', async () => {
    const { bus, notifier } = await setup({});
    expect(notifier.accepts).toBe('instance');
    await expect(notifier.send(order(stop([{ instance: 'i', version: 'v' }]), 'EXTRA'))).rejects.toThrow(
      "protocol hm9000 cannot send a STOP request of an event policy (EXTRA for app-guid): set sinks.cloud_controller.protocol to health or cc-partition (Ruby HM presets), or use HM9000's policies with this sink",
    );
    expect(bus.published).toEqual([]);
  });

  it('defaults each protocol to its subjects', () => {
    expect(subjectsFor({ protocol: 'hm9000' })).toEqual({ start: 'hm9000.start', stop: 'hm9000.stop' });
    expect(subjectsFor({ protocol: 'health' })).toEqual({ start: 'health.start', stop: 'health.stop' });
    expect(subjectsFor({ protocol: 'cc-partition' })).toEqual({ start: 'cloudcontrollers.hm.requests.default', stop: 'cloudcontrollers.hm.requests.default' });
  });

  it('cc_partition names the subject only with protocol cc-partition; HTTP options only with hm9000-http', async () => {
    // The top-level cc_partition reaches every notifier: the other protocols accept and ignore it.
    expect(subjectsFor({ protocol: 'health', cc_partition: 'ng' })).toEqual({ start: 'health.start', stop: 'health.stop' });
    expect(subjectsFor({ protocol: 'cc-partition', cc_partition: 'ng' })).toEqual({
      start: 'cloudcontrollers.hm.requests.ng',
      stop: 'cloudcontrollers.hm.requests.ng',
    });
    expect(await createError({ protocol: 'cc-partition', cc_url: 'http://cc', user: 'u' })).toBe(
      'sinks.cc.cc_url, sinks.cc.user apply only to protocol: hm9000-http, and this stage publishes on NATS (protocol: cc-partition): remove them or set protocol: hm9000-http',
    );
  });

  it('hm9000-http lets through the subjects of the hm9000 preset it may extend', async () => {
    const { notifier } = await setup({
      protocol: 'hm9000-http',
      cc_url: 'http://127.0.0.1:9',
      user: 'u',
      password: 'p',
      start_subject: 'hm9000.start',
      stop_subject: 'hm9000.stop',
    });
    expect(notifier.accepts).toBe('instance');
    await notifier.stop();
  });

  it('a cc_partition that cannot be a subject token is a schema error', () => {
    expect(options({ protocol: 'cc-partition', cc_partition: 'a b' }).problems).toHaveLength(1);
    expect(options({ protocol: 'cc-partition', cc_partition: '>' }).problems).toHaveLength(1);
    expect(options({ protocol: 'cc-partition', cc_partition: 'ng' }).problems).toEqual([]);
  });
});
