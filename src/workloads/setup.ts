import type { Clock } from '../clock/clock.js';
import { discover, discoveredScopes, type Discovery } from '../oauth/discovery.js';
import { type HttpClient, assertSecureEndpoint, oauthRequestOptions } from '../oauth/http.js';
import { CLIENT_SECRET_ENV, readClientSecret } from '../oauth/client-secret.js';
import { TetherError } from '../errors.js';
import { loginWithBrowser, loginWithDeviceCode, type LoginPrompt } from '../oauth/login.js';
import { type ClientRegistration, DEFAULT_GRANT_TYPES, ensureClient, staticClient } from '../oauth/registration.js';
import type { TokenSet } from '../keeper/types.js';
import type { CredentialStore } from '../store/store.js';
import type { WorkloadClient, WorkloadSpec } from './spec.js';

/** The redirect URI registered for dynamic clients; the login picks the port (RFC 8252 §7.3). */
const REDIRECT_URI = 'http://127.0.0.1/callback';
const DEVICE_GRANT = 'urn:ietf:params:oauth:grant-type:device_code';

/** What the interactive part of `run` and `login` tells the user while it works. */
export type SetupProgress =
  | { readonly kind: 'discovering'; readonly url: string }
  | { readonly kind: 'discovered'; readonly issuer: string }
  | { readonly kind: 'registering'; readonly issuer: string }
  | { readonly kind: 'login'; readonly prompt: LoginPrompt }
  | { readonly kind: 'logged_in' };

/** How to log in (`--no-browser`, `--device-code`, `--callback-port`). */
export interface LoginChoice {
  readonly openBrowser: boolean;
  readonly deviceCode: boolean;
  readonly callbackPort?: number;
  readonly launch?: (url: string) => Promise<boolean>;
}

/** Options shared by {@link discoverRemote} and {@link login}. */
export interface SetupContext {
  readonly store: CredentialStore;
  readonly http: HttpClient;
  readonly clock: Clock;
  readonly env: Readonly<Record<string, string | undefined>>;
  readonly progress: (progress: SetupProgress) => void;
  readonly signal?: AbortSignal;
}

/** Discovers the remote's authorization server (DESIGN §4), honouring `--issuer` and `--resource`. */
export async function discoverRemote(
  remoteUrl: string,
  options: { readonly issuer?: string; readonly resource?: string },
  context: SetupContext,
): Promise<Discovery> {
  context.progress({ kind: 'discovering', url: remoteUrl });
  const discovery = await discover(remoteUrl, {
    http: context.http,
    ...(context.signal !== undefined && { signal: context.signal }),
    ...(options.issuer !== undefined && { issuer: options.issuer }),
    ...(options.resource !== undefined && { resource: options.resource }),
  });
  context.progress({ kind: 'discovered', issuer: discovery.authorizationServer.issuer });
  return discovery;
}

/** The scopes to ask for: `--scopes`, else what discovery found. */
export function scopesFor(discovery: Discovery, requested: readonly string[] | undefined): readonly string[] {
  return requested ?? discoveredScopes(discovery);
}

/**
 * The client to log in with: the static one described by `client` (its
 * secret from the file or the environment), else the cached dynamic
 * registration, registered now if there is none (or anew with `reregister`).
 */
export async function clientFor(
  spec: {
    readonly authorizationServer: WorkloadSpec['authorizationServer'];
    /** A dynamic client is registered (or the cached one reused) whatever its id was. */
    readonly client: { readonly kind: 'dynamic' } | Extract<WorkloadClient, { kind: 'static' }>;
  },
  reregister: boolean,
  deviceCode: boolean,
  context: SetupContext,
): Promise<ClientRegistration> {
  const as = spec.authorizationServer;
  if (spec.client.kind === 'static') return userClient(as, spec.client, context.env);
  const cached = reregister ? undefined : await context.store.loadRegistration(as.issuer);
  if (cached === undefined) context.progress({ kind: 'registering', issuer: as.issuer });
  return ensureClient(as, {
    http: context.http,
    clock: context.clock,
    store: context.store.registrations(),
    redirectUris: [REDIRECT_URI],
    grantTypes: deviceCode ? [...DEFAULT_GRANT_TYPES, DEVICE_GRANT] : DEFAULT_GRANT_TYPES,
    reregister,
    ...(context.signal !== undefined && { signal: context.signal }),
  });
}

/** The user's static client, its secret read now from its file or `TETHER_CLIENT_SECRET` (never stored by tether). */
export async function userClient(
  as: WorkloadSpec['authorizationServer'],
  client: Extract<WorkloadClient, { kind: 'static' }>,
  env: SetupContext['env'],
): Promise<ClientRegistration> {
  const clientSecret = await readClientSecret(client.clientSecretFile, env);
  if (client.secretFromEnv === true && clientSecret === undefined) {
    throw new TetherError(
      'ERR_CLIENT_SECRET',
      `this workload's client secret came from ${CLIENT_SECRET_ENV.name}, which is not set here; set it in this shell and run the command again`,
    );
  }
  return staticClient(as, { clientId: client.clientId, ...(clientSecret !== undefined && { clientSecret }) });
}

/** Logs in (browser with PKCE, or device code) and returns the new token set; nothing is stored here. */
export async function login(
  spec: Pick<WorkloadSpec, 'authorizationServer' | 'resource' | 'scopes'>,
  client: ClientRegistration,
  choice: LoginChoice,
  context: SetupContext,
): Promise<TokenSet> {
  const as = spec.authorizationServer;
  const options = {
    as,
    client: {
      clientId: client.clientId,
      ...(client.clientSecret !== undefined && { clientSecret: client.clientSecret }),
      tokenEndpointAuthMethod: client.tokenEndpointAuthMethod,
    },
    resource: spec.resource,
    scopes: spec.scopes,
    clock: context.clock,
    prompt: (prompt: LoginPrompt) => {
      context.progress({ kind: 'login', prompt });
    },
    requestOptions: oauthRequestOptions(
      context.http,
      assertSecureEndpoint(String(as.token_endpoint), 'token_endpoint'),
      context.signal,
    ),
    ...(context.signal !== undefined && { signal: context.signal }),
  };
  const tokens = choice.deviceCode
    ? await loginWithDeviceCode(options)
    : await loginWithBrowser({
        ...options,
        openBrowser: choice.openBrowser,
        ...(choice.callbackPort !== undefined && { callbackPort: choice.callbackPort }),
        ...(choice.launch !== undefined && { launch: choice.launch }),
      });
  context.progress({ kind: 'logged_in' });
  return tokens;
}
