import { spawn } from 'node:child_process';

/**
 * How a login URL reaches the user's browser: `$BROWSER` when set (the
 * convention of `xdg-open`, Python's `webbrowser`, git: a command, or several
 * separated by `:`, tried in order), else the system opener. Only `run` and
 * `login` ever call this; the refresh path never opens a browser (DESIGN §4).
 */
export function browserCommands(
  env: Readonly<Record<string, string | undefined>> = process.env,
  platform: NodeJS.Platform = process.platform,
): string[][] {
  const fromEnv = (env['BROWSER'] ?? '')
    .split(':')
    .map((entry) => entry.trim())
    .filter((entry) => entry !== '');
  if (fromEnv.length > 0) return fromEnv.map((command) => [command]);
  if (platform === 'darwin') return [['open']];
  if (platform === 'win32') return [['rundll32', 'url.dll,FileProtocolHandler']];
  return [['xdg-open']];
}

/**
 * Tries each browser command with the URL until one starts; resolves `true`
 * if one did, `false` if none could (the caller then relies on the printed
 * URL). The browser is detached: tether never waits for it to exit.
 */
export async function openBrowser(url: string, commands: readonly string[][] = browserCommands()): Promise<boolean> {
  for (const [command, ...args] of commands) {
    if (command === undefined) continue;
    const started = await new Promise<boolean>((resolve) => {
      try {
        const child = spawn(command, [...args, url], { detached: true, stdio: 'ignore' });
        child.once('error', () => {
          resolve(false);
        });
        child.once('spawn', () => {
          child.unref();
          resolve(true);
        });
      } catch {
        resolve(false);
      }
    });
    if (started) return true;
  }
  return false;
}
