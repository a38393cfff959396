// The module the inline snippet loads: takes over the global `ebb` stub with the real SDK
// and replays the calls queued in it, in order, with their call-time timestamps and pages.
import ebb, { replay } from './index.js';

const stub = globalThis.ebb;
globalThis.ebb = ebb;
if (stub && Array.isArray(stub.q)) replay(stub.q.splice(0));
