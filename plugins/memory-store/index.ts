/** The `memory` store: all state in this process, lost on restart. For a single daemon. */
import { Type } from '@sinclair/typebox';
import { definePlugin } from '../../src/sdk/index.js';
import { MemoryStore } from './memory-store.js';

export { MemoryStore } from './memory-store.js';

export default definePlugin({
  name: 'memory',
  kind: 'store',
  family: 'common',
  description: 'Keeps the state store in this process (one daemon; state is rebuilt after a restart).',
  optionsSchema: Type.Object({}, { additionalProperties: false }),
  create: (_opts, ctx) =>
    new MemoryStore(ctx.clock, {
      onListenerError: (err, change) => ctx.logger.error({ err, change }, 'store change listener failed'),
    }),
  summary: () => 'memory store (state lives in this process)',
});
