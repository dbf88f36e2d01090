/**
 * The config key an operator sets to change a stage option. Most options are the stage's own
 * (`sources.heartbeats.subject`), but some originals' settings are used by several stages and are
 * set once, at the top level: `cc_partition` (the heartbeat filter, the credentials subject and the
 * request subject) and the Ruby HM's `intervals` (droplet_lost, flapping_timeout). The loader fills
 * each such stage option from its top-level key and notes it here, so that advice ("set …") names
 * the key that changes every stage at once, not the one that would change this stage alone.
 */

/** Per stage options object: option name → the top-level key it was filled from. */
const filledFrom = new WeakMap<object, Map<string, string>>();

/** Notes that `option` of the stage whose options are `options` was filled from the top-level `key`. */
export function noteFilledFrom(options: object, option: string, key: string): void {
  let keys = filledFrom.get(options);
  if (!keys) filledFrom.set(options, (keys = new Map()));
  keys.set(option, key);
}

/**
 * The key to set to change `option` of the stage at `stagePath` (e.g. "sources.heartbeats") whose
 * options are `options`: the top-level key it was filled from, else the stage's own.
 */
export function optionKey(options: object, stagePath: string, option: string): string {
  return filledFrom.get(options)?.get(option) ?? `${stagePath}.${option}`;
}
