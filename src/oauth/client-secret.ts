import { readFile } from 'node:fs/promises';
import { TetherError } from '../errors.js';

/** The variable a static client's secret may come from (never from a flag value, which `ps` would show). */
export const CLIENT_SECRET_ENV = {
  name: 'TETHER_CLIENT_SECRET',
  default: 'none',
  description: 'the secret of a static client (`--client-id`), when `--client-secret-file` is not given',
} as const;

/**
 * A static client's secret: from `file` when given (its trailing newline
 * dropped, as `echo secret > file` writes one), else from
 * `TETHER_CLIENT_SECRET`, else none (a public client). The secret never
 * enters an error message.
 */
export async function readClientSecret(
  file: string | undefined,
  env: Readonly<Record<string, string | undefined>> = process.env,
): Promise<string | undefined> {
  if (file === undefined) {
    const value = env[CLIENT_SECRET_ENV.name];
    return value === undefined || value === '' ? undefined : value;
  }
  let text: string;
  try {
    text = await readFile(file, 'utf8');
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code ?? 'error';
    throw new TetherError(
      'ERR_CLIENT_SECRET',
      `cannot read the client secret file ${JSON.stringify(file)} (${code}); check the path given to --client-secret-file`,
      { cause: error },
    );
  }
  const secret = text.replace(/\r?\n$/, '');
  if (secret === '') {
    throw new TetherError(
      'ERR_CLIENT_SECRET',
      `the client secret file ${JSON.stringify(file)} is empty; put the secret in it, or drop --client-secret-file for a public client`,
    );
  }
  return secret;
}
