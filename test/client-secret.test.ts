import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { TetherError } from '../src/errors.js';
import { readClientSecret } from '../src/oauth/client-secret.js';

describe('readClientSecret', () => {
  let dir = '';
  beforeEach(async () => {
    dir = await mkdtemp(path.join(tmpdir(), 'tether-secret-'));
  });
  afterEach(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it('reads the file, dropping one trailing newline', async () => {
    const file = path.join(dir, 'secret');
    await writeFile(file, 's3cret-value\n');
    expect(await readClientSecret(file, { TETHER_CLIENT_SECRET: 'from-env' })).toBe('s3cret-value');
  });

  it('falls back to TETHER_CLIENT_SECRET, and to no secret (a public client)', async () => {
    expect(await readClientSecret(undefined, { TETHER_CLIENT_SECRET: 'from-env' })).toBe('from-env');
    expect(await readClientSecret(undefined, { TETHER_CLIENT_SECRET: '' })).toBeUndefined();
    expect(await readClientSecret(undefined, {})).toBeUndefined();
  });

  it('a missing or empty file is a clear error that never shows a secret', async () => {
    const missing = await readClientSecret(path.join(dir, 'nope'), {}).catch((e: unknown) => e);
    expect(missing).toBeInstanceOf(TetherError);
    expect((missing as TetherError).code).toBe('ERR_CLIENT_SECRET');
    expect((missing as TetherError).message).toContain('--client-secret-file');
    const empty = path.join(dir, 'empty');
    await writeFile(empty, '\n');
    await expect(readClientSecret(empty, {})).rejects.toMatchObject({ code: 'ERR_CLIENT_SECRET' });
  });
});
