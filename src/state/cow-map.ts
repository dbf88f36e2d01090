/**
 * A copy-on-write map: a store's snapshot costs a reference, and the map is cloned only on the
 * first write after a snapshot was taken.
 */
/** A Map handed out by reference (view()) and cloned on the first write after that. */
export class CowMap<K, V> {
  private map = new Map<K, V>();
  private shared = false;

  get(key: K): V | undefined {
    return this.map.get(key);
  }

  has(key: K): boolean {
    return this.map.has(key);
  }

  get size(): number {
    return this.map.size;
  }

  values(): IterableIterator<V> {
    return this.map.values();
  }

  set(key: K, value: V): void {
    this.own().set(key, value);
  }

  delete(key: K): boolean {
    return this.map.has(key) && this.own().delete(key);
  }

  view(): ReadonlyMap<K, V> {
    this.shared = true;
    return this.map;
  }

  private own(): Map<K, V> {
    if (this.shared) {
      this.map = new Map(this.map);
      this.shared = false;
    }
    return this.map;
  }
}
