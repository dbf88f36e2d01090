/**
 * `clock: manual`: time moves only on `healthmanager.advance_time {"seconds":N}`, a second at a
 * time, each step once the stages' requests in flight have settled (the Ruby HM's black-box test
 * mode). Answers the request, when it has a reply subject, once the clock has moved.
 */
import type { Logger } from 'pino';
import type { Bus } from '../sdk/bus.js';
import { isSettling } from '../sdk/capabilities.js';
import type { VirtualClock } from '../sdk/clock.js';
import type { StageSet } from './stages.js';

/** How long a step waits for the stages' requests (real time) before moving on. */
const SETTLE_MS = 10_000;

/** Listens for advance_time requests; returns what stops listening. */
export function driveManualClock(clock: VirtualClock, bus: Bus, stages: StageSet, logger: Logger): () => void {
  let advancing: Promise<void> = Promise.resolve();
  return bus.subscribe('healthmanager.advance_time', (msg) => {
    let seconds: unknown;
    try {
      seconds = (JSON.parse(new TextDecoder().decode(msg.data)) as { seconds?: unknown }).seconds;
    } catch {
      seconds = undefined;
    }
    if (typeof seconds !== 'number' || !Number.isInteger(seconds) || seconds < 0 || seconds > 86_400) {
      logger.warn({ subject: msg.subject }, 'healthmanager.advance_time ignored: expected {"seconds": N} with N a whole number of seconds from 0 to 86400');
      return;
    }
    advancing = advancing.then(async () => {
      for (let i = 0; i < seconds; i++) {
        await settled(stages);
        await clock.advanceAsync(1000);
      }
      await settled(stages);
      logger.info({ seconds, now: clock.now() }, `clock advanced by ${seconds}s`);
      if (msg.reply) bus.publish(msg.reply, JSON.stringify({ seconds }));
    });
  });
}

/** Waits (at most SETTLE_MS of real time) for the stages' requests in flight to end. */
async function settled(stages: StageSet): Promise<void> {
  const pending = stages.offering(isSettling).map(({ stage }) => stage.settled());
  if (pending.length === 0) return;
  let timer: NodeJS.Timeout | undefined;
  await Promise.race([Promise.allSettled(pending), new Promise((r) => (timer = setTimeout(r, SETTLE_MS)))]).finally(() => clearTimeout(timer));
}
