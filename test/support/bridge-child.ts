/**
 * `tether connect` as the bridge tests run it: `node --import tsx
 * bridge-child.ts URL` bridges its own stdin/stdout to the Streamable HTTP
 * endpoint at URL, exactly as the CLI does (default stdin, stdout, and
 * diagnostics on stderr), and exits when stdin closes.
 */
import { runStdioBridge } from '../../src/proxy/bridge.js';

const url = process.argv[2];
if (url === undefined) throw new Error('usage: bridge-child.ts URL');
await runStdioBridge({ url: new URL(url) });
