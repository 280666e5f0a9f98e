#!/usr/bin/env node
import { Command, CommanderError } from 'commander';
import { createRequire } from 'node:module';

const { version } = createRequire(import.meta.url)('../../package.json') as { version: string };

/**
 * The `tether` command (DESIGN §8). Exit codes: 0 ok, 1 operation failed,
 * 2 usage error.
 */
export function buildProgram(): Command {
  const program = new Command('tether')
    .description(
      'Connects MCP clients to OAuth-protected remote MCP servers and keeps them\n' +
        'authenticated through VPN switches, sleep, WAF block pages and 5xx/429 storms.',
    )
    .version(version)
    .exitOverride()
    .showHelpAfterError('(run `tether --help` for usage)');

  program
    .command('demo')
    .description('the whole story on loopback, no setup (coming: see the README)')
    .action(() => {
      process.stdout.write(
        'tether demo is coming: the local OAuth-protected MCP server, the workload and the outage\n' +
          'land with the workloads release. The token keeper, OAuth and the credential store are in place; `npm test` shows them at work.\n',
      );
    });

  return program;
}

try {
  await buildProgram().parseAsync(process.argv);
} catch (error) {
  if (error instanceof CommanderError) {
    process.exitCode = error.exitCode === 0 ? 0 : 2;
  } else {
    process.stderr.write(`tether: ${error instanceof Error ? error.message : String(error)}\n`);
    process.exitCode = 1;
  }
}
