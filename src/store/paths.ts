import { createHash } from 'node:crypto';
import { chmod, mkdir, stat } from 'node:fs/promises';
import path from 'node:path';
import { TetherError } from '../errors.js';
import { hasCode } from './files.js';

/*
 * The state directory's layout (DESIGN §5). Everything is private to its
 * owner: directories 0700, files 0600.
 *
 *   key.json                              how to get the store key: the key itself (source "file") or a
 *                                         note that it lives in the OS keychain (source "keychain")
 *   workloads/<name>/tokens.json          the workload's token set, encrypted (an envelope, see crypto.ts)
 *   workloads/<name>/metadata.json        discovered metadata, plain JSON — never anything secret
 *   registrations/<issuer-hash>.json      a client registration, encrypted, shared by the workloads that
 *                                         use that authorization server; <issuer-hash> is the first 32 hex
 *                                         digits of SHA-256(issuer), so any issuer URL makes a safe name
 *   locks/workload-<name>.lock            a held cross-process lock (see lock.ts), and briefly
 *   locks/registration-<issuer-hash>.lock   `<lock>.takeover` while a stale lock is being taken over
 *   locks/store-key.lock
 *
 * Transient names: `.<file>.<random>.tmp` during an atomic write, and
 * `<file>.corrupt-<timestamp>` for a file that could not be read and was set
 * aside for inspection.
 */

/** What a workload's name may be: it becomes a directory and a lock file name. */
export const WORKLOAD_NAME_PATTERN = /^[a-z0-9][a-z0-9._-]{0,62}$/;

/** Throws `ERR_INVALID_WORKLOAD_NAME` unless `name` matches {@link WORKLOAD_NAME_PATTERN}. */
export function assertWorkloadName(name: string): void {
  if (!WORKLOAD_NAME_PATTERN.test(name)) {
    throw new TetherError(
      'ERR_INVALID_WORKLOAD_NAME',
      `invalid workload name ${JSON.stringify(name.slice(0, 80))}: use 1–63 characters, lowercase letters, digits, '.', '_' or '-', starting with a letter or digit`,
    );
  }
}

/** Where a state directory is looked for; every field defaults to this process's. */
export interface StateDirContext {
  readonly env?: Readonly<Record<string, string | undefined>>;
  readonly platform?: NodeJS.Platform;
  /** The user's home directory (`os.homedir()`). */
  readonly home: string;
}

/**
 * The state directory: `$TETHER_HOME` (which must be absolute), else the
 * platform's per-user state directory — Linux and other Unix
 * `$XDG_STATE_HOME/tether` (ignored unless absolute, as the XDG spec says)
 * or `~/.local/state/tether`; macOS `~/Library/Application Support/tether`;
 * Windows `%LOCALAPPDATA%\tether` or `~\AppData\Local\tether`.
 */
export function stateDir(context: StateDirContext): string {
  const env = context.env ?? process.env;
  const platform = context.platform ?? process.platform;
  const p = platform === 'win32' ? path.win32 : path.posix;
  const explicit = env['TETHER_HOME'];
  if (explicit !== undefined && explicit !== '') {
    // A relative path would name a different store from each working directory.
    if (!p.isAbsolute(explicit)) {
      throw new TetherError(
        'ERR_CONFIG',
        `TETHER_HOME must be an absolute path, not ${JSON.stringify(explicit.slice(0, 200))}`,
      );
    }
    return p.resolve(explicit);
  }
  switch (platform) {
    case 'win32': {
      const local = env['LOCALAPPDATA'];
      return p.join(
        local !== undefined && p.isAbsolute(local) ? local : p.join(context.home, 'AppData', 'Local'),
        'tether',
      );
    }
    case 'darwin':
      return p.join(context.home, 'Library', 'Application Support', 'tether');
    default: {
      const xdg = env['XDG_STATE_HOME'];
      return p.join(xdg !== undefined && p.isAbsolute(xdg) ? xdg : p.join(context.home, '.local', 'state'), 'tether');
    }
  }
}

/**
 * Creates `dir` (and missing parents) with mode 0700, or checks an existing
 * one: it must be a directory owned by this user, and a looser mode is
 * tightened to 0700. Refuses with `ERR_STORE_DIR` otherwise. On Windows,
 * where mode bits mean nothing, the per-user profile's ACLs protect it and
 * only the directory check applies.
 */
export async function preparePrivateDir(dir: string): Promise<void> {
  try {
    await mkdir(dir, { recursive: true, mode: 0o700 });
  } catch (error) {
    if (!hasCode(error, 'EEXIST')) throw error; // a file in the way: reported below
  }
  const info = await stat(dir);
  if (!info.isDirectory()) throw new TetherError('ERR_STORE_DIR', `${dir} is not a directory`);
  const uid = process.getuid?.();
  if (uid === undefined) return;
  if (info.uid !== uid) {
    throw new TetherError(
      'ERR_STORE_DIR',
      `${dir} belongs to another user (uid ${info.uid}, this is uid ${uid}); tether keeps credentials only in a directory of your own — set TETHER_HOME to one`,
    );
  }
  if ((info.mode & 0o077) !== 0) await chmod(dir, 0o700);
}

/** The file name for an authorization server's registration: an issuer URL may hold any character. */
export function issuerKey(issuer: string): string {
  return createHash('sha256').update(issuer, 'utf8').digest('hex').slice(0, 32);
}

/** The paths of one state directory (the layout above). */
export class StoreLayout {
  constructor(readonly dir: string) {}

  get keyRecord(): string {
    return path.join(this.dir, 'key.json');
  }

  get locks(): string {
    return path.join(this.dir, 'locks');
  }

  get keyLock(): string {
    return path.join(this.locks, 'store-key.lock');
  }

  workloadDir(name: string): string {
    assertWorkloadName(name);
    return path.join(this.dir, 'workloads', name);
  }

  tokens(name: string): string {
    return path.join(this.workloadDir(name), 'tokens.json');
  }

  metadata(name: string): string {
    return path.join(this.workloadDir(name), 'metadata.json');
  }

  workloadLock(name: string): string {
    assertWorkloadName(name);
    return path.join(this.locks, `workload-${name}.lock`);
  }

  get registrations(): string {
    return path.join(this.dir, 'registrations');
  }

  registration(issuer: string): string {
    return path.join(this.registrations, `${issuerKey(issuer)}.json`);
  }

  registrationLock(issuer: string): string {
    return path.join(this.locks, `registration-${issuerKey(issuer)}.lock`);
  }
}
