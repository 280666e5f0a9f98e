import { DemoStory } from '../demo/story.js';
import { TetherError } from '../errors.js';
import type { Io } from './output.js';

/**
 * `tether demo` (DESIGN §8): the whole story on loopback, no setup. Exit 0
 * when it happened as it should; 1 with what went wrong otherwise; 130 when
 * interrupted. Ctrl-C cleans up; a second Ctrl-C kills what is left at once.
 */
export async function demo(io: Io): Promise<void> {
  const story = new DemoStory({ out: io.stdout, env: io.env });
  let signals = 0;
  const onSignal = (): void => {
    signals += 1;
    if (signals === 1) {
      io.stderr.write('\nInterrupted: cleaning up (Ctrl-C again to stop at once) …\n');
      story.interrupt();
      return;
    }
    story.killNow();
    io.stderr.write('tether demo: stopped at once; what it started is killed.\n');
    process.exit(130);
  };
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);
  process.on('SIGHUP', onSignal);
  try {
    await story.run();
  } catch (error) {
    if (error instanceof TetherError && error.code === 'ERR_CANCELLED') {
      io.stderr.write('tether demo: interrupted; everything it started is cleaned up.\n');
      process.exitCode = 130;
      return;
    }
    throw error;
  } finally {
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
    process.off('SIGHUP', onSignal);
  }
}
