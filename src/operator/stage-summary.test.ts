import { describe, expect, it } from 'vitest';
import { shortDuration, stageSummary } from './stage-summary.js';

describe('stageSummary', () => {
  it('says what each built-in stage does with its main options', () => {
    expect(
      stageSummary({
        id: 'heartbeats',
        kind: 'source',
        plugin: 'heartbeat',
        options: { subject: 'dea.heartbeat', advertise_subject: '', sync_interval: 1000, heartbeat_ttl: 30_000 },
      }),
    ).toBe('heartbeats: heartbeat on dea.heartbeat, sync 1s, presence TTL 30s');
    expect(
      stageSummary({
        id: 'desired',
        kind: 'source',
        plugin: 'bulk-api',
        options: { url: 'https://u:secret@cc.example.com', batch_size: 500, poll_interval: 60_000, timeout: 600_000, skip_cert_verify: true },
      }),
    ).toBe('desired: bulk-api from https://u:***@cc.example.com/bulk/apps, 500 apps a page, every 1m, timeout 10m, certificate NOT verified');
    expect(
      stageSummary({
        id: 'crashes',
        kind: 'policy',
        plugin: 'crashes',
        options: { crashes_before_backoff: 3, starting_backoff: 30_000, maximum_backoff: 960_000 },
      }),
    ).toBe('crashes: crashes: restarts crashed instances, back-off after 3 crashes from 30s up to 16m');
    expect(stageSummary({ id: 'cc', kind: 'sink', plugin: 'notifier', options: { protocol: 'hm9000-http', cc_url: 'https://cc:9023', timeout: 10_000 } })).toBe(
      'cc: notifier POSTs starts and stops to https://cc:9023/internal/dea/hm9000/…, timeout 10s',
    );
    expect(stageSummary({ id: 'bus', kind: 'bus', plugin: 'nats', options: { servers: ['nats://hm:pw@127.0.0.1:4222'] } })).toBe(
      'bus: NATS at nats://hm:***@127.0.0.1:4222',
    );
  });

  it('describes the notifier per protocol and the reporter', () => {
    const notifier = (options: Record<string, unknown>) => stageSummary({ id: 'cc', kind: 'sink', plugin: 'notifier', options });
    expect(notifier({ protocol: 'hm9000' })).toBe('cc: notifier publishes starts on hm9000.start and stops on hm9000.stop (NATS)');
    expect(notifier({ protocol: 'health' })).toBe('cc: notifier publishes health requests: starts on health.start and stops on health.stop (NATS)');
    expect(notifier({ protocol: 'cc-partition', cc_partition: 'ng' })).toBe(
      'cc: notifier publishes cc-partition requests: starts on cloudcontrollers.hm.requests.ng and stops on cloudcontrollers.hm.requests.ng (NATS)',
    );
    expect(
      stageSummary({
        id: 'reporter',
        kind: 'policy',
        plugin: 'reporter',
        options: {
          status_subject: 'healthmanager.status',
          health_subject: 'healthmanager.health',
          droplet_subject: 'healthmanager.droplet',
          component: { enabled: true, password: 'pw' },
        },
      }),
    ).toBe('reporter: reporter answers healthmanager.status, healthmanager.health and healthmanager.droplet; keeps /varz; registers as a VCAP component');
  });

  it('describes any other plugin by kind and plain options, secrets left out', () => {
    expect(stageSummary({ id: 'hook', kind: 'sink', plugin: 'webhook', options: { url: 'https://x', token: 't0ps3cret', retries: 3, nested: { a: 1 } } })).toBe(
      'hook: webhook (sink), url https://x, retries 3',
    );
  });

  it('writes durations short', () => {
    expect([250, 1000, 1500, 30_000, 90_000, 600_000, 5_760_000, 3_600_000].map(shortDuration)).toEqual([
      '250ms',
      '1s',
      '1.5s',
      '30s',
      '1m30s',
      '10m',
      '1h36m',
      '1h',
    ]);
  });
});
