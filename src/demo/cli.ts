/**
 * Drives the `tether` CLI as a user would, in child processes: the demo's
 * steps and the end-to-end tests. A login URL the CLI prints is followed
 * by the remote's stand-in user (automatic consent), so that no person or
 * browser is needed.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import type { Remote } from './remote.js';

/**
 * The built CLI's entry point, `dist/cli/main.js` — from `dist/demo/` (the
 * demo) and from `src/demo/` (the tests, which run the sources) alike.
 */
export const CLI_ENTRY = fileURLToPath(new URL('../../dist/cli/main.js', import.meta.url));

/** What one command printed and how it ended. */
export interface CliResult {
  readonly code: number;
  readonly stdout: string;
  readonly stderr: string;
}

/** A login URL as the CLI prints it (an authorization request with PKCE). */
const LOGIN_URL = /https?:\/\/\S*code_challenge=\S*/;

/** The `tether` CLI with a fixed environment (`TETHER_HOME`, timings). */
export class TetherCli {
  readonly env: NodeJS.ProcessEnv;
  readonly #remote: Remote | undefined;

  constructor(env: NodeJS.ProcessEnv, remote?: Remote) {
    this.env = env;
    this.#remote = remote;
  }

  /** Starts `tether ARGS` with the given stdio; the caller owns the child. */
  spawn(args: readonly string[], stdio: 'pipe' | 'inherit' = 'pipe'): ChildProcess {
    return spawn(process.execPath, [CLI_ENTRY, ...args], { env: this.env, stdio });
  }

  /**
   * Runs `tether ARGS` to its end. A login URL on stderr is completed by the
   * remote's stand-in user; `onStderr` sees progress as it comes.
   */
  run(args: readonly string[], onStderr?: (text: string) => void): Promise<CliResult> {
    const child = this.spawn(args);
    let stdout = '';
    let stderr = '';
    let loginDone = false;
    child.stdout?.on('data', (chunk: Buffer) => {
      stdout += chunk.toString('utf8');
    });
    child.stderr?.on('data', (chunk: Buffer) => {
      const text = chunk.toString('utf8');
      stderr += text;
      onStderr?.(text);
      const url = LOGIN_URL.exec(stderr)?.[0];
      if (url !== undefined && !loginDone && this.#remote !== undefined) {
        loginDone = true;
        this.#remote.completeLogin(url).catch((error: unknown) => {
          stderr += `\n(the stand-in user could not complete the login: ${String(error)})\n`;
        });
      }
    });
    return new Promise((resolve, reject) => {
      child.once('error', reject);
      child.once('close', (code) => {
        resolve({ code: code ?? -1, stdout, stderr });
      });
    });
  }
}
