// The glue: cache -> decide -> actuate -> publish. Informer callbacks only enqueue pod keys; `handle` runs
// once per key at a time (see queue.ts). Everything the agent has allocated is kept true here: after a
// container restart (new container ID), on a periodic drift check, and from the checkpoint at start.
// This file keeps the per-pod states and the flow; its parts: pod-state.ts (what is kept per pod),
// allocation.ts (where an allocation comes from), node-totals.ts (node admission's view of the other pods),
// namespace-pods.ts (a quota's view of the namespace), apply-resize.ts and accepted-resize.ts (carrying out
// an accepted resize), ports.ts (what the reconciler is given).
import type { PodEvent } from '../kube/api.ts';
import { decide, type Decision, type NamespaceView } from '../resize/decide.ts';
import { isTerminal, podKey, type PodLike, type Resources } from '../resize/pod.ts';
import { decodeStatus, encodeStatus, type ResourceStatus } from '../resize/status.ts';
import type { DesiredContainer } from '../resize/validate.ts';
import { Annotations, EventReasons, ResizeStatuses } from '../resize/vocabulary.ts';
import { createAcceptedResize } from './accepted-resize.ts';
import { ActuationFailures, type Actuation } from './actuator.ts';
import {
  checkpointAllocation,
  createAllocationSource,
  fromAllocation,
  podFromCheckpoint,
  wire,
} from './allocation.ts';
import { createApplyResize } from './apply-resize.ts';
import type { CheckpointEntry } from './checkpoint.ts';
import { createNamespacePods } from './namespace-pods.ts';
import { createNodeTotals } from './node-totals.ts';
import { agentView, lookKey, runningIds, sameIds, withoutStatus, type PodState } from './pod-state.ts';
import type { PodOps, ReconcilerDeps } from './ports.ts';

export type { NodeState, ReconcilerDeps, ReconcilerLog } from './ports.ts';

/** What the agent knows of one pod, for the JSON view and metrics. */
export interface PodView {
  key: string;
  uid: string;
  allocation: DesiredContainer[] | undefined;
  status: ResourceStatus | undefined;
  containerIds: Record<string, string>;
}

export interface Reconciler {
  handle(key: string): Promise<void>;
  /** Periodic drift check over every allocation the agent holds. */
  reconcileAll(): Promise<{ pods: number; corrections: number }>;
  /** At start, before the informer has synced: enforce what the checkpoint holds. */
  enforceCheckpoint(): Promise<number>;
  /** Informer hook: record when a request was first seen. */
  observe(pod: PodLike): void;
  /** Informer hook for updates: false when the pod is what the last look saw, bar this agent's own status. */
  needsLook(pod: PodLike): boolean;
  views(): PodView[];
  stop(): void;
}

export function createReconciler(deps: ReconcilerDeps): Reconciler {
  const { nodeName, cache, actuator, checkpoint, publisher, metrics, log, clock } = deps;
  const states = new Map<string, PodState>();
  const deferred = new Set<string>();

  const split = (key: string): [string, string] => {
    const i = key.indexOf('/');
    return [key.slice(0, i), key.slice(i + 1)];
  };

  function stateFor(key: string, uid: string): PodState {
    let st = states.get(key);
    if (!st || st.uid !== uid) {
      if (st?.retryTimer) clearTimeout(st.retryTimer);
      st = { uid, containerIds: {} };
      states.set(key, st);
    }
    return st;
  }

  const isCurrent = (key: string, st: PodState): boolean => states.get(key) === st;
  const ops: PodOps = { publish, scheduleRetry, recordCheckpoint, countWrites, deferred, isCurrent };
  const { allocationOf, adoptFromStatus } = createAllocationSource({
    checkpoint,
    log,
    verify: deps.verify,
    states,
    recordCheckpoint,
  });
  const totals = createNodeTotals({ nodeName, cache, checkpoint, states, allocationOf });
  const { othersTotals } = totals;
  const { namespaceView, listNamespace, namespacePods } = createNamespacePods({
    nodeName,
    cache,
    clock,
    namespaces: deps.namespaces,
    states,
    allocationOf,
  });
  const accepted = createAcceptedResize({ deps, ops, othersTotals });
  const { rejudgeAccepted } = accepted;
  const actuate = createApplyResize({ deps, ops, accepted });

  function forget(key: string, uid?: string): void {
    const st = states.get(key);
    if (uid ?? st?.uid) totals.forget((uid ?? st?.uid)!);
    if (st?.retryTimer) clearTimeout(st.retryTimer);
    states.delete(key);
    deferred.delete(key);
    publisher.cancel(key);
    const gone = uid ?? st?.uid;
    if (gone && checkpoint.get(gone)) {
      checkpoint.delete(gone);
      void checkpoint.save().catch((err: unknown) => log.error({ err }, 'checkpoint write failed'));
    }
    // Resources freed on the node: Deferred requests may fit now.
    for (const k of deferred) deps.enqueue(k);
  }

  function publish(
    pod: PodLike,
    st: PodState,
    status: ResourceStatus,
    events: PodEvent[],
    onAck?: () => void,
  ): void {
    const text = encodeStatus({ ...status, recommendation: deps.recommendation?.(podKey(pod)) });
    const changed = text !== st.published;
    st.published = text;
    if (changed) publisher.publish(pod, text, onAck);
    else onAck?.();
    for (const e of events) publisher.event(pod, e);
  }

  /**
   * Recommend mode: put the autoscaler's current recommendation into the pod's status (or take a stale one
   * out). A pod never resized has no status yet; it gets one that answers no request (no observedRequest)
   * and lists the spec's values as what it holds.
   */
  function syncRecommendation(pod: PodLike, st: PodState, seen: PodLike): void {
    if (!deps.recommendation) return;
    const rec = deps.recommendation(podKey(pod));
    const prev = decodeStatus(seen.metadata?.annotations?.[Annotations.status]);
    if (JSON.stringify(prev?.recommendation) === JSON.stringify(rec)) return;
    const base: ResourceStatus = prev ?? {
      resizeStatus: ResizeStatuses.Completed,
      allocatedResources: wire(fromAllocation(pod, new Map())),
      message: 'no resize requested; the autoscaler recommends (Recommend mode: nothing is changed)',
      lastTransitionTime: new Date(clock.now()).toISOString(),
    };
    publish(pod, st, base, []);
  }

  function scheduleRetry(key: string, st: PodState): void {
    deferred.add(key);
    if (st.retryTimer) return;
    st.retryTimer = setTimeout(() => {
      st.retryTimer = undefined;
      deps.enqueue(key);
    }, deps.deferredRetryMs);
    st.retryTimer.unref?.();
  }

  function recordCheckpoint(
    pod: PodLike,
    desired: DesiredContainer[],
    patch: Partial<CheckpointEntry>,
  ): CheckpointEntry {
    const entry: CheckpointEntry = {
      uid: pod.metadata?.uid ?? '',
      namespace: pod.metadata?.namespace ?? '',
      name: pod.metadata?.name ?? '',
      allocation: wire(desired),
      phase: 'applied',
      qos: pod.status?.qosClass ?? 'Burstable',
      containerIds: runningIds(pod),
      updatedAt: new Date(clock.now()).toISOString(),
      ...patch,
    };
    checkpoint.set(entry);
    return entry;
  }

  function countWrites(a: Actuation, drift: boolean): void {
    for (const r of a.results) {
      if (r.status === 'written') {
        metrics.cgroupWrites.inc({ level: r.write.level, file: r.write.file });
        if (drift) metrics.driftCorrections.inc({ level: r.write.level });
      }
      if (r.status === 'failed' && r.error) metrics.cgroupWriteErrors.inc({ code: r.error.code });
    }
    // systemd-driver nodes: values written directly only, until a later apply reaches systemd.
    if (a.systemdFallback) metrics.systemdFallbacks.inc({ reason: a.systemdFallback.reason });
  }

  /** Keep an existing allocation true: re-apply when a container restarted (new ID) or when forced. */
  async function enforce(
    key: string,
    pod: PodLike,
    st: PodState,
    allocation: Map<string, Resources>,
    force: boolean,
  ): Promise<number> {
    const ids = runningIds(pod);
    if (!force && sameIds(ids, st.containerIds)) return 0;
    const desired = fromAllocation(pod, allocation);
    const result = await actuator.apply(pod, desired);
    countWrites(result, true);
    if (!result.ok) {
      if (result.code !== ActuationFailures.notRunning) {
        log.warn(
          { pod: key, code: result.code, err: result.message },
          'could not enforce allocation; will retry',
        );
      }
      return 0;
    }
    const restarted = Object.keys(st.containerIds).length > 0 && !sameIds(ids, st.containerIds);
    st.containerIds = result.containerIds;
    const uid = pod.metadata?.uid ?? '';
    const entry = checkpoint.get(uid);
    if (!entry || !sameIds(entry.containerIds, result.containerIds) || entry.phase !== 'applied') {
      recordCheckpoint(pod, desired, { observedRequest: entry?.observedRequest });
      void checkpoint.save().catch((err: unknown) => log.error({ err }, 'checkpoint write failed'));
    }
    if (result.written > 0) {
      log.info({ pod: key, writes: result.written, restarted }, 'allocation re-applied');
      if (restarted) {
        publisher.event(pod, {
          reason: EventReasons.Reapplied,
          type: 'Normal',
          message: `container restarted; re-applied the allocated resources (${result.written} cgroup writes)`,
        });
      }
    }
    return result.written;
  }

  /**
   * A freshly started agent's first look at a pod whose request is still open: the previous process may have
   * died between two writes of its plan. Put back, whole, what the pod holds (its allocation, else its spec)
   * so the container has the old values or the new ones, never a mix; the status just published says which.
   * After a finished plan this writes nothing (only what differs is written).
   */
  async function undoPartialPlan(
    key: string,
    pod: PodLike,
    st: PodState,
    allocation: Map<string, Resources> | undefined,
  ): Promise<void> {
    try {
      if (allocation) {
        await enforce(key, pod, st, allocation, true);
        return;
      }
      const result = await actuator.apply(pod, fromAllocation(pod, new Map()));
      countWrites(result, true);
      if (result.ok && result.written > 0) {
        log.warn(
          { pod: key, writes: result.written },
          'put the spec values back over a partly applied resize (the agent had stopped mid-plan)',
        );
      }
    } catch (err) {
      // A spec the agent cannot read (already answered Rejected): nothing it could put back.
      log.debug({ pod: key, err }, 'cannot check the pod for a partly applied resize');
    }
  }

  return {
    observe(pod) {
      const text = pod.metadata?.annotations?.[Annotations.request];
      if (text === undefined) return;
      const key = podKey(pod);
      const st = stateFor(key, pod.metadata?.uid ?? '');
      const hash = `${text.length}:${text}`;
      if (st.seen?.hash !== hash) st.seen = { hash, at: clock.now() };
    },

    needsLook(pod) {
      const st = states.get(podKey(pod));
      if (st?.lookedAt === undefined || st.uid !== pod.metadata?.uid) return true;
      return lookKey(pod, st.published) !== st.lookedAt;
    },

    async handle(key) {
      const [namespace, name] = split(key);
      const pod = cache.get(namespace, name);
      if (!pod || isTerminal(pod) || pod.spec?.nodeName !== nodeName || pod.metadata?.deletionTimestamp) {
        forget(key, pod?.metadata?.uid);
        return;
      }
      if (pod.metadata?.annotations?.[Annotations.disabled] === 'true') return;
      if (deps.inScope && !deps.inScope(namespace)) return;
      const st = stateFor(key, pod.metadata?.uid ?? '');
      st.lookedAt = lookKey(pod, st.published);
      const allocatableNow = deps.node().allocatable;
      const was = st.pendingRestart?.allocatable;
      if (
        was &&
        allocatableNow &&
        (was.cpuMilli !== allocatableNow.cpuMilli || was.memoryBytes !== allocatableNow.memoryBytes) &&
        !rejudgeAccepted(key, pod, st, allocatableNow)
      ) {
        return;
      }
      if (st.pendingRestart) {
        const pending = st.pendingRestart;
        const ids = runningIds(pod);
        const names = Object.keys(pending.ids);
        if (names.every((n) => ids[n] !== undefined && ids[n] !== pending.ids[n])) {
          st.restartedFor = pending.hash;
          st.pendingRestart = undefined;
        } else if (clock.now() < pending.deadline) {
          scheduleRetry(key, st);
          return;
        } else {
          log.warn({ pod: key, containers: names }, 'containers did not restart in time; restarting again');
          st.pendingRestart = undefined;
        }
      }
      await adoptFromStatus(key, pod, st);
      const firstLook = !st.looked;
      st.looked = true;
      // A status claiming what nothing proves answers nothing: its request is judged again, like a new one.
      const claim = pod.metadata?.annotations?.[Annotations.status];
      const seen = agentView(claim !== undefined && claim === st.untrusted ? withoutStatus(pod) : pod, st);
      const allocation = allocationOf(seen);
      const decideWith = (pods?: NamespaceView['pods']): Decision =>
        decide({
          pod: seen,
          nodeName,
          now: new Date(clock.now()),
          allocatable: deps.node().allocatable,
          others: () => othersTotals(key),
          allocation,
          namespace: namespaceView(namespace, pods),
        });
      let d = decideWith();
      // Only a request that raises a quota-tracked value under a quota pays for listing the namespace.
      if (d.kind === 'lookup') {
        const listed = await listNamespace(namespace, st);
        d = decideWith(typeof listed === 'string' ? listed : namespacePods(namespace, listed, seen));
      }
      // Latency is measured from the first sighting of the request text; key it by hash once decided.
      if (d.kind === 'actuate' && st.seen && !/^[0-9a-f]{16}$/.test(st.seen.hash)) {
        st.seen = { hash: d.hash, at: st.seen.at };
      }
      switch (d.kind) {
        case 'idle': {
          syncRecommendation(pod, st, seen);
          if (allocation) await enforce(key, pod, st, allocation, false);
          return;
        }
        case 'answer': {
          const prev = decodeStatus(seen.metadata?.annotations?.[Annotations.status]);
          const isNew =
            prev?.resizeStatus !== d.status.resizeStatus || prev.observedRequest !== d.status.observedRequest;
          if (isNew) {
            metrics.resizeRequests.inc({ status: d.status.resizeStatus, source: d.status.source ?? 'user' });
            log.info({ pod: key, status: d.status.resizeStatus, reason: d.message }, 'resize answered');
          }
          publish(pod, st, d.status, isNew ? [{ reason: d.event, type: 'Warning', message: d.message }] : []);
          if (d.status.resizeStatus === ResizeStatuses.Deferred) scheduleRetry(key, st);
          else deferred.delete(key);
          if (firstLook) await undoPartialPlan(key, pod, st, allocation);
          else if (allocation) await enforce(key, pod, st, allocation, false);
          return;
        }
        case 'lookup':
          return; // decide has the namespace's pods by now: it never asks twice
        case 'actuate': {
          await actuate(key, pod, st, d, allocation);
          return;
        }
      }
    },

    async reconcileAll() {
      const end = metrics.reconcileDuration.startTimer();
      let corrections = 0;
      let pods = 0;
      for (const entry of checkpoint.all()) {
        const cached = cache.get(entry.namespace, entry.name);
        const pod = cached && cached.metadata?.uid === entry.uid ? cached : podFromCheckpoint(entry);
        const key = `${entry.namespace}/${entry.name}`;
        const st = stateFor(key, entry.uid);
        // A container about to be restarted for a resize gets the allocation when it comes back.
        if (st.pendingRestart) continue;
        const allocation = checkpointAllocation(entry.allocation);
        if (!allocation) continue;
        pods++;
        try {
          corrections += await enforce(key, pod, st, allocation, true);
        } catch (err) {
          log.error({ pod: key, err }, 'drift check failed');
        }
      }
      end();
      if (corrections > 0) log.info({ corrections }, 'drift corrected');
      return { pods, corrections };
    },

    async enforceCheckpoint() {
      let n = 0;
      for (const entry of checkpoint.all()) {
        const allocation = checkpointAllocation(entry.allocation);
        if (!allocation) continue;
        const key = `${entry.namespace}/${entry.name}`;
        const st = stateFor(key, entry.uid);
        const pod = podFromCheckpoint(entry);
        const result = await actuator.apply(pod, fromAllocation(pod, allocation));
        countWrites(result, true);
        if (result.ok) {
          st.containerIds = result.containerIds;
          n++;
        } else {
          log.warn(
            { pod: key, code: result.code, err: result.message },
            'checkpointed allocation not enforced yet',
          );
        }
      }
      return n;
    },

    views() {
      const out: PodView[] = [];
      for (const p of cache.list()) {
        const key = podKey(p);
        const st = states.get(key);
        const seen = st ? agentView(p, st) : p;
        const allocation = allocationOf(seen);
        out.push({
          key,
          uid: p.metadata?.uid ?? '',
          allocation: allocation ? fromAllocation(p, allocation) : undefined,
          status: decodeStatus(seen.metadata?.annotations?.[Annotations.status]),
          containerIds: runningIds(p),
        });
      }
      return out;
    },

    stop() {
      for (const st of states.values()) if (st.retryTimer) clearTimeout(st.retryTimer);
      states.clear();
    },
  };
}
