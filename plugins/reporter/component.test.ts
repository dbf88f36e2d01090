/**
 * VCAP component registration (docs/ruby-hm.md#component-registration): announce at start, answer
 * discover, keep secrets out of logs.
 */
import { describe, expect, it } from 'vitest';
import { makeValidator } from '../../src/config/validate.js';
import { BusNotConnectedError } from '../../src/sdk/bus.js';
import { makeStageContext } from '../../test/helpers/stage-context.js';
import { ANNOUNCE_RETRY_MS } from './component.js';
import plugin, { rubyTime, uptimeString, type Reporter } from './index.js';

const T0 = Date.parse('2013-07-31T22:00:00Z');
const component = { enabled: true, announce_host: '10.0.0.5:5155', user: 'thin', password: 's3cret-pw' };

function options(raw: Record<string, unknown>) {
  const data = structuredClone(raw);
  const problems = makeValidator({ heartbeatMs: 10_000, convertDurations: true }).validate(plugin.optionsSchema, data);
  return { problems: problems.map((p) => p.message), data: data as Parameters<typeof plugin.create>[0] };
}

async function setup(raw: Record<string, unknown>) {
  const t = makeStageContext({ id: 'reporter', kind: 'reporter', startMs: T0 });
  const { problems, data } = options(raw);
  expect(problems).toEqual([]);
  const reporter = (await plugin.create(data, t.ctx)) as Reporter;
  return { ...t, reporter };
}

describe('VCAP component registration', () => {
  it('announces its card once at start, in the order VCAP components wrote it, without uptime', async () => {
    const t = await setup({ component: { ...component, index: 2 } });
    t.reporter.start();
    expect(t.bus.published).toHaveLength(1);
    expect(t.bus.published[0]!.subject).toBe('vcap.component.announce');
    const text = t.bus.published[0]!.data;
    expect(text).toMatch(
      /^\{"type":"HealthManager","index":2,"uuid":"2-[0-9a-f]{32}","host":"10\.0\.0\.5:5155","credentials":\["thin","s3cret-pw"\],"start":"2013-07-31 22:00:00 \+0000"\}$/,
    );
  });

  it('answers vcap.component.discover with the same card and its uptime', async () => {
    const t = await setup({ component });
    t.reporter.start();
    const card = JSON.parse(t.bus.published[0]!.data) as Record<string, unknown>;
    t.clock.advance(3_723_000);
    const replies: string[] = [];
    t.bus.subscribe('_INBOX.d', (m) => void replies.push(new TextDecoder().decode(m.data)));
    t.bus.publish('vcap.component.discover', '', '_INBOX.d');
    expect(replies).toHaveLength(1);
    expect(JSON.parse(replies[0]!)).toEqual({ ...card, uptime: '0d:1h:2m:3s' });
    expect(Object.keys(JSON.parse(replies[0]!) as object)).toEqual(['type', 'index', 'uuid', 'host', 'credentials', 'start', 'uptime']);
  });

  it('never logs the password', async () => {
    const t = await setup({ component });
    t.reporter.start();
    t.bus.publish('vcap.component.discover', '', '_INBOX.x');
    expect(t.logs.some((l) => l.msg === 'announced this component on vcap.component.announce')).toBe(true);
    expect(JSON.stringify(t.logs)).not.toContain('s3cret-pw');
  });

  it('announces once the bus is up when it was not at start', async () => {
    const t = await setup({ component });
    const publish = t.bus.publish.bind(t.bus);
    let down = true;
    t.bus.publish = (subject, data, reply) => {
      if (down) throw new BusNotConnectedError('NATS is not connected');
      publish(subject, data, reply);
    };
    t.reporter.start();
    t.clock.advance(ANNOUNCE_RETRY_MS * 3);
    expect(t.bus.published).toEqual([]);
    expect(t.logs.filter((l) => typeof l.msg === 'string' && l.msg.startsWith('could not announce'))).toHaveLength(1);
    down = false;
    t.clock.advance(ANNOUNCE_RETRY_MS);
    expect(t.bus.published.map((m) => m.subject)).toEqual(['vcap.component.announce']);
    t.clock.advance(ANNOUNCE_RETRY_MS * 5);
    expect(t.bus.published).toHaveLength(1);
  });

  it('does nothing when disabled (the default)', async () => {
    const t = await setup({});
    t.reporter.start();
    t.bus.publish('vcap.component.discover', '', '_INBOX.x');
    expect(t.bus.published.map((m) => m.subject)).toEqual(['vcap.component.discover']);
    expect(t.reporter.varz()).not.toHaveProperty('uuid');
  });

  it('stops answering and retrying on stop()', async () => {
    const t = await setup({ component });
    t.reporter.start();
    t.reporter.stop();
    t.bus.publish('vcap.component.discover', '', '_INBOX.x');
    expect(t.bus.published.map((m) => m.subject)).toEqual(['vcap.component.announce', 'vcap.component.discover']);
  });

  it('needs announce_host, user and password when enabled', async () => {
    const { ctx } = makeStageContext({ id: 'reporter', kind: 'reporter' });
    expect(() => plugin.create(options({ component: { enabled: true, user: 'thin' } }).data, ctx)).toThrow(
      "reporters.reporter.component.announce_host, reporters.reporter.component.password are required with component.enabled: true: the collector reads /varz at announce_host (the API's host:port) with the API's user and password",
    );
    expect(options({ component: { ...component, announce_host: 'http://x:1' } }).problems).toHaveLength(1);
  });
});

describe('formats', () => {
  it('writes uptime and times as VCAP components did', () => {
    expect(uptimeString(0)).toBe('0d:0h:0m:0s');
    expect(uptimeString(90_061_999)).toBe('1d:1h:1m:1s');
    expect(rubyTime(Date.parse('2013-07-31T22:00:00.750Z'))).toBe('2013-07-31 22:00:00 +0000');
  });
});
