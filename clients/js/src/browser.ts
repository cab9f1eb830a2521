// Browser bundle entry (dist/herald.min.js): exposes HeraldClient (and the
// rest of the API under `Herald`) as globals.
import * as Herald from './index.js';

const g = globalThis as Record<string, unknown>;
g.Herald = Herald;
g.HeraldClient = Herald.HeraldClient;
g.HeraldError = Herald.HeraldError;
