// Whether a pod's live cgroups hold an allocation: the proof the reconciler asks for before it adopts an
// allocation that a status annotation claims and the checkpoint does not know (after a lost or corrupt
// checkpoint). The annotation is writable by anyone who can edit the pod; the cgroups are not. Read-only:
// the resize is planned and must come out empty, since the planner writes only what differs and an applied
// allocation therefore plans to nothing.
import { planResize } from '../../cgroup/planner.ts';
import { readSettings } from '../../cgroup/reader.ts';
import type { CgroupFs, CgroupLayout } from '../../cgroup/types.ts';
import type { PodLike } from '../resize/pod.ts';
import type { DesiredContainer } from '../resize/validate.ts';
import { ActuationFailures, locate, toDesired } from './actuator.ts';

export type Verification = 'holds' | 'differs' | 'unknown';

export function createAllocationVerifier(deps: {
  fs: CgroupFs;
  layout: CgroupLayout;
}): (pod: PodLike, desired: DesiredContainer[]) => Promise<Verification> {
  const { fs, layout } = deps;
  return async (pod, desired) => {
    const where = locate(
      layout,
      pod,
      desired.map((d) => d.name),
    );
    // A container not running yet proves nothing either way: ask again later.
    if ('error' in where) return where.code === ActuationFailures.notRunning ? 'unknown' : 'differs';
    try {
      const paths = [where.podPath, ...where.containers.map((c) => c.path)];
      const [podSettings, ...settings] = await Promise.all(paths.map((p) => readSettings(fs, layout, p)));
      const none = { workingSetBytes: 0n };
      const plan = planResize({
        versions: {
          cpu: layout.controllers.cpu.version,
          cpuacct: layout.controllers.cpuacct.version,
          memory: layout.controllers.memory.version,
        },
        weightFormula: layout.weightFormula,
        pod: { path: where.podPath, current: podSettings!, usage: none },
        containers: where.containers.map((c, i) => ({
          name: c.name,
          path: c.path,
          current: settings[i]!,
          usage: none,
          desired: toDesired(desired[i]!.resources),
        })),
      });
      return plan.ok && plan.writes.length === 0 ? 'holds' : 'differs';
    } catch {
      // Unreadable (a cgroup just removed by a restart): no proof yet.
      return 'unknown';
    }
  };
}
