/**
 * Evacuation starts asked for by droplet.exited, through the whole engine on the virtual clock
 * with each preset: forged or stale exits start nothing, a real agent shutdown still moves its
 * instances at once, and `verify: false` brings back the originals' unverified starts.
 */
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { stringify } from 'yaml';
import { formatTimeline, runScenario } from '../../src/sim/scenario.js';

let dir: string;
beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'hmgate-evac-'));
});
afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

async function run(scenario: Record<string, unknown>) {
  const f = join(dir, `${String(scenario.name).replace(/\W+/g, '-')}.yaml`);
  await writeFile(f, stringify(scenario));
  const r = await runScenario(f);
  return { ...r, explain: `${r.failures.join('\n')}\n${formatTimeline(r.timeline)}` };
}

/** Exits no agent should have sent: an app the CC does not know, index 9999, a forged guid at an index running elsewhere. */
const forged = (at: string, app: string, runningIndex: number) => [
  { at, exited: { app: 'ghost-app', index: 0, reason: 'DEA_EVACUATION', instance: 'ghost-0' } },
  { at, exited: { app, index: 9999, reason: 'DEA_SHUTDOWN', instance: 'nobody' } },
  { at, exited: { app, index: runningIndex, reason: 'DEA_EVACUATION', instance: 'not-the-running-one' } },
];

describe('hm9000 preset: the evacuator', () => {
  const base = {
    config: 'hm9000',
    desired: [{ app: 'app-a', instances: 2 }],
    agents: {
      'dea-1': [
        { app: 'app-a', index: 0 },
        { app: 'app-a', index: 1 },
      ],
      'dea-2': [],
    },
    run_for: '3m',
  };
  // Beside the forged exits, dea-3 really evacuates app-b's only instance: that one is started.
  const withReal = {
    ...base,
    obey: 'dea-2',
    desired: [...base.desired, { app: 'app-b', instances: 1 }],
    agents: { ...base.agents, 'dea-3': [{ app: 'app-b', index: 0 }] },
    events: [
      ...forged('100s', 'app-a', 1),
      { at: '100s', agent: 'dea-3', silence: true },
      { at: '100s', exited: { app: 'app-b', index: 0, reason: 'DEA_EVACUATION' } },
    ],
  };

  it('forged exits (an app the CC does not desire, index 9999, an index running elsewhere) start nothing; a real one does', async () => {
    const r = await run({
      ...withReal,
      name: 'hm9000 forged exits',
      expect: [{ start: { app: 'app-b', index: 0, reason: 'EVACUATING', at: '100s' } }, { starts: 1 }, { stops: 0 }],
    });
    expect(r.failures, r.explain).toEqual([]);
  });

  it('verify: false starts each of them, as HM9000 did', async () => {
    const r = await run({
      ...withReal,
      name: 'hm9000 forged exits unverified',
      overrides: { sources: { evacuator: { verify: false } } },
      expect: [
        { start: { app: 'ghost-app', index: 0, reason: 'EVACUATING', at: '100s' } },
        { start: { app: 'app-a', index: 9999, at: '100s' } },
        { start: { app: 'app-a', index: 1, at: '100s' } },
        { start: { app: 'app-b', index: 0, at: '100s' } },
      ],
    });
    expect(r.failures, r.explain).toEqual([]);
  });

  it('an agent that shuts down: its instances are started elsewhere at the next cycle, though it is still listed until its presence lapses', async () => {
    const r = await run({
      ...base,
      name: 'hm9000 agent shutdown',
      obey: 'dea-2',
      events: [
        { at: '100s', agent: 'dea-1', silence: true },
        { at: '100s', exited: { app: 'app-a', index: 0, reason: 'DEA_SHUTDOWN' } },
        { at: '100s', exited: { app: 'app-a', index: 1, reason: 'DEA_SHUTDOWN' } },
      ],
      expect: [
        { start: { app: 'app-a', index: 0, reason: 'EVACUATING', before: '110s' } },
        { start: { app: 'app-a', index: 1, reason: 'EVACUATING', before: '110s' } },
        { starts: 2 },
      ],
    });
    expect(r.failures, r.explain).toEqual([]);
  });
});

describe('ruby-hm preset: exit-restarts', () => {
  const base = {
    config: 'ruby-hm',
    obey: 'dea-2',
    desired: [{ app: 'app-c', instances: 3 }],
    agents: {
      'dea-1': [
        { app: 'app-c', index: 0 },
        { app: 'app-c', index: 1 },
        { app: 'app-c', index: 2 },
      ],
      'dea-2': [],
    },
    run_for: '400s',
  };

  // Beside the forged exits, dea-1 really evacuates index 2 (the spec's worked example): that one is started.
  const events = [
    ...forged('300500ms', 'app-c', 1),
    { at: '300500ms', exited: { app: 'app-c', index: 2, reason: 'DEA_EVACUATION' }, agent: 'dea-1', remove: { app: 'app-c', index: 2 } },
  ];

  it('forged exits start nothing; a real one does', async () => {
    const r = await run({
      ...base,
      name: 'ruby forged exits',
      events,
      expect: [{ start: { app: 'app-c', index: 2, reason: 'EVACUATING', at: '301s' } }, { starts: 1 }],
    });
    expect(r.failures, r.explain).toEqual([]);
  });

  it('verify: false starts each of them, as the Ruby HM did', async () => {
    const r = await run({
      ...base,
      name: 'ruby forged exits unverified',
      overrides: { policies: { exit_restarts: { verify: false } } },
      events,
      expect: [
        { start: { app: 'ghost-app', index: 0, reason: 'EVACUATING', at: '301s' } },
        { start: { app: 'app-c', index: 9999, at: '301s' } },
        { start: { app: 'app-c', index: 1, at: '301s' } },
        { start: { app: 'app-c', index: 2, at: '301s' } },
      ],
    });
    expect(r.failures, r.explain).toEqual([]);
  });
});
