// Types for Ebb's browser SDK entry (index.js): the whole public API.

/** Consent settings of {@link load}. */
export interface ConsentOptions {
  /**
   * `"opt-in"` (default): nothing is stored or sent until the required categories are
   * granted. `"opt-out"`: tracking runs until the visitor objects.
   */
  mode?: 'opt-in' | 'opt-out';
  /** The consent categories the site knows. Default: `["analytics"]`. */
  categories?: string[];
  /** The categories tracking needs granted. Default: the first of `categories`. */
  required?: string[];
  /** Count `navigator.doNotTrack == "1"` as an objection, like GPC. Default: false. */
  honorDoNotTrack?: boolean;
}

/** Options of {@link load}. */
export interface LoadOptions {
  /** The collector's origin, e.g. `"https://collector.example"`. Default: `location.origin`. */
  host?: string;
  /** Queued messages that trigger a flush; also the most per batch. Default: 20. */
  flushAt?: number;
  /** Queued bytes that trigger a flush; also the most per batch body. Default: 60000. */
  flushBytes?: number;
  /** The longest a queued message waits for a flush, in milliseconds. Default: 10000. */
  flushInterval?: number;
  /** The bound of the stored queue in bytes; the oldest messages go first. Default: 262144. */
  maxQueueBytes?: number;
  /** Calls kept in memory while consent is undecided. Default: 100. */
  maxPendingCalls?: number;
  /** Retry schedule in milliseconds. Default: `{ baseDelay: 1000, maxDelay: 60000 }`. */
  retry?: { baseDelay?: number; maxDelay?: number };
  /** Consent mode and categories. */
  consent?: ConsentOptions;
  /** Identity-verification hash (hex HMAC-SHA256 of the user id, from the site's server). */
  userHash?: string;
  /** Log every call, consent change and failed request to the console. Default: false. */
  debug?: boolean;
  /** Where `ebb_sdk_bg.wasm` is served, with any content type. Default: beside `ebb_sdk.js`. */
  wasmUrl?: string | URL;
}

/** Attributes of a user, group or event, or survey answers: a JSON-serialisable object. */
export type Fields = Record<string, unknown>;

/** Options of {@link identify}. */
export interface IdentifyOptions {
  /** Identity-verification hash for this user, sent as `context.userHash`. */
  userHash?: string;
}

/** The consent state, as {@link consent}.state() returns it and `on('consent')` reports it. */
export interface ConsentState {
  mode: 'opt-in' | 'opt-out';
  /** `granted`: tracking runs; `pending`: calls wait in memory; `denied`: calls are dropped. */
  status: 'granted' | 'pending' | 'denied';
  /** Every known category and whether it is granted. */
  categories: Record<string, boolean>;
  /** Whether Global Privacy Control (or Do Not Track, when honoured) objects. */
  objection: boolean;
}

/** Consent categories: one name or several. Left out: every known category. */
export type Categories = string | string[];

/**
 * Loads the SDK for the environment named by `writeKey`. Resolves when it is ready; calls
 * made before wait for it. May be called once per page.
 */
export function load(writeKey: string, options?: LoadOptions): Promise<void>;

/**
 * Records who the user is; later messages carry `userId`. Resolves once recorded. Without
 * a `userId` (left out, `undefined` or `null`) the traits are those of the current user.
 */
export function identify(
  userId?: string | number | null,
  traits?: Fields,
  options?: IdentifyOptions,
): Promise<void>;
/** Records traits of the current visitor or user. */
export function identify(traits: Fields, options?: IdentifyOptions): Promise<void>;

/** Records something the user did. */
export function track(event: string, properties?: Fields): Promise<void>;

/** Records a page view. */
export function page(name?: string, properties?: Fields): Promise<void>;
export function page(properties: Fields): Promise<void>;

/** Records the user's membership of a group. */
export function group(groupId: string | number, traits?: Fields): Promise<void>;

/** Records that `userId` and `previousId` (default: the current id) name one user. */
export function alias(userId: string | number, previousId?: string | number): Promise<void>;

/** Records a survey response: `answers` maps each question to its answer. */
export function respond(surveyId: string, answers: Fields): Promise<void>;

/** Forgets the user (id, traits, hash) and starts a new anonymous id. */
export function reset(): Promise<void>;

/**
 * Sends everything queued, at once unless the collector asked to wait with `Retry-After`;
 * resolves once the collector has taken it.
 */
export function flush(): Promise<void>;

/** Resolves once the SDK is loaded; rejects if loading failed. */
export function ready(): Promise<void>;

/** What the SDK holds now, as {@link status} returns it. */
export interface Status {
  /** The user id of the last `identify` that named one; `null` if none. */
  userId: string | null;
  /** The visitor's anonymous id; `null` until consent allows one. */
  anonymousId: string | null;
  /** Messages waiting to be sent, in memory and in storage. */
  queued: number;
  /** Calls held in memory until consent is decided. */
  held: number;
}

/** What the SDK holds now; `null` before the SDK has loaded. */
export function status(): Status | null;

/** Calls `listener` after each change of consent; returns a function that removes it. */
export function on(event: 'consent', listener: (state: ConsentState) => void): () => void;

/** Removes a listener added with {@link on}. */
export function off(event: 'consent', listener: (state: ConsentState) => void): void;

/** The visitor's consent. */
export const consent: {
  /** Grants categories; in opt-in mode the first grant starts tracking and replays held calls. */
  grant(categories?: Categories): Promise<void>;
  /** Denies categories; held calls are dropped when tracking is refused. */
  deny(categories?: Categories): Promise<void>;
  /** Erases the queue and identity from the browser and records the withdrawal. */
  withdraw(): Promise<void>;
  /** The current state; `null` before the SDK has loaded. */
  state(): ConsentState | null;
};

/** One call queued by the inline snippet before the module loaded. */
export interface QueuedCall {
  m: string;
  a: unknown[];
  t?: string;
  p?: { path: string; url: string; search: string; title: string; referrer: string };
  r?: (value: unknown) => void;
  j?: (reason: unknown) => void;
}

/** Replays the snippet's queue; used by the snippet's loader, not by pages. */
export function replay(queue: QueuedCall[]): void;

/** The SDK as one object, for `import ebb from 'ebb-sdk'`. */
declare const ebb: {
  load: typeof load;
  identify: typeof identify;
  track: typeof track;
  page: typeof page;
  group: typeof group;
  alias: typeof alias;
  respond: typeof respond;
  reset: typeof reset;
  flush: typeof flush;
  ready: typeof ready;
  status: typeof status;
  on: typeof on;
  off: typeof off;
  consent: typeof consent;
};
export default ebb;
