import { TetherError } from '../errors.js';
import { runStdioBridge } from '../proxy/bridge.js';
import type { Io } from './output.js';
import { currentStatus, openWorkload } from './workloads.js';

/**
 * `tether connect NAME`: a stdio bridge to the workload's local endpoint, for
 * MCP clients that only speak stdio. stdout carries the protocol; everything
 * for people goes to stderr.
 */
export async function connect(io: Io, name: string): Promise<void> {
  const { files, spec } = await openWorkload(io, name);
  const status = await currentStatus(files, spec);
  if (status.pid === undefined || status.proxyUrl === undefined) {
    throw new TetherError(
      'ERR_NOT_RUNNING',
      `workload ${name} is ${status.status}; start it with \`tether start ${name}\` and connect again`,
    );
  }
  await runStdioBridge({
    url: new URL(status.proxyUrl),
    log: (line) => {
      io.stderr.write(`tether connect ${name}: ${line}\n`);
    },
  });
}
