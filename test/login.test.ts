import { createServer } from 'node:net';
import type * as oauth from 'oauth4webapi';
import { describe, expect, it } from 'vitest';
import { FakeClock } from '../src/clock/fake.js';
import { TetherError } from '../src/errors.js';
import { browserCommands, openBrowser } from '../src/oauth/browser.js';
import { loginWithBrowser, requestedScopes, type BrowserLoginOptions, type LoginPrompt } from '../src/oauth/login.js';

const AS: oauth.AuthorizationServer = {
  issuer: 'http://127.0.0.1:9/',
  authorization_endpoint: 'http://127.0.0.1:9/auth',
  token_endpoint: 'http://127.0.0.1:9/token',
  scopes_supported: ['openid', 'offline_access'],
  authorization_response_iss_parameter_supported: true,
};

/** A browser that, instead of showing the page, calls the redirect URI with what `answer` makes of the request. */
function browser(answer: (request: URL) => Record<string, string>): (url: string) => Promise<boolean> {
  return (url) => {
    const request = new URL(url);
    const callback = new URL(request.searchParams.get('redirect_uri') ?? '');
    for (const [key, value] of Object.entries(answer(request))) callback.searchParams.set(key, value);
    void fetch(callback).then((response) => response.text());
    return Promise.resolve(true);
  };
}

function options(overrides: Partial<BrowserLoginOptions>): BrowserLoginOptions & { prompts: LoginPrompt[] } {
  const prompts: LoginPrompt[] = [];
  return {
    as: AS,
    client: { clientId: 'tether-test' },
    resource: 'http://127.0.0.1:9/mcp',
    clock: new FakeClock(),
    prompt: (p) => prompts.push(p),
    prompts,
    ...overrides,
  };
}

async function codeOf(promise: Promise<unknown>): Promise<string> {
  return promise.then(
    () => 'resolved',
    (error: unknown) => (error instanceof TetherError ? error.code : `other: ${String(error)}`),
  );
}

describe('login with the browser', () => {
  it('asks for a code with PKCE S256, state, resource and offline_access, redirecting to 127.0.0.1', async () => {
    let seen: URL | undefined;
    const run = options({
      launch: browser((request) => {
        seen = request;
        return { error: 'access_denied' };
      }),
    });
    await codeOf(loginWithBrowser(run));
    const p = seen?.searchParams;
    expect(p?.get('response_type')).toBe('code');
    expect(p?.get('code_challenge_method')).toBe('S256');
    expect(p?.get('code_challenge')).toMatch(/^[A-Za-z0-9_-]{43}$/);
    expect(p?.get('state')?.length).toBeGreaterThanOrEqual(32);
    expect(p?.get('resource')).toBe('http://127.0.0.1:9/mcp');
    expect(p?.get('scope')?.split(' ')).toContain('offline_access');
    expect(p?.get('redirect_uri')).toMatch(/^http:\/\/127\.0\.0\.1:\d+\/callback$/);
    expect(run.prompts[0]).toMatchObject({ kind: 'browser', opened: true, timeoutMs: 5 * 60_000 });
  });

  it('a callback with error=access_denied → ERR_LOGIN_DENIED', async () => {
    const run = options({
      launch: browser((r) => ({ error: 'access_denied', state: r.searchParams.get('state') ?? '', iss: AS.issuer })),
    });
    expect(await codeOf(loginWithBrowser(run))).toBe('ERR_LOGIN_DENIED');
  });

  it('a callback with the wrong state → ERR_LOGIN_STATE, and nothing is exchanged', async () => {
    const run = options({ launch: browser(() => ({ code: 'stolen', state: 'not-ours', iss: AS.issuer })) });
    expect(await codeOf(loginWithBrowser(run))).toBe('ERR_LOGIN_STATE');
  });

  it('a callback from another issuer (RFC 9207) → ERR_LOGIN_STATE', async () => {
    const run = options({
      launch: browser((r) => ({ code: 'c', state: r.searchParams.get('state') ?? '', iss: 'https://evil.example/' })),
    });
    expect(await codeOf(loginWithBrowser(run))).toBe('ERR_LOGIN_STATE');
  });

  it('twice in a row: a second login after a failed one works the same way, on a fresh port', async () => {
    const ports: string[] = [];
    const run = (): BrowserLoginOptions =>
      options({
        launch: browser((r) => {
          ports.push(new URL(r.searchParams.get('redirect_uri') ?? '').port);
          return { error: 'access_denied', state: r.searchParams.get('state') ?? '', iss: AS.issuer };
        }),
      });
    expect(await codeOf(loginWithBrowser(run()))).toBe('ERR_LOGIN_DENIED');
    expect(await codeOf(loginWithBrowser(run()))).toBe('ERR_LOGIN_DENIED');
    expect(ports).toHaveLength(2);
  });

  it('--no-browser only prints the URL, and gives up after the timeout with ERR_LOGIN_TIMEOUT', async () => {
    const clock = new FakeClock();
    let launched = false;
    let prompted: () => void = () => undefined;
    const waiting = new Promise<void>((resolve) => (prompted = resolve));
    const run = options({
      clock,
      openBrowser: false,
      timeoutMs: 60_000,
      launch: () => {
        launched = true;
        return Promise.resolve(true);
      },
    });
    const prompt = (p: LoginPrompt): void => {
      run.prompts.push(p);
      prompted();
    };
    const login = codeOf(loginWithBrowser({ ...run, prompt }));
    await waiting; // the listener is up and the URL shown: now the user takes too long
    await clock.advance(59_999);
    expect(await Promise.race([login, Promise.resolve('pending')])).toBe('pending');
    await clock.advance(1);
    expect(await login).toBe('ERR_LOGIN_TIMEOUT');
    expect(launched).toBe(false);
    expect(run.prompts[0]).toMatchObject({ kind: 'browser', opened: false });
  });

  it('a callback port in use → ERR_LOGIN_PORT naming --callback-port', async () => {
    const blocker = createServer();
    await new Promise<void>((resolve) => blocker.listen(0, '127.0.0.1', resolve));
    const address = blocker.address();
    const port = typeof address === 'object' && address !== null ? address.port : 0;
    try {
      const error = await loginWithBrowser(options({ callbackPort: port })).catch((e: unknown) => e);
      expect(error).toBeInstanceOf(TetherError);
      expect((error as TetherError).code).toBe('ERR_LOGIN_PORT');
      expect((error as TetherError).message).toContain('--callback-port');
    } finally {
      blocker.close();
    }
  });
});

describe('scopes and browsers', () => {
  it('adds offline_access only when the server lists it', () => {
    expect(requestedScopes(AS, ['mcp'])).toBe('mcp offline_access');
    expect(requestedScopes({ issuer: 'x' }, ['mcp'])).toBe('mcp');
    expect(requestedScopes({ issuer: 'x' })).toBe('');
  });

  it('uses $BROWSER (a :-separated list) before the system opener', () => {
    expect(browserCommands({ BROWSER: 'firefox:chromium' }, 'linux')).toEqual([['firefox'], ['chromium']]);
    expect(browserCommands({}, 'linux')).toEqual([['xdg-open']]);
    expect(browserCommands({}, 'darwin')).toEqual([['open']]);
  });

  it('falls back (false) when no browser command can start, true when one can', async () => {
    expect(await openBrowser('http://127.0.0.1:9/', [['/nonexistent/browser']])).toBe(false);
    expect(await openBrowser('http://127.0.0.1:9/', [['/nonexistent/browser'], ['true']])).toBe(true);
  });
});
