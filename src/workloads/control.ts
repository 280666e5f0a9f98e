import { chmod, lstat, mkdir, unlink } from 'node:fs/promises';
import path from 'node:path';
import http from 'node:http';
import { TetherError } from '../errors.js';
import { hasCode } from '../store/files.js';

/** What the control channel serves (DESIGN §7). */
export interface ControlHandlers {
  /** `GET /status`: the live status, with the last events. */
  status(): unknown;
  /** `POST /refresh`: an attempt now (`tether refresh`); resolves with the status after it. */
  refresh(): Promise<unknown>;
  /** `POST /reload`: take the stored credentials into use (after `tether login`). */
  reload(): Promise<unknown>;
  /** `GET /metrics`: Prometheus text. */
  metrics(): string;
}

/**
 * The workload's control channel: HTTP on a local socket that only its owner
 * can open (`0600`, in a `0700` directory). A socket left by a process that
 * died is replaced.
 */
export async function startControlServer(socketPath: string, handlers: ControlHandlers): Promise<http.Server> {
  const server = http.createServer((req, res) => {
    const send = (status: number, body: unknown, type = 'application/json'): void => {
      const text = typeof body === 'string' ? body : `${JSON.stringify(body)}\n`;
      res.writeHead(status, { 'content-type': type }).end(text);
    };
    const route = `${req.method ?? ''} ${req.url ?? ''}`;
    const answer = async (): Promise<void> => {
      switch (route) {
        case 'GET /status':
          send(200, handlers.status());
          return;
        case 'POST /refresh':
          send(200, await handlers.refresh());
          return;
        case 'POST /reload':
          send(200, await handlers.reload());
          return;
        case 'GET /metrics':
          send(200, handlers.metrics(), 'text/plain; version=0.0.4');
          return;
        default:
          send(404, { error: 'not_found' });
      }
    };
    answer().catch((error: unknown) => {
      send(500, { error: 'failed', message: error instanceof Error ? error.message : 'failed' });
    });
  });
  if (process.platform !== 'win32') {
    await privateSocketDir(path.dirname(socketPath));
    await unlink(socketPath).catch(() => undefined);
  }
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(socketPath, () => {
      server.off('error', reject);
      resolve();
    });
  });
  if (process.platform !== 'win32') await chmod(socketPath, 0o600);
  return server;
}

/** Makes sure the socket's directory is this user's alone (`0700`): in a shared temp directory, another user could have made it first. */
async function privateSocketDir(dir: string): Promise<void> {
  await mkdir(dir, { recursive: true, mode: 0o700 });
  const info = await lstat(dir);
  const uid = process.getuid?.();
  if (!info.isDirectory() || (uid !== undefined && info.uid !== uid) || (info.mode & 0o077) !== 0) {
    throw new TetherError(
      'ERR_CONTROL_SOCKET',
      `${dir} is not a private directory of this user (it must be a directory, owned by you, mode 0700); remove it, or set TETHER_HOME to a shorter path`,
    );
  }
}

/**
 * One request to a workload's control channel. Rejects with
 * `ERR_WORKLOAD_UNREACHABLE` when nothing listens there (the process is gone).
 */
export async function controlRequest(
  socketPath: string,
  method: 'GET' | 'POST',
  route: string,
  timeoutMs = 90_000,
): Promise<{ readonly status: number; readonly body: string }> {
  return new Promise((resolve, reject) => {
    const req = http.request({ socketPath, method, path: route, timeout: timeoutMs }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (chunk: Buffer) => chunks.push(chunk));
      res.on('end', () => {
        resolve({ status: res.statusCode ?? 0, body: Buffer.concat(chunks).toString('utf8') });
      });
      res.on('error', reject);
    });
    req.on('timeout', () => req.destroy(new TetherError('ERR_TIMEOUT', 'the workload did not answer in time')));
    req.on('error', (error) => {
      if (['ENOENT', 'ECONNREFUSED', 'ECONNRESET', 'EPIPE'].some((code) => hasCode(error, code))) {
        reject(new TetherError('ERR_WORKLOAD_UNREACHABLE', 'the workload process is not listening', { cause: error }));
      } else reject(error);
    });
    req.end();
  });
}
