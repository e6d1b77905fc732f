// Which shares->weight formula the node applies on cgroup v2: live `cpu.weight` values compared with what
// each formula makes of the pods' CPU requests, at the pod level and the container level.
import { sharesFromMillicores, weightFromShares } from './convert.ts';
import type { DetectOptions, PodLike } from './detect-types.ts';
import { absolutePath, containerCgroupPath, parseContainerId, podCgroupPath } from './paths.ts';
import { QosClasses } from './types.ts';
import type { CgroupFs, CgroupLayout, QosClass, WeightFormula } from './types.ts';
import { parseCpuMillicores } from '../agent/resize/quantity.ts';

/** CPU quantity -> millicores: "250m", "1", "0.5" (rounded up to whole millicores); null if unset or odd. */
export function parseCpuMilli(q: string | number | undefined): number | null {
  if (q === undefined) return null;
  try {
    return parseCpuMillicores(String(q));
  } catch {
    // Detection only gathers evidence: a value it cannot read is no evidence, not an error.
    return null;
  }
}

interface WeightEvidence {
  linear: string[];
  quadratic: string[];
  inconclusive: number;
  unexplained: string[];
}

const QOS_OF = Object.fromEntries(QosClasses.map((q) => [q, q])) as Record<string, QosClass>;

async function readWeight(fs: CgroupFs, layout: CgroupLayout, path: string): Promise<number | null> {
  try {
    const t = (await fs.readFile(absolutePath(layout, 'cpu', path, 'cpu.weight'), 'utf8')).trim();
    return /^\d+$/.test(t) ? Number(t) : null;
  } catch {
    return null;
  }
}

function vote(ev: WeightEvidence, what: string, milli: number, live: number): void {
  const shares = sharesFromMillicores(milli);
  const lin = weightFromShares(shares, 'linear');
  const quad = weightFromShares(shares, 'quadratic');
  if (live === lin && live === quad) ev.inconclusive++;
  else if (live === lin) ev.linear.push(`${what} ${milli}m -> weight ${live}`);
  else if (live === quad) ev.quadratic.push(`${what} ${milli}m -> weight ${live}`);
  else ev.unexplained.push(`${what} ${milli}m has weight ${live} (linear ${lin}, quadratic ${quad})`);
}

/** Which formula turned requests into the live weights, per level: the pod level is the kubelet's, the
 * container level the OCI runtime's, and the two can differ (kubelet linear + runc >= 1.3 quadratic). */
async function gatherWeightEvidence(
  fs: CgroupFs,
  layout: CgroupLayout,
  pods: readonly PodLike[],
): Promise<{ pod: WeightEvidence; container: WeightEvidence; notes: string[] }> {
  const empty = (): WeightEvidence => ({ linear: [], quadratic: [], inconclusive: 0, unexplained: [] });
  const pod = empty();
  const container = empty();
  const notes: string[] = [];
  for (const p of pods) {
    const uid = p.metadata?.uid;
    const qos = QOS_OF[p.status?.qosClass ?? ''];
    if (uid === undefined || qos === undefined) continue;
    let podPath: string;
    try {
      podPath = podCgroupPath(layout, { uid, qos });
    } catch {
      continue;
    }
    const requests = new Map(
      (p.spec?.containers ?? []).map((c) => [c.name, parseCpuMilli(c.resources?.requests?.cpu)]),
    );
    let podMilli = 0;
    for (const [, m] of requests) podMilli += m ?? 0;
    const podWeight = await readWeight(fs, layout, podPath);
    if (podWeight !== null) vote(pod, `pod ${p.metadata?.name ?? uid}`, podMilli, podWeight);
    for (const st of p.status?.containerStatuses ?? []) {
      const milli = requests.get(st.name);
      if (milli === null || milli === undefined || !st.containerID) continue;
      let path: string;
      try {
        path = containerCgroupPath(layout, podPath, parseContainerId(st.containerID));
      } catch {
        continue;
      }
      const w = await readWeight(fs, layout, path);
      if (w === null)
        notes.push(`weight: no cpu.weight for ${p.metadata?.name ?? uid}/${st.name} at ${path}`);
      else vote(container, `container ${p.metadata?.name ?? uid}/${st.name}`, milli, w);
    }
  }
  return { pod, container, notes };
}

function verdict(ev: WeightEvidence): WeightFormula | 'conflict' | null {
  if (ev.linear.length > 0 && ev.quadratic.length > 0) return 'conflict';
  if (ev.linear.length > 0) return 'linear';
  if (ev.quadratic.length > 0) return 'quadratic';
  return null;
}

export async function detectWeightFormula(
  opts: DetectOptions,
  layout: CgroupLayout,
  notes: string[],
  conflicts: string[],
): Promise<WeightFormula> {
  const fallback = opts.defaults?.weightFormula ?? 'linear';
  if (opts.overrides?.weightFormula !== undefined) {
    notes.push(`weight formula ${opts.overrides.weightFormula}: from configuration`);
    return opts.overrides.weightFormula;
  }
  if (layout.controllers.cpu.version === 'v1') {
    notes.push(`weight formula ${fallback}: irrelevant on cgroup v1 (cpu.shares is written as is)`);
    return fallback;
  }
  if (!opts.pods || opts.pods.length === 0) {
    notes.push(`weight formula ${fallback}: no pods to compare live cpu.weight against; configured default`);
    return fallback;
  }
  const ev = await gatherWeightEvidence(opts.fs, layout, opts.pods);
  notes.push(...ev.notes);
  for (const u of [...ev.container.unexplained, ...ev.pod.unexplained]) {
    notes.push(`weight: ${u}: fits neither formula (resized by hand?), ignored`);
  }
  const c = verdict(ev.container);
  const p = verdict(ev.pod);
  const describe = (e: WeightEvidence): string =>
    `${[...e.linear.map((s) => `${s} (linear)`), ...e.quadratic.map((s) => `${s} (quadratic)`)].join('; ')}`;
  if (c === 'conflict' || p === 'conflict') {
    conflicts.push(
      `cpu.weight values fit both formulas on this node: ${describe(c === 'conflict' ? ev.container : ev.pod)}; ` +
        `using configured ${fallback}, set weightFormula explicitly`,
    );
    return fallback;
  }
  if (c !== null && p !== null && c !== p) {
    conflicts.push(
      `the kubelet's pod-level weights are ${p} (${describe(ev.pod)}) but the runtime's container-level ` +
        `weights are ${c} (${describe(ev.container)}): the kubelet's vendored cgroup library and the runc ` +
        `binary differ in version; using configured ${fallback}, set weightFormula explicitly`,
    );
    return fallback;
  }
  const formula = c ?? p;
  if (formula === null) {
    notes.push(
      `weight formula ${fallback}: ${ev.container.inconclusive + ev.pod.inconclusive} weights agree with both ` +
        'formulas (e.g. 2 shares -> weight 1); configured default',
    );
    return fallback;
  }
  notes.push(`weight formula ${formula}: ${describe(c !== null ? ev.container : ev.pod)}`);
  return formula;
}
