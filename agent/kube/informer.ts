// The node-scoped pod informer. client-node's makeInformer takes no field selector, so we build the
// ListWatch ourselves with `spec.nodeName=<node>` on both the list and the watch: the agent only ever
// holds its own node's pods. ListWatch relists by itself on 410 Gone, but stops for good on any other
// error, and a watch can go silent without an error: both are handled here by restarting with backoff
// and by relisting when nothing (not even a bookmark) has arrived for too long.
import * as k8s from '@kubernetes/client-node';
import { backoffDelay, type Clock } from '../util/backoff.ts';
import { makeApiClient } from './transport.ts';

export interface PodInformer {
  start(): Promise<void>;
  stop(): Promise<void>;
  get(namespace: string, name: string): k8s.V1Pod | undefined;
  list(): readonly k8s.V1Pod[];
  readonly synced: boolean;
  readonly restarts: number;
  readonly lastEventAt: number;
}

export interface PodInformerOptions {
  kc: k8s.KubeConfig;
  nodeName: string;
  clock: Clock;
  /** Called with "namespace/name" for every add, update and delete: handlers only enqueue. */
  onChange(key: string, pod: k8s.V1Pod, kind: 'add' | 'update' | 'delete'): void;
  onError(err: unknown, restartInMs: number): void;
  /** Relist when the watch has been silent this long (bookmarks count as activity). */
  quietRelistMs?: number;
}

export function createPodInformer(opts: PodInformerOptions): PodInformer {
  const { kc, nodeName, clock } = opts;
  const core = makeApiClient(kc, k8s.CoreV1Api);
  const fieldSelector = `spec.nodeName=${nodeName}`;
  const quietRelistMs = opts.quietRelistMs ?? 5 * 60_000;
  const listFn = () => core.listPodForAllNamespaces({ fieldSelector, allowWatchBookmarks: true });
  const realWatch = new k8s.Watch(kc);
  // ListWatch does not surface bookmarks; wrapping the Watch lets every event, bookmarks included, count as
  // a sign of life for the quiet-watch check.
  const watch = {
    watch: (
      path: string,
      query: Record<string, string | number | boolean | undefined>,
      cb: (phase: string, apiObj: unknown, watchObj?: unknown) => void,
      done: (err: unknown) => void,
    ) =>
      realWatch.watch(
        path,
        query,
        (phase, obj, raw) => {
          lastEventAt = clock.now();
          cb(phase, obj, raw);
        },
        done,
      ),
  } as unknown as k8s.Watch;
  // The watch only needs the node's pods; passing the selector here puts it on every watch request.
  const lw = new k8s.ListWatch<k8s.V1Pod>('/api/v1/pods', watch, listFn, false, undefined, fieldSelector);

  let synced = false;
  let stopped = false;
  let restarts = 0;
  let attempt = 0;
  let lastEventAt = clock.now();
  let restartTimer: NodeJS.Timeout | undefined;
  let quietTimer: NodeJS.Timeout | undefined;

  const keyOf = (p: k8s.V1Pod): string => `${p.metadata?.namespace ?? ''}/${p.metadata?.name ?? ''}`;
  const touch = (): void => {
    lastEventAt = clock.now();
  };
  lw.on('add', (p) => {
    touch();
    opts.onChange(keyOf(p), p, 'add');
  });
  lw.on('update', (p) => {
    touch();
    opts.onChange(keyOf(p), p, 'update');
  });
  lw.on('delete', (p) => {
    touch();
    opts.onChange(keyOf(p), p, 'delete');
  });
  lw.on('connect', () => {
    touch();
  });
  lw.on('error', (err) => scheduleRestart(err));

  function scheduleRestart(err: unknown): void {
    if (stopped || restartTimer) return;
    const delay = backoffDelay(attempt++, { baseMs: 500, maxMs: 30_000 });
    opts.onError(err, delay);
    restartTimer = setTimeout(() => {
      restartTimer = undefined;
      restarts++;
      void run();
    }, delay);
    restartTimer.unref?.();
  }

  async function run(): Promise<void> {
    try {
      await lw.start();
      // ListWatch.start() also returns after a failed list (it reports it through 'error'): only a list
      // that produced a resourceVersion means the cache holds the node's pods.
      if (lw.latestResourceVersion() !== '') {
        synced = true;
        attempt = 0;
        touch();
      }
    } catch (err) {
      scheduleRestart(err);
    }
  }

  return {
    async start() {
      stopped = false;
      await run();
      quietTimer = setInterval(
        () => {
          if (!stopped && clock.now() - lastEventAt > quietRelistMs) {
            touch();
            void lw.stop().then(() => {
              restarts++;
              return run();
            });
          }
        },
        Math.min(quietRelistMs, 30_000),
      );
      quietTimer.unref?.();
    },
    async stop() {
      stopped = true;
      if (restartTimer) clearTimeout(restartTimer);
      if (quietTimer) clearInterval(quietTimer);
      await lw.stop();
    },
    get: (namespace, name) => lw.get(name, namespace),
    list: () => lw.list(),
    get synced() {
      return synced;
    },
    get restarts() {
      return restarts;
    },
    get lastEventAt() {
      return lastEventAt;
    },
  };
}
