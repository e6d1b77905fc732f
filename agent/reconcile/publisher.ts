// Writes status annotations and Events to the API server without ever holding up cgroup enforcement.
// One patch in flight per pod; a newer status replaces an unsent older one (latest wins); failures are
// retried with capped, jittered backoff until they succeed or the pod is gone (404).
// Events are best effort, as in client-go's recorder: a few in flight at a time so that a resize storm's
// Events do not crowd the status patches, a bounded backlog whose oldest are dropped (and counted) if the
// API server cannot keep up, three tries each.
import type { KubePort, PodEvent } from '../kube/api.ts';
import { httpStatusOf } from '../kube/api.ts';
import type { PodLike } from '../resize/pod.ts';
import { Annotations } from '../resize/vocabulary.ts';
import { backoffDelay, type Clock } from '../util/backoff.ts';

export interface PublisherLog {
  warn(obj: Record<string, unknown>, msg: string): void;
  debug(obj: Record<string, unknown>, msg: string): void;
}

export interface StatusPublisher {
  /** Queue the status text for the pod; `onAck` runs once the API server has acknowledged this text. */
  publish(pod: PodLike, statusText: string, onAck?: () => void): void;
  event(pod: PodLike, event: PodEvent): void;
  cancel(key: string): void;
  /** Statuses not yet acknowledged. */
  readonly backlog: number;
  /** Resolves when every queued status and Event has been acknowledged or dropped. */
  idle(): Promise<void>;
  stop(): void;
}

interface Slot {
  pod: PodLike;
  text: string;
  onAck: Array<() => void>;
}

export function createStatusPublisher(opts: {
  kube: KubePort;
  clock: Clock;
  log: PublisherLog;
  onFailure?: (err: unknown) => void;
  /** An Event given up on: the backlog was full, or three tries failed. */
  onEventDropped?: () => void;
  maxBackoffMs?: number;
  /** Events in flight at once (default 4) and waiting at most (default 1,000). */
  eventConcurrency?: number;
  maxEventBacklog?: number;
}): StatusPublisher {
  const { kube, clock, log } = opts;
  const next = new Map<string, Slot>();
  const inFlight = new Set<string>();
  const abort = new AbortController();
  let idleWaiters: Array<() => void> = [];
  const maxMs = opts.maxBackoffMs ?? 5_000;
  const eventConcurrency = opts.eventConcurrency ?? 4;
  const maxEventBacklog = opts.maxEventBacklog ?? 1_000;
  const events: Array<{ pod: PodLike; event: PodEvent }> = [];
  let eventsInFlight = 0;
  let droppedSinceWarning = 0;

  const keyOf = (p: PodLike): string => `${p.metadata?.namespace ?? ''}/${p.metadata?.name ?? ''}`;
  const checkIdle = (): void => {
    if (next.size === 0 && inFlight.size === 0 && events.length === 0 && eventsInFlight === 0) {
      const w = idleWaiters;
      idleWaiters = [];
      for (const r of w) r();
    }
  };

  async function drive(key: string): Promise<void> {
    inFlight.add(key);
    let attempt = 0;
    try {
      for (;;) {
        const slot = next.get(key);
        if (!slot || abort.signal.aborted) return;
        next.delete(key);
        try {
          await kube.patchPodAnnotations(slot.pod.metadata?.namespace ?? '', slot.pod.metadata?.name ?? '', {
            [Annotations.status]: slot.text,
          });
          attempt = 0;
          for (const cb of slot.onAck) cb();
        } catch (err) {
          if (httpStatusOf(err) === 404) {
            log.debug({ pod: key }, 'pod is gone; dropping its status');
            return;
          }
          opts.onFailure?.(err);
          // Keep the newest text: if nothing newer arrived meanwhile, retry this one.
          const newer = next.get(key);
          next.set(key, newer ? { ...newer, onAck: [...slot.onAck, ...newer.onAck] } : slot);
          const delay = backoffDelay(attempt++, { baseMs: 100, maxMs });
          log.warn(
            { pod: key, err: (err as Error).message, retryInMs: delay },
            'status patch failed; will retry',
          );
          await clock.sleep(delay, abort.signal);
        }
      }
    } finally {
      inFlight.delete(key);
      checkIdle();
    }
  }

  async function sendEvent(pod: PodLike, event: PodEvent): Promise<void> {
    for (let attempt = 0; attempt < 3 && !abort.signal.aborted; attempt++) {
      try {
        await kube.createPodEvent(pod, event);
        return;
      } catch (err) {
        if (httpStatusOf(err) === 404) return;
        if (attempt === 2) {
          opts.onEventDropped?.();
          log.warn({ pod: keyOf(pod), reason: event.reason, err: (err as Error).message }, 'event dropped');
          return;
        }
        await clock.sleep(backoffDelay(attempt, { baseMs: 200, maxMs: 2_000 }), abort.signal);
      }
    }
  }

  function pumpEvents(): void {
    while (eventsInFlight < eventConcurrency && events.length > 0 && !abort.signal.aborted) {
      const { pod, event } = events.shift()!;
      eventsInFlight++;
      void sendEvent(pod, event).finally(() => {
        eventsInFlight--;
        pumpEvents();
        checkIdle();
      });
    }
  }

  return {
    publish(pod, text, onAck) {
      const key = keyOf(pod);
      const prev = next.get(key);
      next.set(key, { pod, text, onAck: [...(prev?.onAck ?? []), ...(onAck ? [onAck] : [])] });
      if (!inFlight.has(key)) void drive(key);
    },
    event(pod, event) {
      if (abort.signal.aborted) return;
      events.push({ pod, event });
      if (events.length > maxEventBacklog) {
        events.shift();
        opts.onEventDropped?.();
        // One warning per burst of drops, not one per Event.
        if (droppedSinceWarning++ === 0) {
          log.warn(
            { backlog: maxEventBacklog },
            'the API server is not keeping up with Events; dropping the oldest',
          );
        }
      } else if (events.length < maxEventBacklog / 2) {
        droppedSinceWarning = 0;
      }
      pumpEvents();
    },
    cancel(key) {
      next.delete(key);
      checkIdle();
    },
    get backlog() {
      return next.size + inFlight.size;
    },

    idle: () =>
      new Promise<void>((resolve) => {
        idleWaiters.push(resolve);
        checkIdle();
      }),
    stop() {
      abort.abort();
      next.clear();
      events.length = 0;
      checkIdle();
    },
  };
}
