/**
 * The engine's clocks: the base (real, virtual in tests, or manual), and the clock rules read,
 * stepped at time_resolution — HM9000 compared whole seconds; a step finer than the heartbeat keeps
 * sub-second heartbeat intervals working.
 */
import type { Config } from '../config/schema.js';
import { RealClock, SteppedClock, VirtualClock, type Clock } from '../sdk/clock.js';

export interface EngineClocks {
  /** What rules and stages read. */
  clock: Clock;
  /** The clock below the time_resolution step. */
  precise: Clock;
  /** With `clock: manual` (and no clock given): moves only on healthmanager.advance_time. */
  manual: VirtualClock | undefined;
}

export function engineClocks(config: Config, heartbeatMs: number, given?: Clock): EngineClocks {
  // A manual clock starts at 1 s, as the Ruby HM's black-box test mode did.
  const manual = !given && config.clock === 'manual' ? new VirtualClock(1000) : undefined;
  const precise = given ?? manual ?? new RealClock();
  const step = Math.min(config.time_resolution, heartbeatMs);
  return { clock: step > 1 ? new SteppedClock(precise, step) : precise, precise, manual };
}
