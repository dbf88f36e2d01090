/**
 * A message bus inside the process, with NATS subject matching (`*` one token, `>` the rest), for
 * simulations and scenario tests that run on a virtual clock, where no real server can keep time.
 */
import type { Bus, BusMessage, SubscribeOptions } from '../sdk/bus.js';
import type { Stage } from '../sdk/stage.js';

export function subjectMatches(pattern: string, subject: string): boolean {
  const p = pattern.split('.');
  const s = subject.split('.');
  for (let i = 0; i < p.length; i++) {
    if (p[i] === '>') return s.length > i;
    if (i >= s.length || (p[i] !== '*' && p[i] !== s[i])) return false;
  }
  return p.length === s.length;
}

export class InProcessBus implements Bus, Stage {
  connected = true;
  /** Every message published, decoded as text, in order. */
  readonly published: { subject: string; data: string; reply?: string }[] = [];
  private readonly subs = new Set<{ subject: string; handler: (m: BusMessage) => void }>();
  private inboxes = 0;

  subscribe(subject: string, handler: (msg: BusMessage) => void, _opts?: SubscribeOptions): () => void {
    const s = { subject, handler };
    this.subs.add(s);
    return () => this.subs.delete(s);
  }

  publish(subject: string, data: string | Uint8Array, reply?: string): void {
    const bytes = typeof data === 'string' ? new TextEncoder().encode(data) : data;
    this.published.push({ subject, data: new TextDecoder().decode(bytes), reply });
    for (const s of [...this.subs]) if (subjectMatches(s.subject, subject)) s.handler({ subject, data: bytes, reply });
  }

  async request(subject: string, data: string | Uint8Array, timeoutMs: number): Promise<BusMessage> {
    const inbox = `_INBOX.${++this.inboxes}`;
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        off();
        reject(new Error('request timed out'));
      }, timeoutMs);
      const off = this.subscribe(inbox, (m) => {
        clearTimeout(timer);
        off();
        resolve(m);
      });
      this.publish(subject, data, inbox);
    });
  }

  async flush(): Promise<void> {}

  health() {
    return { healthy: true, last_error: null };
  }
}
