#!/usr/bin/env node
/**
 * bin `tether` (DESIGN §8): the command line of `program.ts`, errors printed
 * and mapped to exit codes here (0 ok, 1 operation failed, 2 usage error).
 * `tether connect NAME` — what a stdio client starts, and waits for — runs
 * without loading commander and the other commands: ~40 ms of CPU less on a
 * start that is ~100 ms in all.
 */
import { TetherError } from '../errors.js';
import type { Io } from './output.js';

/** Errors in what was typed rather than in what happened: exit code 2. */
const USAGE_ERRORS: ReadonlySet<string> = new Set(['ERR_USAGE', 'ERR_INVALID_WORKLOAD_NAME', 'ERR_INSECURE_ENDPOINT']);

const io: Io = { stdout: process.stdout, stderr: process.stderr, env: process.env };
const [command, name, ...rest] = process.argv.slice(2);
try {
  if (command === 'connect' && name !== undefined && !name.startsWith('-') && rest.length === 0) {
    await (await import('./connect.js')).connect(io, name);
  } else {
    await (await import('./program.js')).runProgram(io, process.argv);
  }
} catch (error) {
  if (error instanceof TetherError && USAGE_ERRORS.has(error.code)) {
    process.stderr.write(`tether: ${error.message}\n(run \`tether --help\` for usage)\n`);
    process.exitCode = 2;
  } else {
    const code = error instanceof TetherError ? ` [${error.code}]` : '';
    process.stderr.write(`tether: ${error instanceof Error ? error.message : String(error)}${code}\n`);
    process.exitCode = 1;
  }
}
