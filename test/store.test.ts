import { AsyncEntry } from '@napi-rs/keyring';
import { chmod, chown, mkdir, readFile, stat, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { describe, expect, it, vi } from 'vitest';
import { FakeClock } from '../src/clock/fake.js';
import { systemClock } from '../src/clock/system.js';
import { DEFAULT_KEEPER_CONFIG } from '../src/config/keeper-config.js';
import { TetherError } from '../src/errors.js';
import { TokenKeeper } from '../src/keeper/keeper.js';
import type { TokenSet } from '../src/keeper/types.js';
import { defaultKeySource, osKeychain, type Keychain } from '../src/store/key.js';
import { WORKLOAD_NAME_PATTERN, issuerKey, stateDir } from '../src/store/paths.js';
import type { DynamicClient } from '../src/oauth/registration.js';
import { CredentialStore, StoreCorruptError } from '../src/store/store.js';
import { drive, fixedKey, listFiles, tempHome } from './support/store-helpers.js';

const TOKENS: TokenSet = {
  accessToken: 'at-SECRET-7f3a9c',
  refreshToken: 'rt-SECRET-41be02',
  issuedAt: 1_767_225_600_000,
  expiresAt: 1_767_229_200_000,
  scope: 'mcp offline_access',
  tokenType: 'Bearer',
};

const REGISTRATION: DynamicClient = {
  kind: 'dynamic',
  issuer: 'https://auth.example.com',
  clientId: 'client-1234',
  clientSecret: 'cs-SECRET-993d1e',
  tokenEndpointAuthMethod: 'client_secret_basic',
  redirectUris: ['http://127.0.0.1/callback'],
  grantTypes: ['authorization_code', 'refresh_token'],
  registeredAt: 1_767_225_600_000,
};

const SECRETS = [TOKENS.accessToken, TOKENS.refreshToken, REGISTRATION.clientSecret];

async function open(dir: string, keyByte = 1, clock = systemClock): Promise<CredentialStore> {
  return CredentialStore.open({ dir, keySource: fixedKey(keyByte), clock });
}

async function mode(file: string): Promise<number> {
  return (await stat(file)).mode & 0o777;
}

/** The code of the error `promise` rejects with. */
async function codeOf(promise: Promise<unknown>): Promise<string> {
  return promise.then(
    () => 'resolved',
    (error: unknown) => (error instanceof TetherError ? error.code : String(error)),
  );
}

/** The StoreCorruptError `promise` rejects with. */
async function corruptionOf(promise: Promise<unknown>): Promise<StoreCorruptError> {
  const error = await promise.then(
    () => undefined,
    (e: unknown) => e,
  );
  if (!(error instanceof StoreCorruptError)) throw new Error(`expected a StoreCorruptError, got ${String(error)}`);
  return error;
}

/** An in-memory keychain, or one that is not there at all. */
function memoryKeychain(): Keychain & { value: string | undefined; calls: number } {
  const keychain = {
    value: undefined as string | undefined,
    calls: 0,
    read: () => {
      keychain.calls++;
      return Promise.resolve(keychain.value);
    },
    write: (secret: string) => {
      keychain.calls++;
      keychain.value = secret;
      return Promise.resolve();
    },
  };
  return keychain;
}

const unusableKeychain: Keychain = {
  read: () => Promise.reject(new Error('org.freedesktop.secrets was not provided by any .service files')),
  write: () => Promise.reject(new Error('no keychain')),
};

const posixOnly = process.platform === 'win32' ? it.skip : it;

describe('stateDir', () => {
  it.each([
    ['TETHER_HOME wins', 'linux', { TETHER_HOME: '/srv/tether/' }, '/srv/tether'],
    ['Linux: XDG_STATE_HOME', 'linux', { XDG_STATE_HOME: '/xdg/state' }, '/xdg/state/tether'],
    ['Linux: a relative XDG_STATE_HOME is ignored', 'linux', { XDG_STATE_HOME: 'rel' }, '/home/u/.local/state/tether'],
    ['Linux: default', 'linux', {}, '/home/u/.local/state/tether'],
    ['an empty TETHER_HOME is unset', 'linux', { TETHER_HOME: '' }, '/home/u/.local/state/tether'],
    ['macOS', 'darwin', {}, '/home/u/Library/Application Support/tether'],
    [
      'Windows: LOCALAPPDATA',
      'win32',
      { LOCALAPPDATA: 'C:\\Users\\u\\AppData\\Local' },
      'C:\\Users\\u\\AppData\\Local\\tether',
    ],
    ['Windows: default', 'win32', {}, 'C:\\Users\\u\\AppData\\Local\\tether'],
  ] as const)('%s', (_name, platform, env, expected) => {
    const home = platform === 'win32' ? 'C:\\Users\\u' : '/home/u';
    expect(stateDir({ env, platform, home })).toBe(expected);
  });

  it('refuses a relative TETHER_HOME', () => {
    expect(() => stateDir({ env: { TETHER_HOME: 'state' }, platform: 'linux', home: '/home/u' })).toThrow(
      expect.objectContaining({ code: 'ERR_CONFIG' }),
    );
  });

  it('is where the store opens when no directory is given', async () => {
    const home = path.join(await tempHome(), 'from-env');
    const store = await CredentialStore.open({ env: { TETHER_HOME: home }, keySource: fixedKey(1) });
    expect(store.dir).toBe(home);
    expect((await stat(home)).isDirectory()).toBe(true);
  });
});

describe('workload names', () => {
  it.each(['a', 'github', 'my-server.prod_2', '0', 'a'.repeat(63)])('accepts %j', (name) => {
    expect(WORKLOAD_NAME_PATTERN.test(name)).toBe(true);
  });

  it.each(['', 'A', '-a', '.hidden', '../escape', 'a/b', 'a b', 'ünï', 'a'.repeat(64)])(
    'refuses %j in every operation',
    async (name) => {
      const store = await open(await tempHome());
      expect(await codeOf(store.loadTokens(name))).toBe('ERR_INVALID_WORKLOAD_NAME');
      expect(await codeOf(store.saveTokens(name, TOKENS))).toBe('ERR_INVALID_WORKLOAD_NAME');
      expect(await codeOf(store.saveMetadata(name, {}))).toBe('ERR_INVALID_WORKLOAD_NAME');
      expect(await codeOf(store.removeWorkload(name))).toBe('ERR_INVALID_WORKLOAD_NAME');
      expect(() => store.keeperStore(name)).toThrow(expect.objectContaining({ code: 'ERR_INVALID_WORKLOAD_NAME' }));
    },
  );
});

describe('permissions', () => {
  posixOnly('creates a missing state directory 0700 and every file 0600', async () => {
    const dir = path.join(await tempHome(), 'nested', 'state');
    const store = await CredentialStore.open({ dir, keychain: unusableKeychain });
    await store.saveTokens('w', TOKENS);
    await store.saveMetadata('w', { resource: 'https://mcp.example.com' });
    await store.saveRegistration(REGISTRATION);
    expect(await mode(dir)).toBe(0o700);
    for (const sub of ['workloads', 'workloads/w', 'registrations', 'locks']) {
      expect(await mode(path.join(dir, sub)), sub).toBe(0o700);
    }
    const files = await listFiles(dir);
    expect(files).toEqual([
      'key.json',
      `registrations/${issuerKey(REGISTRATION.issuer)}.json`,
      'workloads/w/metadata.json',
      'workloads/w/tokens.json',
    ]);
    for (const file of files) expect(await mode(path.join(dir, file)), file).toBe(0o600);
  });

  posixOnly('tightens a state directory that others can read', async () => {
    const dir = await tempHome();
    await chmod(dir, 0o755);
    await open(dir);
    expect(await mode(dir)).toBe(0o700);
  });

  it.skipIf(process.getuid?.() !== 0)('refuses a state directory that belongs to another user', async () => {
    const dir = path.join(await tempHome(), 'theirs');
    await mkdir(dir, { mode: 0o700 });
    await chown(dir, 4242, 4242);
    expect(await codeOf(open(dir))).toBe('ERR_STORE_DIR');
    expect(await mode(dir)).toBe(0o700);
  });

  it('refuses a state directory that is a file', async () => {
    const file = path.join(await tempHome(), 'file');
    await writeFile(file, '');
    expect(await codeOf(open(file))).toBe('ERR_STORE_DIR');
  });
});

describe('round trips', () => {
  it('keeps a token set per workload, with and without its optional fields', async () => {
    const store = await open(await tempHome());
    const bare: TokenSet = { accessToken: 'static-bearer', issuedAt: 5 };
    expect(await store.loadTokens('a')).toBeUndefined();
    await store.saveTokens('a', TOKENS);
    await store.saveTokens('b', bare);
    expect(await store.loadTokens('a')).toEqual(TOKENS);
    expect(await store.loadTokens('b')).toEqual(bare);
    const rotated = { ...TOKENS, refreshToken: 'rt-next' };
    await store.saveTokens('a', rotated);
    expect(await store.loadTokens('a')).toEqual(rotated);
  });

  it('reads what another instance with the same key wrote', async () => {
    const dir = await tempHome();
    await (await open(dir)).saveTokens('a', TOKENS);
    expect(await (await open(dir)).loadTokens('a')).toEqual(TOKENS);
  });

  it('keeps discovered metadata as plain JSON', async () => {
    const dir = await tempHome();
    const store = await open(dir);
    const metadata = { remoteUrl: 'https://mcp.example.com/mcp', authorizationServer: { issuer: 'https://as' } };
    expect(await store.loadMetadata('a')).toBeUndefined();
    await store.saveMetadata('a', metadata);
    expect(await store.loadMetadata('a')).toEqual(metadata);
    expect(JSON.parse(await readFile(path.join(dir, 'workloads/a/metadata.json'), 'utf8'))).toEqual(metadata);
  });

  it('caches registrations by issuer, for every workload, and forgets one on request', async () => {
    const store = await open(await tempHome());
    const other: DynamicClient = {
      kind: 'dynamic',
      issuer: 'https://auth.example.com/tenant',
      clientId: 'c2',
      tokenEndpointAuthMethod: 'none',
      redirectUris: [],
      grantTypes: ['authorization_code'],
      registeredAt: 0,
    };
    await store.saveRegistration(REGISTRATION);
    await store.saveRegistration(other);
    expect(await store.loadRegistration(REGISTRATION.issuer)).toEqual(REGISTRATION);
    expect(await store.loadRegistration(other.issuer)).toEqual(other);
    expect(await store.loadRegistration('https://auth.example.com/')).toBeUndefined(); // exact issuer match
    await store.deleteRegistration(REGISTRATION.issuer);
    await store.deleteRegistration(REGISTRATION.issuer); // already gone: no error
    expect(await store.loadRegistration(REGISTRATION.issuer)).toBeUndefined();
    expect(await store.loadRegistration(other.issuer)).toEqual(other);
  });

  it('removes a workload: its tokens, metadata and set-aside files, nothing else', async () => {
    const dir = await tempHome();
    const store = await open(dir);
    await store.saveTokens('gone', TOKENS);
    await store.saveMetadata('gone', { a: 1 });
    await writeFile(path.join(dir, 'workloads/gone/tokens.json.corrupt-x'), 'old');
    await store.saveTokens('kept', TOKENS);
    await store.saveRegistration(REGISTRATION);
    await store.removeWorkload('gone');
    await store.removeWorkload('never-existed');
    expect(await listFiles(dir)).toEqual([
      `registrations/${issuerKey(REGISTRATION.issuer)}.json`,
      'workloads/kept/tokens.json',
    ]);
    expect(await store.loadTokens('gone')).toBeUndefined();
  });

  it('refuses lock timings that would spin', async () => {
    const dir = await tempHome();
    expect(await codeOf(CredentialStore.open({ dir, lock: { staleMs: 0 } }))).toBe('ERR_CONFIG');
  });

  it('refuses an unknown TETHER_STORE_KEY', async () => {
    const dir = await tempHome();
    expect(await codeOf(CredentialStore.open({ dir, env: { TETHER_STORE_KEY: 'keyring' } }))).toBe('ERR_CONFIG');
  });
});

describe('the keeper store', () => {
  it('loads, saves, and saves inside its own lock without waiting for itself', async () => {
    const store = await open(await tempHome());
    const keeperStore = store.keeperStore('w');
    const { signal } = new AbortController();
    expect(await keeperStore.load()).toBeUndefined();
    const result = await keeperStore.exclusive?.(async () => {
      await keeperStore.save(TOKENS);
      return keeperStore.exclusive?.(() => keeperStore.load(), signal); // nested: re-entrant
    }, signal);
    expect(result).toEqual(TOKENS);
  });

  it('serves a real TokenKeeper: a rotated refresh token is persisted under the lock', async () => {
    const store = await open(await tempHome());
    await store.saveTokens('w', { ...TOKENS, issuedAt: 0, expiresAt: 1 }); // long expired: refreshed at start
    const sent: string[] = [];
    const keeper = new TokenKeeper({
      clock: systemClock,
      config: DEFAULT_KEEPER_CONFIG,
      store: store.keeperStore('w'),
      status: () => undefined,
      refresh: (refreshToken) => {
        sent.push(refreshToken);
        return Promise.resolve({ ok: true, tokens: { accessToken: 'at-2', refreshToken: 'rt-2', expiresIn: 3600 } });
      },
    });
    await keeper.start();
    await vi.waitFor(async () => {
      expect((await store.loadTokens('w'))?.refreshToken).toBe('rt-2');
    });
    await keeper.stop();
    expect(sent).toEqual([TOKENS.refreshToken]);
  });
});

describe('writes under the lock', () => {
  /** Runs `fn` under the workload lock until `release` is called. */
  function hold(store: CredentialStore, fn: () => Promise<void> = () => Promise.resolve()) {
    let release = (): void => undefined;
    const released = new Promise<void>((resolve) => (release = resolve));
    const done = store.withWorkloadLock('w', async () => {
      await fn();
      await released;
    });
    return { release, done };
  }

  /** Moves fake time on, letting real I/O run in between. */
  async function passTime(clock: FakeClock, ms: number): Promise<void> {
    for (let t = 0; t < ms; t += 10) {
      await clock.advance(10);
      await new Promise((resolve) => setTimeout(resolve, 1));
    }
  }

  it('a save from outside waits for the holder of the workload lock', async () => {
    const clock = new FakeClock(Date.now());
    const dir = await tempHome();
    const store = await open(dir, 1, clock);
    const holder = hold(store);
    await passTime(clock, 20);
    let saved = false;
    const save = store.saveTokens('w', TOKENS).then(() => (saved = true));
    await passTime(clock, 200);
    expect(saved).toBe(false);
    expect(await listFiles(dir)).toEqual(['locks/workload-w.lock']);
    holder.release();
    await drive(clock, Promise.all([holder.done, save]));
    expect(await store.loadTokens('w')).toEqual(TOKENS);
  });

  it('a file rewritten while a reader waited to set it aside is read, not set aside', async () => {
    const clock = new FakeClock(Date.now());
    const dir = await tempHome();
    const store = await open(dir, 1, clock);
    await mkdir(path.join(dir, 'workloads/w'), { recursive: true });
    await writeFile(path.join(dir, 'workloads/w/tokens.json'), 'garbage');
    let wrote = (): void => undefined;
    const written = new Promise<void>((resolve) => (wrote = resolve));
    const holder = hold(store, async () => {
      await written;
      await store.saveTokens('w', TOKENS); // inside the lock: re-entrant
    });
    await passTime(clock, 20);
    const load = store.loadTokens('w'); // reads garbage, then waits for the lock to set it aside
    await passTime(clock, 50);
    wrote();
    await passTime(clock, 20);
    holder.release();
    expect(await drive(clock, load)).toEqual(TOKENS);
    await holder.done;
    expect(await listFiles(dir)).toEqual(['workloads/w/tokens.json']);
  });

  it('a wait for the lock ends when the signal aborts', async () => {
    const clock = new FakeClock(Date.now());
    const store = await open(await tempHome(), 1, clock);
    const holder = hold(store);
    await passTime(clock, 20);
    const controller = new AbortController();
    const keeperStore = store.keeperStore('w');
    const wait = codeOf(keeperStore.exclusive?.(() => Promise.resolve(), controller.signal) ?? Promise.resolve());
    await passTime(clock, 100);
    controller.abort('stopping');
    expect(await drive(clock, wait)).toBe('ERR_STORE_LOCK_ABORTED');
    expect(await codeOf(store.withWorkloadLock('w', () => Promise.resolve(), controller.signal))).toBe(
      'ERR_STORE_LOCK_ABORTED',
    );
    holder.release();
    await drive(clock, holder.done);
  });
});

describe('atomic writes', () => {
  it('leaves no temp files behind', async () => {
    const dir = await tempHome();
    const store = await open(dir);
    await Promise.all(Array.from({ length: 20 }, (_, i) => store.saveTokens('w', { ...TOKENS, issuedAt: i })));
    await Promise.all(Array.from({ length: 5 }, (_, i) => store.saveMetadata('w', { i })));
    expect(await listFiles(dir)).toEqual(['workloads/w/metadata.json', 'workloads/w/tokens.json']);
  });

  it('removes its temp file when the write fails', async () => {
    const dir = await tempHome();
    const store = await open(dir);
    await mkdir(path.join(dir, 'workloads/w/tokens.json'), { recursive: true }); // a rename target that cannot be replaced
    await expect(store.saveTokens('w', TOKENS)).rejects.toThrow();
    expect(await listFiles(dir)).toEqual([]);
  });
});

describe('secrets at rest', () => {
  it('never writes a token, client secret or registration token in plaintext', async () => {
    const dir = await tempHome();
    const store = await CredentialStore.open({ dir, keychain: unusableKeychain }); // the key file fallback
    await store.saveTokens('w', TOKENS);
    await store.saveRegistration(REGISTRATION);
    await store.saveMetadata('w', { issuer: REGISTRATION.issuer });
    const files = await listFiles(dir);
    expect(files).toHaveLength(4);
    for (const file of files) {
      const raw = await readFile(path.join(dir, file));
      for (const secret of SECRETS) {
        expect(raw.includes(secret ?? ''), `${secret ?? ''} in ${file}`).toBe(false);
        expect(raw.includes(Buffer.from(secret ?? '').toString('base64')), `${secret ?? ''} in ${file}`).toBe(false);
      }
    }
    const envelope = JSON.parse(await readFile(path.join(dir, 'workloads/w/tokens.json'), 'utf8')) as object;
    expect(Object.keys(envelope).sort()).toEqual(['alg', 'ct', 'iv', 'kid', 'tag', 'v']);
  });
});

describe('the store key', () => {
  it('falls back quietly to a 0600 key file when the keychain is unusable', async () => {
    const dir = await tempHome();
    const error = vi.spyOn(console, 'error');
    const warn = vi.spyOn(console, 'warn');
    const store = await CredentialStore.open({ dir, keychain: unusableKeychain });
    await store.saveTokens('w', TOKENS);
    expect(error).not.toHaveBeenCalled();
    expect(warn).not.toHaveBeenCalled();
    const record = JSON.parse(await readFile(path.join(dir, 'key.json'), 'utf8')) as Record<string, unknown>;
    expect(record).toMatchObject({ v: 1, source: 'file' });
    if (process.platform !== 'win32') expect(await mode(path.join(dir, 'key.json'))).toBe(0o600);
    // Another process (here: instance) finds the same key, and does not ask the keychain again.
    const keychain = memoryKeychain();
    const again = await CredentialStore.open({ dir, keychain });
    expect(await again.loadTokens('w')).toEqual(TOKENS);
    expect(keychain.calls).toBe(0);
  });

  it("probes this machine's real keychain without failing", async () => {
    const dir = await tempHome();
    const service = `mcp-tether-test-${process.pid}-${Math.random().toString(36).slice(2)}`;
    try {
      const store = await CredentialStore.open({ dir, keychain: osKeychain(service, 'store-key') });
      await store.saveTokens('w', TOKENS);
      expect(await store.loadTokens('w')).toEqual(TOKENS);
      // Without a Secret Service (this Linux test box, CI) the key is in the key file.
      const record = JSON.parse(await readFile(path.join(dir, 'key.json'), 'utf8')) as { source: string };
      expect(['file', 'keychain']).toContain(record.source);
    } finally {
      try {
        await new AsyncEntry(service, 'store-key', { linux: { store: 'secret-service' } }).deleteCredential();
      } catch {
        // No keychain here: nothing to clean up.
      }
    }
  });

  it('keeps the key in a usable keychain, and never falls back to a new key later', async () => {
    const dir = await tempHome();
    const keychain = memoryKeychain();
    await (await CredentialStore.open({ dir, keychain })).saveTokens('w', TOKENS);
    const record = await readFile(path.join(dir, 'key.json'), 'utf8');
    expect(JSON.parse(record)).toEqual({ v: 1, source: 'keychain' });
    expect(keychain.value).toMatch(/^[A-Za-z0-9+/]{43}=$/);
    expect(await (await CredentialStore.open({ dir, keychain })).loadTokens('w')).toEqual(TOKENS);

    // The keychain is locked or gone: an error, and the stored secrets are left alone.
    const locked = await CredentialStore.open({ dir, keychain: unusableKeychain });
    expect(await codeOf(locked.loadTokens('w'))).toBe('ERR_STORE_KEY_UNAVAILABLE');
    expect(await codeOf(locked.saveTokens('w', TOKENS))).toBe('ERR_STORE_KEY_UNAVAILABLE');
    const forcedFile = await CredentialStore.open({ dir, env: { TETHER_STORE_KEY: 'file' } });
    expect(await codeOf(forcedFile.loadTokens('w'))).toBe('ERR_STORE_KEY_UNAVAILABLE');
    expect(await listFiles(dir)).toEqual(['key.json', 'workloads/w/tokens.json']);
    expect(await readFile(path.join(dir, 'key.json'), 'utf8')).toBe(record);
  });

  it('TETHER_STORE_KEY=file never touches the keychain', async () => {
    const dir = await tempHome();
    const keychain = memoryKeychain();
    const store = await CredentialStore.open({ dir, keychain, env: { TETHER_STORE_KEY: 'file' } });
    await store.saveTokens('w', TOKENS);
    expect(keychain.calls).toBe(0);
    expect(JSON.parse(await readFile(path.join(dir, 'key.json'), 'utf8'))).toMatchObject({ source: 'file' });
  });

  it('is created once when several stores start together', async () => {
    const dir = await tempHome();
    const stores = await Promise.all(
      Array.from({ length: 6 }, () => CredentialStore.open({ dir, keychain: unusableKeychain })),
    );
    await Promise.all(stores.map((store, i) => store.saveTokens(`w${i}`, TOKENS)));
    for (const [i] of stores.entries()) {
      const reader = stores[(i + 1) % stores.length];
      expect(await reader?.loadTokens(`w${i}`)).toEqual(TOKENS);
    }
  });

  it('a damaged key file is an error, and is left as it is', async () => {
    const dir = await tempHome();
    await (await CredentialStore.open({ dir, keychain: unusableKeychain })).saveTokens('w', TOKENS);
    await writeFile(path.join(dir, 'key.json'), '{"v":1,"source":"file","key":"c2hvcnQ="}');
    const store = await CredentialStore.open({ dir, keychain: unusableKeychain });
    expect(await codeOf(store.loadTokens('w'))).toBe('ERR_STORE_KEY');
    expect(await readFile(path.join(dir, 'key.json'), 'utf8')).toContain('c2hvcnQ=');
    expect(await listFiles(dir)).toEqual(['key.json', 'workloads/w/tokens.json']);
  });

  it('is asked for only when a secret is read or written', async () => {
    const getKey = vi.fn(() => Promise.reject(new Error('must not be called')));
    const store = await CredentialStore.open({ dir: await tempHome(), keySource: { getKey } });
    await store.saveMetadata('w', { a: 1 });
    expect(await store.loadMetadata('w')).toEqual({ a: 1 });
    expect(await store.loadTokens('w')).toBeUndefined();
    expect(getKey).not.toHaveBeenCalled();
  });

  it('defaultKeySource retries a keychain failure on the next call', async () => {
    const dir = await tempHome();
    const keychain = memoryKeychain();
    keychain.value = Buffer.alloc(32, 9).toString('base64');
    await writeFile(path.join(dir, 'key.json'), '{"v":1,"source":"keychain"}');
    let reachable = false;
    const source = defaultKeySource({
      recordFile: path.join(dir, 'key.json'),
      lockFile: path.join(dir, 'key.lock'),
      clock: systemClock,
      lock: { staleMs: 1000, timeoutMs: 1000 },
      keychain: {
        read: () => (reachable ? keychain.read() : Promise.reject(new Error('locked'))),
        write: (secret) => keychain.write(secret),
      },
    });
    expect(await codeOf(source.getKey())).toBe('ERR_STORE_KEY_UNAVAILABLE');
    reachable = true;
    expect(await source.getKey()).toEqual(new Uint8Array(32).fill(9));
  });
});

describe('corrupt files', () => {
  /** Writes TOKENS for workload `w`, then replaces the file with `damage(original)`. */
  async function damagedTokens(damage: (original: string) => string | Promise<string>) {
    const dir = await tempHome();
    const clock = new FakeClock(Date.UTC(2026, 2, 4, 5, 6, 7, 890));
    const store = await open(dir, 1, clock);
    await store.saveTokens('w', TOKENS);
    const file = path.join(dir, 'workloads/w/tokens.json');
    const damaged = await damage(await readFile(file, 'utf8'));
    await writeFile(file, damaged);
    return { dir, store, file, damaged };
  }

  it.each([
    ['not JSON', () => 'garbage{', 'invalid'],
    ['truncated', (s: string) => s.slice(0, s.length / 2), 'invalid'],
    ['empty', () => '', 'invalid'],
    ['not an envelope', () => '{"v":2,"data":"x"}', 'invalid'],
    [
      'altered ciphertext',
      (s: string) => {
        const e = JSON.parse(s) as { ct: string };
        const ct = Buffer.from(e.ct, 'base64');
        ct[0] = (ct[0] ?? 0) ^ 1;
        return JSON.stringify({ ...e, ct: ct.toString('base64') });
      },
      'damaged',
    ],
    [
      'encrypted under another key',
      async () => {
        const other = await open(await tempHome(), 2);
        await other.saveTokens('w', TOKENS);
        return readFile(path.join(other.dir, 'workloads/w/tokens.json'), 'utf8');
      },
      'other_key',
    ],
  ] as const)('%s: set aside, reported, and a later save works', async (_name, damage, reason) => {
    const { dir, store, file, damaged } = await damagedTokens(damage);
    const corrupt = await corruptionOf(store.loadTokens('w'));
    expect(corrupt.code).toBe('ERR_STORE_CORRUPT');
    expect(corrupt.reason).toBe(reason);
    expect(corrupt.file).toBe(file);
    expect(corrupt.setAsideAs).toBe(`${file}.corrupt-2026-03-04T05-06-07-890Z`);
    expect(corrupt.message).toContain(corrupt.setAsideAs);
    for (const secret of SECRETS) expect(corrupt.message).not.toContain(secret);
    // Set aside untouched, not deleted; the original name is free again.
    expect(await readFile(corrupt.setAsideAs, 'utf8')).toBe(damaged);
    expect(await store.loadTokens('w')).toBeUndefined();
    await store.saveTokens('w', TOKENS);
    expect(await store.loadTokens('w')).toEqual(TOKENS);
    expect(await readFile(corrupt.setAsideAs, 'utf8')).toBe(damaged);
    expect(await listFiles(dir)).toEqual([
      'workloads/w/tokens.json',
      'workloads/w/tokens.json.corrupt-2026-03-04T05-06-07-890Z',
    ]);
  });

  it('valid JSON of the wrong shape inside a good envelope is corrupt too', async () => {
    const dir = await tempHome();
    const store = await open(dir);
    // A registration file copied over a token file: it decrypts, but is not a token set.
    await store.saveRegistration(REGISTRATION);
    await mkdir(path.join(dir, 'workloads/w'), { recursive: true });
    const registration = await readFile(path.join(dir, `registrations/${issuerKey(REGISTRATION.issuer)}.json`));
    await writeFile(path.join(dir, 'workloads/w/tokens.json'), registration);
    await expect(store.loadTokens('w')).rejects.toMatchObject({
      code: 'ERR_STORE_CORRUPT',
      reason: 'unexpected_shape',
    });
  });

  it('never overwrites an earlier set-aside copy', async () => {
    const { store, file } = await damagedTokens(() => 'first');
    const first = await corruptionOf(store.loadTokens('w'));
    await writeFile(file, 'second'); // same fake millisecond
    const second = await corruptionOf(store.loadTokens('w'));
    expect(second.setAsideAs).toBe(`${first.setAsideAs}-1`);
    expect(await readFile(first.setAsideAs, 'utf8')).toBe('first');
    expect(await readFile(second.setAsideAs, 'utf8')).toBe('second');
  });

  it('corrupt metadata and registrations are set aside the same way', async () => {
    const dir = await tempHome();
    const store = await open(dir);
    await store.saveMetadata('w', { a: 1 });
    await writeFile(path.join(dir, 'workloads/w/metadata.json'), '{"a":');
    await expect(store.loadMetadata('w')).rejects.toMatchObject({ code: 'ERR_STORE_CORRUPT', reason: 'not_json' });
    await writeFile(path.join(dir, 'workloads/w/metadata.json'), '[1,2]');
    await expect(store.loadMetadata('w')).rejects.toMatchObject({ reason: 'unexpected_shape' });

    await store.saveRegistration(REGISTRATION);
    const file = path.join(dir, `registrations/${issuerKey(REGISTRATION.issuer)}.json`);
    await writeFile(file, (await readFile(file, 'utf8')).slice(0, 40));
    await expect(store.loadRegistration(REGISTRATION.issuer)).rejects.toMatchObject({ code: 'ERR_STORE_CORRUPT' });
    expect(await store.loadRegistration(REGISTRATION.issuer)).toBeUndefined();
  });

  it('a registration stored under another issuer’s name is not handed out', async () => {
    const dir = await tempHome();
    const store = await open(dir);
    await store.saveRegistration(REGISTRATION);
    const other = 'https://evil.example.com';
    await writeFile(
      path.join(dir, `registrations/${issuerKey(other)}.json`),
      await readFile(path.join(dir, `registrations/${issuerKey(REGISTRATION.issuer)}.json`)),
    );
    await expect(store.loadRegistration(other)).rejects.toMatchObject({ reason: 'unexpected_shape' });
  });
});
