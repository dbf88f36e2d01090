/**
 * Leadership without an election: with a store that keeps state in this process there is one
 * daemon, and it leads from start to stop.
 */
import { addListener, type Candidacy, type Leadership } from '../../sdk/leadership.js';

/** The leadership of a daemon that is alone (memory store): it leads from start until it resigns. */
export class AlwaysLeader implements Leadership {
  private leading = true;
  private readonly listeners = new Set<(isLeader: boolean) => void>();

  constructor(private readonly id = 'self') {}

  get isLeader(): boolean {
    return this.leading;
  }

  leaderId(): string | null {
    return this.leading ? this.id : null;
  }

  onChange(listener: (isLeader: boolean) => void): () => void {
    return addListener(this.listeners, listener);
  }

  start(): void {
    this.set(true);
  }

  async resign(): Promise<void> {
    this.set(false);
  }

  async stop(): Promise<void> {
    this.set(false);
  }

  /** Alone, there is nobody to hand over to: it keeps leading whatever it can reach. */
  setEligible(): void {}

  candidacy(): Candidacy {
    return this.leading ? { candidate: true, why: null } : { candidate: false, why: 'not running' };
  }

  private set(leading: boolean): void {
    if (this.leading === leading) return;
    this.leading = leading;
    for (const listener of [...this.listeners]) listener(leading);
  }
}
