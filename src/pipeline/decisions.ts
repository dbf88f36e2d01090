/**
 * What policies decide and sinks receive. A decision carries its reason and the facts behind it,
 * so it can be logged once, audited and explained.
 */
import type { Stage } from './plugin.js';
import type { StoreSnapshot } from './store.js';

export interface Decision {
  action: 'start' | 'stop';
  app: string;
  version: string;
  index?: number;
  instance?: string;
  reason: string;
  facts?: Record<string, unknown>;
}

export interface PolicyStage extends Stage {
  analyze?(snapshot: StoreSnapshot): Decision[] | Promise<Decision[]>;
}

export interface SinkStage extends Stage {
  deliver?(decisions: readonly Decision[]): Promise<void>;
}
