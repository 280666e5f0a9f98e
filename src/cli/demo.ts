import type { Io } from './output.js';

/** `tether demo`: being written. */
export function demo(io: Io): Promise<void> {
  io.stdout.write('tether demo: coming next.\n');
  return Promise.resolve();
}
