/**
 * Finding a workload by its name from its files alone — no store, no key,
 * none of the modules the other commands load — for `tether connect`, which a
 * stdio client starts and waits for.
 */
import { access } from 'node:fs/promises';
import os from 'node:os';
import { TetherError } from '../errors.js';
import { StoreLayout, stateDir } from '../store/paths.js';
import { WorkloadFiles } from './files.js';
import { effectiveStatus, readStatus, type WorkloadStatus } from './status.js';

/** The error for a name no workload has: `ERR_NO_WORKLOAD`, saying where to look. */
export function noSuchWorkload(name: string): TetherError {
  return new TetherError(
    'ERR_NO_WORKLOAD',
    `there is no workload named ${name}; \`tether list --all\` shows them, \`tether run URL --name ${name}\` creates it`,
  );
}

/**
 * The status of workload `name` as `tether list` shows it (a dead process as
 * `error`), from its status file; `undefined` for a workload that never ran.
 *
 * @throws TetherError `ERR_NO_WORKLOAD` when there is no workload of that name,
 *   `ERR_INVALID_WORKLOAD_NAME` for a name no workload can have
 */
export async function lookUpWorkload(
  env: Readonly<Record<string, string | undefined>>,
  name: string,
): Promise<WorkloadStatus | undefined> {
  const dir = stateDir({ env, home: os.homedir() });
  const status = await readStatus(new WorkloadFiles(dir, name));
  if (status !== undefined) return effectiveStatus(status);
  // Its stored settings are what make a workload exist (`tether run` saves them before it first starts).
  const exists = await access(new StoreLayout(dir).metadata(name)).then(
    () => true,
    () => false,
  );
  if (!exists) throw noSuchWorkload(name);
  return undefined;
}
