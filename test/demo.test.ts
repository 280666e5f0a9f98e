/**
 * `tether demo` end to end, as the README's first command runs it: the built
 * CLI (`dist/cli/main.js`, from `npm run build`) tells the whole story once.
 * The workload's status must turn `auth_retrying` during the outage and
 * `running` again after it, never `unauthenticated`; the command exits 0 and
 * leaves neither the workload process nor its state directory behind.
 */
import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { expect, it, onTestFinished } from 'vitest';
import { isProcessAlive as isAlive } from '../src/store/lock.js';

const CLI = fileURLToPath(new URL('../dist/cli/main.js', import.meta.url));

it('tells the story: auth_retrying through the outage, running again after it, never unauthenticated', async () => {
  expect(existsSync(CLI), `${CLI} is missing: run \`npm run build\` first`).toBe(true);
  const child = spawn(process.execPath, [CLI, 'demo'], { stdio: ['ignore', 'pipe', 'pipe'] });
  let output = '';
  child.stdout.on('data', (chunk: Buffer) => (output += chunk.toString('utf8')));
  child.stderr.on('data', (chunk: Buffer) => (output += chunk.toString('utf8')));
  const exited = new Promise<number | null>((resolve) => child.once('close', resolve));
  onTestFinished(async () => {
    // On a timeout: Ctrl-C, so that the demo removes what it started.
    if (child.exitCode === null && child.signalCode === null) {
      child.kill('SIGINT');
      await exited;
    }
  });

  const code = await exited;

  expect(code, output).toBe(0);
  const retrying = output.indexOf('status: auth_retrying');
  expect(retrying, output).toBeGreaterThan(-1);
  expect(output.indexOf('status: running', retrying), output).toBeGreaterThan(retrying);
  expect(output).toMatch(/whoami → 503 auth_retrying, Retry-After \d+/);
  expect(output).not.toMatch(/status: unauthenticated|503 unauthenticated/);
  expect(output).toMatch(/statuses seen: +running → auth_retrying → running; never unauthenticated/);
  // The timeline counts every 503 the client got, up to the last, though the workload still runs when it is read.
  const refused = /(\d+) × 503 auth_retrying/.exec(output)?.[1];
  expect(refused, output).toBeDefined();
  expect(output).toMatch(new RegExp(`local endpoint: POST /mcp → 503 ×${refused ?? ''}, until`));
  const pid = Number(/\(pid (\d+),/.exec(output)?.[1]);
  expect(pid, output).toBeGreaterThan(0);
  expect(isAlive(pid)).toBe(false);
  const home = /TETHER_HOME=([^;\s]+);/.exec(output)?.[1];
  expect(home, output).toBeDefined();
  expect(existsSync(home ?? '')).toBe(false);
}, 120_000);
