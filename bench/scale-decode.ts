/**
 * bench/scale-decode: decoding one 100-instance dea.heartbeat (about 23 KB, as the live simulator
 * sends it), with the generic decoder (JSON.parse + ajv) and with the heartbeat decoder: an agent
 * heard for the first time, an unchanged heartbeat, one instance changed state, one restarted
 * (a new instance guid in its place). Mean µs per message over many rounds, after a warm-up.
 * Figures, not a test; also printed by bench/scale.
 *
 *   node dist/bench/scale-decode.js [instances]
 */
import { pathToFileURL } from 'node:url';
import { makeDecoder as makeGenericDecoder } from '../src/messages/decode.js';
import { makeHeartbeatDecoder } from '../src/messages/heartbeat-decode.js';
import { HeartbeatMessage } from '../src/messages/schemas.js';
import { agentGuid, appGuid, appVersion, instanceGuid } from '../src/sim/live-foundation.js';

export interface DecodeFigures {
  bytes: number;
  genericUs: number;
  newAgentUs: number;
  unchangedUs: number;
  oneChangedUs: number;
  oneRestartedUs: number;
}

const encoder = new TextEncoder();

function payload(agent: number, perAgent: number, change?: { at: number; state?: string; generation?: number }): Uint8Array {
  const droplets = Array.from({ length: perAgent }, (_, i) => {
    const g = agent * perAgent + i;
    const app = Math.floor(g / 10);
    return {
      cc_partition: 'default',
      droplet: appGuid(app),
      version: appVersion(app),
      instance: instanceGuid(g, change?.at === i ? (change.generation ?? 0) : 0),
      index: g % 10,
      state: change?.at === i && change.state ? change.state : 'RUNNING',
      state_timestamp: 1_764_000_000.3,
    };
  });
  return encoder.encode(JSON.stringify({ droplets, dea: agentGuid(agent) }));
}

function perMessageUs(rounds: number, run: () => void): number {
  for (let i = 0; i < Math.min(2_000, rounds); i++) run();
  const t0 = process.hrtime.bigint();
  for (let i = 0; i < rounds; i++) run();
  return Number(process.hrtime.bigint() - t0) / rounds / 1_000;
}

export function measureDecode(perAgent = 100, rounds = 20_000): DecodeFigures {
  const base = payload(0, perAgent);
  const changed = payload(0, perAgent, { at: perAgent >> 1, state: 'CRASHED' });
  const restarted = payload(0, perAgent, { at: perAgent >> 1, generation: 1 });
  const generic = makeGenericDecoder(HeartbeatMessage);
  const check = (d: ReturnType<typeof generic>) => {
    if (!d.ok) throw new Error(`bench payload not decoded: ${d.reason} ${d.detail}`);
  };
  check(generic(base));

  // A new agent every message: no remembered instances to reuse.
  const agents = Array.from({ length: 64 }, (_, a) => payload(a + 1, perAgent));
  let k = 0;
  const cold = makeHeartbeatDecoder();
  const newAgentUs = perMessageUs(rounds, () => {
    cold.clear();
    check(cold(agents[k++ % agents.length]!));
  });

  const warm = makeHeartbeatDecoder();
  check(warm(base));
  const unchangedUs = perMessageUs(rounds, () => check(warm(base)));
  // Alternating two versions: every message differs from the agent's previous one in one instance.
  let flip = false;
  const alternate = (other: Uint8Array): Uint8Array => {
    flip = !flip;
    return flip ? other : base;
  };
  const oneChangedUs = perMessageUs(rounds, () => check(warm(alternate(changed))));
  const oneRestartedUs = perMessageUs(rounds, () => check(warm(alternate(restarted))));
  const genericUs = perMessageUs(Math.max(1_000, rounds >> 2), () => check(generic(base)));
  if (warm.stats.generic !== 0 || cold.stats.generic !== 0) throw new Error('the heartbeat decoder left the fast path on bench payloads');
  return { bytes: base.byteLength, genericUs, newAgentUs, unchangedUs, oneChangedUs, oneRestartedUs };
}

export function formatDecode(f: DecodeFigures, perAgent = 100): string {
  const us = (x: number) => `${x.toFixed(1)} µs`;
  return [
    `decode of one ${perAgent}-instance dea.heartbeat (${(f.bytes / 1024).toFixed(1)} KiB), mean per message:`,
    `  generic (JSON.parse + ajv)            ${us(f.genericUs)}`,
    `  heartbeat decoder, agent heard first  ${us(f.newAgentUs)}`,
    `  heartbeat decoder, unchanged          ${us(f.unchangedUs)}`,
    `  heartbeat decoder, 1 state changed    ${us(f.oneChangedUs)}`,
    `  heartbeat decoder, 1 restarted        ${us(f.oneRestartedUs)}`,
  ].join('\n');
}

if (import.meta.url === pathToFileURL(process.argv[1] ?? '').href) {
  const perAgent = Number(process.argv[2] ?? 100);
  console.log(`bench/scale-decode (node ${process.version})`);
  console.log(formatDecode(measureDecode(perAgent), perAgent));
}
