// The CLI's use of the Kubernetes API (get, list, patch and watch pods) with every failure turned into
// a sentence. The kubeconfig is found the way kubectl finds it: --kubeconfig, else $KUBECONFIG (a list
// of files, merged), else ~/.kube/config, else the in-cluster service account; --context picks a context.
import { existsSync } from 'node:fs';
import { homedir } from 'node:os';
import { join } from 'node:path';
import * as k8s from '@kubernetes/client-node';
import type { Connection } from './args.ts';
import { CliError } from './errors.ts';

const SERVICE_ACCOUNT_TOKEN = '/var/run/secrets/kubernetes.io/serviceaccount/token';

export interface KubeTarget {
  kc: k8s.KubeConfig;
  /** -n, else the context's namespace, else "default": kubectl's order. */
  namespace: string;
  server: string;
}

export function loadTarget(conn: Connection, env: Record<string, string | undefined>): KubeTarget {
  const kc = new k8s.KubeConfig();
  try {
    if (conn.kubeconfig !== undefined) {
      if (!existsSync(conn.kubeconfig)) throw new CliError(`--kubeconfig: no file at ${conn.kubeconfig}`);
      kc.loadFromFile(conn.kubeconfig);
    } else {
      const fromEnv = env.KUBECONFIG?.split(':').filter(Boolean) ?? [];
      const home = join(env.HOME ?? homedir(), '.kube', 'config');
      if (fromEnv.length === 0 && !existsSync(home) && !existsSync(SERVICE_ACCOUNT_TOKEN)) {
        // loadFromDefault would fall back to http://localhost:8080 and fail later with a puzzling error.
        throw new CliError(
          `no Kubernetes configuration found: KUBECONFIG is not set and ${home} does not exist (kubectl would not find a cluster either)`,
        );
      }
      const missing = fromEnv.filter((f) => !existsSync(f));
      if (fromEnv.length > 0 && missing.length === fromEnv.length) {
        throw new CliError(`KUBECONFIG names ${missing.join(', ')}, which does not exist`);
      }
      withEnv(env, () => kc.loadFromDefault());
    }
  } catch (err) {
    if (err instanceof CliError) throw err;
    throw new CliError(`cannot read the kubeconfig: ${(err as Error).message}`);
  }
  if (conn.context !== undefined) {
    if (!kc.getContextObject(conn.context)) {
      const names = kc.getContexts().map((c) => c.name);
      throw new CliError(
        `the kubeconfig has no context "${conn.context}"${names.length ? `; its contexts are: ${names.join(', ')}` : ''}`,
      );
    }
    kc.setCurrentContext(conn.context);
  }
  const cluster = kc.getCurrentCluster();
  if (!cluster) {
    throw new CliError(
      `the kubeconfig's current context "${kc.getCurrentContext()}" names no cluster; pick one with --context`,
    );
  }
  const namespace = conn.namespace ?? kc.getContextObject(kc.getCurrentContext())?.namespace ?? 'default';
  return { kc, namespace, server: cluster.server };
}

/** loadFromDefault reads process.env itself; tests and callers pass their own environment. */
function withEnv<T>(env: Record<string, string | undefined>, fn: () => T): T {
  if (env === process.env) return fn();
  const saved = { KUBECONFIG: process.env.KUBECONFIG, HOME: process.env.HOME };
  const set = (k: 'KUBECONFIG' | 'HOME', v: string | undefined) => {
    if (v === undefined) delete process.env[k];
    else process.env[k] = v;
  };
  set('KUBECONFIG', env.KUBECONFIG);
  set('HOME', env.HOME ?? saved.HOME);
  try {
    return fn();
  } finally {
    set('KUBECONFIG', saved.KUBECONFIG);
    set('HOME', saved.HOME);
  }
}

function serverMessage(body: unknown): string | undefined {
  let parsed = body;
  if (typeof body === 'string') {
    try {
      parsed = JSON.parse(body);
    } catch {
      return body.trim() || undefined;
    }
  }
  if (parsed && typeof parsed === 'object' && typeof (parsed as { message?: unknown }).message === 'string') {
    return (parsed as { message: string }).message;
  }
  return undefined;
}

export interface ApiFailure {
  status: number | undefined;
  message: string;
}

/** The HTTP status of a client-node error, if the server answered at all. */
export function statusOf(err: unknown): number | undefined {
  return err instanceof k8s.ApiException ? err.code : undefined;
}

/**
 * A sentence for a failed call. `what` says what we were doing ("read pod shop/web"); 404 is the caller's
 * to word, since only it knows whether the pod or the namespace is missing.
 */
export function explain(err: unknown, what: string, target: KubeTarget): string {
  if (err instanceof CliError) return err.message;
  if (err instanceof k8s.ApiException) {
    const msg = serverMessage(err.body);
    const detail = msg ? `: ${msg}` : '';
    switch (err.code) {
      case 401:
        return `the API server at ${target.server} did not accept the credentials of context "${target.kc.getCurrentContext()}" (401 Unauthorized)`;
      case 403:
        return `not allowed to ${what}${detail}`;
      default:
        return `cannot ${what}: the API server answered ${err.code}${detail}`;
    }
  }
  // A failed watch request carries the HTTP status as statusCode instead.
  const watchStatus = (err as { statusCode?: unknown })?.statusCode;
  if (typeof watchStatus === 'number') {
    if (watchStatus === 403) return `not allowed to ${what}`;
    return `cannot ${what}: the API server answered ${watchStatus}`;
  }
  const cause = (err as { cause?: { code?: string; message?: string } })?.cause;
  const code = cause?.code ?? (err as { code?: unknown })?.code;
  if (typeof code === 'string') {
    const why: Record<string, string> = {
      ECONNREFUSED: 'connection refused',
      ENOTFOUND: 'host not found',
      ETIMEDOUT: 'connection timed out',
      ECONNRESET: 'connection reset',
      EHOSTUNREACH: 'host unreachable',
      UND_ERR_CONNECT_TIMEOUT: 'connection timed out',
      CERT_HAS_EXPIRED: 'its certificate has expired',
      DEPTH_ZERO_SELF_SIGNED_CERT: 'its certificate is self-signed and not trusted',
      UNABLE_TO_VERIFY_LEAF_SIGNATURE: 'its certificate is not trusted',
    };
    return `cannot reach the Kubernetes API server at ${target.server} (${why[code] ?? code}) to ${what}`;
  }
  const message = cause?.message ?? (err as Error)?.message ?? String(err);
  return `cannot ${what}: ${message}`;
}

export interface PodApi {
  readonly target: KubeTarget;
  get(namespace: string, name: string): Promise<k8s.V1Pod>;
  list(namespace: string | undefined): Promise<k8s.V1Pod[]>;
  patch(namespace: string, name: string, body: object): Promise<k8s.V1Pod>;
  /**
   * Calls onPod for every change to one pod from resourceVersion on; resolves when the watch ends (the
   * server closed it, or it failed: then with the error). The returned abort() stops it.
   */
  watch(
    namespace: string,
    name: string,
    resourceVersion: string | undefined,
    onEvent: (type: string, pod: k8s.V1Pod) => void,
  ): Promise<{ ended: Promise<unknown>; abort(): void }>;
}

const mergePatch = k8s.setHeaderOptions('Content-Type', k8s.PatchStrategy.MergePatch);

export function createPodApi(target: KubeTarget): PodApi {
  const core = target.kc.makeApiClient(k8s.CoreV1Api);
  const watcher = new k8s.Watch(target.kc);
  return {
    target,
    get: (namespace, name) => core.readNamespacedPod({ name, namespace }),
    async list(namespace) {
      const list =
        namespace === undefined
          ? await core.listPodForAllNamespaces()
          : await core.listNamespacedPod({ namespace });
      return list.items;
    },
    patch: (namespace, name, body) => core.patchNamespacedPod({ name, namespace, body }, mergePatch),
    async watch(namespace, name, resourceVersion, onEvent) {
      let settle: (err: unknown) => void = () => undefined;
      const ended = new Promise<unknown>((resolve) => (settle = resolve));
      const query: Record<string, string | boolean> = { fieldSelector: `metadata.name=${name}` };
      if (resourceVersion) query.resourceVersion = resourceVersion;
      const controller = await watcher.watch(
        `/api/v1/namespaces/${encodeURIComponent(namespace)}/pods`,
        query,
        (type, obj) => onEvent(type, obj as k8s.V1Pod),
        (err) => settle(err),
      );
      return { ended, abort: () => controller.abort() };
    },
  };
}
