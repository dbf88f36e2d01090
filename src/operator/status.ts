/**
 * What an operator sees of a running engine: /v1/status (freshness with reasons, leadership, each
 * stage's health, the counters, the problems), the dump, and the problems themselves — derived from
 * the stages, the freshness verdicts, a summary of the stored state and the listener probe, and
 * logged when each appears and clears.
 */
import type { Logger } from 'pino';
import type { StatusBody } from '../api/routes/status.js';
import type { Config } from '../config/schema.js';
import { buildDump, type DumpDoc } from '../dump/build.js';
import { errorText } from '../log.js';
import type { Clock } from '../sdk/clock.js';
import type { Leadership } from '../sdk/leadership.js';
import type { StoreSnapshot } from '../sdk/state.js';
import type { Store } from '../sdk/store.js';
import type { FreshnessAssessment, FreshnessBoard } from '../pipeline/freshness/board.js';
import { StageSet } from '../pipeline/stages.js';
import { deriveProblems, ProblemTracker, type ListenerFacts, type ProblemFacts, type StageFacts, type StateFacts } from './problems.js';

export interface StatusModelOptions {
  config: Config;
  heartbeatMs: number;
  /** The bus is in-process (simulations): no NATS servers to name. */
  inProcessBus: boolean;
  stages: StageSet;
  store(): Store | undefined;
  board: FreshnessBoard;
  leadership(): Leadership;
  /** Re-evaluates the freshness guards (so the status says what holds now). */
  checkGuards(): void;
  /** hmgate_* counters summed over their labels. */
  counters(): Promise<Record<string, number>>;
  listeners(): ListenerFacts[];
  clock: Clock;
  logger: Logger;
}

const iso = (t: number | null) => (t === null ? null : new Date(t).toISOString());

export class StatusModel {
  private readonly problems: ProblemTracker;
  private startedAt: number | undefined;
  private stopped = false;

  constructor(private readonly o: StatusModelOptions) {
    this.problems = new ProblemTracker(o.logger, () => o.clock.now());
  }

  /** Problems are evaluated from now on (the engine has started its stages). */
  begin(): void {
    this.startedAt = this.o.clock.now();
  }

  /** No more problem evaluation (the engine stops: its stages going away are not problems). */
  end(): void {
    this.stopped = true;
  }

  async status(): Promise<StatusBody> {
    const { config } = this.o;
    const now = this.o.clock.now();
    const stages: StatusBody['stages'] = {};
    for (const r of this.o.stages.inConfigOrder()) {
      const h = StageSet.health(r);
      stages[r.id] = { kind: r.kind, plugin: r.plugin, healthy: h.healthy, last_error: h.last_error };
    }
    this.o.checkGuards();
    await this.evaluateProblems();
    const store = this.o.store();
    const markers = store ? { actual: await store.getFreshness('actual'), desired: await store.getFreshness('desired') } : {};
    const { actual, desired } = this.o.board.assess(markers, now);
    const leadership = this.o.leadership();
    const { candidate, why } = leadership.candidacy();
    return {
      foundation: config.foundation,
      leader: leadership.isLeader,
      leader_id: leadership.leaderId(),
      candidate,
      not_candidate_because: candidate ? null : why,
      actual: { fresh: actual.fresh, since: iso(actual.since), reason: actual.reason },
      desired: { fresh: desired.fresh, since: iso(desired.since), reason: desired.reason },
      stages,
      counters: await this.o.counters(),
      problems: this.problems.list(),
    };
  }

  /** Whether actual and desired state are both fresh now. */
  async bothFresh(): Promise<boolean> {
    const { actual, desired } = this.o.board.assess((await this.o.store()!.snapshot()).freshness, this.o.clock.now());
    return actual.fresh && desired.fresh;
  }

  /** HM9000's structured dump as data (GET /v1/dump, hmgate dump). */
  async dump(): Promise<DumpDoc> {
    const store = this.o.store();
    if (!store) throw new Error('the store is not started');
    const now = this.o.clock.now();
    const snapshot = await store.snapshot();
    const { actual, desired, error } = this.o.board.assess(snapshot.freshness, now);
    const shown = (v: typeof actual) => ({ fresh: v.fresh, since: iso(v.since), reason: v.reason });
    return buildDump({ foundation: this.o.config.foundation, now, snapshot, actual: shown(actual), desired: shown(desired), freshnessError: error });
  }

  /**
   * Re-derives the problems from what the engine knows now; never throws. A cycle passes the
   * snapshot it read and the verdicts it judged it by, so freshness is computed once per cycle.
   */
  async evaluateProblems(snapshot?: StoreSnapshot, assessment?: FreshnessAssessment): Promise<void> {
    if (this.startedAt === undefined || this.stopped) return;
    try {
      this.problems.update(deriveProblems(await this.facts(snapshot, assessment)));
    } catch (err) {
      this.o.logger.debug({ error: errorText(err) }, `could not evaluate problems: ${errorText(err)}`);
    }
  }

  private async facts(given: StoreSnapshot | undefined, assessment: FreshnessAssessment | undefined): Promise<ProblemFacts> {
    const { config, heartbeatMs } = this.o;
    const now = this.o.clock.now();
    const stages: StageFacts[] = this.o.stages.all().map((r) => {
      const h = StageSet.health(r);
      return { id: r.id, section: r.section, plugin: r.pluginName, definition: r.definition, options: r.options, healthy: h.healthy, last_error: h.last_error };
    });
    let state: StateFacts;
    let markers: StoreSnapshot['freshness'] = {};
    try {
      const snapshot = given ?? (await this.o.store()!.snapshot());
      markers = snapshot.freshness;
      state = await this.stateFacts(snapshot);
    } catch (err) {
      state = { error: errorText(err) };
    }
    const { actual, desired } = given && assessment ? assessment : this.o.board.assess(markers, now);
    return {
      uptimeMs: now - (this.startedAt ?? now),
      heartbeatMs,
      actualTtlMs: config.freshness.actual_ttl,
      gate: config.freshness.gate,
      servers: this.o.inProcessBus ? [] : config.bus.servers,
      ...(config.bus.monitor_url ? { monitorUrl: config.bus.monitor_url } : {}),
      stages,
      actual: { fresh: actual.fresh, reason: actual.reason },
      desired: { fresh: desired.fresh, reason: desired.reason },
      state,
      listeners: this.o.listeners(),
      holds: this.o.board.holds(),
    };
  }

  private async stateFacts(s: StoreSnapshot): Promise<StateFacts> {
    let live = 0;
    const guids = new Set<string>();
    for (const list of s.instances.values()) {
      if (list.length === 0) continue;
      live += list.length;
      guids.add(list[0]!.app);
    }
    let desiredHeartbeating = false;
    if (live > 0) {
      for (const d of s.desired.values()) {
        if (guids.has(d.guid)) {
          desiredHeartbeating = true;
          break;
        }
      }
    }
    const facts: StateFacts = { desiredApps: s.desired.size, liveInstances: live, heartbeatingApps: guids.size, desiredHeartbeating };
    // Agents that heartbeat no instance are only in the agent records: counted when it matters.
    if (live === 0) facts.agents = (await this.o.store()!.getAgents()).size;
    return facts;
  }
}
