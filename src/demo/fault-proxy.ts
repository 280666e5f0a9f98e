/**
 * A reverse proxy in front of the authorization server whose faults are
 * switched at runtime. A faulted request is answered by the proxy and never
 * forwarded: otherwise the server would rotate a refresh token the client
 * never sees (TESTING.md). Every token request is recorded.
 *
 * Start the proxy first, give its URL to the authorization server as its
 * issuer (so every advertised endpoint goes through the proxy), then point
 * the proxy at the server with `setTarget`.
 */
import { createSign, generateKeyPairSync, X509Certificate } from 'node:crypto';
import http from 'node:http';
import https from 'node:https';
import type { AddressInfo } from 'node:net';
import { closeServer } from './auth-server.js';

/**
 * What the proxy answers instead of forwarding — except `delay`, which
 * forwards late on purpose (see there).
 */
export type Fault =
  /** 403 with an HTML block page, as a WAF or CDN sends it. */
  | { readonly kind: 'waf_403' }
  /** A 5xx (default 503) with an HTML body. */
  | { readonly kind: 'server_error'; readonly status?: number }
  /** 429 with `Retry-After`. */
  | { readonly kind: 'rate_limited'; readonly retryAfter: string }
  /** The connection is reset (RST) without an answer. */
  | { readonly kind: 'reset' }
  /** No answer at all until the client gives up or the proxy closes. */
  | { readonly kind: 'hang' }
  /** 200 with an HTML page (a captive portal). */
  | { readonly kind: 'html_200' }
  /** 200 with JSON cut off in the middle (complete HTTP framing). */
  | { readonly kind: 'truncated_json' }
  /** 200 with a JSON body of `bytes` bytes (default 10 MB). */
  | { readonly kind: 'huge'; readonly bytes?: number }
  /** Any JSON answer (a registration without `client_id`, a token response without `access_token`, forged metadata). */
  | { readonly kind: 'json'; readonly status: number; readonly body: unknown }
  /**
   * A slow path, forwarded — the one fault that reaches the server. `request`:
   * the request is held `ms`, then forwarded, unless the client has gone away
   * meanwhile (then the server never sees it, so no refresh token is spent
   * behind the client's back). `response`: forwarded at once, and the
   * server's answer held `ms` before it is passed on — a window in which the
   * server has already rotated the refresh token and the client does not
   * know it yet; a client that goes away meanwhile never gets the answer.
   */
  | { readonly kind: 'delay'; readonly ms: number; readonly phase: 'request' | 'response' };

/**
 * Which requests a fault hits (oidc-provider's routes): token requests
 * (`POST /token`), registrations (`POST /reg`), metadata (`/.well-known/…`),
 * or everything.
 */
export type FaultScope = 'token' | 'registration' | 'metadata' | 'all';

/** One request to the token endpoint and what it got. */
export interface RecordedTokenRequest {
  /** `Date.now()` when it arrived. */
  readonly at: number;
  readonly grantType: string | undefined;
  /** `forwarded` to the server, or the fault that answered instead. */
  readonly answer: 'forwarded' | Fault['kind'];
  /**
   * The status the client got; absent for `reset` and `hang`. For `delay`,
   * the server's status, recorded when the server answered (`response`: before
   * the client gets it, if it ever does).
   */
  readonly status?: number;
}

export interface FaultProxy {
  /** The proxy's own URL (`http://` or, with `tls`, `https://`): the issuer to give the server. */
  readonly url: string;
  readonly tokenRequests: readonly RecordedTokenRequest[];
  setTarget(url: string): void;
  /** Sets (or with `undefined` clears) the fault for `scope` (default `token`); one fault at a time. */
  setFault(fault: Fault | undefined, scope?: FaultScope): void;
  close(): Promise<void>;
}

export interface FaultProxyOptions {
  readonly target?: string;
  /** The address to listen on. Default `127.0.0.1`. */
  readonly host?: string;
  /** The port to listen on. Default 0 (any free port). */
  readonly port?: number;
  /** Serve https with this key and certificate (see {@link selfSignedCertificate}). */
  readonly tls?: { readonly key: string; readonly cert: string };
}

const WAF_PAGE =
  '<!DOCTYPE html><html><head><title>Attention Required!</title></head><body><h1>Sorry, you have been blocked</h1></body></html>';
const PORTAL_PAGE = '<!DOCTYPE html><html><body><form action="/login">Sign in to the Wi-Fi</form></body></html>';

export async function startFaultProxy(options: FaultProxyOptions = {}): Promise<FaultProxy> {
  let target = options.target;
  let active: { fault: Fault; scope: FaultScope } | undefined;
  const tokenRequests: RecordedTokenRequest[] = [];
  // Pending `delay` timers, cleared on close so that nothing fires after it.
  const timers = new Set<NodeJS.Timeout>();
  const later = (ms: number, fn: () => void): void => {
    const timer = setTimeout(() => {
      timers.delete(timer);
      fn();
    }, ms);
    timers.add(timer);
  };

  const handle = (req: http.IncomingMessage, res: http.ServerResponse): void => {
    const chunks: Buffer[] = [];
    req.on('data', (chunk: Buffer) => chunks.push(chunk));
    req.on('end', () => {
      const body = Buffer.concat(chunks);
      const path = req.url ?? '/';
      const isToken = req.method === 'POST' && path.startsWith('/token');
      const record = (answer: RecordedTokenRequest['answer'], status?: number): void => {
        if (!isToken) return;
        const grantType = new URLSearchParams(body.toString()).get('grant_type') ?? undefined;
        tokenRequests.push({ at: Date.now(), grantType, answer, ...(status !== undefined && { status }) });
      };
      const fault = active !== undefined && inScope(active.scope, req.method, path) ? active.fault : undefined;
      if (fault?.kind === 'delay') {
        const tls = options.tls !== undefined;
        const onAnswer = (status: number): void => {
          record('delay', status);
        };
        if (fault.phase === 'request') {
          later(fault.ms, () => {
            if (!res.destroyed && !res.writableEnded) forward(target, req, res, body, tls, onAnswer);
          });
        } else {
          forward(target, req, res, body, tls, onAnswer, (send) => {
            later(fault.ms, send);
          });
        }
        return;
      }
      if (fault !== undefined) {
        const status = answerWithFault(fault, req, res);
        record(fault.kind, status);
        return;
      }
      forward(target, req, res, body, options.tls !== undefined, (status) => {
        record('forwarded', status);
      });
    });
  };

  const server = options.tls === undefined ? http.createServer(handle) : https.createServer(options.tls, handle);
  const host = options.host ?? '127.0.0.1';
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(options.port ?? 0, host, () => {
      server.off('error', reject);
      resolve();
    });
  });
  const scheme = options.tls === undefined ? 'http' : 'https';
  const urlHost = host.includes(':') ? `[${host}]` : host;
  return {
    url: `${scheme}://${urlHost}:${(server.address() as AddressInfo).port}`,
    tokenRequests,
    setTarget(url) {
      target = url;
    },
    setFault(fault, scope = 'token') {
      active = fault === undefined ? undefined : { fault, scope };
    },
    close: () => {
      for (const timer of timers) clearTimeout(timer);
      timers.clear();
      return closeServer(server);
    },
  };
}

function inScope(scope: FaultScope, method: string | undefined, path: string): boolean {
  switch (scope) {
    case 'all':
      return true;
    case 'token':
      return method === 'POST' && path.startsWith('/token');
    case 'registration':
      return method === 'POST' && path.startsWith('/reg');
    case 'metadata':
      return path.startsWith('/.well-known/');
  }
}

/** Answers `req` with `fault`; returns the status sent, if any. */
function answerWithFault(
  fault: Exclude<Fault, { kind: 'delay' }>,
  req: http.IncomingMessage,
  res: http.ServerResponse,
): number | undefined {
  const send = (status: number, contentType: string, body: string | Buffer, headers = {}): number => {
    res.writeHead(status, { 'content-type': contentType, 'content-length': Buffer.byteLength(body), ...headers });
    res.end(body);
    return status;
  };
  switch (fault.kind) {
    case 'waf_403':
      return send(403, 'text/html; charset=UTF-8', WAF_PAGE);
    case 'server_error':
      return send(fault.status ?? 503, 'text/html', '<html><body>Service Unavailable</body></html>');
    case 'rate_limited':
      return send(429, 'text/html', '<html><body>Too Many Requests</body></html>', { 'retry-after': fault.retryAfter });
    case 'reset':
      req.socket.resetAndDestroy();
      return undefined;
    case 'hang':
      return undefined;
    case 'html_200':
      return send(200, 'text/html', PORTAL_PAGE);
    case 'truncated_json':
      return send(200, 'application/json', '{"access_token":"eyJhbGciOiJSUzI1NiJ9.trunc","token_type":"Bea');
    case 'huge': {
      const size = fault.bytes ?? 10 * 1024 * 1024;
      const body = Buffer.alloc(size, 'a');
      body.write('{"padding":"');
      body.write('"}', size - 2);
      res.on('error', () => undefined);
      return send(200, 'application/json', body);
    }
    case 'json':
      return send(fault.status, 'application/json', JSON.stringify(fault.body));
  }
}

/**
 * Forwards `req` to `target` and streams the answer back. With `hold`, the
 * answer is read whole first and `hold` decides when it is sent (a `delay`
 * fault); a client gone by then gets nothing.
 */
function forward(
  target: string | undefined,
  req: http.IncomingMessage,
  res: http.ServerResponse,
  body: Buffer,
  tls: boolean,
  done: (status: number) => void,
  hold?: (send: () => void) => void,
): void {
  if (target === undefined) {
    res.writeHead(502).end('no target');
    return;
  }
  const upstream = http.request(
    new URL(req.url ?? '/', target),
    {
      method: req.method,
      headers: {
        ...req.headers,
        'x-forwarded-proto': tls ? 'https' : 'http',
        'x-forwarded-host': req.headers.host ?? '',
      },
    },
    (answer) => {
      const status = answer.statusCode ?? 502;
      if (hold === undefined) {
        res.writeHead(status, answer.headers);
        answer.pipe(res);
        done(status);
        return;
      }
      const chunks: Buffer[] = [];
      answer.on('data', (chunk: Buffer) => chunks.push(chunk));
      answer.on('end', () => {
        done(status);
        hold(() => {
          if (res.destroyed || res.writableEnded) return;
          res.on('error', () => undefined);
          res.writeHead(status, answer.headers);
          res.end(Buffer.concat(chunks));
        });
      });
    },
  );
  upstream.on('error', () => res.destroy());
  upstream.end(body);
}

/**
 * A throwaway self-signed certificate (EC P-256, valid one day) for the IPv4
 * addresses `ips` (SAN `IP:…`, default `127.0.0.1`), written in DER by hand
 * so that the tests need no `openssl`.
 */
export function selfSignedCertificate(ips: readonly string[] = ['127.0.0.1']): { key: string; cert: string } {
  const { privateKey, publicKey } = generateKeyPairSync('ec', { namedCurve: 'prime256v1' });
  const ecdsaWithSha256 = seq(oid('1.2.840.10045.4.3.2'));
  const name = seq(set(seq(oid('2.5.4.3'), tlv(0x0c, Buffer.from('tether test')))));
  const day = 24 * 3600 * 1000;
  const tbs = seq(
    tlv(0xa0, int(Buffer.from([2]))), // v3
    int(Buffer.from([0x01, ...Array.from({ length: 8 }, () => Math.floor(Math.random() * 256))])),
    ecdsaWithSha256,
    name,
    seq(utcTime(new Date(Date.now() - day)), utcTime(new Date(Date.now() + day))),
    name,
    publicKey.export({ type: 'spki', format: 'der' }),
    tlv(
      0xa3,
      seq(
        // subjectAltName: iPAddress for each of `ips`
        seq(oid('2.5.29.17'), tlv(0x04, seq(...ips.map((ip) => tlv(0x87, ipv4Bytes(ip)))))),
        // basicConstraints (critical): CA, so that it can be its own trust anchor
        seq(oid('2.5.29.19'), tlv(0x01, Buffer.from([0xff])), tlv(0x04, seq(tlv(0x01, Buffer.from([0xff]))))),
      ),
    ),
  );
  const signature = createSign('sha256').update(tbs).sign(privateKey);
  const der = seq(tbs, ecdsaWithSha256, tlv(0x03, Buffer.concat([Buffer.from([0]), signature])));
  const cert = `-----BEGIN CERTIFICATE-----\n${der.toString('base64').replace(/.{64}/g, '$&\n')}\n-----END CERTIFICATE-----\n`;
  new X509Certificate(cert); // throws if the DER is malformed
  return { key: privateKey.export({ type: 'pkcs8', format: 'pem' }).toString(), cert };
}

function ipv4Bytes(ip: string): Buffer {
  const parts = ip.split('.').map(Number);
  if (parts.length !== 4 || parts.some((part) => !Number.isInteger(part) || part < 0 || part > 255)) {
    throw new Error(`not an IPv4 address: ${ip}`);
  }
  return Buffer.from(parts);
}

function tlv(tag: number, value: Buffer): Buffer {
  const length = value.length;
  let header: number[];
  if (length < 0x80) header = [tag, length];
  else if (length < 0x100) header = [tag, 0x81, length];
  else header = [tag, 0x82, length >> 8, length & 0xff];
  return Buffer.concat([Buffer.from(header), value]);
}

function seq(...items: Buffer[]): Buffer {
  return tlv(0x30, Buffer.concat(items));
}

function set(...items: Buffer[]): Buffer {
  return tlv(0x31, Buffer.concat(items));
}

function int(bytes: Buffer): Buffer {
  return tlv(0x02, bytes);
}

function oid(dotted: string): Buffer {
  const [first = 0, second = 0, ...rest] = dotted.split('.').map(Number);
  const bytes = [40 * first + second];
  for (const arc of rest) {
    const groups = [arc & 0x7f];
    for (let value = arc >> 7; value > 0; value >>= 7) groups.unshift((value & 0x7f) | 0x80);
    bytes.push(...groups);
  }
  return tlv(0x06, Buffer.from(bytes));
}

function utcTime(date: Date): Buffer {
  const iso = date.toISOString(); // 2026-01-01T00:00:00.000Z
  const text = `${iso.slice(2, 4)}${iso.slice(5, 7)}${iso.slice(8, 10)}${iso.slice(11, 13)}${iso.slice(14, 16)}${iso.slice(17, 19)}Z`;
  return tlv(0x17, Buffer.from(text));
}
