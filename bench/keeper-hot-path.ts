/**
 * bench/keeper-hot-path — getToken() on a valid cached token, the proxy's
 * per-request cost. 10 million calls in batches; prints ns/op per batch as a
 * distribution. Target (issue 2): median under 200 ns.
 *
 *   npm run bench:hot-path
 */
import { performance } from 'node:perf_hooks';
import { systemClock } from '../src/clock/system.js';
import { DEFAULT_KEEPER_CONFIG } from '../src/config/keeper-config.js';
import { TokenKeeper } from '../src/keeper/keeper.js';
import type { TokenSet } from '../src/keeper/types.js';
import { machineLine, printTable } from './table.js';

const TOTAL = 10_000_000;
const BATCH = 100_000;

const tokens: TokenSet = {
  accessToken: 'at',
  refreshToken: 'rt',
  issuedAt: Date.now(),
  expiresAt: Date.now() + 3_600_000,
};
const keeper = new TokenKeeper({
  clock: systemClock,
  config: DEFAULT_KEEPER_CONFIG,
  refresh: () => Promise.reject(new Error('the benchmark never refreshes')),
  store: { load: () => Promise.resolve(tokens), save: () => Promise.resolve() },
  status: () => undefined,
});
await keeper.start(tokens);

function measure(name: string, op: () => unknown): string[] {
  let sink = 0;
  for (let i = 0; i < BATCH; i++) if (op() !== undefined) sink++; // warm-up: let the JIT settle
  const perOp: number[] = [];
  for (let done = 0; done < TOTAL; done += BATCH) {
    const start = performance.now();
    for (let i = 0; i < BATCH; i++) if (op() !== undefined) sink++;
    perOp.push(((performance.now() - start) * 1e6) / BATCH);
  }
  if (sink === 0) throw new Error('the operation returned nothing');
  perOp.sort((a, b) => a - b);
  const q = (p: number): string => (perOp[Math.min(perOp.length - 1, Math.floor(p * perOp.length))] ?? NaN).toFixed(1);
  return [name, String(TOTAL), q(0.5), q(0.1), q(0.9), q(0.99)];
}

const emptyPromise = Promise.resolve('at');
const rows = [
  measure('keeper.getToken() (cached, valid)', () => keeper.getToken()),
  measure('keeper.peekToken()', () => keeper.peekToken()),
  measure('baseline: Date.now() + return a promise', () => (Date.now() > 0 ? emptyPromise : undefined)),
];
void keeper.stop();

console.log(`bench/keeper-hot-path — ${machineLine()}`);
console.log(`${TOTAL / BATCH} batches of ${BATCH} calls each; ns per call over the batches\n`);
printTable(['operation', 'calls', 'median ns/op', 'p10', 'p90', 'p99'], rows);
const median = Number(rows[0]?.[2]);
console.log(`\ntarget: getToken() median under 200 ns/op → ${median < 200 ? 'met' : 'MISSED'} (${median} ns)`);
