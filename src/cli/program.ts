/**
 * The `tether` command line (DESIGN §8) as commander parses it; `main.ts`
 * runs it.
 */
import { Command, CommanderError, InvalidArgumentError } from 'commander';
import { createRequire } from 'node:module';
import { TetherError } from '../errors.js';
import { extraUpstreamHeaders } from '../proxy/headers.js';
import { SERVE_COMMAND } from '../workloads/process.js';
import type { Io } from './output.js';

// Each command loads what it needs when it runs: `--help` and `list` need not load the proxy or OAuth.
const runModule = (): Promise<typeof import('./run.js')> => import('./run.js');
const workloads = (): Promise<typeof import('./workloads.js')> => import('./workloads.js');

const { version } = createRequire(import.meta.url)('../../package.json') as { version: string };

function port(value: string): number {
  const n = Number(value);
  if (!/^\d+$/.test(value) || n > 65535) throw new InvalidArgumentError('expected a port number, 0 to 65535');
  return n;
}

function header(value: string, previous: Record<string, string> | undefined): Record<string, string> {
  const match = /^([!#$%&'*+.^_`|~0-9A-Za-z-]+):\s*(.*)$/.exec(value);
  if (match?.[1] === undefined || match[2] === undefined) throw new InvalidArgumentError("expected 'Name: value'");
  const added = { ...previous, [match[1]]: match[2] };
  try {
    extraUpstreamHeaders(added); // checked now, before the login, rather than when the workload starts
  } catch {
    throw new InvalidArgumentError(
      `${match[1]} cannot be set: Authorization and Host are tether's own, and hop-by-hop headers are not forwarded`,
    );
  }
  return added;
}

function scopes(value: string): string[] {
  return value
    .split(/[\s,]+/)
    .map((s) => s.trim())
    .filter((s) => s !== '');
}

const EXAMPLES = `
Examples:
  $ tether run https://mcp.example.com/mcp            log in, start a workload, print client configs
  $ tether run https://mcp.example.com/mcp --name work --port 7700
  $ tether list                                       every workload and its status
  $ tether status work                                details and the recent timeline
  $ tether login work                                 new credentials, same local URL, no restart
  $ tether demo                                       the whole story on loopback, no setup

Statuses: running, auth_retrying (no valid token yet; tether keeps retrying and
recovers by itself), unauthenticated (run \`tether login NAME\`), starting,
stopping, stopped, error (the process died; run \`tether restart NAME\`).
Exit codes: 0 ok, 1 the operation failed, 2 usage error.`;

/** `tether run`'s options as commander parses them. */
interface RawRunOptions {
  readonly remoteUrl?: string;
  readonly name?: string;
  readonly port?: number;
  readonly host: string;
  readonly clientId?: string;
  readonly clientSecretFile?: string;
  readonly scopes?: string[];
  readonly resource?: string;
  readonly issuer?: string;
  readonly callbackPort?: number;
  readonly browser: boolean;
  readonly deviceCode?: boolean;
  readonly foreground?: boolean;
  readonly header?: Record<string, string>;
}

/**
 * The `tether` command (DESIGN §8). Exit codes: 0 ok, 1 operation failed,
 * 2 usage error.
 */
export function buildProgram(io: Io): Command {
  const program = new Command('tether')
    .description(
      'Connects MCP clients to OAuth-protected remote MCP servers and keeps them\n' +
        'authenticated through VPN switches, sleep, WAF block pages and 5xx/429 storms.',
    )
    .version(version)
    .exitOverride()
    .showHelpAfterError('(run `tether --help` for usage)')
    .addHelpText('after', EXAMPLES);

  program
    .command('run')
    .description(
      'discover the server, log in (browser), start a workload serving a local MCP endpoint, print client configs',
    )
    .argument('[remote-url]', 'the remote MCP endpoint (https, or http on loopback)')
    .option('--remote-url <url>', 'the remote MCP endpoint (alias of the argument)')
    .option('--name <name>', 'workload name (default: from the host name)')
    .option('--port <port>', 'local port (default: a free one, kept across restarts)', port)
    .option('--host <address>', 'local bind address', '127.0.0.1')
    .option('--client-id <id>', 'use this pre-registered client instead of registering one')
    .option('--client-secret-file <file>', "the client's secret, from a file (or set TETHER_CLIENT_SECRET)")
    .option('--scopes <a,b>', 'scopes to ask for (default: what the server advertises)', scopes)
    .option('--resource <uri>', 'RFC 8707 resource indicator (default: the discovered one)')
    .option('--issuer <url>', 'use this authorization server instead of the discovered one')
    .option('--callback-port <port>', 'port of the loopback login redirect (default: a free one)', port)
    .option('--no-browser', 'print the login URL instead of opening a browser')
    .option('--device-code', 'log in with a code on another device (RFC 8628), for machines without a browser')
    .option('--foreground', 'serve here, with readable logs, instead of in the background')
    .option('--header <K: V>', 'an extra header on every upstream request (repeatable; not for secrets)', header)
    .addHelpText(
      'after',
      '\nExample:\n  $ tether run https://mcp.example.com/mcp --name work\n  $ tether run https://mcp.example.com/mcp --client-id my-app --client-secret-file ~/.config/my-app.secret',
    )
    .action(async (argument: string | undefined, options: RawRunOptions) => {
      const remote = argument ?? options.remoteUrl;
      if (remote === undefined) throw new InvalidArgumentError('give the remote MCP URL: tether run <remote-url>');
      if (argument !== undefined && options.remoteUrl !== undefined && options.remoteUrl !== argument) {
        throw new InvalidArgumentError('two different remote URLs were given (argument and --remote-url)');
      }
      const { remoteUrl, port, browser, deviceCode, foreground, header: headers, ...rest } = options;
      await (
        await runModule()
      ).run(io, remote, {
        ...rest,
        port: port ?? 0,
        openBrowser: browser,
        deviceCode: deviceCode === true,
        foreground: foreground === true,
        headers: headers ?? {},
      });
    });

  program
    .command('list')
    .description('every workload and its status (a dead process shows as error)')
    .option('--all', 'include stopped workloads')
    .option('--json', 'JSON: an array of status objects (fields in the README)')
    .action(async (options: { all?: boolean; json?: boolean }) => {
      await (await workloads()).list(io, { all: options.all === true, json: options.json === true });
    });

  program
    .command('status')
    .description('details of one workload and its recent timeline')
    .argument('<name>')
    .option('--json', 'JSON: the status object with its recent events')
    .option('--timeline', 'the whole event log drawn as a timeline: status over time, refresh attempts, triggers')
    .action(async (name: string, options: { json?: boolean; timeline?: boolean }) => {
      await (await workloads()).status(io, name, { json: options.json === true, timeline: options.timeline === true });
    });

  program
    .command('logs')
    .description("a workload's event log (refresh attempts, status changes, failed requests; never tokens)")
    .argument('<name>')
    .option('-f, --follow', 'keep printing new events')
    .option('--json', 'print the JSON lines as stored')
    .action(async (name: string, options: { follow?: boolean; json?: boolean }) => {
      await (await workloads()).logs(io, name, { follow: options.follow === true, json: options.json === true });
    });

  program
    .command('stop')
    .description('stop a workload (its credentials stay)')
    .argument('<name>')
    .action(async (name: string) => (await workloads()).stop(io, name));
  program
    .command('start')
    .description('start a stopped workload with its stored credentials (no browser)')
    .argument('<name>')
    .action(async (name: string) => (await workloads()).start(io, name));
  program
    .command('restart')
    .description('stop and start a workload (no browser while its refresh token is good)')
    .argument('<name>')
    .action(async (name: string) => (await workloads()).restart(io, name));
  program
    .command('rm')
    .description('stop a workload and delete it with its stored credentials')
    .argument('<name>')
    .action(async (name: string) => (await workloads()).remove(io, name));

  program
    .command('login')
    .description('log in again and hand the new credentials to the running workload (same port, no restart)')
    .argument('<name>')
    .option('--reregister', 'register a new client first (when the cached registration is stale)')
    .option('--no-browser', 'print the login URL instead of opening a browser')
    .option('--device-code', 'log in with a code on another device (RFC 8628)')
    .option('--callback-port <port>', 'port of the loopback login redirect', port)
    .action(
      async (
        name: string,
        options: { reregister?: boolean; browser?: boolean; deviceCode?: boolean; callbackPort?: number },
      ) => {
        await (
          await workloads()
        ).loginAgain(io, name, {
          reregister: options.reregister === true,
          openBrowser: options.browser !== false,
          deviceCode: options.deviceCode === true,
          ...(options.callbackPort !== undefined && { callbackPort: options.callbackPort }),
        });
      },
    );

  program
    .command('refresh')
    .description('attempt a token refresh now')
    .argument('<name>')
    .action(async (name: string) => (await workloads()).refresh(io, name));

  program
    .command('connect')
    .description('a stdio bridge to a workload, for MCP clients that only speak stdio (use as their command)')
    .argument('<name>')
    .action(async (name: string) => (await import('./connect.js')).connect(io, name));

  program
    .command('demo')
    .description('the whole story on loopback, no setup: login, a WAF outage across a token expiry, recovery')
    .action(async () => (await import('./demo.js')).demo(io));

  program.addCommand(
    new Command(SERVE_COMMAND).argument('<name>').action(async (name: string) => (await runModule()).serve(io, name)),
    { hidden: true },
  );

  return program;
}

/**
 * Runs the command line `argv` (as `process.argv`). Usage errors commander
 * has already printed set exit code 2; one an action found is thrown on as
 * `ERR_USAGE`, like any other error, for the caller to print.
 */
export async function runProgram(io: Io, argv: readonly string[]): Promise<void> {
  try {
    await buildProgram(io).parseAsync(argv);
  } catch (error) {
    // Thrown by an action: commander has not printed it.
    if (error instanceof InvalidArgumentError) throw new TetherError('ERR_USAGE', error.message, { cause: error });
    if (!(error instanceof CommanderError)) throw error;
    process.exitCode = error.exitCode === 0 ? 0 : 2;
  }
}
