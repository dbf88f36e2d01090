/**
 * Instance sets as the stores handle them: grouped per app, and compared so that a store writes an
 * agent's instances only when the set changed. Field by field, with no allocation on the usual path (an agent reports its
 * instances in the same order every time): this runs for every agent on every heartbeat.
 */
import { appKey, type AppKey } from '../sdk/app-key.js';
import type { InstanceHeartbeat, InstanceState } from '../sdk/state.js';

export function sameInstance(a: InstanceHeartbeat, b: InstanceHeartbeat): boolean {
  return (
    a.instance === b.instance &&
    a.index === b.index &&
    a.state === b.state &&
    a.stateTimestamp === b.stateTimestamp &&
    a.app === b.app &&
    a.version === b.version &&
    a.agent === b.agent &&
    a.ccPartition === b.ccPartition
  );
}

export function compareInstances(a: InstanceHeartbeat, b: InstanceHeartbeat): number {
  if (a.instance !== b.instance) return a.instance < b.instance ? -1 : 1;
  if (a.index !== b.index) return a.index - b.index;
  if (a.state !== b.state) return a.state < b.state ? -1 : 1;
  if (a.stateTimestamp !== b.stateTimestamp) return a.stateTimestamp < b.stateTimestamp ? -1 : 1;
  const ka = `${a.app}\u0000${a.version}\u0000${a.agent}\u0000${a.ccPartition ?? ''}`;
  const kb = `${b.app}\u0000${b.version}\u0000${b.agent}\u0000${b.ccPartition ?? ''}`;
  return ka < kb ? -1 : ka > kb ? 1 : 0;
}

/** The same instances in any order; allocation-free when the order is the same (the usual case). */
export function sameInstanceSet(a: readonly InstanceHeartbeat[], b: readonly InstanceHeartbeat[]): boolean {
  if (a === b) return true;
  if (a.length !== b.length) return false;
  let i = 0;
  while (i < a.length && (a[i] === b[i] || sameInstance(a[i]!, b[i]!))) i++;
  if (i === a.length) return true;
  const x = a.slice(i).sort(compareInstances);
  const y = b.slice(i).sort(compareInstances);
  for (let k = 0; k < x.length; k++) if (!sameInstance(x[k]!, y[k]!)) return false;
  return true;
}

/**
 * An instance as the heartbeat source makes it from a message: never changed afterwards, so a
 * store keeps it as it is — the same object from save to save while the instance is unchanged —
 * instead of copying every instance of every changed agent.
 */
export class HeardInstance implements InstanceHeartbeat {
  // Set only when reported, as in a plain instance object (no own undefined property).
  declare ccPartition?: string;

  constructor(
    public app: string,
    public version: string,
    public instance: string,
    public index: number,
    public state: InstanceState,
    public stateTimestamp: number,
    public agent: string,
    ccPartition: string | undefined,
  ) {
    if (ccPartition !== undefined) this.ccPartition = ccPartition;
  }
}

/**
 * What a store keeps of a caller's instances: its own array, with the caller's objects copied
 * unless they are HeardInstances, so later changes to the input do not reach the store.
 */
export function keptInstances(list: readonly InstanceHeartbeat[]): readonly InstanceHeartbeat[] {
  const out = list.slice();
  for (let i = 0; i < out.length; i++) if (!(out[i] instanceof HeardInstance)) out[i] = { ...out[i]! };
  return out;
}

/** Instances grouped per app (guid, version), in the order given. */
export function groupByApp(instances: readonly InstanceHeartbeat[]): Map<AppKey, InstanceHeartbeat[]> {
  const byApp = new Map<AppKey, InstanceHeartbeat[]>();
  for (const hb of instances) {
    const key = appKey(hb.app, hb.version);
    const list = byApp.get(key);
    if (list) list.push(hb);
    else byApp.set(key, [hb]);
  }
  return byApp;
}
