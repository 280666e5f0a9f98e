import type * as oauth from 'oauth4webapi';
import type { CredentialStore } from '../store/store.js';
import { TetherError } from '../errors.js';

/**
 * The client a workload logs in and refreshes with. A dynamic client is
 * registered by tether (public: no secret) and cached per authorization
 * server; the workload keeps its own `clientId`, so that another workload
 * re-registering (`tether login --reregister`) does not take its client away.
 * A static client's secret is never stored by tether: it is read again at
 * every start from `clientSecretFile` (an absolute path) or, when `secretFromEnv`, from
 * `TETHER_CLIENT_SECRET`.
 */
export type WorkloadClient =
  | { readonly kind: 'dynamic'; readonly clientId: string }
  | {
      readonly kind: 'static';
      readonly clientId: string;
      readonly clientSecretFile?: string;
      readonly secretFromEnv?: boolean;
    };

/**
 * What a workload is: everything its process needs to start without the
 * network or a person — the remote, the discovered authorization server, the
 * client, the local address. Kept in the store's metadata file (plain JSON,
 * `0600`): it holds nothing secret.
 */
export interface WorkloadSpec {
  readonly version: 1;
  readonly name: string;
  /** The remote MCP endpoint. */
  readonly remoteUrl: string;
  /** The RFC 8707 resource indicator sent with every token request. */
  readonly resource: string;
  /** The discovered RFC 8414 / OIDC metadata. */
  readonly authorizationServer: oauth.AuthorizationServer;
  readonly client: WorkloadClient;
  /** Scopes asked for at login. */
  readonly scopes: readonly string[];
  /** Bind address of the local endpoint. */
  readonly host: string;
  /** Its port: the one asked for, or the one first chosen, kept across restarts so client configs stay valid. */
  readonly port: number;
  /** Extra upstream headers (`--header 'K: V'`). Stored as given: not for secrets. */
  readonly headers: Readonly<Record<string, string>>;
  /** `--callback-port`, reused by `tether login`. */
  readonly callbackPort?: number;
  /** ISO 8601. */
  readonly createdAt: string;
}

/** Saves the spec in the store (plain JSON, `0600`). */
export function saveSpec(store: CredentialStore, spec: WorkloadSpec): Promise<void> {
  return store.saveMetadata(spec.name, spec);
}

/**
 * The stored spec of workload `name`, or `undefined` when there is none.
 *
 * @throws TetherError `ERR_WORKLOAD_SPEC` when the file is not what tether writes
 */
export async function loadSpec(store: CredentialStore, name: string): Promise<WorkloadSpec | undefined> {
  const value = await store.loadMetadata(name);
  if (value === undefined) return undefined;
  if (
    value['version'] !== 1 ||
    value['name'] !== name ||
    typeof value['remoteUrl'] !== 'string' ||
    typeof value['resource'] !== 'string' ||
    typeof value['authorizationServer'] !== 'object' ||
    typeof value['client'] !== 'object' ||
    typeof value['host'] !== 'string' ||
    typeof value['port'] !== 'number'
  ) {
    throw new TetherError(
      'ERR_WORKLOAD_SPEC',
      `the stored settings of workload ${name} are not what tether writes; remove it with \`tether rm ${name}\` and run it again`,
    );
  }
  return value as unknown as WorkloadSpec;
}
