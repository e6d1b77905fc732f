// A per-key work queue: informer callbacks only enqueue a pod key; one worker runs per key at a time; a key
// enqueued while its worker runs is run once more afterwards, so the latest state always wins and bursts of
// events for one pod collapse into one run. Forgotten keys leave no trace (no unbounded map).

export interface KeyedQueueOptions {
  worker: (key: string) => Promise<void>;
  onError: (key: string, err: unknown) => void;
  /** Upper bound on keys worked on at once; cgroup writes are fast, the API patches are async anyway. */
  concurrency?: number;
}

export interface KeyedQueue {
  enqueue(key: string): void;
  /** Resolves when nothing is queued or running. */
  drain(): Promise<void>;
  readonly depth: number;
  readonly running: number;
  stop(): void;
}

export function createKeyedQueue(opts: KeyedQueueOptions): KeyedQueue {
  const concurrency = opts.concurrency ?? 64;
  const waiting: string[] = [];
  const queued = new Set<string>();
  const active = new Set<string>();
  const again = new Set<string>();
  let stopped = false;
  let drainWaiters: Array<() => void> = [];

  const settleDrain = (): void => {
    if (waiting.length === 0 && active.size === 0) {
      const w = drainWaiters;
      drainWaiters = [];
      for (const r of w) r();
    }
  };

  const pump = (): void => {
    while (!stopped && active.size < concurrency && waiting.length > 0) {
      const idx = waiting.findIndex((k) => !active.has(k));
      if (idx < 0) break;
      const [key] = waiting.splice(idx, 1) as [string];
      queued.delete(key);
      active.add(key);
      void opts
        .worker(key)
        .catch((err: unknown) => opts.onError(key, err))
        .finally(() => {
          active.delete(key);
          if (again.delete(key)) enqueue(key);
          pump();
          settleDrain();
        });
    }
  };

  function enqueue(key: string): void {
    if (stopped) return;
    if (active.has(key)) {
      again.add(key);
      return;
    }
    if (queued.has(key)) return;
    queued.add(key);
    waiting.push(key);
    queueMicrotask(pump);
  }

  return {
    enqueue,
    drain: () =>
      new Promise<void>((resolve) => {
        drainWaiters.push(resolve);
        settleDrain();
      }),
    get depth() {
      return waiting.length;
    },
    get running() {
      return active.size;
    },
    stop() {
      stopped = true;
      waiting.length = 0;
      queued.clear();
      again.clear();
      settleDrain();
    },
  };
}
