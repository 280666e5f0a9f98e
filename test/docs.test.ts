import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { DEFAULT_KEEPER_CONFIG, KEEPER_ENV, keeperConfigFromEnv } from '../src/config/keeper-config.js';
import { formatDuration } from '../src/config/duration.js';
import { CLIENT_SECRET_ENV } from '../src/oauth/client-secret.js';
import { STORE_ENV } from '../src/store/store.js';
import { WORKLOAD_STATUSES } from '../src/workloads/status.js';

const OTHER_ENV = [...STORE_ENV, CLIENT_SECRET_ENV];

const readme = readFileSync(new URL('../README.md', import.meta.url), 'utf8');

/** The rows of the README's configuration table: variable → default as written. */
function documentedVariables(): Map<string, string> {
  const rows = new Map<string, string>();
  for (const match of readme.matchAll(/^\| `((?:TETHER|TOOLHIVE)_[A-Z_]+)` \| `([^`]+)` \|/gm)) {
    rows.set(match[1] ?? '', match[2] ?? '');
  }
  return rows;
}

describe('README configuration table', () => {
  it('documents exactly the variables the code reads, each in a table row', () => {
    const rows = [...readme.matchAll(/^\| `((?:TETHER|TOOLHIVE)_[A-Z_]+)` \|/gm)].map((m) => m[1]);
    const read = [...KEEPER_ENV.map((v) => v.name), ...OTHER_ENV.map((v) => v.name)];
    expect(rows.sort()).toEqual(read.sort());
  });

  it('names no TETHER_ variable anywhere in the README that the code does not read', () => {
    const mentioned = new Set([...readme.matchAll(/\bTETHER_[A-Z][A-Z_]*[A-Z]\b/g)].map((m) => m[0]));
    const read = new Set([...KEEPER_ENV.map((v) => v.name), ...OTHER_ENV.map((v) => v.name)]);
    expect([...mentioned].filter((name) => !read.has(name))).toEqual([]);
  });

  it.each(OTHER_ENV.map((v) => [v.name, v] as const))('%s: documented with its default', (name, variable) => {
    const row = readme.split('\n').find((line) => line.startsWith(`| \`${name}\` |`));
    expect(row).toBeDefined();
    expect(row).toContain(variable.default);
  });

  it.each(KEEPER_ENV.map((v) => [v.name, v] as const))(
    '%s: the documented default is the default, and the code reads it',
    (_name, variable) => {
      const documented = documentedVariables().get(variable.name) ?? '';
      const actual = DEFAULT_KEEPER_CONFIG[variable.key];
      expect(variable.kind === 'count' ? String(actual) : formatDuration(actual)).toBe(documented);
      // Setting the variable (and its alias) changes the config: the code really reads it.
      const value = variable.kind === 'count' ? '7' : '7m';
      const expected = variable.kind === 'count' ? 7 : 7 * 60_000;
      const extra = variable.key === 'initialRetryInterval' ? { TETHER_TOKEN_REFRESH_MAX_RETRY_INTERVAL: '1h' } : {};
      expect(keeperConfigFromEnv({ ...extra, [variable.name]: value })[variable.key]).toBe(expected);
      expect(keeperConfigFromEnv({ ...extra, [variable.alias]: value })[variable.key]).toBe(expected);
    },
  );
});

describe('README statuses table', () => {
  it('explains every workload status, and no other', () => {
    const section = readme.slice(readme.indexOf('### Statuses'), readme.indexOf('### `--json` fields'));
    const documented = [...section.matchAll(/^\| `([a-z_]+)`(?:, `([a-z_]+)`)? \|/gm)].flatMap((m) =>
      [m[1], m[2]].filter((v) => v !== undefined),
    );
    expect(documented.sort()).toEqual([...WORKLOAD_STATUSES].sort());
  });
});
