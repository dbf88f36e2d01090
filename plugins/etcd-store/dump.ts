/** What `hmgate dump --raw` shows of the etcd store: every key under its prefix, read from etcd. */
import type { IKeyValue } from 'etcd3';
import { applyDelta, decodeAgent, decodeAgentDelta, encodeAgent } from './codec.js';
import { parseAgentKey, type Keys } from './keys.js';
import type { EtcdRequests } from './requests.js';

/**
 * Every key under the prefix as etcd holds it now, one line each: `key  value  (lease <id> ttl
 * <remaining>s)` or `(no lease)`, sorted by key; after an agent's delta, one more line
 * `<record key> (merged)  <record with the delta applied>`, the agent as every store reads it.
 */
export async function dumpKeys(requests: EtcdRequests, keys: Keys): Promise<string[]> {
  const { kvs } = await requests.rangeAll(keys.root, 'dumping the keys');
  const ttls = new Map<string, string>();
  for (const lease of new Set(kvs.map((kv) => kv.lease).filter((l) => l !== '0'))) {
    const res = await requests.call('reading a lease', (c) => c.leaseClient.leaseTimeToLive({ ID: lease }), false);
    ttls.set(lease, Number(res.TTL) < 0 ? 'expired' : `${res.TTL}s`);
  }
  const records = new Map<string, IKeyValue>();
  const lines: string[] = [];
  for (const kv of kvs) {
    const key = kv.key.toString();
    const lease = kv.lease === '0' ? '(no lease)' : `(lease ${BigInt(kv.lease).toString(16)} ttl ${ttls.get(kv.lease)})`;
    lines.push(`${key}  ${kv.value.toString()}  ${lease}`);
    const agentKey = key.startsWith(keys.agents) ? parseAgentKey(keys, key) : undefined;
    if (agentKey === undefined) continue;
    if (!agentKey.delta) {
      records.set(agentKey.agent, kv);
      continue;
    }
    // After a delta (it sorts after its record), the agent as readers see it.
    const record = records.get(agentKey.agent);
    try {
      const delta = decodeAgentDelta(agentKey.agent, kv.value.toString());
      if (record === undefined || Number(record.mod_revision) !== delta.base) {
        lines.push(`${key} (ignored)  a delta of record revision ${delta.base}, which etcd does not hold`);
        continue;
      }
      const base = decodeAgent(agentKey.agent, record.value.toString());
      const merged = encodeAgent(agentKey.agent, {
        writer: base.writer,
        vouchedUntil: Math.max(base.vouchedUntil, delta.vouchedUntil),
        instances: applyDelta(agentKey.agent, base.instances, delta),
      });
      lines.push(`${record.key.toString()} (merged)  ${merged}  (record revision ${delta.base} with its delta: as the store reads it)`);
    } catch (err) {
      lines.push(`${key} (unreadable)  ${(err as Error).message}`);
    }
  }
  return lines;
}
