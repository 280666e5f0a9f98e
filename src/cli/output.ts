import { fileURLToPath } from 'node:url';
import type { SetupProgress } from '../workloads/setup.js';
import type { WorkloadStatus } from '../workloads/status.js';

/** Where the CLI writes: stdout for results, stderr for progress and errors. */
export interface Io {
  readonly stdout: NodeJS.WritableStream;
  readonly stderr: NodeJS.WritableStream;
  readonly env: NodeJS.ProcessEnv;
}

/** A duration for people: `45s`, `12m`, `3h 5m`, `2d 4h`. */
export function humanDuration(ms: number): string {
  const s = Math.round(Math.abs(ms) / 1000);
  if (s < 60) return `${String(s)}s`;
  const m = Math.floor(s / 60);
  if (m < 60) return `${String(m)}m`;
  const h = Math.floor(m / 60);
  if (h < 48) return m % 60 === 0 ? `${String(h)}h` : `${String(h)}h ${String(m % 60)}m`;
  return `${String(Math.floor(h / 24))}d ${String(h % 24)}h`;
}

/** `in 12m` / `3m ago` for an ISO time. */
export function relative(isoTime: string, now: number): string {
  const delta = Date.parse(isoTime) - now;
  return delta >= 0 ? `in ${humanDuration(delta)}` : `${humanDuration(delta)} ago`;
}

/** What the user should do about a status (DESIGN §7), one line. */
export function nextStep(status: WorkloadStatus): string | undefined {
  switch (status.status) {
    case 'auth_retrying':
      return `tether keeps retrying the refresh and recovers by itself once the token endpoint answers; \`tether refresh ${status.name}\` tries now`;
    case 'unauthenticated':
      return `run \`tether login ${status.name}\` to log in again (same local URL, no restart)`;
    case 'error':
      return `run \`tether restart ${status.name}\`; \`tether logs ${status.name}\` shows what happened`;
    case 'stopped':
      return `run \`tether start ${status.name}\` to serve it again`;
    case 'starting':
    case 'running':
    case 'stopping':
      return undefined;
  }
}

/** Renders the interactive part's progress on stderr. */
export function progressPrinter(io: Io): (progress: SetupProgress) => void {
  const say = (line: string): void => {
    io.stderr.write(`${line}\n`);
  };
  return (progress) => {
    switch (progress.kind) {
      case 'discovering':
        say(`Discovering the authorization server of ${progress.url} …`);
        return;
      case 'discovered':
        say(`Authorization server: ${progress.issuer}`);
        return;
      case 'registering':
        say(`Registering tether as a client with ${progress.issuer} …`);
        return;
      case 'logged_in':
        say('Logged in.');
        return;
      case 'login': {
        const prompt = progress.prompt;
        if (prompt.kind === 'device') {
          say(`To log in, open ${prompt.verificationUri} on any device and enter the code: ${prompt.userCode}`);
          if (prompt.verificationUriComplete !== undefined) say(`  (or open ${prompt.verificationUriComplete})`);
          say(`Waiting for you to approve (the code expires in ${humanDuration(prompt.expiresInMs)}) …`);
          return;
        }
        say(
          prompt.opened
            ? 'Your browser was opened to log in. If it did not open, visit this URL:'
            : 'Open this URL in a browser to log in:',
        );
        say(`  ${prompt.url}`);
        say(`Waiting for you to finish in the browser (up to ${humanDuration(prompt.timeoutMs)}; Ctrl-C to cancel) …`);
        return;
      }
    }
  };
}

/** The absolute path of this CLI's entry script (for stdio client configs). */
export function cliEntry(): string {
  return fileURLToPath(new URL('./main.js', import.meta.url));
}

/** Ready-to-paste client configurations for a workload serving at `url`. */
export function clientSnippets(name: string, url: string): string {
  const stdio = { command: process.execPath, args: [cliEntry(), 'connect', name] };
  const block = (value: unknown): string =>
    JSON.stringify(value, null, 2)
      .split('\n')
      .map((line) => `    ${line}`)
      .join('\n');
  return [
    'Add it to your MCP client:',
    '',
    '  Cursor (~/.cursor/mcp.json) and other clients that take a URL:',
    block({ mcpServers: { [name]: { url } } }),
    '',
    '  VS Code (.vscode/mcp.json):',
    block({ servers: { [name]: { type: 'http', url } } }),
    '',
    '  Claude Code:',
    `    claude mcp add --transport http ${name} ${url}`,
    '',
    '  Claude Desktop (claude_desktop_config.json; it speaks stdio, so `tether connect` bridges):',
    block({ mcpServers: { [name]: stdio } }),
    '',
  ].join('\n');
}

/** A fixed-width table. */
export function table(header: readonly string[], rows: readonly (readonly string[])[]): string {
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? '').length)));
  const line = (cells: readonly string[]): string =>
    cells
      .map((cell, i) => (i === cells.length - 1 ? cell : cell.padEnd(widths[i] ?? 0)))
      .join('  ')
      .trimEnd();
  return `${[line(header), ...rows.map(line)].join('\n')}\n`;
}
