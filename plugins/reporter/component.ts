/**
 * VCAP component registration (docs/ruby-hm.md#component-registration), so the foundation's collector finds this daemon's
 * /varz: `vcap.component.discover` is answered with the component's card, and the card is published
 * once on `vcap.component.announce` at start. The card names the hmgate API (host:port) and its
 * basic-auth credentials, which the collector needs to read /varz; the credentials are never logged.
 */
import { randomBytes } from 'node:crypto';
import type { BusMessage, StageContext } from '../../src/sdk/index.js';

export interface ComponentOptions {
  enabled: boolean;
  type: string;
  index: number;
  announce_host?: string | undefined;
  user?: string | undefined;
  password?: string | undefined;
  discover_subject: string;
  announce_subject: string;
}

/** When the bus is down at start, the announce is tried again this often until it goes out. */
export const ANNOUNCE_RETRY_MS = 1000;

/** `0d:0h:5m:3s`, as VCAP components wrote their uptime. */
export function uptimeString(ms: number): string {
  let s = Math.max(0, Math.floor(ms / 1000));
  const days = Math.floor(s / 86_400);
  s -= days * 86_400;
  const hours = Math.floor(s / 3600);
  s -= hours * 3600;
  const minutes = Math.floor(s / 60);
  s -= minutes * 60;
  return `${days}d:${hours}h:${minutes}m:${s}s`;
}

/** A time as Ruby wrote one in JSON (`2013-07-31 22:00:00 +0000`), in UTC. */
export function rubyTime(ms: number): string {
  return `${new Date(ms).toISOString().slice(0, 19).replace('T', ' ')} +0000`;
}

/** The problems of the options, as sentences naming `reporters.<id>.component.<key>`. */
export function checkComponent(o: ComponentOptions, id: string): string[] {
  if (!o.enabled) return [];
  const key = (k: string) => `reporters.${id}.component.${k}`;
  const missing = (['announce_host', 'user', 'password'] as const).filter((k) => o[k] === undefined || o[k] === '');
  if (missing.length === 0) return [];
  return [
    `${missing.map(key).join(', ')} ${missing.length === 1 ? 'is' : 'are'} required with component.enabled: true: the collector reads /varz at announce_host (the API's host:port) with the API's user and password`,
  ];
}

export class Component {
  /** The card, in the order VCAP components built it; uptime is added by each discover. */
  readonly card: { type: string; index: number; uuid: string; host: string; credentials: [string, string]; start: string; uptime?: string };
  private off: (() => void) | undefined;
  private retry: ReturnType<StageContext['clock']['setTimeout']> | undefined;
  private announced = false;

  constructor(
    private readonly o: ComponentOptions,
    private readonly ctx: StageContext,
    private readonly startedMs: number,
  ) {
    this.card = {
      type: o.type,
      index: o.index,
      uuid: `${o.index}-${randomBytes(16).toString('hex')}`,
      host: o.announce_host ?? '',
      credentials: [o.user ?? '', o.password ?? ''],
      start: rubyTime(startedMs),
    };
  }

  start(): void {
    this.off = this.ctx.bus.subscribe(this.o.discover_subject, (msg) => this.discover(msg));
    this.announce();
  }

  stop(): void {
    this.off?.();
    this.off = undefined;
    this.ctx.clock.clearTimeout(this.retry);
    this.retry = undefined;
  }

  /** Facts for log lines: everything but the credentials. */
  private facts(): Record<string, unknown> {
    return { type: this.card.type, index: this.card.index, uuid: this.card.uuid, host: this.card.host };
  }

  private announce(): void {
    try {
      this.ctx.bus.publish(this.o.announce_subject, JSON.stringify(this.card));
      this.announced = true;
      this.ctx.logger.info({ subject: this.o.announce_subject, ...this.facts() }, `announced this component on ${this.o.announce_subject}`);
    } catch (err) {
      if (!this.retry)
        this.ctx.logger.warn(
          { subject: this.o.announce_subject, error: (err as Error).message },
          `could not announce this component yet (${(err as Error).message}); trying again every ${ANNOUNCE_RETRY_MS}ms`,
        );
      this.retry = this.ctx.clock.setTimeout(() => {
        if (this.off && !this.announced) this.announce();
      }, ANNOUNCE_RETRY_MS);
    }
  }

  private discover(msg: BusMessage): void {
    if (!msg.reply) return; // nothing to answer to
    this.card.uptime = uptimeString(this.ctx.clock.now() - this.startedMs);
    try {
      this.ctx.bus.publish(msg.reply, JSON.stringify(this.card));
    } catch (err) {
      this.ctx.logger.warn(
        { subject: this.o.discover_subject, error: (err as Error).message },
        `could not answer ${this.o.discover_subject}: ${(err as Error).message}`,
      );
    }
  }

  /** The component's part of /varz: its card without the credentials. */
  varz(): Record<string, unknown> {
    return { type: this.card.type, index: this.card.index, uuid: this.card.uuid, host: this.card.host, start: this.card.start };
  }
}
