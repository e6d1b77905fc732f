// Which container runtime names the node's container cgroups: from the pods' containerID schemes, else
// from the directory names inside pod cgroups, else the configured default.
import { exists } from './detect-hierarchy.ts';
import type { DetectOptions } from './detect-types.ts';
import { classifyChildDir, parseContainerId, PathError } from './paths.ts';
import type { CgroupFs, CgroupLayout, ContainerRuntime } from './types.ts';

/** Paths of the pod cgroup directories under the pods root, in every QoS class (for runtime detection by name). */
async function listPodDirs(fs: CgroupFs, base: string): Promise<string[]> {
  const out: string[] = [];
  const walk = async (dir: string, depth: number): Promise<void> => {
    let names: string[];
    try {
      names = await fs.readdir(dir);
    } catch {
      return;
    }
    for (const name of names) {
      const p = `${dir}/${name}`;
      if (!(await exists(fs, p))) continue;
      if (/(?:^|-)pod[0-9a-f_-]+(?:\.slice)?$/.test(name)) out.push(p);
      else if (depth === 0) await walk(p, 1);
    }
  };
  await walk(base, 0);
  return out;
}

export async function detectRuntime(
  opts: DetectOptions,
  layout: Omit<CgroupLayout, 'runtime' | 'weightFormula'>,
  notes: string[],
  conflicts: string[],
): Promise<ContainerRuntime> {
  const fallback = opts.defaults?.runtime ?? 'containerd';
  if (opts.overrides?.runtime !== undefined) {
    notes.push(`runtime ${opts.overrides.runtime}: from configuration`);
    return opts.overrides.runtime;
  }
  const fromPods = new Map<ContainerRuntime, number>();
  for (const pod of opts.pods ?? []) {
    for (const st of pod.status?.containerStatuses ?? []) {
      if (!st.containerID) continue;
      try {
        const { runtime } = parseContainerId(st.containerID);
        fromPods.set(runtime, (fromPods.get(runtime) ?? 0) + 1);
      } catch (err) {
        if (!(err instanceof PathError)) throw err;
        notes.push(`ignored container ID of ${pod.metadata?.name ?? '?'}/${st.name}: ${err.message}`);
      }
    }
  }
  if (fromPods.size === 1) {
    const [[runtime, n]] = [...fromPods] as [[ContainerRuntime, number]];
    notes.push(`runtime ${runtime}: ${n} containerStatuses[].containerID use the ${runtime} scheme`);
    return runtime;
  }
  if (fromPods.size > 1) {
    const seen = [...fromPods]
      .sort(([a], [b]) => a.localeCompare(b))
      .map(([r, n]) => `${r} x${n}`)
      .join(', ');
    conflicts.push(`pods on this node report several runtimes (${seen}); using ${fallback}`);
    return fallback;
  }
  // No pods: look at what directories the runtime made inside pod cgroups.
  const counts = new Map<string, number>();
  for (const podDir of await listPodDirs(opts.fs, `${layout.controllers.cpu.mount}/${layout.podsRoot}`)) {
    for (const name of await opts.fs.readdir(podDir).catch(() => [] as string[])) {
      const child = classifyChildDir(layout.driver, name);
      if (child?.kind === 'container') {
        const key = [...child.runtimes].sort().join('|');
        counts.set(key, (counts.get(key) ?? 0) + 1);
      }
    }
  }
  const kinds = [...counts.keys()];
  const [single] = kinds;
  if (kinds.length === 1 && single !== undefined && !single.includes('|')) {
    notes.push(`runtime ${single}: ${counts.get(single)} container cgroups named the ${single} way`);
    return single as ContainerRuntime;
  }
  if (kinds.length === 0) {
    notes.push(`runtime ${fallback}: no pods or container cgroups to tell from; configured default`);
  } else {
    notes.push(
      `runtime ${fallback}: container directory names fit ${kinds.join(' / ')} (containerd and Docker name ` +
        'them alike under cgroupfs); configured default',
    );
  }
  return fallback;
}
