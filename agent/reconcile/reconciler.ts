// The glue: cache -> decide -> actuate -> publish. Informer callbacks only enqueue pod keys; `handle` runs
// once per key at a time (see queue.ts). Everything the agent has allocated is kept true here: after a
// container restart (new container ID), on a periodic drift check, and from the checkpoint at start.
import type { PodEvent } from '../kube/api.ts';
import type { NamespaceSnapshot } from '../kube/namespace-state.ts';
import type { AgentMetrics } from '../metrics.ts';
import { addTotals, admit, maxTotals, totalRequests, type RequestTotals } from '../resize/admission.ts';
import {
  decide,
  effectiveTotals,
  statusAllocation,
  buildStatus,
  humanMessage,
  type Decision,
  type NamespaceView,
} from '../resize/decide.ts';
import {
  isTerminal,
  podKey,
  sameResources,
  specResources,
  type PodLike,
  type Resources,
} from '../resize/pod.ts';
import {
  effectiveUsage,
  maxUsage,
  podUsage,
  projectedUsage,
  ZERO_USAGE,
  type NamespacePod,
  type PodUsage,
} from '../resize/quota.ts';
import { parseCpuMillicores, parseMemoryBytes } from '../resize/quantity.ts';
import { parseResizeRequest, requestHash } from '../resize/request.ts';
import {
  allocationsFrom,
  decodeStatus,
  encodeStatus,
  toWireAllocation,
  type ResourceStatus,
  type WireAllocation,
} from '../resize/status.ts';
import type { DesiredContainer } from '../resize/validate.ts';
import { Annotations, EventReasons, ResizeStatuses } from '../resize/vocabulary.ts';
import type { Clock } from '../util/backoff.ts';
import { ActuationFailures, type Actuation, type Actuator } from './actuator.ts';
import type { Checkpoint, CheckpointEntry } from './checkpoint.ts';
import type { StatusPublisher } from './publisher.ts';

export interface ReconcilerLog {
  info(obj: Record<string, unknown>, msg: string): void;
  warn(obj: Record<string, unknown>, msg: string): void;
  error(obj: Record<string, unknown>, msg: string): void;
  debug(obj: Record<string, unknown>, msg: string): void;
}

export interface NodeState {
  allocatable: RequestTotals | undefined;
  memoryCapacityBytes: bigint | undefined;
}

export interface ReconcilerDeps {
  nodeName: string;
  cache: { get(namespace: string, name: string): PodLike | undefined; list(): readonly PodLike[] };
  actuator: Actuator;
  checkpoint: Checkpoint;
  publisher: StatusPublisher;
  metrics: AgentMetrics;
  log: ReconcilerLog;
  clock: Clock;
  node(): NodeState;
  /** Re-run a key later (Deferred retries); the composition root wires this to the queue. */
  enqueue(key: string): void;
  deferredRetryMs: number;
  /** Instrumentation for benchmarks: each resize's latency per stage, in milliseconds. */
  onResizeTiming?: (t: { key: string; stage: 'cgroup' | 'completed'; ms: number }) => void;
  /** The namespace rules (opt-out label, LimitRanges, ResourceQuotas); unset: none apply. */
  namespaces?: {
    view(namespace: string): NamespaceSnapshot;
    /** Every pod of the namespace on every node, from a list that began at or after `notBefore`. */
    listPods(namespace: string, notBefore: number): Promise<PodLike[]>;
  };
  /** `--namespaces`: only pods of these namespaces are resized; unset: every namespace. */
  inScope?(namespace: string): boolean;
  /**
   * Reads the live cgroups: whether the pod holds this allocation now. Only with it is an allocation adopted
   * from a status annotation the checkpoint does not know (the annotation is writable by pod owners).
   */
  verify?(pod: PodLike, desired: DesiredContainer[]): Promise<'holds' | 'differs' | 'unknown'>;
  /** How long a quota-checked resize waits for the API server to acknowledge its reservation. */
  reserveTimeoutMs?: number;
  /**
   * The autoscaler's recommendation for a pod (Recommend mode), carried in every status this reconciler
   * publishes for it; the autoscaler enqueues the pod when it changes. This agent is the status's only writer.
   */
  recommendation?(key: string): WireAllocation[] | undefined;
}

/** What the agent knows of one pod, for the JSON view and metrics. */
export interface PodView {
  key: string;
  uid: string;
  allocation: DesiredContainer[] | undefined;
  status: ResourceStatus | undefined;
  containerIds: Record<string, string>;
}

interface PodState {
  uid: string;
  /** The status text this agent last published: the agent is its only writer, so it beats a stale cache. */
  published?: string;
  containerIds: Record<string, string>;
  /** Requests accepted but not yet applied: counted by admission of other pods. */
  reserved?: RequestTotals;
  /** The same, as a namespace quota counts it. */
  reservedUsage?: PodUsage;
  /** Set once this agent process has judged the pod (crash recovery runs on the first look only). */
  looked?: boolean;
  /** A status annotation whose allocation the live cgroups did not hold: never adopted. */
  untrusted?: string;
  /** Node admission totals of `published`, computed once per text. */
  publishedTotals?: { text: string; totals: RequestTotals };
  /** When the watch first delivered the current request (for resize latency). */
  seen?: { hash: string; at: number };
  retryTimer?: NodeJS.Timeout;
  /** A RestartContainer resize waiting for the kubelet to restart these containers (their old IDs). */
  pendingRestart?: {
    hash: string;
    ids: Record<string, string>;
    deadline: number;
    /** The node's allocatable when accepted: if it changes before the restart, the request is judged again. */
    allocatable?: RequestTotals;
  };
  /** The request whose containers were already restarted: apply it without restarting again. */
  restartedFor?: string;
  /** What the last look at the pod saw (see `lookKey`): the same again from the watch needs no look. */
  lookedAt?: string;
}

/**
 * Everything of a pod a look depends on, except a status annotation that is this agent's own last text: the
 * watch echoes every status patch back, and judging that echo again (admission over every pod of the node)
 * doubled the work of each resize. Anything else that changed (the request, a container restart, a forged
 * status, deletion) makes the key differ. Changes from outside the pod (the node, a namespace's rules, the
 * autoscaler, retries) enqueue the pod themselves and never ask here.
 */
function lookKey(pod: PodLike, ownStatus: string | undefined): string {
  const annotations = pod.metadata?.annotations;
  const status = annotations?.[Annotations.status];
  return JSON.stringify([
    pod.metadata?.uid,
    pod.metadata?.deletionTimestamp,
    pod.metadata?.labels,
    status !== undefined && status === ownStatus
      ? { ...annotations, [Annotations.status]: null }
      : annotations,
    pod.spec?.nodeName,
    pod.spec?.containers?.map((c) => [c.name, c.resources]),
    pod.status?.phase,
    pod.status?.qosClass,
    pod.status?.containerStatuses?.map((c) => [c.name, c.containerID, c.state?.running !== undefined]),
  ]);
}

/** How long a RestartContainer resize waits for the kubelet before it restarts the containers again. */
const RESTART_WAIT_MS = 120_000;

const wire = (d: DesiredContainer[]) => d.map((c) => toWireAllocation(c.name, c.resources));

function fromAllocation(pod: PodLike, allocation: Map<string, Resources>): DesiredContainer[] {
  return (pod.spec?.containers ?? []).map((c) => ({
    name: c.name,
    resources: allocation.get(c.name) ?? specResources(c),
  }));
}

function runningIds(pod: PodLike): Record<string, string> {
  const out: Record<string, string> = {};
  for (const s of pod.status?.containerStatuses ?? []) {
    if (s.containerID && s.state?.running) out[s.name] = s.containerID;
  }
  return out;
}

function sameIds(a: Record<string, string>, b: Record<string, string>): boolean {
  const ka = Object.keys(a);
  return ka.length === Object.keys(b).length && ka.every((k) => a[k] === b[k]);
}

/** A minimal pod built from a checkpoint entry, so allocations can be enforced before the API answers. */
export function podFromCheckpoint(e: CheckpointEntry): PodLike {
  return {
    metadata: { uid: e.uid, name: e.name, namespace: e.namespace },
    spec: { containers: e.allocation.map((a) => ({ name: a.name })) },
    status: {
      phase: 'Running',
      qosClass: e.qos,
      containerStatuses: Object.entries(e.containerIds).map(([name, containerID]) => ({
        name,
        containerID,
        state: { running: {} },
      })),
    },
  };
}

/** Why a failed actuation waits (Deferred) rather than being refused for good. */
function deferredMessage(a: Extract<Actuation, { ok: false }>): string {
  if (a.code === ActuationFailures.wouldOom) return `memory usage is above the new limit: ${a.message}`;
  if (a.code === ActuationFailures.notRunning) return a.message;
  return `a cgroup write failed (${a.code}): ${a.message}; the previous values were restored`;
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

  function forget(key: string, uid?: string): void {
    const st = states.get(key);
    if (uid ?? st?.uid) specTotalsByUid.delete((uid ?? st?.uid)!);
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

  /** The pod as the agent sees it: our own last published status wins over a stale cache. */
  function view(pod: PodLike, st: PodState): PodLike {
    if (st.published === undefined) return pod;
    return {
      ...pod,
      metadata: {
        ...pod.metadata,
        annotations: { ...pod.metadata?.annotations, [Annotations.status]: st.published },
      },
    };
  }

  function allocationOf(pod: PodLike): Map<string, Resources> | undefined {
    const entry = pod.metadata?.uid ? checkpoint.get(pod.metadata.uid) : undefined;
    if (entry)
      return allocationsFrom({
        resizeStatus: 'Completed',
        allocatedResources: entry.allocation,
        lastTransitionTime: '',
      });
    // A status that answers no request only carries a recommendation (see syncRecommendation): the pod
    // holds its spec, and nothing is to be enforced or checkpointed for it.
    const text = pod.metadata?.annotations?.[Annotations.status];
    if (text !== undefined && decodeStatus(text)?.observedRequest === undefined) return undefined;
    // The annotation is writable by anyone who can edit the pod: only this agent's own last published text
    // counts. An allocation from before a lost checkpoint is adopted once the cgroups prove it (adoptFromStatus).
    return ownStatus(pod) ? statusAllocation(pod) : undefined;
  }

  function withoutStatus(pod: PodLike): PodLike {
    const annotations = { ...pod.metadata?.annotations };
    delete annotations[Annotations.status];
    return { ...pod, metadata: { ...pod.metadata, annotations } };
  }

  /** Whether the pod's status annotation is the text this agent process last published for it. */
  function ownStatus(pod: PodLike): boolean {
    const text = pod.metadata?.annotations?.[Annotations.status];
    return text !== undefined && states.get(podKey(pod))?.published === text;
  }

  /**
   * An allocation the checkpoint does not know, claimed by the status annotation (the checkpoint was lost or
   * corrupt): adopted only when the live cgroups hold it, i.e. this node's agent applied it. Without the
   * check, writing a `Completed` status by hand would be a way around every rule (node admission, quota,
   * LimitRange). Loud either way: both only happen after a lost checkpoint or a forged annotation.
   */
  async function adoptFromStatus(key: string, pod: PodLike, st: PodState): Promise<void> {
    const uid = pod.metadata?.uid ?? '';
    if (!uid || checkpoint.get(uid) || st.published !== undefined) return;
    const text = pod.metadata?.annotations?.[Annotations.status];
    if (text === undefined || text === st.untrusted) return;
    const status = decodeStatus(text);
    const claimed = status?.observedRequest === undefined ? undefined : allocationsFrom(status);
    if (!claimed) return;
    let desired: DesiredContainer[];
    try {
      desired = fromAllocation(pod, claimed);
      const spec = fromAllocation(pod, new Map());
      if (desired.every((c, i) => sameResources(c.resources, spec[i]!.resources))) return;
    } catch {
      return; // a spec the agent cannot read: nothing to adopt against
    }
    const verdict = deps.verify ? await deps.verify(pod, desired) : 'differs';
    if (verdict === 'unknown') return;
    if (verdict === 'differs') {
      st.untrusted = text;
      log.warn(
        { pod: key },
        'the status annotation claims an allocation that neither the checkpoint nor the live cgroups hold; not adopted, its request is judged again',
      );
      return;
    }
    recordCheckpoint(pod, desired, { observedRequest: status?.observedRequest });
    await checkpoint.save().catch((err: unknown) => log.error({ err }, 'checkpoint write failed'));
    log.warn({ pod: key }, 'allocation rebuilt from the status annotation: the live cgroups hold it');
  }

  // Admission looks at every pod on the node for every request. A pod's spec resources never change (this
  // is the point of resizelet), so their totals are computed once per pod UID; the allocation side is
  // re-read only when its source (checkpoint entry or status text) changed.
  const specTotalsByUid = new Map<string, RequestTotals>();
  const allocTotalsMemo = new WeakMap<object, RequestTotals>();
  function podTotals(p: PodLike, st: PodState | undefined): RequestTotals {
    const uid = p.metadata?.uid ?? '';
    let spec = specTotalsByUid.get(uid);
    if (!spec) {
      spec = effectiveTotals(p, undefined);
      specTotalsByUid.set(uid, spec);
    }
    const entry = uid ? checkpoint.get(uid) : undefined;
    let alloc: RequestTotals | undefined;
    if (entry) {
      alloc = allocTotalsMemo.get(entry);
      if (!alloc) {
        alloc = effectiveTotals(p, allocationOf(p));
        allocTotalsMemo.set(entry, alloc);
      }
    } else if (st?.published !== undefined) {
      // Only this agent's own status counts: a pod owner's annotation must not take room from other pods.
      // One memo per pod (a map keyed by status text kept thousands of dead texts between clears).
      if (st.publishedTotals?.text !== st.published) {
        const totals = effectiveTotals(p, statusAllocation(view(p, st)));
        st.publishedTotals = { text: st.published, totals };
      }
      alloc = st.publishedTotals.totals;
    }
    return alloc ? maxTotals(spec, alloc) : spec;
  }

  /**
   * A pod whose spec holds a quantity beyond what the agent counts exactly (a CPU limit of 1e16 passes API
   * validation) must not stop every other pod's admission: it counts with the requests that can be read.
   */
  function readableTotals(p: PodLike, st: PodState | undefined): RequestTotals {
    try {
      return podTotals(p, st);
    } catch {
      let cpuMilli = 0;
      let memoryBytes = 0n;
      for (const c of p.spec?.containers ?? []) {
        const r = c.resources?.requests ?? c.resources?.limits ?? {};
        try {
          if (r.cpu !== undefined) cpuMilli += parseCpuMillicores(String(r.cpu));
        } catch {
          // unreadable: not counted
        }
        try {
          if (r.memory !== undefined) memoryBytes += parseMemoryBytes(String(r.memory));
        } catch {
          // unreadable: not counted
        }
      }
      return { cpuMilli, memoryBytes };
    }
  }

  // Every request sums all other pods of the node. A pod's term is kept with what it was computed from (the
  // pod object, its checkpoint entry, this agent's status text, a reservation) and recomputed only when one
  // of those changed, so the sum is a walk over the cache, not a re-parse of every pod per request.
  const termMemo = new WeakMap<
    PodLike,
    {
      key: string;
      entry?: CheckpointEntry;
      published?: string;
      reserved?: RequestTotals;
      totals: RequestTotals;
    }
  >();
  function othersTotals(exceptKey: string): RequestTotals[] {
    let cpuMilli = 0;
    let memoryBytes = 0n;
    for (const p of cache.list()) {
      if (isTerminal(p) || p.spec?.nodeName !== nodeName) continue;
      let memo = termMemo.get(p);
      const key = memo?.key ?? podKey(p);
      if (key === exceptKey) continue;
      const st = states.get(key);
      const entry = checkpoint.get(p.metadata?.uid ?? '');
      if (
        !memo ||
        memo.entry !== entry ||
        memo.published !== st?.published ||
        memo.reserved !== st?.reserved
      ) {
        const eff = readableTotals(p, st);
        const totals = st?.reserved ? maxTotals(eff, st.reserved) : eff;
        memo = { key, entry, published: st?.published, reserved: st?.reserved, totals };
        termMemo.set(p, memo);
      }
      cpuMilli += memo.totals.cpuMilli;
      memoryBytes += memo.totals.memoryBytes;
    }
    return [{ cpuMilli, memoryBytes }];
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

  /** Containers whose changed resources have the RestartContainer policy. */
  function containersToRestart(
    d: Extract<ReturnType<typeof decide>, { kind: 'actuate' }>,
    previous: DesiredContainer[],
  ): string[] {
    const out: string[] = [];
    for (const [i, c] of d.desired.entries()) {
      const before = previous[i]?.resources;
      if (!before) continue;
      const cpu =
        c.resources.requests.cpu !== before.requests.cpu || c.resources.limits.cpu !== before.limits.cpu;
      const memory =
        c.resources.requests.memory !== before.requests.memory ||
        c.resources.limits.memory !== before.limits.memory;
      if (
        (cpu && d.policy.cpu === 'RestartContainer') ||
        (memory && d.policy.memory === 'RestartContainer')
      ) {
        out.push(c.name);
      }
    }
    return out;
  }

  /**
   * RestartContainer: record the allocation first (so the restarted container gets it), then stop the
   * containers' processes and wait, as Accepted, for the kubelet to start new ones; `handle` then applies
   * the allocation to them and completes.
   */
  async function restartForResize(
    key: string,
    pod: PodLike,
    st: PodState,
    d: Extract<ReturnType<typeof decide>, { kind: 'actuate' }>,
    previous: DesiredContainer[],
    names: string[],
  ): Promise<void> {
    recordCheckpoint(pod, d.desired, { observedRequest: d.hash, phase: 'applied', previous: wire(previous) });
    await checkpoint.save();
    const ids = runningIds(pod);
    st.pendingRestart = {
      hash: d.hash,
      ids: Object.fromEntries(names.map((n) => [n, ids[n] ?? ''])),
      deadline: clock.now() + RESTART_WAIT_MS,
      allocatable: deps.node().allocatable,
    };
    const signalled = await actuator.restartContainers(pod, names);
    const message = `restarting ${names.join(', ')} to apply the resize (RestartContainer policy; ${signalled} processes signalled)`;
    log.info({ pod: key, containers: names, signalled }, 'restarting containers for a resize');
    const prevStatus = decodeStatus(view(pod, st).metadata?.annotations?.[Annotations.status]);
    const status = buildStatus(
      prevStatus,
      {
        resizeStatus: ResizeStatuses.Accepted,
        allocatedResources: wire(d.desired),
        observedRequest: d.hash,
        message,
        source: d.source,
      },
      new Date(clock.now()),
    );
    publish(pod, st, status, [
      { reason: EventReasons.Accepted, type: 'Normal', message: 'resize accepted' },
      { reason: EventReasons.Restarting, type: 'Normal', message },
    ]);
    scheduleRetry(key, st);
  }

  /**
   * Quota-checked resizes: publish `Accepted` with the new allocation and wait until the API server has
   * stored it, before any cgroup is written. From then on every other node's agent counts this pod at the
   * new size, so two nodes can only both take a namespace past a quota when their pod lists and these
   * patches interleave (a window of one list plus one patch; docs/security.md). Not stored in time: Deferred.
   */
  async function reserve(
    key: string,
    pod: PodLike,
    st: PodState,
    d: Extract<Decision, { kind: 'actuate' }>,
    previous: DesiredContainer[],
  ): Promise<boolean> {
    const prevStatus = decodeStatus(view(pod, st).metadata?.annotations?.[Annotations.status]);
    const accepted = buildStatus(
      prevStatus,
      {
        resizeStatus: ResizeStatuses.Accepted,
        allocatedResources: wire(d.desired),
        observedRequest: d.hash,
        message:
          'resize accepted; reserved against the namespace ResourceQuota before the cgroups are written',
        source: d.source,
      },
      new Date(clock.now()),
    );
    const timeoutMs = deps.reserveTimeoutMs ?? 5_000;
    let timer: NodeJS.Timeout | undefined;
    const stored = await new Promise<boolean>((resolve) => {
      timer = setTimeout(() => resolve(false), timeoutMs);
      publish(
        pod,
        st,
        accepted,
        [{ reason: EventReasons.Accepted, type: 'Normal', message: accepted.message ?? 'resize accepted' }],
        () => resolve(true),
      );
    });
    clearTimeout(timer);
    if (stored) return true;
    st.reserved = undefined;
    st.reservedUsage = undefined;
    const message = `the API server did not store the quota reservation within ${timeoutMs} ms; the resize waits so that no namespace quota can be overrun`;
    log.warn({ pod: key }, 'quota reservation not acknowledged; resize deferred');
    publish(
      pod,
      st,
      buildStatus(
        prevStatus,
        {
          resizeStatus: ResizeStatuses.Deferred,
          allocatedResources: wire(previous),
          observedRequest: d.hash,
          message,
          source: d.source,
        },
        new Date(clock.now()),
      ),
      [{ reason: EventReasons.Deferred, type: 'Warning', message }],
    );
    scheduleRetry(key, st);
    return false;
  }

  /**
   * The node's allocatable changed while an Accepted resize waited for its containers to restart: judge it
   * again on the new numbers. Still fits: keep waiting. No longer: the checkpoint goes back to the previous
   * allocation (which the restarted container then gets) and the request is answered Deferred or Rejected.
   * Returns whether the resize still stands.
   */
  function rejudgeAccepted(key: string, pod: PodLike, st: PodState, allocatable: RequestTotals): boolean {
    const pending = st.pendingRestart!;
    pending.allocatable = allocatable;
    const entry = checkpoint.get(pod.metadata?.uid ?? '');
    const asMap = (a: CheckpointEntry['allocation']) =>
      allocationsFrom({ resizeStatus: 'Completed', allocatedResources: a, lastTransitionTime: '' });
    const accepted = entry && asMap(entry.allocation);
    if (!entry || !accepted) return true;
    const previous = entry.previous ?? wire(fromAllocation(pod, new Map()));
    const verdict = admit({
      allocatable,
      others: othersTotals(key),
      before: effectiveTotals(pod, asMap(previous)),
      after: totalRequests(fromAllocation(pod, accepted).map((c) => c.resources)),
    });
    if (verdict.verdict === 'fits') return true;
    checkpoint.set({ ...entry, allocation: previous, previous: undefined, observedRequest: undefined });
    void checkpoint.save().catch((err: unknown) => log.error({ err }, 'checkpoint write failed'));
    st.pendingRestart = undefined;
    st.reserved = undefined;
    st.reservedUsage = undefined;
    const never = verdict.verdict === 'never';
    const message = `${verdict.message} (the node's allocatable changed while the resize waited for its containers to restart)`;
    const prevStatus = decodeStatus(view(pod, st).metadata?.annotations?.[Annotations.status]);
    const resizeStatus = never ? ResizeStatuses.Rejected : ResizeStatuses.Deferred;
    metrics.resizeRequests.inc({ status: resizeStatus, source: prevStatus?.source ?? 'user' });
    log.warn({ pod: key, status: resizeStatus, reason: verdict.message }, 'accepted resize judged again');
    publish(
      pod,
      st,
      buildStatus(
        prevStatus,
        {
          resizeStatus,
          allocatedResources: previous,
          observedRequest: pending.hash,
          message,
          source: prevStatus?.source,
        },
        new Date(clock.now()),
      ),
      [{ reason: never ? EventReasons.Rejected : EventReasons.Deferred, type: 'Warning', message }],
    );
    if (never) deferred.delete(key);
    else scheduleRetry(key, st);
    return false;
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

  /** The namespace rules for decide; `pods` once listed. */
  function namespaceView(namespace: string, pods?: NamespaceView['pods']): NamespaceView | undefined {
    if (!deps.namespaces) return undefined;
    return { name: namespace, ...deps.namespaces.view(namespace), pods };
  }

  /** Every pod of the namespace on every node (a fresh list), or why it could not be listed. */
  async function listNamespace(namespace: string, st: PodState): Promise<PodLike[] | string> {
    try {
      return await deps.namespaces!.listPods(namespace, st.seen?.at ?? clock.now());
    } catch (err) {
      return `listing the namespace's pods failed: ${(err as Error)?.message ?? String(err)}`;
    }
  }

  /**
   * The namespace's other pods as a quota counts them: this node's from the agent's own view (checkpoint, its
   * own statuses, resizes in flight), other nodes' from their agents' statuses. Synchronous, and called right
   * before decide: no other resize on this node can reserve in between, so same-node resizes never race.
   */
  function namespacePods(namespace: string, listed: PodLike[], self: PodLike): NamespacePod[] {
    const out: NamespacePod[] = [];
    for (const p of listed) {
      if (isTerminal(p) || p.metadata?.uid === self.metadata?.uid) continue;
      const cached = p.spec?.nodeName === nodeName ? cache.get(namespace, p.metadata?.name ?? '') : undefined;
      const local = cached?.metadata?.uid === p.metadata?.uid ? cached : undefined;
      const lst = local ? states.get(podKey(local)) : undefined;
      const seen = local && lst ? view(local, lst) : (local ?? p);
      const allocation = local ? allocationOf(seen) : statusAllocation(p);
      let usage = effectiveUsage(seen, allocation);
      if (lst?.reservedUsage) usage = maxUsage(usage, lst.reservedUsage);
      out.push({ pod: seen, usage, projected: projection(seen, allocation, usage) });
    }
    return out;
  }

  /** Where a pod will stand once its open request (if any) completes; nothing once it is being deleted. */
  function projection(p: PodLike, allocation: Map<string, Resources> | undefined, usage: PodUsage): PodUsage {
    if (p.metadata?.deletionTimestamp) return ZERO_USAGE;
    const text = p.metadata?.annotations?.[Annotations.request];
    if (text === undefined) return usage;
    const status = decodeStatus(p.metadata?.annotations?.[Annotations.status]);
    const answered =
      status?.observedRequest === requestHash(text) &&
      (status.resizeStatus === ResizeStatuses.Completed || status.resizeStatus === ResizeStatuses.Rejected);
    if (answered) return usage;
    const parsed = parseResizeRequest(text);
    return parsed.ok ? projectedUsage(p, allocation, parsed.value) : usage;
  }

  async function actuate(
    key: string,
    pod: PodLike,
    st: PodState,
    d: Extract<ReturnType<typeof decide>, { kind: 'actuate' }>,
    allocation: Map<string, Resources> | undefined,
  ): Promise<void> {
    const started = st.seen?.hash === d.hash ? st.seen.at : clock.now();
    const uid = pod.metadata?.uid ?? '';
    const before = checkpoint.get(uid);
    const previous = fromAllocation(pod, allocation ?? new Map());
    st.reserved = totalRequests(d.desired.map((c) => c.resources));
    st.reservedUsage = maxUsage(
      podUsage(pod),
      podUsage(pod, new Map(d.desired.map((c) => [c.name, c.resources]))),
    );
    if (d.reserve && !(await reserve(key, pod, st, d, previous))) return;
    const restartNames = containersToRestart(d, previous);
    if (restartNames.length > 0 && st.restartedFor !== d.hash) {
      await restartForResize(key, pod, st, d, previous, restartNames);
      return;
    }
    // The cgroup writes do not wait for the checkpoint to be durable; the Completed status does (below).
    // That order keeps the one promise a restart relies on: whatever a status annotation says is Completed,
    // the checkpoint holds too. A crash before the save is durable leaves the old allocation checkpointed,
    // a restarted agent re-applies it whole (never a mix), and the still-open request is judged again.
    recordCheckpoint(pod, d.desired, {
      observedRequest: d.hash,
      phase: 'applying',
      previous: wire(previous),
    });
    const applyingSaved = checkpoint.save();
    const result = await actuator.apply(pod, d.desired);
    countWrites(result, false);
    const prevStatus = decodeStatus(view(pod, st).metadata?.annotations?.[Annotations.status]);
    const now = new Date(clock.now());
    const source = d.source;
    if (!result.ok) {
      await applyingSaved.catch(() => undefined);
      st.reserved = undefined;
      st.reservedUsage = undefined;
      if (before) checkpoint.set(before);
      else checkpoint.delete(uid);
      void checkpoint.save().catch((err: unknown) => log.error({ err }, 'checkpoint write failed'));
      const unsafe = result.code === ActuationFailures.unsafePath;
      const message = unsafe ? result.message : deferredMessage(result);
      const resizeStatus = unsafe ? ResizeStatuses.Rejected : ResizeStatuses.Deferred;
      const status = buildStatus(
        prevStatus,
        { resizeStatus, allocatedResources: wire(previous), observedRequest: d.hash, message, source },
        now,
      );
      const isNew = prevStatus?.resizeStatus !== resizeStatus || prevStatus.observedRequest !== d.hash;
      if (isNew) metrics.resizeRequests.inc({ status: resizeStatus, source: source ?? 'user' });
      log.warn({ pod: key, code: result.code, err: result.message }, `resize ${resizeStatus.toLowerCase()}`);
      publish(
        pod,
        st,
        status,
        isNew
          ? [{ reason: unsafe ? EventReasons.Rejected : EventReasons.Deferred, type: 'Warning', message }]
          : [],
      );
      if (!unsafe) scheduleRetry(key, st);
      return;
    }
    const cgroupMs = clock.now() - started;
    metrics.resizeDuration.observe({ stage: 'cgroup' }, cgroupMs / 1000);
    deps.onResizeTiming?.({ key, stage: 'cgroup', ms: cgroupMs });
    st.reserved = undefined;
    st.reservedUsage = undefined;
    st.containerIds = result.containerIds;
    deferred.delete(key);
    recordCheckpoint(pod, d.desired, { observedRequest: d.hash, phase: 'applied' });
    try {
      await checkpoint.save();
    } catch (err) {
      // The cgroups hold the allocation, but a restarted agent could not know it: not Completed yet.
      metrics.checkpointProblems.inc();
      log.error({ pod: key, err }, 'checkpoint write failed; the resize is applied but not yet durable');
      scheduleRetry(key, st);
      return;
    }

    const memoryRequestChanged = d.desired.some(
      (c, i) => c.resources.requests.memory !== previous[i]?.resources.requests.memory,
    );
    const capacity = deps.node().memoryCapacityBytes;
    if (memoryRequestChanged && capacity) {
      const adj = await actuator.updateOomScoreAdj(pod, d.desired, capacity);
      for (const r of adj.refused) metrics.oomScoreAdjFailures.inc({ reason: r.code });
      if (adj.refused.length > 0) {
        log.warn(
          { pod: key, refused: adj.refused.length },
          'oom_score_adj update refused (needs CAP_SYS_RESOURCE); resize stands',
        );
      }
    }

    const changedNames = d.changed.length > 0 ? d.changed.join(', ') : 'no container';
    // Applied, but a daemon-reload before the reconcile loop reaches systemd would undo it: say so.
    const systemdNote = result.systemdFallback
      ? ` (systemd unreachable: ${result.systemdFallback.message}; applied directly, will re-apply)`
      : '';
    const message = humanMessage(
      `resized ${changedNames} in place (${result.written} cgroup writes)${systemdNote}`,
    );
    const status = buildStatus(
      prevStatus,
      {
        resizeStatus: ResizeStatuses.Completed,
        allocatedResources: wire(d.desired),
        observedRequest: d.hash,
        message,
        source,
      },
      now,
    );
    metrics.resizeRequests.inc({ status: ResizeStatuses.Completed, source: source ?? 'user' });
    log.info({ pod: key, writes: result.written, ms: clock.now() - started }, 'resize completed');
    const describeSizes = d.desired
      .filter((c) => d.changed.includes(c.name))
      .map((c) => {
        const w = toWireAllocation(c.name, c.resources);
        return `${c.name}: requests ${JSON.stringify(w.requests)} limits ${JSON.stringify(w.limits)}`;
      })
      .join('; ');
    // One Event per status the pod's annotation takes: straight to Completed here (the status never said
    // Accepted), so one Event carrying the new sizes, not an Accepted and a Completed a millisecond apart.
    publish(
      pod,
      st,
      status,
      [{ reason: EventReasons.Completed, type: 'Normal', message: `${message}: ${describeSizes}` }],
      () => {
        const ms = clock.now() - started;
        metrics.resizeDuration.observe({ stage: 'completed' }, ms / 1000);
        deps.onResizeTiming?.({ key, stage: 'completed', ms });
      },
    );
    // A shrink frees room on the node: give Deferred requests another look.
    for (const k of deferred) if (k !== key) deps.enqueue(k);
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
      const seen = view(claim !== undefined && claim === st.untrusted ? withoutStatus(pod) : pod, st);
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
        const allocation = allocationsFrom({
          resizeStatus: 'Completed',
          allocatedResources: entry.allocation,
          lastTransitionTime: '',
        });
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
        const allocation = allocationsFrom({
          resizeStatus: 'Completed',
          allocatedResources: entry.allocation,
          lastTransitionTime: '',
        });
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
        const seen = st ? view(p, st) : p;
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

export { addTotals };
