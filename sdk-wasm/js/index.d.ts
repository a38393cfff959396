// Types for Ebb's browser SDK entry (index.js).

/** Options of {@link load}. */
export interface LoadOptions {
  /** The collector's origin, e.g. `"https://collector.example"`. Default: `location.origin`. */
  host?: string;
  /** How many queued messages trigger a flush. Default: 20. */
  flushAt?: number;
  /** The longest a queued message waits for a flush, in milliseconds. Default: 10000. */
  flushInterval?: number;
  /** Log failed background flushes to the console. Default: false. */
  debug?: boolean;
  /** Where `ebb_sdk_bg.wasm` is served. Default: beside `index.js`. */
  wasmUrl?: string | URL;
}

/** Attributes of a user (traits) or of an event (properties): a JSON-serialisable object. */
export type Fields = Record<string, unknown>;

/**
 * Loads the SDK for the environment named by `writeKey`. Resolves when it is ready; calls
 * made before wait for it. May be called once per page.
 */
export function load(writeKey: string, options?: LoadOptions): Promise<void>;

/** Records who the user is; later messages carry `userId`. Resolves once queued. */
export function identify(userId: string | number, traits?: Fields): Promise<void>;
/** Records traits of the current visitor or user. Resolves once queued. */
export function identify(traits: Fields): Promise<void>;

/** Records something the user did. Resolves once queued. */
export function track(event: string, properties?: Fields): Promise<void>;

/** Sends everything queued; resolves once the collector has accepted it (any 2xx). */
export function flush(): Promise<void>;

/** The SDK as one object, for `import ebb from '…/index.js'`. */
declare const ebb: {
  load: typeof load;
  identify: typeof identify;
  track: typeof track;
  flush: typeof flush;
};
export default ebb;
