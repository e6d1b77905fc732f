// The JSON view of /api/v1/pods: per pod and container, the spec, what resizelet allocated, the cgroup's
// values and usage, and the resize status. Pure: built from a walk's cgroups and the reconciler's views.
import type { ScannedCgroup } from '../cadvisor/targets.ts';
import type { CgroupStats } from '../cgroup-stats.ts';
import type { PodView } from '../reconcile/reconciler.ts';
import type { PodLike } from '../resize/pod.ts';
import { toWireAllocation, type WireResourceValues } from '../resize/status.ts';

const wireSide = (side: Record<string, string | number | undefined> | undefined): WireResourceValues => {
  const out: Record<string, string> = {};
  for (const [k, v] of Object.entries(side ?? {})) if (v !== undefined) out[k] = String(v);
  return out;
};

function cgroupJson(c: ScannedCgroup) {
  const s: CgroupStats = c.stats;
  return {
    id: c.labels.id,
    cpuQuotaUs: s.cpuQuotaUs,
    cpuPeriodUs: s.cpuPeriodUs,
    /** The CPU limit the quota enforces, in millicores (null: none). */
    cpuLimitMilli:
      s.cpuQuotaUs === null || s.cpuPeriodUs === 0 ? null : Math.round((s.cpuQuotaUs * 1000) / s.cpuPeriodUs),
    cpuShares: s.cpuShares,
    memoryLimitBytes: s.memoryLimitBytes,
  };
}

function usageJson(s: CgroupStats) {
  return {
    cpuSeconds: s.cpuUsageNs / 1e9,
    cfsPeriods: s.cfs?.periods ?? null,
    cfsThrottledPeriods: s.cfs?.throttledPeriods ?? null,
    cfsThrottledSeconds: s.cfs ? s.cfs.throttledNs / 1e9 : null,
    memoryBytes: s.memoryUsageBytes,
    workingSetBytes: s.workingSetBytes,
    rssBytes: s.rssBytes,
    oomKills: s.oomKills,
  };
}

/** A walk's cgroups by pod key. */
export function byPod(cgroups: readonly ScannedCgroup[]): Map<string, ScannedCgroup[]> {
  const out = new Map<string, ScannedCgroup[]>();
  for (const c of cgroups) {
    if (c.podKey === undefined) continue;
    const list = out.get(c.podKey);
    if (list) list.push(c);
    else out.set(c.podKey, [c]);
  }
  return out;
}

export function podJson(pod: PodLike, view: PodView | undefined, mine: readonly ScannedCgroup[]) {
  const podCgroup = mine.find((c) => c.level === 'pod');
  const sandbox = mine.find((c) => c.level === 'sandbox');
  const allocated = new Map(
    (view?.allocation ?? []).map((a) => [a.name, toWireAllocation(a.name, a.resources)]),
  );
  const statuses = new Map((pod.status?.containerStatuses ?? []).map((s) => [s.name, s]));
  const status = view?.status;
  return {
    namespace: pod.metadata?.namespace ?? '',
    name: pod.metadata?.name ?? '',
    uid: pod.metadata?.uid ?? '',
    qosClass: pod.status?.qosClass ?? null,
    phase: pod.status?.phase ?? null,
    resize: status
      ? {
          status: status.resizeStatus,
          message: status.message ?? null,
          lastTransitionTime: status.lastTransitionTime,
          observedRequest: status.observedRequest ?? null,
          source: status.source ?? null,
        }
      : null,
    cgroup: podCgroup ? { ...cgroupJson(podCgroup), usage: usageJson(podCgroup.stats) } : null,
    sandbox: sandbox ? { id: sandbox.labels.id, usage: usageJson(sandbox.stats) } : null,
    containers: (pod.spec?.containers ?? []).map((c) => {
      const cg = mine.find((x) => x.level === 'container' && x.labels.container === c.name);
      const a = allocated.get(c.name);
      return {
        name: c.name,
        containerID: statuses.get(c.name)?.containerID ?? null,
        spec: { requests: wireSide(c.resources?.requests), limits: wireSide(c.resources?.limits) },
        allocated: a ? { requests: a.requests, limits: a.limits } : null,
        cgroup: cg ? cgroupJson(cg) : null,
        usage: cg ? usageJson(cg.stats) : null,
      };
    }),
  };
}
