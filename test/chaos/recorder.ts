/**
 * The chaos suite's judge. It hears every hm9000.start / hm9000.stop the live simulator hears, at
 * the moment the simulator hears it and before the simulator carries it out (LiveOptions.onOrder),
 * and classifies it against the foundation's truth at that moment: which instances really run, on
 * which agent, whether that agent is publishing, and what the Cloud Controller desires.
 *
 * The foundation (src/sim/live-foundation.ts) runs one instance per index and the CC desires every
 * index it runs, so nothing is ever extra: a correct health manager sends starts only for indices
 * that are really empty, and no stops at all.
 *
 * A NEED is an index that became empty: an instance made to vanish on purpose (vanish()), or one
 * emptied by an obeyed stop. A need is answered by its first start. Verdicts, first match wins:
 *
 *   start (correct)  a start for a desired index that is really empty, the first since it emptied.
 *   duplicate        a start or stop whose message_id was already heard; a start for an index whose
 *                    need was already answered by a start that the foundation obeyed (the index is
 *                    running again, or about to be: a second daemon, or a repeat sent before the
 *                    obeyed instance could be heard, is a second order for one need); a stop for an
 *                    instance guid already stopped.
 *   resend           a start for an index whose need was answered by a start the foundation did NOT
 *                    obey (not carried out): HM9000 re-sends an unanswered start after a back-off,
 *                    and that is allowed.
 *   wrong start      a start for an app, version or index the CC does not desire.
 *   start while stale a start for an index that is running at that moment — including the
 *                    instances of agents that are merely silent or paused (they run, and would be
 *                    heard again), and instances brought back out of band (restored()).
 *   wrong stop       any other stop: it names a desired, needed instance (there are no extras
 *                    here), or one that does not run (a stop decided on a false picture).
 *
 * For each instance made to vanish on purpose, startsFor() counts every start its index got after
 * it vanished (correct, duplicate, resend or stale alike): exactly one is right.
 */
import { appOf, appVersion, type LiveFoundation } from '../../src/sim/live-foundation.js';

export type Verdict = 'start' | 'duplicate' | 'resend' | 'wrong_start' | 'stale_start' | 'wrong_stop';

export interface JudgedOrder {
  at: number;
  action: 'start' | 'stop';
  body: Record<string, unknown>;
  verdict: Verdict;
  /** Global instance number (app × per-app + index), -1 when the order names none of this foundation. */
  instance: number;
  why: string;
}

interface Need {
  since: number;
  /** Made to vanish on purpose by the test. */
  onPurpose: boolean;
  starts: number;
  firstStartAt?: number;
  firstMessageId?: string;
  /** The first start was carried out by the foundation. */
  obeyed?: boolean;
}

export class OrderRecorder {
  readonly orders: JudgedOrder[] = [];
  private readonly needs = new Map<number, Need>();
  private readonly vanishedOnPurpose: { instance: number; at: number; need: Need }[] = [];
  private readonly messageIds = { start: new Set<string>(), stop: new Set<string>() };
  private readonly stoppedGuids = new Set<string>();

  /**
   * @param isSilent whether agent d publishes no heartbeat now (a silent agent's instances run).
   * @param obeying whether the foundation carries out the orders it hears.
   */
  constructor(
    private readonly f: LiveFoundation,
    private readonly isSilent: (agent: number) => boolean = () => false,
    private readonly obeying = true,
    private readonly clock: () => number = Date.now,
  ) {}

  /** Instance g vanishes on purpose, now: its index becomes a need that must get exactly one start. */
  vanish(g: number): void {
    const at = this.clock();
    if (!this.f.remove(g)) throw new Error(`instance ${g} cannot vanish: it is not running`);
    const need: Need = { since: at, onPurpose: true, starts: 0 };
    this.needs.set(g, need);
    this.vanishedOnPurpose.push({ instance: g, at, need });
  }

  /** Instance g was started again out of band (not by an order): its need is gone, it runs. */
  restored(g: number): void {
    this.needs.delete(g);
    const i = this.vanishedOnPurpose.findIndex((v) => v.instance === g);
    if (i >= 0) this.vanishedOnPurpose.splice(i, 1);
  }

  /** The judge; give it as LiveOptions.onOrder. */
  readonly observe = (action: 'start' | 'stop', body: Record<string, unknown>): void => {
    const j = action === 'start' ? this.judgeStart(body) : this.judgeStop(body);
    this.orders.push({ at: this.clock(), action, body, ...j });
  };

  private running(g: number): boolean {
    return this.f.currentGuid(g) !== undefined;
  }

  private where(g: number): string {
    const d = this.f.agentOf(g);
    return `agent ${d}${this.isSilent(d) ? ' (silent)' : ''}`;
  }

  private judgeStart(body: Record<string, unknown>): { verdict: Verdict; instance: number; why: string } {
    const id = String(body.message_id ?? '');
    if (id !== '' && this.messageIds.start.has(id)) return { verdict: 'duplicate', instance: -1, why: `message_id ${id} heard before` };
    if (id !== '') this.messageIds.start.add(id);
    const a = appOf(String(body.droplet));
    const index = Number(body.instance_index);
    if (a < 0) return { verdict: 'wrong_start', instance: -1, why: 'the CC desires no such app' };
    if (String(body.version) !== appVersion(a))
      return { verdict: 'wrong_start', instance: -1, why: `version ${String(body.version)} is not the desired ${appVersion(a)}` };
    if (!Number.isInteger(index) || index < 0 || index >= this.f.appInstances(a)) {
      return { verdict: 'wrong_start', instance: -1, why: `index ${String(body.instance_index)} is not desired (${this.f.appInstances(a)} instances)` };
    }
    const g = a * this.f.o.instancesPerApp + index;
    const need = this.needs.get(g);
    if (need && need.starts > 0) {
      need.starts++;
      const first = `first start ${need.firstMessageId} at +${need.firstStartAt! - need.since} ms after it emptied`;
      return need.obeyed
        ? { verdict: 'duplicate', instance: g, why: `a second start for one need (${first}, carried out)` }
        : { verdict: 'resend', instance: g, why: `re-send (${first}, not carried out)` };
    }
    if (this.running(g)) return { verdict: 'stale_start', instance: g, why: `index running on ${this.where(g)}` };
    const n: Need = need ?? { since: this.clock(), onPurpose: false, starts: 0 };
    this.needs.set(g, n);
    n.starts = 1;
    n.firstStartAt = this.clock();
    n.firstMessageId = id;
    n.obeyed = this.obeying;
    return { verdict: 'start', instance: g, why: `index empty for ${n.firstStartAt - n.since} ms` };
  }

  private judgeStop(body: Record<string, unknown>): { verdict: Verdict; instance: number; why: string } {
    const id = String(body.message_id ?? '');
    const guid = String(body.instance_guid ?? '');
    if (id !== '' && this.messageIds.stop.has(id)) return { verdict: 'duplicate', instance: -1, why: `message_id ${id} heard before` };
    if (id !== '') this.messageIds.stop.add(id);
    if (this.stoppedGuids.has(guid)) return { verdict: 'duplicate', instance: -1, why: `instance ${guid} was already stopped` };
    this.stoppedGuids.add(guid);
    const g =
      Number.isInteger(Number(body.instance_index)) && appOf(String(body.droplet)) >= 0
        ? appOf(String(body.droplet)) * this.f.o.instancesPerApp + Number(body.instance_index)
        : -1;
    const runs = g >= 0 && this.f.currentGuid(g) === guid;
    if (runs && this.obeying) this.needs.set(g, { since: this.clock(), onPurpose: false, starts: 0 });
    return {
      verdict: 'wrong_stop',
      instance: g,
      why: runs ? `stops a desired, needed instance running on ${this.where(g)}` : 'names an instance that does not run',
    };
  }

  /** Orders with one of the given verdicts. */
  with(...verdicts: Verdict[]): JudgedOrder[] {
    return this.orders.filter((o) => verdicts.includes(o.verdict));
  }

  /** Orders of one action heard in [from, to). */
  between(from: number, to: number, action?: 'start' | 'stop'): JudgedOrder[] {
    return this.orders.filter((o) => o.at >= from && o.at < to && (action === undefined || o.action === action));
  }

  /** Every instance made to vanish on purpose and the starts its index got since. */
  startsFor(): { instance: number; starts: number }[] {
    return this.vanishedOnPurpose.map((v) => ({ instance: v.instance, starts: v.need.starts }));
  }

  /** One line per order, for failure messages: time relative to t0, order, verdict and why. */
  format(orders: JudgedOrder[] = this.orders, t0 = 0): string {
    if (orders.length === 0) return '(none)';
    return orders
      .map((o) => {
        const b = o.body;
        const what =
          o.action === 'start'
            ? `start ${String(b.droplet)} index ${String(b.instance_index)}`
            : `stop ${String(b.droplet)} index ${String(b.instance_index)} instance ${String(b.instance_guid)}`;
        return `  +${((o.at - t0) / 1000).toFixed(2)}s ${what} (message ${String(b.message_id)}) -> ${o.verdict}: ${o.why}`;
      })
      .join('\n');
  }
}
