/**
 * The mass-disappearance guard. When many agents fall silent at once, the likely cause is between
 * them and this daemon (a partition, a NATS fault, a zone cut off), not that every one of them
 * died: starting all their instances elsewhere would double the foundation's load and stop again
 * once they return. So when more than `share` of the agents heard recently fall silent within one
 * `windowMs`, in a foundation of more than `minAgents` agents, the guard trips and holds until
 * every one of those agents is heard again or an operator confirms the loss (then the silent ones
 * are forgotten and their instances count as missing as usual).
 *
 * Small foundations are below `minAgents`, so one of two agents dying is handled as the originals
 * handle it. Agents that go silent one at a time, slower than the window, never trip it.
 */

export interface CollapseOptions {
  /** The share of agents (0–1) that must fall silent within the window; 1 switches the guard off. */
  share: number;
  /** Only foundations with more agents than this are guarded. */
  minAgents: number;
  /** An agent not heard for longer than this is silent. */
  silentAfterMs: number;
  /** Silences that began within this span of each other count together. */
  windowMs: number;
}

export interface CollapseState {
  /** Agents that fell silent together and have not been heard since. */
  silent: number;
  /** Agents heard within the window before the collapse (the population it was measured against). */
  total: number;
  /** When the guard tripped. */
  since: number;
  /** The span within which they fell silent. */
  windowMs: number;
}

export class CollapseGuard {
  /** Clock time each agent was last heard. */
  private readonly lastHeard = new Map<string, number>();
  /** While tripped: the agents lost together, and the population they were counted in. */
  private lost: { agents: Set<string>; total: number; since: number } | undefined;

  constructor(private readonly opts: CollapseOptions) {}

  /** Records a heartbeat; returns when the agent was heard before (undefined if never). */
  heard(agent: string, now: number): number | undefined {
    const before = this.lastHeard.get(agent);
    this.lastHeard.set(agent, now);
    if (this.lost?.agents.delete(agent) && this.lost.agents.size === 0) this.lost = undefined;
    return before;
  }

  /** Agents heard at least once and not forgotten. */
  get known(): number {
    return this.lastHeard.size;
  }

  /**
   * Re-evaluates the guard at `now`: trips it when too many agents fell silent within the window,
   * adds agents that fall silent while it holds, and forgets agents silent for long before it.
   */
  evaluate(now: number): CollapseState | null {
    const { share, minAgents, silentAfterMs, windowMs } = this.opts;
    if (share >= 1) {
      this.lost = undefined;
      return null;
    }
    const silentBefore = now - silentAfterMs;
    // Agents silent since before the window began fell silent earlier, one by one as far as this
    // evaluation can tell: they are no longer part of the population, unless the guard holds them.
    const forgetBefore = silentBefore - windowMs;
    let population = 0;
    const recent: string[] = [];
    for (const [agent, at] of this.lastHeard) {
      if (at < forgetBefore) {
        if (!this.lost?.agents.has(agent)) this.lastHeard.delete(agent);
        continue;
      }
      population++;
      if (at < silentBefore) recent.push(agent);
    }
    if (this.lost) {
      for (const agent of recent) this.lost.agents.add(agent);
    } else if (population > minAgents && recent.length > share * population) {
      this.lost = { agents: new Set(recent), total: population, since: now };
    }
    if (!this.lost) return null;
    return { silent: this.lost.agents.size, total: this.lost.total, since: this.lost.since, windowMs };
  }

  /** The operator confirms the loss: the silent agents are forgotten and the guard releases. */
  confirm(): number {
    if (!this.lost) return 0;
    const n = this.lost.agents.size;
    for (const agent of this.lost.agents) this.lastHeard.delete(agent);
    this.lost = undefined;
    return n;
  }
}
