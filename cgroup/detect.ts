// Works out a node's CgroupLayout from what the node shows: /proc/self/mountinfo says which hierarchy
// holds each controller, the pods root's name says which driver the kubelet uses, container IDs or directory
// names say which runtime, and live `cpu.weight` values say which shares->weight map the runtime applies.
// Every field can be forced by configuration; every conclusion is explained in `notes`.
//
// `parseMountinfo` and `controllersFromMounts` are pure; `detectLayout` reads through the CgroupFs port.
import { sharesFromMillicores, weightFromShares } from './convert.ts';
import {
  absolutePath,
  classifyChildDir,
  containerCgroupPath,
  DEFAULT_PODS_ROOT,
  parseContainerId,
  PathError,
  podCgroupPath,
} from './paths.ts';
import { Controllers, QosClasses } from './types.ts';
import type {
  CgroupDriver,
  CgroupFs,
  CgroupLayout,
  ContainerRuntime,
  Controller,
  ControllerMount,
  QosClass,
  WeightFormula,
} from './types.ts';
import { parseCpuMillicores } from '../agent/resize/quantity.ts';

export const DetectErrorCodes = {
  NO_CONTROLLER: 'RESIZELET_ERR_DETECT_NO_CONTROLLER',
  NO_PODS_ROOT: 'RESIZELET_ERR_DETECT_NO_PODS_ROOT',
  CONFLICT: 'RESIZELET_ERR_DETECT_CONFLICT',
} as const;
export type DetectErrorCode = (typeof DetectErrorCodes)[keyof typeof DetectErrorCodes];

export class DetectError extends Error {
  override readonly name = 'DetectError';
  constructor(
    readonly code: DetectErrorCode,
    message: string,
  ) {
    super(message);
  }
}

/** Resource quantities as the API returns them ("250m", "64Mi"); numbers are accepted for CPU cores. */
export type Quantities = Record<string, string | number | undefined>;

/** The fields of a Kubernetes pod detection looks at; a `V1Pod` from @kubernetes/client-node fits. */
export interface PodLike {
  metadata?: { uid?: string; name?: string; namespace?: string };
  spec?: {
    containers?: {
      name: string;
      resources?: { requests?: Quantities; limits?: Quantities };
    }[];
  };
  status?: { qosClass?: string; containerStatuses?: { name: string; containerID?: string }[] };
}

/** One mount of a cgroup filesystem, from a mountinfo line. */
export interface CgroupMountEntry {
  version: 'v1' | 'v2';
  mount: string;
  /** The hierarchy directory shown at the mount point; not `/` inside a cgroup namespace or a bind mount. */
  root: string;
  /** v1: the controllers named in the super options (ours and others, e.g. `name=systemd` excluded). */
  controllers: string[];
}

export interface ParsedMountinfo {
  /** v1 hierarchies by controller, for the controllers resizelet uses. */
  v1: Partial<Record<Controller, CgroupMountEntry>>;
  /** The cgroup2 mount, if any. */
  v2: CgroupMountEntry | null;
  notes: string[];
}

/** mountinfo escapes space, tab, newline and backslash in paths as octal (`\040`). */
const unescapeMountPath = (s: string): string =>
  s.replace(/\\([0-7]{3})/g, (_m, oct: string) => String.fromCharCode(parseInt(oct, 8)));

/**
 * Parse /proc/self/mountinfo (proc(5)): `id parent maj:min root mountpoint opts [optional...] - fstype source
 * superopts`. A v1 `cgroup` mount's super options name its controllers (`rw,cpu,cpuacct`); which
 * controllers a `cgroup2` mount owns is not in mountinfo at all (see `controllersFromMounts`).
 */
export function parseMountinfo(text: string): ParsedMountinfo {
  const out: ParsedMountinfo = { v1: {}, v2: null, notes: [] };
  for (const line of text.split('\n')) {
    const fields = line.trim().split(' ');
    const dash = fields.indexOf('-');
    if (dash < 6) continue;
    const [fstype, , superOpts = ''] = fields.slice(dash + 1);
    const root = unescapeMountPath(fields[3] ?? '');
    const mount = unescapeMountPath(fields[4] ?? '');
    if (fstype === 'cgroup2') {
      const entry: CgroupMountEntry = { version: 'v2', mount, root, controllers: [] };
      // The same hierarchy can be mounted twice (a bind mount into a container); the first one with the
      // whole hierarchy visible wins.
      if (out.v2 === null || (out.v2.root !== '/' && root === '/')) out.v2 = entry;
      else out.notes.push(`ignored a second cgroup2 mount at ${mount}`);
    } else if (fstype === 'cgroup') {
      const controllers = superOpts.split(',').filter((o) => !o.includes('=') && o !== 'rw' && o !== 'ro');
      const entry: CgroupMountEntry = { version: 'v1', mount, root, controllers };
      for (const c of Controllers) {
        if (!controllers.includes(c)) continue;
        const prev = out.v1[c];
        if (prev === undefined || (prev.root !== '/' && root === '/')) out.v1[c] = entry;
      }
    }
  }
  return out;
}

/**
 * Which hierarchy holds each controller. A controller bound to a v1 hierarchy cannot also be on v2 (the kernel
 * binds each controller to one hierarchy), so v1 wins; otherwise a controller is on v2 only if the v2 root's
 * `cgroup.controllers` lists it — a hybrid host mounts an empty-ish v2 tree next to the v1 ones. v2 has no
 * cpuacct controller: CPU usage is in the core `cpu.stat` of every v2 cgroup, so cpuacct maps to the v2
 * mount whenever no v1 hierarchy has it.
 */
export function controllersFromMounts(
  parsed: ParsedMountinfo,
  v2Controllers: readonly string[],
): { controllers: Partial<Record<Controller, ControllerMount>>; notes: string[] } {
  const controllers: Partial<Record<Controller, ControllerMount>> = {};
  const notes: string[] = [];
  for (const c of Controllers) {
    const v1 = parsed.v1[c];
    if (v1 !== undefined) {
      controllers[c] = { version: 'v1', mount: v1.mount };
      notes.push(`${c}: cgroup v1 at ${v1.mount} (mountinfo super options ${v1.controllers.join(',')})`);
      if (v1.root !== '/') notes.push(`${c}: the v1 mount shows only ${v1.root} of its hierarchy`);
    } else if (parsed.v2 !== null && (v2Controllers.includes(c) || c === 'cpuacct')) {
      controllers[c] = { version: 'v2', mount: parsed.v2.mount };
      notes.push(
        c === 'cpuacct'
          ? `cpuacct: no v1 hierarchy; usage read from the v2 cpu.stat at ${parsed.v2.mount}`
          : `${c}: cgroup v2 at ${parsed.v2.mount} (listed in its cgroup.controllers)`,
      );
    }
  }
  return { controllers, notes };
}

export interface DetectOptions {
  fs: CgroupFs;
  /** The text of /proc/self/mountinfo. */
  mountinfo: string;
  /** Configured values; each one replaces detection of that field. */
  overrides?: Partial<CgroupLayout>;
  /** Used when the node offers no evidence (no pods yet, v1 weights). Default: containerd, linear. */
  defaults?: { runtime?: ContainerRuntime; weightFormula?: WeightFormula };
  /** Pods on this node, for the runtime (containerID schemes) and the weight formula (CPU requests). */
  pods?: readonly PodLike[];
}

export interface DetectResult {
  layout: CgroupLayout;
  /** Human-readable: what was detected from what. */
  notes: string[];
  /**
   * Contradicting evidence that detection did not resolve (e.g. pods whose weights fit different formulas).
   * The layout then holds the configured default; callers should surface these loudly.
   */
  conflicts: string[];
}

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

const exists = async (fs: CgroupFs, path: string): Promise<boolean> => {
  try {
    return (await fs.lstat(path)).isDirectory();
  } catch {
    return false;
  }
};

async function detectControllers(opts: DetectOptions, notes: string[]): Promise<CgroupLayout['controllers']> {
  if (opts.overrides?.controllers !== undefined) {
    notes.push('controllers: from configuration');
    return opts.overrides.controllers;
  }
  const parsed = parseMountinfo(opts.mountinfo);
  notes.push(...parsed.notes);
  let v2Controllers: string[] = [];
  if (parsed.v2 !== null) {
    try {
      const text = await opts.fs.readFile(`${parsed.v2.mount}/cgroup.controllers`, 'utf8');
      v2Controllers = text.trim().split(/\s+/).filter(Boolean);
      notes.push(
        `cgroup v2 mount ${parsed.v2.mount} lists controllers: ${v2Controllers.join(' ') || '(none)'}`,
      );
    } catch (err) {
      notes.push(
        `cannot read ${parsed.v2.mount}/cgroup.controllers (${(err as Error).message}); assuming none`,
      );
    }
  }
  const found = controllersFromMounts(parsed, v2Controllers);
  notes.push(...found.notes);
  const missing = Controllers.filter((c) => found.controllers[c] === undefined);
  if (missing.length > 0) {
    throw new DetectError(
      DetectErrorCodes.NO_CONTROLLER,
      `no cgroup hierarchy holds ${missing.join(', ')} (mountinfo has v1 ${Object.keys(parsed.v1).join(',') || 'none'}` +
        `${parsed.v2 ? `, v2 at ${parsed.v2.mount} with ${v2Controllers.join(' ') || 'no controllers'}` : ', no v2'})`,
    );
  }
  return found.controllers as CgroupLayout['controllers'];
}

async function detectDriverAndRoot(
  fs: CgroupFs,
  controllers: CgroupLayout['controllers'],
  overrides: Partial<CgroupLayout>,
  notes: string[],
): Promise<{ driver: CgroupDriver; podsRoot: string }> {
  const mounts = [...new Set([controllers.memory.mount, controllers.cpu.mount])];
  const look = async (root: string): Promise<string | null> => {
    for (const m of mounts) if (await exists(fs, `${m}/${root}`)) return `${m}/${root}`;
    return null;
  };
  const driverOf = (root: string): CgroupDriver => (root.endsWith('.slice') ? 'systemd' : 'cgroupfs');
  if (overrides.podsRoot !== undefined) {
    const driver = overrides.driver ?? driverOf(overrides.podsRoot);
    const where = await look(overrides.podsRoot);
    notes.push(
      `pods root ${overrides.podsRoot}: from configuration (${where ? `found at ${where}` : 'not present yet'}); ` +
        `driver ${driver} ${overrides.driver ? 'from configuration' : 'from its name'}`,
    );
    return { driver, podsRoot: overrides.podsRoot };
  }
  const candidates = (overrides.driver ? [overrides.driver] : (['systemd', 'cgroupfs'] as const)).map(
    (d) => ({
      driver: d,
      root: DEFAULT_PODS_ROOT[d],
    }),
  );
  const present: { driver: CgroupDriver; root: string; where: string }[] = [];
  for (const c of candidates) {
    const where = await look(c.root);
    if (where !== null) present.push({ ...c, where });
  }
  const [only, second] = present;
  if (only === undefined) {
    throw new DetectError(
      DetectErrorCodes.NO_PODS_ROOT,
      `none of ${candidates.map((c) => c.root).join(', ')} exists under ${mounts.join(' or ')}: is the kubelet ` +
        'running with --cgroups-per-qos, or does it use a --cgroup-root that must be configured as podsRoot?',
    );
  }
  if (second !== undefined) {
    throw new DetectError(
      DetectErrorCodes.CONFLICT,
      `both ${only.where} and ${second.where} exist; configure the cgroup driver (or podsRoot) explicitly`,
    );
  }
  notes.push(
    `driver ${only.driver}: ${only.where} exists${overrides.driver ? ' (driver from configuration)' : ''}`,
  );
  return { driver: only.driver, podsRoot: only.root };
}

/** Pod cgroup directories under the pods root, with the QoS each sits in (for runtime detection by name). */
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

async function detectRuntime(
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

async function detectWeightFormula(
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

/** Detect the node's layout; see the module comment. Throws DetectError when a required fact is missing. */
export async function detectLayout(opts: DetectOptions): Promise<DetectResult> {
  const notes: string[] = [];
  const conflicts: string[] = [];
  const overrides = opts.overrides ?? {};
  const controllers = await detectControllers(opts, notes);
  const { driver, podsRoot } = await detectDriverAndRoot(opts.fs, controllers, overrides, notes);
  const partial = { controllers, driver, podsRoot };
  const runtime = await detectRuntime(opts, partial, notes, conflicts);
  const draft: CgroupLayout = {
    ...partial,
    runtime,
    weightFormula: opts.defaults?.weightFormula ?? 'linear',
  };
  const weightFormula = await detectWeightFormula(opts, draft, notes, conflicts);
  return { layout: { ...draft, weightFormula }, notes, conflicts };
}
