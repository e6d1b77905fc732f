// A fake Kubernetes API server on node:http, speaking the real wire protocol so that
// @kubernetes/client-node runs its own code paths (generated API calls, Watch, ListWatch) against it.
// The HTTP edge lives here with the control surface tests use; REST semantics live in ./kube/.
import { randomUUID } from 'node:crypto';
import { writeFile } from 'node:fs/promises';
import { createServer } from 'node:http';
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { AddressInfo, Socket } from 'node:net';
import * as k8s from '@kubernetes/client-node';
import { handleResource } from './kube/handler.ts';
import type { HandlerContext } from './kube/handler.ts';
import type { Json } from './kube/patch.ts';
import { CORE_EVENT, EVENTS_V1_EVENT, NODE, POD, resourceByKind } from './kube/resources.ts';
import type { KubeObject } from './kube/resources.ts';
import { discovery, parseResourcePath, rbacAttributes } from './kube/routes.ts';
import type { RbacAttributes } from './kube/routes.ts';
import { ApiError, errors, failure, reasonForCode } from './kube/status.ts';
import type { Status } from './kube/status.ts';
import { Store } from './kube/store.ts';
import type { WatchStream } from './kube/watch.ts';

/** A client-node model as it travels on the wire: timestamps are RFC 3339 strings, not Dates. */
export type Wire<T> = T extends Date
  ? string
  : T extends readonly (infer U)[]
    ? Wire<U>[]
    : T extends object
      ? { [K in keyof T]: Wire<T[K]> }
      : T;

export type Pod = Wire<k8s.V1Pod>;
export type Node = Wire<k8s.V1Node>;
export type Event = Wire<k8s.CoreV1Event> | Wire<k8s.EventsV1Event>;

export interface FakeApiServerOptions {
  /** Bearer token every request except /healthz, /livez, /readyz and /version must carry. */
  readonly token?: string;
  /** Changes kept per resource for watch replay (the real watch cache keeps a window too). */
  readonly historySize?: number;
  /** Interval between BOOKMARK events on watches that asked for them; the real server's is about a minute. */
  readonly bookmarkIntervalMs?: number;
  /** Reject pod spec updates outside the few mutable fields, as the real server does (default true). */
  readonly validatePodUpdates?: boolean;
  /** Namespaces that exist from the start. */
  readonly namespaces?: readonly string[];
  readonly now?: () => Date;
}

export interface RecordedRequest {
  readonly method: string;
  readonly path: string;
  readonly query: Readonly<Record<string, string>>;
  readonly contentType: string | undefined;
  readonly userAgent: string | undefined;
  readonly watch: boolean;
  /** The verb and resource an RBAC Role must grant for this request. */
  readonly rbac: RbacAttributes;
  /** 0 when the connection was dropped (setUnreachable). */
  status: number;
}

export interface FaultSpec {
  readonly method?: string;
  readonly pathPrefix?: string;
  /** true: only watch requests; false: only non-watch requests; unset: both. */
  readonly watch?: boolean;
  readonly status: number;
  /** How many matching requests fail; unlimited when unset. */
  readonly times?: number;
  /** Response body; a metav1.Status for `status` when unset. */
  readonly body?: unknown;
}

export interface FaultHandle {
  /** Requests this fault has failed so far. */
  readonly hits: number;
  clear(): void;
}

export interface FakeApiServer {
  readonly url: string;
  readonly token: string;
  /** Every request received, in order, live (connections refused while unreachable never get this far). */
  readonly requests: readonly RecordedRequest[];
  clearRequests(): void;
  kubeConfig(): k8s.KubeConfig;
  /** Writes a kubeconfig (JSON, which is YAML) a separate process can load through KUBECONFIG. */
  writeKubeconfig(path: string): Promise<void>;
  /**
   * Create or replace, bypassing API validation (the test plays kubelet and scheduler); creates the
   * namespace if needed. As on a real server, a write that changes nothing gets no new
   * resourceVersion and no watch event.
   */
  upsertPod(pod: Pod | k8s.V1Pod): Pod;
  deletePod(namespace: string, name: string): boolean;
  getPod(namespace: string, name: string): Pod | undefined;
  pods(): Pod[];
  /**
   * Calls `fn` with every stored version of every pod, as it is written (synchronously, before any watch
   * sees it): lets a test see a state that lasted less than its polling interval. Returns the unsubscribe.
   */
  onPodChange(fn: (pod: Pod) => void): () => void;
  upsertNode(node: Node | k8s.V1Node): Node;
  getNode(name: string): Node | undefined;
  /** Merges into status.allocatable (and raises status.capacity where it would fall below). */
  setNodeAllocatable(name: string, allocatable: Readonly<Record<string, string>>): Node;
  /** Any served kind (Namespace, ResourceQuota, LimitRange, Event...), chosen by apiVersion and kind. */
  upsertObject(obj: KubeObject): KubeObject;
  /** Core v1 and events.k8s.io/v1 events, oldest write first. */
  events(): Event[];
  injectFault(fault: FaultSpec): FaultHandle;
  clearFaults(): void;
  /** While true, new connections and requests are dropped and open watches are cut. */
  setUnreachable(unreachable: boolean): void;
  /** End every open watch stream cleanly, as the server's watch timeout does. */
  closeWatches(): void;
  openWatchCount(): number;
  /** TCP connections accepted so far: shows whether clients reuse kept-alive connections. */
  connectionsAccepted(): number;
  /** Forget watch history: a watch resuming from an older resourceVersion gets 410 Expired. */
  expireHistory(): void;
  resourceVersion(): string;
  close(): Promise<void>;
}

const UNAUTHENTICATED_PATHS = new Set(['/healthz', '/livez', '/readyz', '/version']);
const MAX_BODY_BYTES = 3 * 1024 * 1024;
const PATCH_TYPES = new Set([
  k8s.PatchStrategy.JsonPatch,
  k8s.PatchStrategy.MergePatch,
  k8s.PatchStrategy.StrategicMergePatch,
] as string[]);

interface Fault extends FaultSpec {
  remaining: number;
  hits: number;
}

function toKube(obj: unknown): KubeObject {
  // JSON round trip: client-node model instances carry Dates and undefined fields.
  const plain = JSON.parse(JSON.stringify(obj)) as KubeObject;
  plain.metadata ??= {};
  return plain;
}

function sendJson(res: ServerResponse, status: number, body: unknown): void {
  const text = JSON.stringify(body);
  res.writeHead(status, { 'Content-Type': 'application/json', 'Content-Length': Buffer.byteLength(text) });
  res.end(text);
}

async function readBody(req: IncomingMessage): Promise<Json | undefined> {
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of req as AsyncIterable<Buffer>) {
    size += chunk.length;
    if (size > MAX_BODY_BYTES) throw new ApiError(failure(413, 'Request entity too large: limit is 3145728'));
    chunks.push(chunk);
  }
  const text = Buffer.concat(chunks).toString('utf8');
  if (text.trim() === '') return undefined;
  try {
    return JSON.parse(text) as Json;
  } catch (err) {
    throw errors.badRequest(`error decoding request body: ${(err as Error).message}`);
  }
}

export async function startFakeApiServer(opts: FakeApiServerOptions = {}): Promise<FakeApiServer> {
  const token = opts.token ?? `fake-${randomUUID()}`;
  const store = new Store({
    historySize: opts.historySize ?? 1000,
    now: opts.now ?? (() => new Date()),
    strategy: { validatePodUpdates: opts.validatePodUpdates ?? true },
  });
  for (const ns of opts.namespaces ?? ['default', 'kube-system', 'kube-public', 'kube-node-lease']) {
    store.ensureNamespace(ns);
  }
  const requests: RecordedRequest[] = [];
  const faults: Fault[] = [];
  const watches = new Set<WatchStream>();
  const sockets = new Set<Socket>();
  let accepted = 0;
  let unreachable = false;
  let url = '';

  const ctx: HandlerContext = {
    store,
    bookmarkIntervalMs: opts.bookmarkIntervalMs ?? 60_000,
    trackWatch: (w) => {
      watches.add(w);
      return () => watches.delete(w);
    },
  };

  function takeFault(method: string, path: string, watch: boolean): Fault | undefined {
    const f = faults.find(
      (x) =>
        x.remaining > 0 &&
        (x.method === undefined || x.method.toUpperCase() === method) &&
        (x.pathPrefix === undefined || path.startsWith(x.pathPrefix)) &&
        (x.watch === undefined || x.watch === watch),
    );
    if (f) {
      f.remaining--;
      f.hits++;
    }
    return f;
  }

  async function handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const method = (req.method ?? 'GET').toUpperCase();
    const u = new URL(req.url ?? '/', 'http://fake');
    const watchParam = u.searchParams.get('watch');
    const contentType = req.headers['content-type']?.split(';')[0]?.trim().toLowerCase();
    const watch = watchParam === 'true' || watchParam === '1';
    const entry: RecordedRequest = {
      method,
      path: u.pathname,
      query: Object.fromEntries(u.searchParams),
      contentType,
      userAgent: req.headers['user-agent'],
      watch,
      rbac: rbacAttributes(method, u.pathname, watch),
      status: 0,
    };
    requests.push(entry);
    if (unreachable) {
      req.socket.destroy();
      return;
    }
    const reply = (status: number, body: unknown) => {
      entry.status = status;
      sendJson(res, status, body);
    };
    try {
      const fault = takeFault(method, u.pathname, entry.watch);
      if (fault) {
        const status: Status = failure(
          fault.status,
          `injected fault (${reasonForCode(fault.status) || fault.status})`,
        );
        return reply(fault.status, fault.body ?? status);
      }
      if (UNAUTHENTICATED_PATHS.has(u.pathname)) {
        return u.pathname === '/version' ? reply(200, discovery(u.pathname, '')) : sendText(res, entry, 'ok');
      }
      if (req.headers.authorization !== `Bearer ${token}`) throw errors.unauthorized();
      const doc = discovery(u.pathname, new URL(url).host);
      if (doc !== undefined && method === 'GET') return reply(200, doc);
      const route = parseResourcePath(u.pathname);
      if (!route) throw errors.notFoundPath();
      if (method === 'PATCH' && !PATCH_TYPES.has(contentType ?? '')) {
        // Server-side apply (application/apply-patch+yaml) is not faked.
        throw errors.unsupportedMediaType(contentType ?? '');
      }
      const hasBody = method === 'POST' || method === 'PUT' || method === 'PATCH' || method === 'DELETE';
      const body = hasBody ? await readBody(req) : undefined;
      if (
        body !== undefined &&
        method !== 'PATCH' &&
        contentType !== undefined &&
        contentType !== 'application/json'
      ) {
        throw errors.unsupportedMediaType(contentType);
      }
      const out = handleResource(ctx, {
        method,
        route,
        query: u.searchParams,
        contentType: contentType ?? '',
        body,
        res,
      });
      if (out) reply(out.status, out.body);
      else entry.status = 200; // a watch stream is open
    } catch (err) {
      if (res.headersSent) {
        res.destroy();
        return;
      }
      if (err instanceof ApiError) return reply(err.code, err.status);
      reply(500, failure(500, `fake apiserver: ${(err as Error).message}`));
    }
  }

  function sendText(res: ServerResponse, entry: RecordedRequest, text: string): void {
    entry.status = 200;
    res.writeHead(200, {
      'Content-Type': 'text/plain; charset=utf-8',
      'Content-Length': Buffer.byteLength(text),
    });
    res.end(text);
  }

  const server = createServer((req, res) => void handle(req, res));
  server.on('connection', (socket: Socket) => {
    if (unreachable) {
      socket.destroy();
      return;
    }
    sockets.add(socket);
    accepted++;
    socket.on('close', () => sockets.delete(socket));
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => resolve());
  });
  url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;

  const kubeConfig = (): k8s.KubeConfig => {
    const kc = new k8s.KubeConfig();
    kc.loadFromOptions({
      // client-node 2.x refuses an http:// server unless skipTLSVerify is set ("HTTP protocol is
      // not allowed when skipTLSVerify is not set or false"), so it is not irrelevant here.
      clusters: [{ name: 'fake-apiserver', server: url, skipTLSVerify: true }],
      users: [{ name: 'fake-user', token }],
      contexts: [{ name: 'fake', cluster: 'fake-apiserver', user: 'fake-user', namespace: 'default' }],
      currentContext: 'fake',
    });
    return kc;
  };

  const node = (name: string): KubeObject => {
    const n = store.get(NODE, undefined, name);
    if (!n) throw new Error(`setNodeAllocatable: no node ${name}`);
    return n;
  };

  return {
    url,
    token,
    requests,
    clearRequests: () => void requests.splice(0),
    kubeConfig,
    writeKubeconfig: async (path) => writeFile(path, kubeConfig().exportConfig(), { mode: 0o600 }),
    upsertPod: (pod) => store.upsert(POD, toKube(pod)) as Pod,
    deletePod: (namespace, name) => store.remove(POD, namespace, name) !== undefined,
    getPod: (namespace, name) => store.get(POD, namespace, name) as Pod | undefined,
    pods: () => store.list(POD) as Pod[],
    onPodChange: (fn) =>
      store.subscribe((c) => {
        if (c.def === POD && c.type !== 'DELETED') fn(c.object as Pod);
      }),
    upsertNode: (n) => store.upsert(NODE, toKube(n)) as Node,
    getNode: (name) => store.get(NODE, undefined, name) as Node | undefined,
    setNodeAllocatable(name, allocatable) {
      const n = node(name);
      const status = (n['status'] ?? {}) as {
        allocatable?: Record<string, string>;
        capacity?: Record<string, string>;
      };
      const capacity = { ...status.capacity };
      for (const [res, q] of Object.entries(allocatable)) capacity[res] ??= q;
      n['status'] = { ...status, allocatable: { ...status.allocatable, ...allocatable }, capacity };
      return store.upsert(NODE, n) as Node;
    },
    upsertObject(obj) {
      const o = toKube(obj);
      const def = resourceByKind(o.apiVersion ?? '', o.kind ?? '');
      if (!def) throw new Error(`upsertObject: the fake does not serve ${o.apiVersion}/${o.kind}`);
      return store.upsert(def, o);
    },
    events: () =>
      [...store.list(CORE_EVENT), ...store.list(EVENTS_V1_EVENT)].sort(
        (a, b) => Number(a.metadata.resourceVersion) - Number(b.metadata.resourceVersion),
      ) as Event[],
    injectFault(spec) {
      const f: Fault = { ...spec, remaining: spec.times ?? Infinity, hits: 0 };
      faults.push(f);
      return {
        get hits() {
          return f.hits;
        },
        clear() {
          const i = faults.indexOf(f);
          if (i >= 0) faults.splice(i, 1);
        },
      };
    },
    clearFaults: () => void faults.splice(0),
    setUnreachable(value) {
      unreachable = value;
      if (!value) return;
      for (const w of [...watches]) w.destroy();
      for (const s of sockets) s.destroy();
    },
    closeWatches() {
      for (const w of [...watches]) w.end();
    },
    openWatchCount: () => watches.size,
    connectionsAccepted: () => accepted,
    expireHistory: () => store.expireHistory(),
    resourceVersion: () => String(store.currentRv()),
    async close() {
      for (const w of [...watches]) w.destroy();
      server.closeAllConnections();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}
