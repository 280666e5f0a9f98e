/**
 * A separate process for the cross-process lock tests, run with
 * `node --import tsx store-lock-child.ts '<json>'`.
 *
 * - `count`: `iterations` times, under the workload's lock, reads a counter
 *   file, yields, writes it back plus one, logging `enter <id>` / `exit <id>`
 *   around it — a lost update or an interleaved log means two holders.
 *   Prints `ready` before the first attempt and `done` at the end.
 * - `hold`: takes the lock, prints `held`, and keeps it until killed.
 */
import { appendFile, readFile, writeFile } from 'node:fs/promises';
import { CredentialStore } from '../../src/store/store.js';

interface ChildArgs {
  readonly home: string;
  readonly mode: 'count' | 'hold';
  readonly id: string;
  readonly staleMs: number;
  readonly iterations?: number;
  readonly counter?: string;
  readonly log?: string;
}

const args = JSON.parse(process.argv[2] ?? '{}') as ChildArgs;
const store = await CredentialStore.open({
  dir: args.home,
  env: { TETHER_STORE_KEY: 'file' },
  lock: { staleMs: args.staleMs, timeoutMs: 20_000 },
});
// The keeper's own entry point to the lock.
const keeperStore = store.keeperStore('shared');
const { signal } = new AbortController();
const exclusive = <T>(fn: () => Promise<T>): Promise<T> =>
  keeperStore.exclusive ? keeperStore.exclusive(fn, signal) : Promise.reject(new Error('no lock'));

if (args.mode === 'hold') {
  await exclusive(async () => {
    process.stdout.write('held\n');
    await new Promise(() => setInterval(() => undefined, 60_000));
  });
} else {
  const { counter = '', log = '' } = args;
  process.stdout.write('ready\n');
  for (let i = 0; i < (args.iterations ?? 0); i++) {
    await exclusive(async () => {
      await appendFile(log, `enter ${args.id}\n`);
      const value = Number(await readFile(counter, 'utf8'));
      await new Promise((resolve) => setTimeout(resolve, 1));
      await writeFile(counter, String(value + 1));
      await appendFile(log, `exit ${args.id}\n`);
    });
  }
  process.stdout.write('done\n');
}
