/**
 * The message bus as stages see it: one shared NATS connection. Subscriptions made before the
 * connection is up are applied once it is, and survive reconnects; publishing while disconnected
 * throws BusNotConnectedError so callers (the dispatcher) leave their message untouched.
 */
export interface BusMessage {
  subject: string;
  data: Uint8Array;
  reply?: string;
}

export interface SubscribeOptions {
  queue?: string;
}

export interface Bus {
  readonly connected: boolean;
  subscribe(subject: string, handler: (msg: BusMessage) => void, opts?: SubscribeOptions): () => void;
  publish(subject: string, data: string | Uint8Array, reply?: string): void;
  request(subject: string, data: string | Uint8Array, timeoutMs: number): Promise<BusMessage>;
  flush(): Promise<void>;
}

export class BusNotConnectedError extends Error {
  constructor(detail = 'NATS is not connected') {
    super(detail);
    this.name = 'BusNotConnectedError';
  }
}
