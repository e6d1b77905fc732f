// Where a pod's allocation comes from: the checkpoint, this agent's own last status, or (once the live
// cgroups prove it) a status annotation the checkpoint does not know. Plus the pure conversions between
// allocations, desired containers, the wire form and checkpoint entries.
import { statusAllocation } from '../resize/decide.ts';
import { podKey, sameResources, specResources, type PodLike, type Resources } from '../resize/pod.ts';
import { allocationsFrom, decodeStatus, toWireAllocation } from '../resize/status.ts';
import type { DesiredContainer } from '../resize/validate.ts';
import { Annotations } from '../resize/vocabulary.ts';
import type { Checkpoint, CheckpointEntry } from './checkpoint.ts';
import type { PodState } from './pod-state.ts';
import type { PodOps, ReconcilerDeps, ReconcilerLog } from './ports.ts';

/** A checkpointed allocation (wire form) as per-container resources; undefined when it does not parse. */
export function checkpointAllocation(
  allocation: CheckpointEntry['allocation'],
): Map<string, Resources> | undefined {
  return allocationsFrom({
    resizeStatus: 'Completed',
    allocatedResources: allocation,
    lastTransitionTime: '',
  });
}

export const wire = (d: DesiredContainer[]) => d.map((c) => toWireAllocation(c.name, c.resources));

export function fromAllocation(pod: PodLike, allocation: Map<string, Resources>): DesiredContainer[] {
  return (pod.spec?.containers ?? []).map((c) => ({
    name: c.name,
    resources: allocation.get(c.name) ?? specResources(c),
  }));
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

export interface AllocationSource {
  /** What the pod holds beyond its spec, from a source this agent trusts; undefined: its spec. */
  allocationOf(pod: PodLike): Map<string, Resources> | undefined;
  adoptFromStatus(key: string, pod: PodLike, st: PodState): Promise<void>;
}

export function createAllocationSource(opts: {
  checkpoint: Checkpoint;
  log: ReconcilerLog;
  verify: ReconcilerDeps['verify'];
  /** Read only: `published` tells this agent's own status from anyone else's. */
  states: ReadonlyMap<string, PodState>;
  recordCheckpoint: PodOps['recordCheckpoint'];
}): AllocationSource {
  const { checkpoint, log, states, recordCheckpoint } = opts;

  function allocationOf(pod: PodLike): Map<string, Resources> | undefined {
    const entry = pod.metadata?.uid ? checkpoint.get(pod.metadata.uid) : undefined;
    if (entry) return checkpointAllocation(entry.allocation);
    // A status that answers no request only carries a recommendation (see syncRecommendation): the pod
    // holds its spec, and nothing is to be enforced or checkpointed for it.
    const text = pod.metadata?.annotations?.[Annotations.status];
    if (text !== undefined && decodeStatus(text)?.observedRequest === undefined) return undefined;
    // The annotation is writable by anyone who can edit the pod: only this agent's own last published text
    // counts. An allocation from before a lost checkpoint is adopted once the cgroups prove it (adoptFromStatus).
    return ownStatus(pod) ? statusAllocation(pod) : undefined;
  }

  /** Whether the pod's status annotation is the text this agent process last published for it. */
  function ownStatus(pod: PodLike): boolean {
    const text = pod.metadata?.annotations?.[Annotations.status];
    return text !== undefined && states.get(podKey(pod))?.published === text;
  }

  /**
   * An allocation the checkpoint does not know, claimed by the status annotation: adopted only when the live
   * cgroups hold it, i.e. this node's agent applied it. Two ways there: the checkpoint was lost or corrupt
   * (no entry), or it lags the status (an entry answering an older request, with another allocation: a
   * reboot cut off the disk copy's last writes; see checkpoint.ts). Without the check, writing a `Completed`
   * status by hand would be a way around every rule (node admission, quota, LimitRange). Loud either way.
   */
  async function adoptFromStatus(key: string, pod: PodLike, st: PodState): Promise<void> {
    const uid = pod.metadata?.uid ?? '';
    if (!uid || st.published !== undefined) return;
    const text = pod.metadata?.annotations?.[Annotations.status];
    if (text === undefined || text === st.untrusted) return;
    const status = decodeStatus(text);
    const claimed = status?.observedRequest === undefined ? undefined : allocationsFrom(status);
    if (!claimed) return;
    const entry = checkpoint.get(uid);
    if (entry && entry.observedRequest === status?.observedRequest) return; // the checkpoint knows it
    let desired: DesiredContainer[];
    try {
      desired = fromAllocation(pod, claimed);
      const known = entry ? checkpointAllocation(entry.allocation) : new Map<string, Resources>();
      if (!known) return; // an entry the agent cannot read: enforced as it is, not replaced
      const holds = fromAllocation(pod, known);
      if (desired.every((c, i) => sameResources(c.resources, holds[i]!.resources))) return;
    } catch {
      return; // a spec the agent cannot read: nothing to adopt against
    }
    const verdict = opts.verify ? await opts.verify(pod, desired) : 'differs';
    if (verdict === 'unknown') return;
    if (verdict === 'differs') {
      st.untrusted = text;
      log.warn(
        {
          pod: key,
          ...(entry
            ? { checkpointAnswers: entry.observedRequest, statusAnswers: status?.observedRequest }
            : {}),
        },
        entry
          ? 'the status annotation and the checkpoint answer different requests, and the live cgroups do not hold the status allocation; not adopted, its request is judged again'
          : 'the status annotation claims an allocation that neither the checkpoint nor the live cgroups hold; not adopted, its request is judged again',
      );
      return;
    }
    recordCheckpoint(pod, desired, { observedRequest: status?.observedRequest });
    await checkpoint.save().catch((err: unknown) => log.error({ err }, 'checkpoint write failed'));
    log.warn({ pod: key }, 'allocation rebuilt from the status annotation: the live cgroups hold it');
  }

  return { allocationOf, adoptFromStatus };
}
