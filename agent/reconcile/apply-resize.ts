// Carrying out a resize the decision accepted: reserve or restart first where that applies, checkpoint,
// write the cgroups, and answer Completed, or Deferred/Rejected with the checkpoint put back.
import { totalRequests } from '../resize/admission.ts';
import { buildStatus, humanMessage, type Decision } from '../resize/decide.ts';
import type { PodLike, Resources } from '../resize/pod.ts';
import { maxUsage, podUsage } from '../resize/quota.ts';
import { decodeStatus, toWireAllocation } from '../resize/status.ts';
import { Annotations, EventReasons, ResizeStatuses } from '../resize/vocabulary.ts';
import { containersToRestart, type AcceptedResize } from './accepted-resize.ts';
import { ActuationFailures, type Actuation } from './actuator.ts';
import { fromAllocation, wire } from './allocation.ts';
import { agentView, type PodState } from './pod-state.ts';
import type { PodOps, ReconcilerDeps } from './ports.ts';

/** Why a failed actuation waits (Deferred) rather than being refused for good. */
function deferredMessage(a: Extract<Actuation, { ok: false }>): string {
  if (a.code === ActuationFailures.wouldOom) return `memory usage is above the new limit: ${a.message}`;
  if (a.code === ActuationFailures.notRunning) return a.message;
  return `a cgroup write failed (${a.code}): ${a.message}; the previous values were restored`;
}

export function createApplyResize(opts: { deps: ReconcilerDeps; ops: PodOps; accepted: AcceptedResize }) {
  const { deps, ops, accepted } = opts;
  const { actuator, checkpoint, metrics, log, clock } = deps;
  const { publish, scheduleRetry, recordCheckpoint, countWrites, deferred, isCurrent } = ops;
  const { reserve, restartForResize } = accepted;

  return async function actuate(
    key: string,
    pod: PodLike,
    st: PodState,
    d: Extract<Decision, { kind: 'actuate' }>,
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
    // The cgroup writes do not wait for the checkpoint; the Completed status does (below). That order keeps
    // the one promise an agent restart relies on: whatever a status annotation says is Completed, the
    // checkpoint holds too. A crash before the save leaves the old allocation checkpointed, a restarted
    // agent re-applies it whole (never a mix), and the still-open request is judged again.
    recordCheckpoint(pod, d.desired, {
      observedRequest: d.hash,
      phase: 'applying',
      previous: wire(previous),
    });
    const applyingSaved = checkpoint.save();
    const result = await actuator.apply(pod, d.desired);
    countWrites(result, false);
    const prevStatus = decodeStatus(agentView(pod, st).metadata?.annotations?.[Annotations.status]);
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
    // Completed waits for the checkpoint to hold the new allocation, and the `applying` write started
    // before the cgroup writes already does (a restart re-applies an `applying` allocation whole), so
    // Completed waits only for what is left of that write: the run copy's, or the disk's fsync when there
    // is no run copy (see checkpoint.ts). Marking it `applied` is bookkeeping nobody waits for. Nor does the
    // pod's worker wait: a node disk can stall one fsync for hundreds of milliseconds (measured here: about
    // 290 ms every 15 s or so, once 1.9 s), and the pod's next request must not queue behind it. Saves
    // answer in call order (checkpoint.ts), so this pod's statuses are published in order.
    recordCheckpoint(pod, d.desired, { observedRequest: d.hash, phase: 'applied' });
    // A failed write is counted once, by the checkpoint's onError (main.ts), not by each save sharing it.
    void checkpoint.save().catch((err: unknown) => log.error({ pod: key, err }, 'checkpoint write failed'));

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
    const describeSizes = d.desired
      .filter((c) => d.changed.includes(c.name))
      .map((c) => {
        const w = toWireAllocation(c.name, c.resources);
        return `${c.name}: requests ${JSON.stringify(w.requests)} limits ${JSON.stringify(w.limits)}`;
      })
      .join('; ');
    void applyingSaved.then(
      () => {
        if (!isCurrent(key, st)) return; // the pod is gone: nothing to answer
        metrics.resizeRequests.inc({ status: ResizeStatuses.Completed, source: source ?? 'user' });
        log.info({ pod: key, writes: result.written, ms: clock.now() - started }, 'resize completed');
        // One Event per status the pod's annotation takes: straight to Completed here (the status never
        // said Accepted), so one Event carrying the new sizes, not an Accepted and a Completed a
        // millisecond apart.
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
      },
      (err: unknown) => {
        if (!isCurrent(key, st)) return;
        // The cgroups hold the allocation, but a restarted agent could not know it: not Completed yet.
        log.error(
          { pod: key, err },
          'checkpoint write failed; the resize is applied but not yet checkpointed',
        );
        scheduleRetry(key, st);
      },
    );
    // A shrink frees room on the node: give Deferred requests another look.
    for (const k of deferred) if (k !== key) deps.enqueue(k);
  };
}
