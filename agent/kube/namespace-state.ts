// What a resize is judged against beyond the node: the namespace's ResourceQuotas and LimitRanges, its
// opt-out label, and (for quotas) the namespace's pods on every node. The I/O half of agent/resize/quota.ts
// and limitrange.ts.
//
// Two different shapes, chosen for what each costs the API server:
// - Namespaces, ResourceQuotas and LimitRanges are few, small and rarely written, and every resize needs
//   them: one cluster-wide informer per kind keeps them in memory, so judging stays synchronous and keeps
//   working on the last known state while the API server is away (three quiet watches per node, the same
//   order as what kube-proxy keeps).
// - A namespace's pods on *other* nodes are many and change all the time, and only a resize that raises a
//   quota-tracked value in a namespace with such a quota needs them. Watching every pod of the cluster from
//   every node would cost far more than the rare list, so they are listed on demand, per namespace, fresh
//   (no resourceVersion: a consistent read), and concurrent resizes share a list that began after their
//   request arrived. Nothing is cached after a list returns, so memory stays bounded by in-flight lists.
import * as k8s from '@kubernetes/client-node';
import type { LimitRangeLike } from '../resize/limitrange.ts';
import type { PodLike } from '../resize/pod.ts';
import type { QuotaLike } from '../resize/quota.ts';
import { Labels } from '../resize/vocabulary.ts';
import { backoffDelay, type Clock } from '../util/backoff.ts';
import { makeApiClient } from './transport.ts';

export interface NamespaceSnapshot {
  /** False until all three informers have listed once: requests then wait as Deferred. */
  known: boolean;
  /** The Namespace carries `resizelet.io/disabled=true`. */
  disabled: boolean;
  quotas: readonly QuotaLike[];
  limitRanges: readonly LimitRangeLike[];
}

export interface NamespaceState {
  start(): Promise<void>;
  stop(): Promise<void>;
  readonly synced: boolean;
  view(namespace: string): NamespaceSnapshot;
  /**
   * Every pod of the namespace, on every node. Shares a list already in flight when it began at or after
   * `notBefore` (ms, the clock's time), so a burst of requests costs one list; otherwise starts one.
   */
  listPods(namespace: string, notBefore: number): Promise<PodLike[]>;
}

export interface NamespaceStateOptions {
  kc: k8s.KubeConfig;
  clock: Clock;
  /** A quota, LimitRange or label of this namespace changed: Deferred requests there may be judged anew. */
  onChange(namespace: string): void;
  onError(what: string, err: unknown, restartInMs: number): void;
  /** A pod list that takes longer than this fails (the request waits as Deferred). */
  listTimeoutMs?: number;
}

interface Collection<T> {
  start(): Promise<void>;
  stop(): Promise<void>;
  list(namespace?: string): readonly T[];
  get(name: string, namespace?: string): T | undefined;
  readonly synced: boolean;
}

/**
 * One cluster-wide ListWatch, restarted with backoff when it stops on an error (client-node's ListWatch
 * relists by itself only on 410 Gone) — the same care the pod informer takes.
 */
function collection<T extends { metadata?: k8s.V1ObjectMeta }>(opts: {
  kc: k8s.KubeConfig;
  path: string;
  what: string;
  list: () => Promise<k8s.KubernetesListObject<T>>;
  onChange(obj: T): void;
  onError(what: string, err: unknown, restartInMs: number): void;
}): Collection<T> {
  const lw = new k8s.ListWatch<T>(opts.path, new k8s.Watch(opts.kc), opts.list, false);
  let synced = false;
  let stopped = false;
  let attempt = 0;
  let timer: NodeJS.Timeout | undefined;
  for (const verb of ['add', 'update', 'delete'] as const) lw.on(verb, (o) => opts.onChange(o));
  lw.on('error', (err) => restart(err));

  function restart(err: unknown): void {
    if (stopped || timer) return;
    // Capped lower than the pod informer's 30 s: while these are down, every request waits as Deferred.
    const delay = backoffDelay(attempt++, { baseMs: 500, maxMs: 10_000 });
    opts.onError(opts.what, err, delay);
    timer = setTimeout(() => {
      timer = undefined;
      void run();
    }, delay);
    timer.unref?.();
  }

  async function run(): Promise<void> {
    try {
      await lw.start();
      if (lw.latestResourceVersion() !== '') {
        synced = true;
        attempt = 0;
      }
    } catch (err) {
      restart(err);
    }
  }

  return {
    async start() {
      stopped = false;
      await run();
    },
    async stop() {
      stopped = true;
      if (timer) clearTimeout(timer);
      await lw.stop();
    },
    list: (namespace) => lw.list(namespace),
    get: (name, namespace) => lw.get(name, namespace),
    get synced() {
      return synced;
    },
  };
}

export function createNamespaceState(opts: NamespaceStateOptions): NamespaceState {
  const { kc, clock } = opts;
  const core = makeApiClient(kc, k8s.CoreV1Api);
  const listTimeoutMs = opts.listTimeoutMs ?? 10_000;
  const changed = (o: { metadata?: k8s.V1ObjectMeta }, ownName = false): void => {
    const ns = ownName ? o.metadata?.name : o.metadata?.namespace;
    if (ns) opts.onChange(ns);
  };
  const namespaces = collection<k8s.V1Namespace>({
    kc,
    path: '/api/v1/namespaces',
    what: 'namespaces',
    list: () => core.listNamespace(),
    onChange: (o) => changed(o, true),
    onError: opts.onError,
  });
  const quotas = collection<k8s.V1ResourceQuota>({
    kc,
    path: '/api/v1/resourcequotas',
    what: 'resourcequotas',
    list: () => core.listResourceQuotaForAllNamespaces(),
    onChange: (o) => changed(o),
    onError: opts.onError,
  });
  const limitRanges = collection<k8s.V1LimitRange>({
    kc,
    path: '/api/v1/limitranges',
    what: 'limitranges',
    list: () => core.listLimitRangeForAllNamespaces(),
    onChange: (o) => changed(o),
    onError: opts.onError,
  });
  const all = [namespaces, quotas, limitRanges];

  // In-flight pod lists per namespace; an entry lives only while its list runs.
  const inflight = new Map<string, Array<{ startedAt: number; promise: Promise<PodLike[]> }>>();

  function startList(namespace: string): Promise<PodLike[]> {
    const startedAt = clock.now();
    let timeout: NodeJS.Timeout | undefined;
    const promise = Promise.race([
      core.listNamespacedPod({ namespace }).then((l) => l.items as PodLike[]),
      new Promise<never>((_, reject) => {
        timeout = setTimeout(
          () => reject(new Error(`listing the pods of namespace ${namespace} took over ${listTimeoutMs} ms`)),
          listTimeoutMs,
        );
        timeout.unref?.();
      }),
    ]).finally(() => {
      clearTimeout(timeout);
      const left = (inflight.get(namespace) ?? []).filter((l) => l.promise !== promise);
      if (left.length > 0) inflight.set(namespace, left);
      else inflight.delete(namespace);
    });
    inflight.set(namespace, [...(inflight.get(namespace) ?? []), { startedAt, promise }]);
    return promise;
  }

  return {
    async start() {
      // The three lists run side by side; none blocks the agent's start (requests wait as Deferred).
      await Promise.all(all.map((c) => c.start()));
    },
    async stop() {
      await Promise.all(all.map((c) => c.stop()));
    },
    get synced() {
      return all.every((c) => c.synced);
    },
    view(namespace) {
      const ns = namespaces.get(namespace);
      return {
        known: all.every((c) => c.synced),
        disabled: ns?.metadata?.labels?.[Labels.disabled] === 'true',
        quotas: quotas.list(namespace) as QuotaLike[],
        limitRanges: limitRanges.list(namespace) as LimitRangeLike[],
      };
    },
    listPods(namespace, notBefore) {
      const shared = inflight.get(namespace)?.find((l) => l.startedAt >= notBefore);
      return shared ? shared.promise : startList(namespace);
    },
  };
}
