// Carries an allocation into a pod's cgroups: locate the pod and container cgroups, read them, ask the pure
// planner for an ordered list of writes, hand it to the executor, and afterwards bring oom_score_adj in
// line with a changed memory request. No decisions about statuses here: the reconciler makes those.
import { burstableOomScoreAdj } from '../../cgroup/convert.ts';
import { executePlan, type ExecutorLog } from '../../cgroup/executor.ts';
import { containerCgroupPath, parseContainerId, podCgroupPath, PathError } from '../../cgroup/paths.ts';
import { planResize, type MemoryMargin, type PlanContainer } from '../../cgroup/planner.ts';
import type { SystemdFallback, SystemdSync } from '../../cgroup/systemd-apply.ts';
import { listProcs, readSettings, readUsage } from '../../cgroup/reader.ts';
import type {
  CgroupFs,
  CgroupLayout,
  CgroupPath,
  CgroupSettings,
  CgroupUsage,
  DesiredResources,
  WriteResult,
} from '../../cgroup/types.ts';
import type { PodLike, QosClass, Resources } from '../resize/pod.ts';
import type { DesiredContainer } from '../resize/validate.ts';

export const ActuationFailures = {
  notRunning: 'RESIZELET_ERR_CONTAINER_NOT_RUNNING',
  wouldOom: 'RESIZELET_ERR_WOULD_OOM',
  invalid: 'RESIZELET_ERR_INVALID_DESIRED',
  unsafePath: 'RESIZELET_ERR_PATH_UNSAFE',
} as const;

export type Actuation =
  | {
      ok: true;
      results: WriteResult[];
      written: number;
      containerIds: Record<string, string>;
      /** systemd could not be told (systemd driver): the values were written directly only. */
      systemdFallback?: SystemdFallback;
    }
  | { ok: false; code: string; message: string; results: WriteResult[]; systemdFallback?: SystemdFallback };

export interface ActuatorDeps {
  fs: CgroupFs;
  layout: CgroupLayout;
  memoryMargin: MemoryMargin;
  log: ExecutorLog;
  /** For oom_score_adj: writes `<procRoot>/<pid>/oom_score_adj`. */
  writeProcFile(path: string, data: string): Promise<void>;
  procRoot: string;
  /** Sends a signal to a host PID (process.kill); injected so tests can watch it. */
  signal?(pid: number, signal: NodeJS.Signals): void;
  /** Time a container's processes get between SIGTERM and SIGKILL. */
  restartGraceMs?: number;
  /**
   * On systemd-driver nodes: hand every plan to systemd as runtime unit properties before the direct
   * writes, so a `systemctl daemon-reload` keeps the resize (cgroup/systemd-apply.ts). Unset: direct only.
   */
  systemd?: SystemdSync;
}

export function toDesired(r: Resources): DesiredResources {
  return {
    cpuRequestMilli: r.requests.cpu ?? null,
    cpuLimitMilli: r.limits.cpu ?? null,
    memoryRequestBytes: r.requests.memory ?? null,
    memoryLimitBytes: r.limits.memory ?? null,
  };
}

interface Located {
  podPath: CgroupPath;
  containers: Array<{ name: string; path: CgroupPath; id: string }>;
}

/** Finds the running containers' cgroups; a container not (yet) running is a reason to wait, not an error. */
export function locate(
  layout: CgroupLayout,
  pod: PodLike,
  names: string[],
): Located | { error: string; code: string } {
  const qos = (pod.status?.qosClass ?? 'Burstable') as QosClass;
  try {
    const podPath = podCgroupPath(layout, { uid: pod.metadata?.uid ?? '', qos });
    const containers: Located['containers'] = [];
    for (const name of names) {
      const st = pod.status?.containerStatuses?.find((s) => s.name === name);
      if (!st?.containerID || !st.state?.running) {
        return {
          code: ActuationFailures.notRunning,
          error: `container ${JSON.stringify(name)} is not running yet`,
        };
      }
      const ref = parseContainerId(st.containerID);
      containers.push({ name, path: containerCgroupPath(layout, podPath, ref), id: st.containerID });
    }
    return { podPath, containers };
  } catch (err) {
    if (err instanceof PathError) return { code: ActuationFailures.unsafePath, error: err.message };
    throw err;
  }
}

export interface Actuator {
  apply(pod: PodLike, desired: DesiredContainer[]): Promise<Actuation>;
  /**
   * Stops the processes of the named containers (SIGTERM, then SIGKILL after a grace period) so that the
   * kubelet restarts them under the pod's restartPolicy. Returns how many processes were signalled.
   */
  restartContainers(pod: PodLike, names: string[]): Promise<number>;
  /** After a memory request change on a Burstable pod: the kubelet's oom_score_adj for the new request. */
  updateOomScoreAdj(
    pod: PodLike,
    desired: DesiredContainer[],
    memoryCapacityBytes: bigint,
  ): Promise<{ updated: number; refused: Array<{ pid: number; code: string }> }>;
}

export function createActuator(deps: ActuatorDeps): Actuator {
  const { fs, layout } = deps;
  return {
    async apply(pod, desired) {
      const where = locate(
        layout,
        pod,
        desired.map((d) => d.name),
      );
      if ('error' in where) return { ok: false, code: where.code, message: where.error, results: [] };
      let podReading: { settings: CgroupSettings; usage: Pick<CgroupUsage, 'workingSetBytes'> };
      const planContainers: PlanContainer[] = [];
      try {
        // Settings always; usage only where a memory limit comes down (the planner's OOM guard needs the
        // working set there and nowhere else): it halves the file reads of the common resize.
        const readings = await Promise.all(
          [where.podPath, ...where.containers.map((c) => c.path)].map((p) => readSettings(fs, layout, p)),
        );
        const desiredPodMemory = desired.every((d) => d.resources.limits.memory !== undefined)
          ? desired.reduce((sum, d) => sum + (d.resources.limits.memory ?? 0n), 0n)
          : null;
        const shrinks = (current: bigint | null, next: bigint | null): boolean =>
          next !== null && (current === null || next < current);
        const usageOf = async (p: CgroupPath, shrinking: boolean) =>
          shrinking ? await readUsage(fs, layout, p) : { workingSetBytes: 0n };
        podReading = {
          settings: readings[0]!,
          usage: await usageOf(where.podPath, shrinks(readings[0]!.memoryLimitBytes, desiredPodMemory)),
        };
        for (const [i, c] of where.containers.entries()) {
          const settings = readings[i + 1]!;
          const want = toDesired(desired[i]!.resources);
          planContainers.push({
            name: c.name,
            path: c.path,
            current: settings,
            usage: await usageOf(c.path, shrinks(settings.memoryLimitBytes, want.memoryLimitBytes)),
            desired: want,
          });
        }
      } catch (err) {
        const e = err as { code?: string; message: string };
        return { ok: false, code: e.code ?? 'RESIZELET_ERR_CGROUP_IO', message: e.message, results: [] };
      }
      const plan = planResize({
        versions: {
          cpu: layout.controllers.cpu.version,
          cpuacct: layout.controllers.cpuacct.version,
          memory: layout.controllers.memory.version,
        },
        weightFormula: layout.weightFormula,
        pod: { path: where.podPath, current: podReading.settings, usage: podReading.usage },
        containers: planContainers,
        memoryMargin: deps.memoryMargin,
      });
      if (!plan.ok) return { ok: false, code: plan.code, message: plan.message, results: [] };
      const systemd = layout.driver === 'systemd' ? deps.systemd : undefined;
      const sync = systemd && {
        podUid: pod.metadata?.uid ?? '',
        plan,
        cgroups: [
          { path: where.podPath, settings: podReading.settings },
          ...planContainers.map((c) => ({ path: c.path, settings: c.current })),
        ],
      };
      const viaSystemd = sync && (await systemd.before(sync));
      const exec = await executePlan({ fs, layout, plan, log: deps.log, alsoAccept: viaSystemd?.alsoAccept });
      if (sync && viaSystemd) await systemd.after({ ...sync, outcome: viaSystemd, execution: exec });
      const fallback = viaSystemd?.fallback ? { systemdFallback: viaSystemd.fallback } : {};
      if (!exec.ok) {
        return {
          ok: false,
          code: exec.error?.code ?? 'RESIZELET_ERR_CGROUP_IO',
          message: exec.error?.message ?? 'a cgroup write failed',
          results: exec.results,
          ...fallback,
        };
      }
      const written = exec.results.filter((r) => r.status === 'written').length;
      return {
        ok: true,
        results: exec.results,
        written,
        containerIds: Object.fromEntries(where.containers.map((c) => [c.name, c.id])),
        ...fallback,
      };
    },

    async restartContainers(pod, names) {
      const where = locate(layout, pod, names);
      if ('error' in where) return 0;
      const signal = deps.signal ?? ((pid: number, sig: NodeJS.Signals) => process.kill(pid, sig));
      let signalled = 0;
      for (const c of where.containers) {
        const pids = await listProcs(fs, layout, c.path).catch(() => [] as number[]);
        for (const pid of pids) {
          try {
            signal(pid, 'SIGTERM');
            signalled++;
          } catch {
            // Already gone.
          }
        }
        // Whatever is still in the container's cgroup after the grace period gets SIGKILL. Re-reading
        // cgroup.procs (rather than reusing the PID list) never signals a PID the kernel has reused.
        const timer = setTimeout(() => {
          void listProcs(fs, layout, c.path)
            .then((left) => {
              for (const pid of left) {
                try {
                  signal(pid, 'SIGKILL');
                } catch {
                  // Already gone.
                }
              }
            })
            .catch(() => undefined);
        }, deps.restartGraceMs ?? 10_000);
        timer.unref?.();
      }
      return signalled;
    },

    async updateOomScoreAdj(pod, desired, memoryCapacityBytes) {
      const refused: Array<{ pid: number; code: string }> = [];
      let updated = 0;
      if (pod.status?.qosClass !== 'Burstable') return { updated, refused };
      const where = locate(
        layout,
        pod,
        desired.map((d) => d.name),
      );
      if ('error' in where) return { updated, refused };
      for (const [i, c] of where.containers.entries()) {
        const request = desired[i]!.resources.requests.memory ?? 0n;
        const adj = burstableOomScoreAdj(request, memoryCapacityBytes);
        let pids: number[];
        try {
          pids = await listProcs(fs, layout, c.path);
        } catch {
          continue;
        }
        for (const pid of pids) {
          try {
            await deps.writeProcFile(`${deps.procRoot}/${pid}/oom_score_adj`, String(adj));
            updated++;
          } catch (err) {
            // Lowering oom_score_adj needs CAP_SYS_RESOURCE; without it the kernel answers EACCES. The
            // resize stands either way: this only changes who the OOM killer picks first.
            refused.push({ pid, code: (err as NodeJS.ErrnoException).code ?? 'EIO' });
          }
        }
      }
      return { updated, refused };
    },
  };
}
