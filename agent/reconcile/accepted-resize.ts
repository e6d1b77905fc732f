// The paths on which a resize is answered Accepted before it completes: a quota reservation waiting for the
// API server, and a RestartContainer resize waiting for the kubelet (judged again if the node changes).
import { admit, totalRequests, type RequestTotals } from '../resize/admission.ts';
import { buildStatus, effectiveTotals, type Decision } from '../resize/decide.ts';
import { decodeStatus } from '../resize/status.ts';
import type { DesiredContainer } from '../resize/validate.ts';
import type { PodLike } from '../resize/pod.ts';
import { Annotations, EventReasons, ResizeStatuses } from '../resize/vocabulary.ts';
import { checkpointAllocation, fromAllocation, wire } from './allocation.ts';
import { agentView, runningIds, type PodState } from './pod-state.ts';
import type { PodOps, ReconcilerDeps } from './ports.ts';

/** How long a RestartContainer resize waits for the kubelet before it restarts the containers again. */
const RESTART_WAIT_MS = 120_000;

/** Containers whose changed resources have the RestartContainer policy. */
export function containersToRestart(
  d: Extract<Decision, { kind: 'actuate' }>,
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
    if ((cpu && d.policy.cpu === 'RestartContainer') || (memory && d.policy.memory === 'RestartContainer')) {
      out.push(c.name);
    }
  }
  return out;
}

export type AcceptedResize = ReturnType<typeof createAcceptedResize>;

export function createAcceptedResize(opts: {
  deps: ReconcilerDeps;
  ops: PodOps;
  othersTotals(exceptKey: string): RequestTotals[];
}) {
  const { deps, ops, othersTotals } = opts;
  const { actuator, checkpoint, metrics, log, clock } = deps;
  const { publish, scheduleRetry, recordCheckpoint, deferred } = ops;

  const statusOf = (pod: PodLike, st: PodState) =>
    decodeStatus(agentView(pod, st).metadata?.annotations?.[Annotations.status]);

  /** The pod's next status, answering the decision's request with `allocation`. */
  function answer(
    prevStatus: ReturnType<typeof statusOf>,
    d: Extract<Decision, { kind: 'actuate' }>,
    resizeStatus: typeof ResizeStatuses.Accepted | typeof ResizeStatuses.Deferred,
    allocation: DesiredContainer[],
    message: string,
  ) {
    return buildStatus(
      prevStatus,
      {
        resizeStatus,
        allocatedResources: wire(allocation),
        observedRequest: d.hash,
        message,
        source: d.source,
      },
      new Date(clock.now()),
    );
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
    d: Extract<Decision, { kind: 'actuate' }>,
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
    publish(pod, st, answer(statusOf(pod, st), d, ResizeStatuses.Accepted, d.desired, message), [
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
    const prevStatus = statusOf(pod, st);
    const accepted = answer(
      prevStatus,
      d,
      ResizeStatuses.Accepted,
      d.desired,
      'resize accepted; reserved against the namespace ResourceQuota before the cgroups are written',
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
    publish(pod, st, answer(prevStatus, d, ResizeStatuses.Deferred, previous, message), [
      { reason: EventReasons.Deferred, type: 'Warning', message },
    ]);
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
    const accepted = entry && checkpointAllocation(entry.allocation);
    if (!entry || !accepted) return true;
    const previous = entry.previous ?? wire(fromAllocation(pod, new Map()));
    const verdict = admit({
      allocatable,
      others: othersTotals(key),
      before: effectiveTotals(pod, checkpointAllocation(previous)),
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
    const prevStatus = statusOf(pod, st);
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

  return { restartForResize, reserve, rejudgeAccepted };
}
