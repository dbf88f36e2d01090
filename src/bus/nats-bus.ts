/**
 * The shared NATS connection. The first connection is retried in the background with a capped
 * back-off, so the daemon runs (and says why it cannot act) while NATS is down; once connected,
 * nats.js reconnects by itself and keeps the subscriptions. Credentials written in the server URLs
 * are taken out of them and passed as user/password or token (nats-url.ts), since nats.js would
 * otherwise connect without them.
 */
import { connect, type NatsConnection, type Subscription } from 'nats';
import type { Logger } from 'pino';
import { errorText } from '../log.js';
import { maskUrl } from '../config/mask.js';
import { BusNotConnectedError, type Bus, type BusMessage, type SubscribeOptions } from '../sdk/bus.js';
import { natsConnectSettings, type NatsConnectSettings } from './nats-url.js';
import type { Stage, StageHealth } from '../sdk/stage.js';
import type { Config } from '../config/schema.js';

export interface NatsBusOptions {
  servers: string[];
  user?: string;
  password?: string;
  token?: string;
  name: string;
  connectTimeoutMs: number;
  /**
   * How often the client pings the server. A connection that silently stops carrying packets is
   * found dead after two unanswered pings; the client's default (2 minutes) would keep a leader
   * that can no longer act in office for minutes.
   */
  pingIntervalMs?: number;
}

interface Wanted {
  subject: string;
  handler: (msg: BusMessage) => void;
  opts: SubscribeOptions;
  sub?: Subscription;
  closed: boolean;
}

export class NatsBus implements Bus, Stage {
  private nc: NatsConnection | undefined;
  private readonly wanted = new Set<Wanted>();
  private lastError: string | null = null;
  /** Between a disconnect and the reconnect that follows it. */
  private disconnected = false;
  private stopping = false;
  private retryTimer: NodeJS.Timeout | undefined;
  private firstConnect: Promise<void> | undefined;
  private readonly settings: NatsConnectSettings;

  constructor(
    private readonly opts: NatsBusOptions,
    private readonly logger: Logger,
  ) {
    const { settings, problems } = natsConnectSettings(opts.servers, opts);
    // validate refuses these for a config file; a bus built in code is told in the log instead.
    for (const p of problems) logger.error({ problem: p.message }, p.message);
    this.settings = settings;
  }

  get connected(): boolean {
    return this.nc !== undefined && !this.nc.isClosed() && !this.disconnected;
  }

  get where(): string {
    return this.opts.servers.map(maskUrl).join(', ');
  }

  async start(): Promise<void> {
    this.firstConnect = new Promise<void>((resolve) => this.attempt(1, resolve));
    let timer: NodeJS.Timeout | undefined;
    const timedOut = new Promise<'timeout'>((r) => (timer = setTimeout(() => r('timeout'), this.opts.connectTimeoutMs)));
    const result = await Promise.race([this.firstConnect, timedOut]);
    clearTimeout(timer);
    if (result === 'timeout') {
      this.logger.warn(
        { servers: this.where, error: this.lastError },
        `NATS not reachable at ${this.where} (${this.lastError ?? 'no answer'}); retrying in the background`,
      );
    }
  }

  private attempt(n: number, onConnected: () => void): void {
    if (this.stopping) return;
    connect({
      ...this.settings,
      name: this.opts.name,
      reconnect: true,
      maxReconnectAttempts: -1,
      reconnectTimeWait: 1000,
      timeout: Math.max(500, Math.min(this.opts.connectTimeoutMs, 5000)),
      ...(this.opts.pingIntervalMs ? { pingInterval: this.opts.pingIntervalMs, maxPingOut: 2 } : {}),
    }).then(
      (nc) => {
        if (this.stopping) {
          void nc.close();
          return;
        }
        this.nc = nc;
        this.disconnected = false;
        this.lastError = null;
        this.logger.info({ servers: this.where, server: nc.getServer() }, 'connected to NATS');
        for (const w of this.wanted) this.bind(w);
        void this.watch(nc);
        onConnected();
      },
      (err: unknown) => {
        const text = describeNatsError(err);
        if (text !== this.lastError) this.logger.error({ servers: this.where, error: text }, `cannot connect to NATS at ${this.where}: ${text}`);
        this.lastError = text;
        const delay = Math.min(10_000, 250 * 2 ** Math.min(n, 6));
        this.retryTimer = setTimeout(() => this.attempt(n + 1, onConnected), delay);
      },
    );
  }

  private async watch(nc: NatsConnection): Promise<void> {
    for await (const s of nc.status()) {
      if (s.type === 'disconnect') {
        this.disconnected = true;
        this.lastError = `disconnected from ${maskUrl(String(s.data))}`;
        this.logger.warn({ server: maskUrl(String(s.data)) }, 'NATS disconnected; reconnecting');
      } else if (s.type === 'reconnect') {
        this.disconnected = false;
        this.lastError = null;
        this.logger.info({ server: maskUrl(String(s.data)) }, 'NATS reconnected');
      } else if (s.type === 'error') {
        // A server error the client survives (a protocol or permissions error) leaves the
        // connection up: it is reported, but only a disconnect or a close makes the bus down.
        this.lastError = describeNatsError(s.data);
        this.logger.error({ error: this.lastError }, `NATS error: ${this.lastError}`);
      }
    }
  }

  private bind(w: Wanted): void {
    if (!this.nc || w.closed) return;
    w.sub = this.nc.subscribe(w.subject, {
      queue: w.opts.queue,
      callback: (err, msg) => {
        if (err) {
          this.logger.error({ subject: w.subject, error: errorText(err) }, 'subscription error');
          return;
        }
        try {
          w.handler({ subject: msg.subject, data: msg.data, reply: msg.reply });
        } catch (e) {
          // A handler bug must not take the connection down; it is logged with the subject.
          this.logger.error({ subject: msg.subject, error: errorText(e) }, 'message handler failed');
        }
      },
    });
  }

  subscribe(subject: string, handler: (msg: BusMessage) => void, opts: SubscribeOptions = {}): () => void {
    const w: Wanted = { subject, handler, opts, closed: false };
    this.wanted.add(w);
    this.bind(w);
    return () => {
      w.closed = true;
      w.sub?.unsubscribe();
      this.wanted.delete(w);
    };
  }

  private connection(): NatsConnection {
    if (!this.nc || this.nc.isClosed()) throw new BusNotConnectedError(`NATS is not connected (${this.where}${this.lastError ? `: ${this.lastError}` : ''})`);
    return this.nc;
  }

  publish(subject: string, data: string | Uint8Array, reply?: string): void {
    const nc = this.connection();
    nc.publish(subject, typeof data === 'string' ? new TextEncoder().encode(data) : data, reply ? { reply } : undefined);
  }

  async request(subject: string, data: string | Uint8Array, timeoutMs: number): Promise<BusMessage> {
    const nc = this.connection();
    const msg = await nc.request(subject, typeof data === 'string' ? new TextEncoder().encode(data) : data, { timeout: timeoutMs, noMux: true });
    return { subject: msg.subject, data: msg.data, reply: msg.reply };
  }

  async flush(): Promise<void> {
    await this.connection().flush();
  }

  health(): StageHealth {
    return { healthy: this.connected, last_error: this.nc === undefined ? (this.lastError ?? 'connecting') : this.lastError };
  }

  async stop(): Promise<void> {
    this.stopping = true;
    clearTimeout(this.retryTimer);
    const nc = this.nc;
    this.nc = undefined;
    if (nc && !nc.isClosed()) {
      // Drain delivers what is in flight; a dead server must not hold up shutdown.
      await Promise.race([nc.drain().catch(() => nc.close()), new Promise((r) => setTimeout(r, 1000))]);
      if (!nc.isClosed()) await nc.close();
    }
  }
}

function describeNatsError(err: unknown): string {
  const e = err as { code?: string; message?: string };
  const text = errorText(err);
  if (e?.code === 'AUTHORIZATION_VIOLATION' || /authorization/i.test(text))
    return 'authorization refused (check bus.user / bus.password / bus.token, or the credentials in bus.servers)';
  if (e?.code === 'ECONNREFUSED' || /ECONNREFUSED|CONNECTION_REFUSED/i.test(text)) return 'connection refused';
  return maskUrl(text);
}

/** The daemon's NATS connection, as bus: in the config sets it. */
export function natsBus(bus: Config['bus'], heartbeatMs: number, logger: Logger): NatsBus {
  return new NatsBus(
    {
      servers: bus.servers,
      user: bus.user,
      password: bus.password,
      token: bus.token,
      name: bus.name,
      connectTimeoutMs: bus.connect_timeout,
      // Half a heartbeat (1–5 s): a dead connection is found well within leader.resign_after.
      pingIntervalMs: Math.min(5_000, Math.max(1_000, heartbeatMs / 2)),
    },
    logger,
  );
}
