import { TetherError } from '../errors.js';
import { runStdioBridge } from '../proxy/bridge.js';
import { lookUpWorkload } from '../workloads/lookup.js';
import type { Io } from './output.js';

/**
 * `tether connect NAME`: a stdio bridge to the workload's local endpoint, for
 * MCP clients that only speak stdio. stdout carries the protocol; everything
 * for people goes to stderr. It reads only the workload's status file: a
 * client waits for it to start.
 */
export async function connect(io: Io, name: string): Promise<void> {
  const status = await lookUpWorkload(io.env, name);
  if (status?.pid === undefined || status.proxyUrl === undefined) {
    throw new TetherError(
      'ERR_NOT_RUNNING',
      `workload ${name} is ${status?.status ?? 'stopped'}; start it with \`tether start ${name}\` and connect again`,
    );
  }
  await runStdioBridge({
    url: new URL(status.proxyUrl),
    log: (line) => {
      io.stderr.write(`tether connect ${name}: ${line}\n`);
    },
  });
}
