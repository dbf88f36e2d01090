/**
 * A fast decoder for agent heartbeats (dea.heartbeat, POST /dea/heartbeat), with the same
 * guarantees as the generic decoder (decode.ts) and the same drop reasons.
 *
 * A 100-instance heartbeat is about 23 KB of JSON; JSON.parse alone takes about 100 µs of it here,
 * and ajv then walks the parsed tree. This decoder checks the JSON grammar and the heartbeat
 * schema itself and builds the instances directly. It only ever *accepts*: anything it does not
 * handle — a byte outside ASCII, a backslash escape in a field it keeps, a value of the wrong
 * type, a missing field, bad JSON — goes to the generic decoder, which then accepts or drops it
 * with its usual reason. So a message is accepted here only if the generic decoder would accept it
 * too, with equal values for every field hmgate reads (fields it does not read are skipped after
 * their JSON is checked).
 *
 * Per-agent change detection. Even a plain JavaScript loop over 23 KB costs tens of µs, so the
 * decoder remembers each agent's last message — its bytes, where each instance lies in them and
 * what it decoded to — and compares against it natively (memcmp): a message equal to the last
 * one costs one comparison and returns the very same array; otherwise runs of unchanged instances
 * are found by a binary search of comparisons and returned as the very same frozen objects, and
 * only the instances that differ are read byte by byte (reusing their previous strings where
 * equal). An instance added or removed shifts the ones after it, which are still found. So the
 * steady state allocates nothing per unchanged instance, and consumers can tell "unchanged" by
 * identity. App guids, versions and partitions of new instances are shared strings (bounded).
 * Memory: the remembered bytes, about 23 KB per 100-instance agent (bounded by rememberBytes).
 *
 * The schema's bounds (MESSAGE_LIMITS) are checked on the byte ranges already found — a few
 * comparisons per instance read, none for instances taken from the remembered message, which
 * passed them before. Strings here are ASCII, so bytes are characters. A value over a bound goes
 * to the generic decoder, which drops it with its reason (too_long, too_many).
 */
import type { Static, TSchema } from '@sinclair/typebox';
import { makeDecoder as makeGenericDecoder, MAX_MESSAGE_BYTES, type Decoded, type Decoder } from './decode.js';
import { HeartbeatMessage, MESSAGE_LIMITS } from './schemas.js';

export type HeartbeatDroplet = HeartbeatMessage['droplets'][number];

export interface HeartbeatDecoderOptions {
  maxBytes?: number;
  /**
   * Agents remembered per generation. The cache keeps two generations: an agent not heard from
   * during a whole generation is forgotten, so memory stays bounded by 2 × this many agents.
   */
  agentsPerGeneration?: number;
  /**
   * Bytes of remembered messages at most (both generations); default 640 MiB, enough for 10 000
   * agents of 100 instances with room to spare. Past it agents are forgotten sooner.
   */
  rememberBytes?: number;
}

const DEFAULT_REMEMBER_BYTES = 640 * 1024 * 1024;

export interface HeartbeatDecoder extends Decoder<typeof HeartbeatMessage> {
  /** How many decodes took the fast path, and how many went to the generic decoder. */
  readonly stats: { fast: number; generic: number };
  /** Forget every remembered agent. */
  clear(): void;
}

/**
 * The decoder of any inbound message: heartbeats get the fast decoder, every other schema the
 * generic one. The schema is compared by identity, so the fast decoder is given for the
 * HeartbeatMessage schema only, and its values are then exactly Static<S>.
 */
export function makeMessageDecoder(schema: typeof HeartbeatMessage, maxBytes?: number): HeartbeatDecoder;
export function makeMessageDecoder<S extends TSchema>(schema: S, maxBytes?: number): Decoder<S>;
export function makeMessageDecoder(schema: TSchema, maxBytes = MAX_MESSAGE_BYTES): Decoder<TSchema> {
  if (schema === HeartbeatMessage) return makeHeartbeatDecoder({ maxBytes });
  return makeGenericDecoder(schema, maxBytes);
}

// --- bytes ---

const QUOTE = 0x22;
const BACKSLASH = 0x5c;
const COMMA = 0x2c;
const COLON = 0x3a;
const LBRACE = 0x7b;
const RBRACE = 0x7d;
const LBRACKET = 0x5b;
const RBRACKET = 0x5d;
const MINUS = 0x2d;
const PLUS = 0x2b;
const DOT = 0x2e;
const ZERO = 0x30;
const NINE = 0x39;

/** Nesting allowed inside a skipped value before handing the message to the generic decoder. */
const MAX_SKIP_DEPTH = 64;
/** Shared strings kept at most: the guids and versions of 250 000 apps. */
const MAX_INTERNED = 500_000;
/** Decimal digits of a number computed exactly here (below 2^53); longer ones go through Number(). */
const MAX_FAST_DIGITS = 15;
const MAX_AGENT = MESSAGE_LIMITS.agentId;
const MAX_GUID = MESSAGE_LIMITS.guid;
const MAX_STATE = MESSAGE_LIMITS.state;
const MAX_CC_PARTITION = MESSAGE_LIMITS.cc_partition;
const MAX_DROPLETS = MESSAGE_LIMITS.instancesPerAgent;
/** 10^k is exact in a double up to k = 22 (the classic fast path of decimal conversion). */
const POW10 = Array.from({ length: 23 }, (_, k) => 10 ** k);

/** The states agents report, returned as shared strings. */
const KNOWN_STATES = ['RUNNING', 'STARTING', 'CRASHED', 'EVACUATING'];

/** Not the fast path's to decide: the generic decoder takes the message. */
class Punt {}
const PUNT = new Punt();

type Latin1 = Buffer & { latin1Slice?: (s: number, e: number) => string };
/** Node's own latin1Slice where it has one (every supported version): no argument checks. */
const latin1: (buf: Buffer, s: number, e: number) => string =
  typeof (Buffer.prototype as Latin1).latin1Slice === 'function'
    ? (buf, s, e) => (buf as Latin1).latin1Slice!(s, e)
    : (buf, s, e) => buf.toString('latin1', s, e);

/** Bytes of a name, for comparisons without charCodeAt (several times slower per character). */
const bytesOf = (name: string): Uint8Array => Uint8Array.from(name, (c) => c.charCodeAt(0));

function sameName(b: Uint8Array, s: number, e: number, name: Uint8Array): boolean {
  if (e - s !== name.length) return false;
  for (let i = 0; i < name.length; i++) if (b[s + i] !== name[i]) return false;
  return true;
}

function sameBytes(b: Uint8Array, s: number, e: number, str: string | undefined): boolean {
  if (str === undefined || str.length !== e - s) return false;
  for (let i = 0; i < str.length; i++) if (str.charCodeAt(i) !== b[s + i]) return false;
  return true;
}

function isWs(c: number): boolean {
  return c === 0x20 || c === 0x0a || c === 0x0d || c === 0x09;
}

function ws(b: Uint8Array, p: number, n: number): number {
  while (p < n && b[p]! <= 0x20 && isWs(b[p]!)) p++;
  return p;
}

/**
 * The end of a string without escapes, of printable ASCII, whose content starts at s; PUNT for
 * anything else. With a remembered value: if the bytes are that value, its bytes are checked in
 * the same pass (a value hmgate produced holds no quote, backslash or control byte).
 */
function stringEnd(b: Uint8Array, s: number, n: number, known: string | undefined): number {
  if (known !== undefined) {
    const e = s + known.length;
    if (e < n && b[e] === QUOTE) {
      let i = 0;
      while (i < known.length && known.charCodeAt(i) === b[s + i]) i++;
      if (i === known.length) {
        stringMatched = true;
        return e;
      }
    }
  }
  stringMatched = false;
  let p = s;
  for (;;) {
    if (p >= n) throw PUNT;
    const c = b[p]!;
    if (c === QUOTE) return p;
    if (c === BACKSLASH || c < 0x20 || c >= 0x80) throw PUNT;
    p++;
  }
}

/** Whether the last string stringEnd() read was its `known` value. */
let stringMatched = false;

/** The value of the last number scanned by number(). */
let numberValue = 0;

/** A JSON number at p (its end returned, its value in numberValue), converted as JSON.parse does. */
function number(b: Uint8Array, buf: Buffer, p: number, n: number): number {
  const start = p;
  const neg = p < n && b[p] === MINUS;
  if (neg) p++;
  let m = 0;
  let digits = 0;
  let fraction = 0;
  if (p < n && b[p] === ZERO) {
    p++;
    digits++;
  } else if (p < n && b[p]! > ZERO && b[p]! <= NINE) {
    while (p < n && b[p]! >= ZERO && b[p]! <= NINE) {
      m = m * 10 + (b[p++]! - ZERO);
      digits++;
    }
  } else throw PUNT;
  if (p < n && b[p] === DOT) {
    p++;
    const fs = p;
    while (p < n && b[p]! >= ZERO && b[p]! <= NINE) {
      m = m * 10 + (b[p++]! - ZERO);
      digits++;
    }
    fraction = p - fs;
    if (fraction === 0) throw PUNT;
  }
  let exponent = false;
  if (p < n && (b[p] === 0x65 || b[p] === 0x45)) {
    exponent = true;
    p++;
    if (p < n && (b[p] === PLUS || b[p] === MINUS)) p++;
    const es = p;
    while (p < n && b[p]! >= ZERO && b[p]! <= NINE) p++;
    if (p === es) throw PUNT;
  }
  // m and 10^fraction are exact, so one division rounds correctly, as JSON.parse does.
  if (!exponent && digits <= MAX_FAST_DIGITS && fraction < POW10.length) {
    const v = fraction === 0 ? m : m / POW10[fraction]!;
    numberValue = neg ? -v : v;
  } else {
    numberValue = Number(latin1(buf, start, p));
  }
  return p;
}

/** A string with any valid escapes, of ASCII (other bytes: the generic decoder checks UTF-8); its end + 1. */
function skipString(b: Uint8Array, p: number, n: number): number {
  p++;
  for (;;) {
    if (p >= n) throw PUNT;
    const c = b[p]!;
    if (c === QUOTE) return p + 1;
    if (c < 0x20 || c >= 0x80) throw PUNT;
    if (c === BACKSLASH) {
      const x = p + 1 < n ? b[p + 1]! : -1;
      if (x === 0x75) {
        for (let k = 2; k < 6; k++) if (p + k >= n || !isHex(b[p + k]!)) throw PUNT;
        p += 6;
        continue;
      }
      // \" \\ \/ \b \f \n \r \t
      if (x !== QUOTE && x !== BACKSLASH && x !== 0x2f && x !== 0x62 && x !== 0x66 && x !== 0x6e && x !== 0x72 && x !== 0x74) throw PUNT;
      p += 2;
      continue;
    }
    p++;
  }
}

function literal(b: Uint8Array, p: number, n: number, word: string): number {
  if (p + word.length > n || !sameBytes(b, p, p + word.length, word)) throw PUNT;
  return p + word.length;
}

/** Any JSON value at p, checked and skipped (fields hmgate does not read); its end. */
function skipValue(b: Uint8Array, buf: Buffer, p: number, n: number, depth: number): number {
  if (depth > MAX_SKIP_DEPTH || p >= n) throw PUNT;
  const c = b[p]!;
  if (c === QUOTE) return skipString(b, p, n);
  if (c === LBRACE || c === LBRACKET) {
    const close = c === LBRACE ? RBRACE : RBRACKET;
    p = ws(b, p + 1, n);
    if (p < n && b[p] === close) return p + 1;
    for (;;) {
      if (c === LBRACE) {
        if (p >= n || b[p] !== QUOTE) throw PUNT;
        p = ws(b, skipString(b, p, n), n);
        if (p >= n || b[p] !== COLON) throw PUNT;
        p = ws(b, p + 1, n);
      }
      p = ws(b, skipValue(b, buf, p, n, depth + 1), n);
      if (p >= n) throw PUNT;
      const d = b[p++]!;
      if (d === close) return p;
      if (d !== COMMA) throw PUNT;
      p = ws(b, p, n);
    }
  }
  if (c === MINUS || (c >= ZERO && c <= NINE)) return number(b, buf, p, n);
  if (c === 0x74) return literal(b, p, n, 'true');
  if (c === 0x66) return literal(b, p, n, 'false');
  if (c === 0x6e) return literal(b, p, n, 'null');
  throw PUNT;
}

function isHex(c: number): boolean {
  return (c >= ZERO && c <= NINE) || (c >= 0x41 && c <= 0x46) || (c >= 0x61 && c <= 0x66);
}

// Droplet fields, as bits of the masks below.
const F_DROPLET = 1;
const F_VERSION = 2;
const F_INSTANCE = 4;
const F_INDEX = 8;
const F_STATE = 16;
const F_STATE_TIMESTAMP = 32;
const F_CC_PARTITION = 64;
const REQUIRED = F_DROPLET | F_VERSION | F_INSTANCE | F_INDEX | F_STATE | F_STATE_TIMESTAMP;

const K_INDEX = bytesOf('index');
const K_STATE = bytesOf('state');
const K_DROPLET = bytesOf('droplet');
const K_VERSION = bytesOf('version');
const K_INSTANCE = bytesOf('instance');
const K_CC_PARTITION = bytesOf('cc_partition');
const K_STATE_TIMESTAMP = bytesOf('state_timestamp');

/** The field a key names (by length and first byte, then every byte), or 0 for any other key. */
function fieldOf(b: Uint8Array, s: number, e: number): number {
  switch (e - s) {
    case 5:
      return b[s] === 0x69 ? (sameName(b, s, e, K_INDEX) ? F_INDEX : 0) : sameName(b, s, e, K_STATE) ? F_STATE : 0;
    case 7:
      return b[s] === 0x64 ? (sameName(b, s, e, K_DROPLET) ? F_DROPLET : 0) : sameName(b, s, e, K_VERSION) ? F_VERSION : 0;
    case 8:
      return sameName(b, s, e, K_INSTANCE) ? F_INSTANCE : 0;
    case 12:
      return sameName(b, s, e, K_CC_PARTITION) ? F_CC_PARTITION : 0;
    case 15:
      return sameName(b, s, e, K_STATE_TIMESTAMP) ? F_STATE_TIMESTAMP : 0;
    default:
      return 0;
  }
}

/**
 * What the decoder keeps of an agent's last message: its bytes, where each droplet lies in them,
 * and what they decoded to. Kept only for messages with one `dea` and one `droplets` key.
 */
interface Remembered {
  dea: string;
  /** The message: the start of `backing`, which has room to spare for the agent's next ones. */
  bytes: Buffer;
  backing: Buffer;
  droplets: readonly HeartbeatDroplet[];
  /** Offset of each droplet's `{`, and just past its `}`. */
  starts: Int32Array;
  ends: Int32Array;
  /** Just past the droplets array's `[`. */
  arrayStart: number;
  /** The `dea` key comes after the droplets array (the DEA's order). */
  deaInTail: boolean;
}

/** Equal bytes: a[as, as + (be - bs)) and b[bs, be), compared natively. */
function rangeEq(a: Buffer, as: number, b: Buffer, bs: number, be: number): boolean {
  const len = be - bs;
  return len >= 0 && as + len <= a.length && a.compare(b, bs, be, as, as + len) === 0;
}

/** What makeHeartbeatDecoder returns from one message. */
interface Parsed {
  dea: string;
  droplets: readonly HeartbeatDroplet[];
  /** The message to remember for the agent; undefined: forget it; `same`: keep what is kept. */
  remember: Remembered | 'same' | undefined;
}

/** dropletsFrom() consumed the rest of the message: it is the remembered message's tail. */
const TAIL = -1;

/**
 * One message. Against the agent's remembered message, byte runs that are equal are taken as they
 * are, found by native comparisons (a run of unchanged droplets costs a few memcmp calls, however
 * long it is); only droplets that differ are read here, byte by byte, into local variables, and an
 * object is made only for them. A message equal to the remembered one costs one comparison.
 */
/**
 * Room for remembered messages, cut from large blocks: one allocation of its own per agent costs
 * more than reading the message (an ArrayBuffer is set up natively and its pages touched anew).
 * A block is freed once no agent's message lies in it any more.
 */
class Slab {
  private block = Buffer.alloc(0);
  private used = 0;

  take(bytes: number): Buffer {
    if (bytes > SLAB_BYTES / 4) return Buffer.allocUnsafeSlow(bytes);
    if (this.used + bytes > this.block.length) {
      this.block = Buffer.allocUnsafeSlow(SLAB_BYTES);
      this.used = 0;
    }
    const piece = this.block.subarray(this.used, this.used + bytes);
    // Pieces start 8-byte aligned, for the native comparisons.
    this.used += (bytes + 7) & ~7;
    return piece;
  }
}

const SLAB_BYTES = 1 << 20;

class HeartbeatParser {
  private readonly slab = new Slab();
  private b: Uint8Array = new Uint8Array(0);
  private buf: Buffer = Buffer.alloc(0);
  private n = 0;
  private r: Remembered | undefined;
  // The message being read: its droplets' offsets, and its top-level keys.
  private starts: number[] = [];
  private ends: number[] = [];
  private arrayStart = 0;
  private deaKeys = 0;
  private dropletKeys = 0;
  private deaInTail = false;
  /** One copy of each app guid, version and partition seen lately (bounded: cleared when full). */
  private strings = new Map<number, string>();

  /**
   * The shared string of bytes [s, e), found by a hash of the bytes and checked byte for byte, so
   * a known app guid costs no new string (making one is a call into the runtime).
   */
  private shared(s: number, e: number): string {
    const b = this.b;
    // Hashed on at most 16 bytes spread over the string (guids differ all along); checked in full.
    let h = e - s;
    const step = Math.max(1, (e - s) >> 4);
    for (let i = s; i < e; i += step) h = (Math.imul(h, 31) + b[i]!) | 0;
    const known = this.strings.get(h);
    if (known !== undefined && sameBytes(b, s, e, known)) return known;
    const str = latin1(this.buf, s, e);
    if (this.strings.size >= MAX_INTERNED) this.strings = new Map();
    // (Two strings with one hash: the later one is kept; the other is made again when it comes.)
    this.strings.set(h, str);
    return str;
  }

  parse(data: Uint8Array, prevOf: (dea: string) => Remembered | undefined): Parsed {
    const b = (this.b = data);
    const buf = (this.buf = Buffer.isBuffer(data) ? data : Buffer.from(data.buffer, data.byteOffset, data.byteLength));
    const n = (this.n = data.byteLength);
    const hint = this.deaHint();
    const r = (this.r = hint === undefined ? undefined : prevOf(hint));
    if (r !== undefined && r.bytes.length === n && buf.equals(r.bytes)) return { dea: r.dea, droplets: r.droplets, remember: 'same' };

    this.deaKeys = 0;
    this.dropletKeys = 0;
    this.deaInTail = false;
    let dea: string | undefined;
    let droplets: readonly HeartbeatDroplet[] | undefined;
    let p: number;
    let inArray = false;
    if (r !== undefined && rangeEq(buf, 0, r.bytes, 0, r.arrayStart)) {
      // Up to the droplets array the bytes are the remembered ones: so are its keys and values.
      p = r.arrayStart;
      inArray = true;
      if (!r.deaInTail) {
        dea = r.dea;
        this.deaKeys = 1;
      }
    } else {
      p = ws(b, 0, n);
      if (p >= n || b[p] !== LBRACE) throw PUNT;
      p = ws(b, p + 1, n);
      if (p < n && b[p] === RBRACE) throw PUNT; // {} lacks dea and droplets
    }
    for (;;) {
      if (!inArray) {
        if (p >= n || b[p] !== QUOTE) throw PUNT;
        const ks = p + 1;
        const ke = stringEnd(b, ks, n, undefined);
        p = ws(b, ke + 1, n);
        if (p >= n || b[p] !== COLON) throw PUNT;
        p = ws(b, p + 1, n);
        if (ke - ks === 3 && sameBytes(b, ks, ke, 'dea')) {
          // a non-empty string
          if (p >= n || b[p] !== QUOTE) throw PUNT;
          const e = stringEnd(b, p + 1, n, hint);
          if (e === p + 1 || e - p - 1 > MAX_AGENT) throw PUNT;
          dea = stringMatched ? hint! : latin1(buf, p + 1, e);
          p = e + 1;
          this.deaKeys++;
          if (this.dropletKeys > 0) this.deaInTail = true;
        } else if (ke - ks === 8 && sameBytes(b, ks, ke, 'droplets')) {
          if (p >= n || b[p] !== LBRACKET) throw PUNT;
          p++;
          inArray = true;
        } else {
          p = skipValue(b, buf, p, n, 0);
        }
      }
      if (inArray) {
        inArray = false;
        this.dropletKeys++;
        this.deaInTail = false;
        this.arrayStart = p;
        const out: HeartbeatDroplet[] = [];
        p = this.dropletsFrom(p, out);
        droplets = out;
        if (p === TAIL) {
          // The rest is the remembered message's: its tail keys, and its dea if that came last.
          if (r!.deaInTail) {
            dea = r!.dea;
            this.deaKeys++;
            this.deaInTail = true;
          }
          break;
        }
      }
      p = ws(b, p, n);
      if (p >= n) throw PUNT;
      const c = b[p++]!;
      if (c === RBRACE) {
        if (ws(b, p, n) !== n) throw PUNT;
        break;
      }
      if (c !== COMMA) throw PUNT;
      p = ws(b, p, n);
    }
    if (dea === undefined || droplets === undefined || droplets.length > MAX_DROPLETS) throw PUNT;
    const list = r !== undefined && sameList(r.droplets, droplets) ? r.droplets : Object.freeze(droplets as HeartbeatDroplet[]);
    let remember: Remembered | undefined;
    if (this.deaKeys === 1 && this.dropletKeys === 1) {
      // The agent's last message is not needed any more: its buffer takes this one when it fits.
      const backing = r !== undefined && r.dea === dea && r.backing.length >= n ? r.backing : this.slab.take(n + (n >> 5));
      buf.copy(backing, 0, 0, n);
      const bytes = backing.subarray(0, n);
      remember = {
        dea,
        bytes,
        backing,
        droplets: list,
        starts: Int32Array.from(this.starts),
        ends: Int32Array.from(this.ends),
        arrayStart: this.arrayStart,
        deaInTail: this.deaInTail,
      };
    }
    return { dea, droplets: list, remember };
  }

  /**
   * The agent's guid found by a quick search near the end (where the DEA writes it) or the start,
   * to pick its remembered message before reading. Only a hint: whatever it finds, bytes are
   * taken from a remembered message only where they are equal to it.
   */
  private deaHint(): string | undefined {
    const { buf, n } = this;
    let at = n > 1024 ? buf.indexOf('"dea"', n - 1024) : -1;
    if (at < 0) at = buf.subarray(0, Math.min(n, 1024)).indexOf('"dea"');
    if (at < 0) return undefined;
    let p = ws(this.b, at + 5, n);
    if (this.b[p] !== COLON) return undefined;
    p = ws(this.b, p + 1, n);
    if (this.b[p] !== QUOTE) return undefined;
    let end: number;
    try {
      end = stringEnd(this.b, p + 1, n, undefined);
    } catch {
      return undefined;
    }
    // Checked as any string is: a known value must hold no escape or control byte.
    return end - p - 1 > MAX_AGENT ? undefined : latin1(buf, p + 1, end);
  }

  /**
   * The droplets array from p (just past its `[`), into out; returns the position past its `]`,
   * or TAIL when the rest of the message is the remembered message's rest.
   */
  private dropletsFrom(p: number, out: HeartbeatDroplet[]): number {
    const { b, n } = this;
    const r = this.r;
    const count = r === undefined ? 0 : r.droplets.length;
    this.starts = [];
    this.ends = [];
    // k: the remembered droplet lined up with the next one here.
    let k = 0;
    p = ws(b, p, n);
    if (p < n && b[p] === RBRACKET) return p + 1;
    for (;;) {
      if (p >= n || b[p] !== LBRACE) throw PUNT; // not an object: invalid, the generic decoder says so
      if (r !== undefined && k <= count) {
        let run = k < count ? this.run(p, k) : 0;
        // An instance inserted or dropped here: line up one further or one back.
        if (run === 0 && k + 1 < count && (run = this.run(p, k + 1)) > 0) k++;
        else if (run === 0 && k > 0 && (run = this.run(p, k - 1)) > 0) k--;
        if (run > 0) {
          const delta = p - r.starts[k]!;
          for (let j = k; j < k + run; j++) {
            out.push(r.droplets[j]!);
            this.starts.push(r.starts[j]! + delta);
            this.ends.push(r.ends[j]! + delta);
          }
          p = r.ends[k + run - 1]! + delta;
          k += run;
          // Every remembered droplet lined up, and the rest equal: the message is read.
          if (this.restIsTail(p, k)) return TAIL;
          p = ws(b, p, n);
          if (p >= n) throw PUNT;
          const c = b[p++]!;
          if (c === RBRACKET) return p;
          if (c !== COMMA) throw PUNT;
          p = ws(b, p, n);
          continue;
        }
      }
      this.starts.push(p);
      p = this.droplet(p, r?.droplets[k], out);
      this.ends.push(p);
      k++;
      if (this.restIsTail(p, k)) return TAIL;
      p = ws(b, p, n);
      if (p >= n) throw PUNT;
      const c = b[p++]!;
      if (c === RBRACKET) return p;
      if (c !== COMMA) throw PUNT;
      p = ws(b, p, n);
    }
  }

  /** Past the droplet lined up with the remembered last one, the rest is the remembered rest. */
  private restIsTail(p: number, k: number): boolean {
    const r = this.r;
    if (r === undefined || k !== r.droplets.length || k === 0) return false;
    const from = r.ends[k - 1]!;
    return p + (r.bytes.length - from) === this.n && rangeEq(this.buf, p, r.bytes, from, r.bytes.length);
  }

  /**
   * How many remembered droplets from k on are here, byte for byte, starting at p (with what lies
   * between them): a binary search of native comparisons, the whole rest tried first.
   */
  private run(p: number, k: number): number {
    const r = this.r!;
    const { buf } = this;
    const from = r.starts[k]!;
    const count = r.droplets.length;
    if (rangeEq(buf, p, r.bytes, from, r.ends[count - 1]!)) return count - k;
    let lo = 0; // known equal
    let hi = count - k - 1; // the most that may be
    while (lo < hi) {
      const mid = (lo + hi + 1) >> 1;
      if (rangeEq(buf, p, r.bytes, from, r.ends[k + mid - 1]!)) lo = mid;
      else hi = mid - 1;
    }
    return lo;
  }

  /** One droplet object at p, read byte by byte; returns its end (past `}`). */
  private droplet(p: number, cand: HeartbeatDroplet | undefined, out: HeartbeatDroplet[]): number {
    const { b, buf, n } = this;
    // The fields: byte ranges of the strings and the numbers; `same` has a bit for every field
    // equal to the lined-up remembered droplet's, so its strings are reused.
    let ds = 0,
      de = 0,
      vs = 0,
      ve = 0,
      is = 0,
      ie = 0,
      ss = 0,
      se = 0,
      cs = 0,
      ce = 0;
    let index = 0;
    let ts = 0;
    let seen = 0;
    let same = 0;
    p = ws(b, p + 1, n);
    if (p < n && b[p] === RBRACE) throw PUNT; // {} lacks the required fields
    for (;;) {
      if (p >= n || b[p] !== QUOTE) throw PUNT;
      const ks = p + 1;
      const ke = stringEnd(b, ks, n, undefined);
      const field = fieldOf(b, ks, ke);
      p = ws(b, ke + 1, n);
      if (p >= n || b[p] !== COLON) throw PUNT;
      p = ws(b, p + 1, n);
      if (field === F_INDEX) {
        const s = p;
        let v = 0;
        while (p < n && b[p]! >= ZERO && b[p]! <= NINE) v = v * 10 + (b[p++]! - ZERO);
        // A sign, fraction, exponent or leading zero (maybe valid) is the generic decoder's.
        if (p === s || p - s > MAX_FAST_DIGITS || (p - s > 1 && b[s] === ZERO)) throw PUNT;
        if (p < n && (b[p] === DOT || b[p] === 0x65 || b[p] === 0x45)) throw PUNT;
        index = v;
      } else if (field === F_STATE_TIMESTAMP) {
        p = number(b, buf, p, n);
        ts = numberValue;
        // ajv's number type refuses what JSON.parse turns into Infinity (1e400).
        if (!Number.isFinite(ts)) throw PUNT;
      } else if (field === 0) {
        p = skipValue(b, buf, p, n, 0);
      } else {
        // A string field (a wrong type or an escape is the generic decoder's to judge).
        if (p >= n || b[p] !== QUOTE) throw PUNT;
        const s = p + 1;
        const known =
          cand === undefined
            ? undefined
            : field === F_DROPLET
              ? cand.droplet
              : field === F_VERSION
                ? cand.version
                : field === F_INSTANCE
                  ? cand.instance
                  : field === F_STATE
                    ? cand.state
                    : cand.cc_partition;
        const e = stringEnd(b, s, n, known);
        p = e + 1;
        same = stringMatched ? same | field : same & ~field;
        if (field === F_DROPLET) {
          ds = s;
          de = e;
        } else if (field === F_VERSION) {
          vs = s;
          ve = e;
        } else if (field === F_INSTANCE) {
          is = s;
          ie = e;
        } else if (field === F_STATE) {
          ss = s;
          se = e;
        } else {
          cs = s;
          ce = e;
        }
      }
      seen |= field;
      p = ws(b, p, n);
      if (p >= n) throw PUNT;
      const c = b[p++]!;
      if (c === RBRACE) break;
      if (c !== COMMA) throw PUNT;
      p = ws(b, p, n);
    }
    // Required: droplet and instance non-empty, version, state, index, state_timestamp.
    if ((seen & REQUIRED) !== REQUIRED || de === ds || ie === is) throw PUNT;
    if (de - ds > MAX_GUID || ve - vs > MAX_GUID || ie - is > MAX_GUID || se - ss > MAX_STATE || ce - cs > MAX_CC_PARTITION) throw PUNT;
    const str = (f: number, s: number, e: number, old: string | undefined): string => (same & f ? old! : latin1(buf, s, e));
    // An app's guid and version, and the partition, are shared by many instances on many agents.
    const shared = (f: number, s: number, e: number, old: string | undefined): string => (same & f ? old! : this.shared(s, e));
    const d: HeartbeatDroplet = {
      droplet: shared(F_DROPLET, ds, de, cand?.droplet),
      version: shared(F_VERSION, vs, ve, cand?.version),
      instance: str(F_INSTANCE, is, ie, cand?.instance),
      index,
      state: same & F_STATE ? cand!.state : stateString(b, buf, ss, se),
      state_timestamp: ts,
    };
    if (seen & F_CC_PARTITION) {
      // An agent's instances are all on one partition, mostly: the previous one's is tried first.
      const prev = out.length > 0 ? out[out.length - 1]!.cc_partition : undefined;
      d.cc_partition = same & F_CC_PARTITION ? cand!.cc_partition! : prev !== undefined && sameBytes(b, cs, ce, prev) ? prev : this.shared(cs, ce);
    }
    out.push(Object.freeze(d));
    return p;
  }
}

function sameList(a: readonly HeartbeatDroplet[], b: readonly HeartbeatDroplet[]): boolean {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}

const KNOWN_STATE_BYTES = KNOWN_STATES.map(bytesOf);

/** The states agents report, as shared strings. */
function stateString(b: Uint8Array, buf: Buffer, s: number, e: number): string {
  for (let i = 0; i < KNOWN_STATES.length; i++) if (sameName(b, s, e, KNOWN_STATE_BYTES[i]!)) return KNOWN_STATES[i]!;
  return latin1(buf, s, e);
}

export function makeHeartbeatDecoder(opts: HeartbeatDecoderOptions = {}): HeartbeatDecoder {
  const maxBytes = opts.maxBytes ?? MAX_MESSAGE_BYTES;
  const perGeneration = opts.agentsPerGeneration ?? 50_000;
  const bytesPerGeneration = (opts.rememberBytes ?? DEFAULT_REMEMBER_BYTES) / 2;
  const generic = makeGenericDecoder(HeartbeatMessage, maxBytes);
  const parser = new HeartbeatParser();
  // Two generations: an agent not heard from while the young one filled up is forgotten.
  let young = new Map<string, Remembered>();
  let old = new Map<string, Remembered>();
  let youngBytes = 0;
  const prevOf = (dea: string) => young.get(dea) ?? old.get(dea);
  const stats = { fast: 0, generic: 0 };

  const keep = (r: Remembered | undefined, dea: string) => {
    const before = young.get(dea);
    if (before) youngBytes -= before.bytes.length;
    old.delete(dea);
    if (r === undefined) {
      young.delete(dea);
      return;
    }
    if (!before && (young.size >= perGeneration || youngBytes + r.bytes.length > bytesPerGeneration)) {
      old = young;
      young = new Map();
      youngBytes = 0;
    }
    young.set(dea, r);
    youngBytes += r.bytes.length;
  };

  const decode = ((data: Uint8Array | string): Decoded<Static<typeof HeartbeatMessage>> => {
    if (typeof data !== 'string' && data.byteLength <= maxBytes) {
      let parsed: Parsed | undefined;
      try {
        parsed = parser.parse(data, prevOf);
      } catch (err) {
        if (!(err instanceof Punt)) throw err;
      }
      if (parsed !== undefined) {
        stats.fast++;
        if (parsed.remember === 'same') {
          // Heard again: into the young generation if it was in the old one.
          const r = old.get(parsed.dea);
          if (r !== undefined) keep(r, parsed.dea);
        } else keep(parsed.remember, parsed.dea);
        return { ok: true, value: { dea: parsed.dea, droplets: parsed.droplets } as Static<typeof HeartbeatMessage> };
      }
    }
    stats.generic++;
    return generic(data);
  }) as HeartbeatDecoder;
  Object.defineProperty(decode, 'stats', { value: stats });
  decode.clear = () => {
    young = new Map();
    old = new Map();
    youngBytes = 0;
  };
  return decode;
}
