/**
 * App keys: `${guid},${version}`, since versions of one app are separate apps to the rules. One
 * string per key however many instances and agents name the app (a process-wide, bounded cache):
 * per-agent groupings of a large foundation hold an app key per instance, and a key is 70-odd bytes.
 */

export type AppKey = string;

interface KeyEntry {
  version: string;
  key: AppKey;
  /** The key of another version of the same app. */
  next: KeyEntry | undefined;
}
const keys = new Map<string, KeyEntry>();
let keysKept = 0;
const KEYS_KEPT = 2_000_000;

/**
 * One string per app key, however many instances and agents name the app: per-agent groupings of
 * a large foundation hold an app key per instance, and a key is 70-odd bytes. Bounded: forgotten
 * all at once past KEYS_KEPT (a later call makes the key again).
 */
export function appKey(guid: string, version: string): AppKey {
  const first = keys.get(guid);
  for (let e = first; e !== undefined; e = e.next) if (e.version === version) return e.key;
  const key = `${guid},${version}`;
  if (keysKept >= KEYS_KEPT) {
    keys.clear();
    keysKept = 0;
  }
  keys.set(guid, { version, key, next: keysKept === 0 ? undefined : first });
  keysKept++;
  return key;
}
