/**
 * Simulated agents (DEAs) on a real NATS server: each heartbeats its instances on dea.heartbeat
 * every interval, can report exits on droplet.exited, and can fall silent. And a recorder that
 * keeps every message seen on some subjects with the time it arrived. For end-to-end tests.
 */
import { connect, type NatsConnection } from 'nats';

export interface SimInstance {
  app: string;
  version: string;
  instance: string;
  index: number;
  state: 'STARTING' | 'RUNNING' | 'CRASHED' | 'EVACUATING' | string;
  ccPartition?: string;
}

export class SimAgent {
  readonly instances = new Map<string, SimInstance>();
  silent = false;

  constructor(readonly id: string) {}

  run(app: string, index: number, o: Partial<SimInstance> = {}): SimInstance {
    const inst: SimInstance = {
      app,
      version: o.version ?? 'v1',
      instance: o.instance ?? `${this.id}-${app}-${index}-${this.instances.size}`,
      index,
      state: o.state ?? 'RUNNING',
      ccPartition: o.ccPartition,
    };
    this.instances.set(inst.instance, inst);
    return inst;
  }

  remove(instance: string): void {
    this.instances.delete(instance);
  }

  heartbeat(): string {
    return JSON.stringify({
      dea: this.id,
      droplets: [...this.instances.values()].map((i) => ({
        cc_partition: i.ccPartition ?? 'default',
        droplet: i.app,
        version: i.version,
        instance: i.instance,
        index: i.index,
        state: i.state,
        state_timestamp: 1700000000.5,
      })),
    });
  }
}

export class SimAgents {
  readonly agents = new Map<string, SimAgent>();
  private timer: NodeJS.Timeout | undefined;

  private constructor(
    private readonly nc: NatsConnection,
    private readonly intervalMs: number,
  ) {}

  static async start(natsUrl: string, intervalMs: number): Promise<SimAgents> {
    const sim = new SimAgents(await connect({ servers: natsUrl }), intervalMs);
    sim.timer = setInterval(() => sim.beat(), intervalMs);
    return sim;
  }

  /**
   * Plays the Cloud Controller and the agents obeying it: an hm9000.stop removes the instance from
   * the agent that runs it; an hm9000.start runs the index (RUNNING) on `placeOn` — unless
   * `ignore(app)` says this app's starts fail (a crashing app).
   */
  obey(placeOn: string, ignore: (app: string) => boolean = () => false): void {
    const decode = (d: Uint8Array) => JSON.parse(new TextDecoder().decode(d)) as Record<string, unknown>;
    this.nc.subscribe('hm9000.stop', {
      callback: (_e, m) => {
        const body = decode(m.data);
        for (const a of this.agents.values()) a.remove(String(body.instance_guid));
      },
    });
    this.nc.subscribe('hm9000.start', {
      callback: (_e, m) => {
        const body = decode(m.data);
        if (ignore(String(body.droplet))) return;
        this.agent(placeOn).run(String(body.droplet), Number(body.instance_index), { version: String(body.version) });
      },
    });
  }

  /**
   * The same for the Ruby HM's requests (health.start / health.stop, or the older design's
   * cloudcontrollers.hm.requests.<partition> with op): a stop removes every listed instance, a
   * start runs each index (RUNNING, the request's version) on `placeOn` unless `ignore(app)`.
   */
  obeyRequests(
    placeOn: string,
    subjects: { start: string; stop: string } = { start: 'health.start', stop: 'health.stop' },
    ignore: (app: string) => boolean = () => false,
  ): void {
    const decode = (d: Uint8Array) => JSON.parse(new TextDecoder().decode(d)) as Record<string, unknown>;
    const handle = (body: Record<string, unknown>, op: 'START' | 'STOP') => {
      if (op === 'STOP') {
        const listed = Array.isArray(body.instances) ? body.instances : Object.keys((body.instances ?? {}) as object);
        for (const a of this.agents.values()) for (const guid of listed) a.remove(String(guid));
        return;
      }
      if (ignore(String(body.droplet))) return;
      for (const index of (body.indices ?? []) as number[]) this.agent(placeOn).run(String(body.droplet), index, { version: String(body.version) });
    };
    if (subjects.start === subjects.stop) {
      this.nc.subscribe(subjects.start, {
        callback: (_e, m) => {
          const body = decode(m.data);
          handle(body, body.op === 'STOP' ? 'STOP' : 'START');
        },
      });
      return;
    }
    this.nc.subscribe(subjects.start, { callback: (_e, m) => handle(decode(m.data), 'START') });
    this.nc.subscribe(subjects.stop, { callback: (_e, m) => handle(decode(m.data), 'STOP') });
  }

  /** Answers `subject` (NATS request/reply) with `body`; returns how many requests came. */
  async respond(subject: string, body: Record<string, unknown>): Promise<{ count: number }> {
    const seen = { count: 0 };
    this.nc.subscribe(subject, {
      callback: (_e, m) => {
        seen.count++;
        if (m.reply) this.nc.publish(m.reply, new TextEncoder().encode(JSON.stringify(body)));
      },
    });
    await this.nc.flush();
    return seen;
  }

  /** A NATS request with several replies collected for `waitMs`. */
  async requestMany(subject: string, body: Record<string, unknown>, waitMs: number): Promise<Record<string, unknown>[]> {
    const inbox = `_INBOX.test.${Math.random().toString(36).slice(2)}`;
    const replies: Record<string, unknown>[] = [];
    const sub = this.nc.subscribe(inbox, { callback: (_e, m) => void replies.push(JSON.parse(new TextDecoder().decode(m.data)) as Record<string, unknown>) });
    this.nc.publish(subject, new TextEncoder().encode(JSON.stringify(body)), { reply: inbox });
    await new Promise((r) => setTimeout(r, waitMs));
    sub.unsubscribe();
    return replies;
  }

  agent(id: string): SimAgent {
    let a = this.agents.get(id);
    if (!a) this.agents.set(id, (a = new SimAgent(id)));
    return a;
  }

  /** Publishes every agent's heartbeat now (also done every interval). */
  beat(): void {
    for (const a of this.agents.values()) if (!a.silent) this.nc.publish('dea.heartbeat', new TextEncoder().encode(a.heartbeat()));
  }

  exited(inst: SimInstance, reason: string, crashTimestamp = 1): void {
    const body = {
      cc_partition: inst.ccPartition ?? 'default',
      droplet: inst.app,
      version: inst.version,
      instance: inst.instance,
      index: inst.index,
      reason,
      exit_status: 0,
      exit_description: '',
      crash_timestamp: crashTimestamp,
    };
    this.nc.publish('droplet.exited', new TextEncoder().encode(JSON.stringify(body)));
  }

  async stop(): Promise<void> {
    clearInterval(this.timer);
    await this.nc.drain().catch(() => undefined);
  }
}

export interface Recorded {
  subject: string;
  body: Record<string, unknown>;
  raw: string;
  at: number;
}

export class SubjectRecorder {
  readonly messages: Recorded[] = [];

  private constructor(private readonly nc: NatsConnection) {}

  static async start(natsUrl: string, subjects: string[]): Promise<SubjectRecorder> {
    const nc = await connect({ servers: natsUrl });
    const r = new SubjectRecorder(nc);
    for (const subject of subjects) {
      nc.subscribe(subject, {
        callback: (_err, msg) => {
          const raw = new TextDecoder().decode(msg.data);
          r.messages.push({ subject: msg.subject, raw, body: JSON.parse(raw) as Record<string, unknown>, at: Date.now() });
        },
      });
    }
    await nc.flush();
    return r;
  }

  on(subject: string): Recorded[] {
    return this.messages.filter((m) => m.subject === subject);
  }

  async stop(): Promise<void> {
    await this.nc.drain().catch(() => undefined);
  }
}
