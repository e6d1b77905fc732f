// Pure resize planning: (observed cgroups, desired resources) -> an ordered list of file writes, or a typed
// refusal. No I/O, no clock: the executor applies what this returns.
//
// Values follow the kubelet (pkg/kubelet/cm/helpers_linux.go ResourceConfigForPod for the pod level, the
// runtime's conversions for containers) so that planning an unchanged pod yields no writes on a pod the
// kubelet created. The order follows the kubelet's in-place resize (doPodResizeAction), made stricter: per
// resource, raise the pod, shrink containers, lower the pod, grow containers.
import {
  MIN_SHARES,
  memoryLimitValue,
  quotaFromMillicores,
  sharesFromMillicores,
  weightFromShares,
} from './convert.ts';
import { PlanRefusalCodes, type PlanRefusal } from './types.ts';
import { SETTING_FILES, sameSettingValue, type SettingFile, type SettingKey } from './resources.ts';
import type {
  CgroupPath,
  CgroupSettings,
  CgroupUsage,
  CgroupVersion,
  CgroupWrite,
  Controller,
  DesiredResources,
  Plan,
  WeightFormula,
} from './types.ts';

/** Headroom a lowered memory limit must leave above the working set: the larger of a floor and a fraction. */
export interface MemoryMargin {
  bytes: bigint;
  /** Of the current working set, e.g. 0.05. */
  fraction: number;
}

export const DEFAULT_MEMORY_MARGIN: MemoryMargin = Object.freeze({
  bytes: 8n * 1024n * 1024n,
  fraction: 0.05,
});

export interface PlanContainer {
  name: string;
  path: CgroupPath;
  current: CgroupSettings;
  usage: Pick<CgroupUsage, 'workingSetBytes'>;
  /** Unchanged containers pass their current desired resources: the pod level is computed from all of them. */
  desired: DesiredResources;
}

export interface PlanInput {
  /** The cgroup version of each controller (from the layout: a hybrid node can mix them). */
  versions: Record<Controller, CgroupVersion>;
  weightFormula: WeightFormula;
  pod: { path: CgroupPath; current: CgroupSettings; usage: Pick<CgroupUsage, 'workingSetBytes'> };
  /** Every app container of the pod (not the sandbox, not completed init containers). */
  containers: PlanContainer[];
  /** RuntimeClass overhead, added to the pod's sums as the kubelet does. */
  overhead?: { cpuMilli?: number; memoryBytes?: bigint };
  memoryMargin?: MemoryMargin;
}

/** A refusal with the numbers behind it, for the status annotation and logs. */
export interface PlannerRefusal extends PlanRefusal {
  detail?: { level: 'pod' | 'container'; workingSetBytes: bigint; marginBytes: bigint; limitBytes: bigint };
}

/** The rule behind each position in a plan; written into `CgroupWrite.reason`. */
export const PlanReasons = {
  podRaise: 'pod total grows: raise the pod before any container grows into it',
  containerDecrease: 'container shrinks before the pod is lowered, so the pod never drops below a child',
  podLower: 'pod total shrinks: lower the pod once its containers have shrunk',
  containerIncrease: 'container grows after the pod has made room',
  // v1 refuses memory.limit_in_bytes above memory.memsw.limit_in_bytes (and memsw below the limit) with EINVAL.
  memswFirst: 'v1: raise memsw before the limit (a limit above memsw is EINVAL)',
  limitFirst: 'v1: lower the limit before memsw (memsw below the limit is EINVAL)',
} as const;

/** The settings of one phase, in the order they are written within a cgroup when growing. */
const PHASES: readonly (readonly SettingKey[])[] = [
  // Memory first, as the kubelet: freeing memory is the step that can fail (EBUSY), and CPU changes are
  // harmless to retry after it.
  ['memswLimit', 'memoryLimit'],
  ['cpuQuota', 'cpuShares'],
];

const CONTROLLER_OF: Record<SettingKey, Controller> = {
  memswLimit: 'memory',
  memoryLimit: 'memory',
  cpuQuota: 'cpu',
  cpuShares: 'cpu',
};

/** A setting that differs between current and target, not yet placed. */
interface Change {
  level: 'pod' | 'container';
  container?: string;
  path: CgroupPath;
  file: SettingFile;
  value: string;
  previous: string;
  direction: 'up' | 'down';
}

export function planResize(input: PlanInput): Plan | PlannerRefusal {
  const invalid = validate(input);
  if (invalid) return invalid;

  const podCurrent = input.pod.current;
  const containerTargets = input.containers.map((c) => ({ c, target: containerTarget(c) }));
  const podTarget = podTargetOf(input, podCurrent);

  const margin = input.memoryMargin ?? DEFAULT_MEMORY_MARGIN;
  for (const { c, target } of containerTargets) {
    const oom = wouldOom('container', c.name, c.current, target, c.usage.workingSetBytes, margin);
    if (oom) return oom;
  }
  const podOom = wouldOom('pod', undefined, podCurrent, podTarget, input.pod.usage.workingSetBytes, margin);
  if (podOom) return podOom;

  const writes: CgroupWrite[] = [];
  for (const keys of PHASES) {
    const pod = changesOf(input, 'pod', undefined, input.pod.path, podCurrent, podTarget, keys);
    const containers = containerTargets.map(({ c, target }) =>
      changesOf(input, 'container', c.name, c.path, c.current, target, keys),
    );
    // Step order within a phase. A shrinking container goes before a growing one so that two containers
    // trading resources never exceed the pod between their writes.
    place(writes, pod, 'up', PlanReasons.podRaise);
    for (const cs of containers) place(writes, cs, 'down', PlanReasons.containerDecrease);
    place(writes, pod, 'down', PlanReasons.podLower);
    for (const cs of containers) place(writes, cs, 'up', PlanReasons.containerIncrease);
  }
  return { ok: true, writes };
}

function place(writes: CgroupWrite[], changes: Change[], direction: 'up' | 'down', reason: string): void {
  // `changes` is in growing order (memsw before limit); shrinking walks it backwards (limit before memsw).
  const selected = changes.filter((ch) => ch.direction === direction);
  if (direction === 'down') selected.reverse();
  const keys = new Set(selected.map((ch) => ch.file.key));
  const memoryPair = keys.has('memswLimit') && keys.has('memoryLimit');
  for (const ch of selected) {
    const isMemoryPair = memoryPair && (ch.file.key === 'memswLimit' || ch.file.key === 'memoryLimit');
    const within = direction === 'up' ? PlanReasons.memswFirst : PlanReasons.limitFirst;
    writes.push({
      level: ch.level,
      ...(ch.container === undefined ? {} : { container: ch.container }),
      path: ch.path,
      controller: ch.file.controller,
      file: ch.file.file,
      value: ch.value,
      previous: ch.previous,
      reason: isMemoryPair ? `${reason}; ${within}` : reason,
    });
  }
}

function changesOf(
  input: PlanInput,
  level: 'pod' | 'container',
  container: string | undefined,
  path: CgroupPath,
  current: CgroupSettings,
  target: CgroupSettings,
  keys: readonly SettingKey[],
): Change[] {
  const ctx = { weightFormula: input.weightFormula };
  const out: Change[] = [];
  for (const key of keys) {
    const version = input.versions[CONTROLLER_OF[key]];
    const file = SETTING_FILES[version].find((f) => f.key === key && !f.readOnly);
    if (!file) continue; // e.g. memsw on v2: no such file in that version's table
    if (key === 'memswLimit' && (level === 'pod' || current.memswLimitBytes === undefined)) continue;
    const value = file.format(target, ctx);
    const previous = previousText(version, key, file, current, ctx);
    // Compare in the file's own units: strings as the kernel would normalize them (page rounding), and on
    // v2 weights of one formula, never shares converted through two.
    if (sameSettingValue(file, value, previous)) continue;
    const cmp = compareUnlimitedHigh(
      magnitude(version, key, target, input.weightFormula),
      magnitude(version, key, current, input.weightFormula),
    );
    out.push({ level, container, path, file, value, previous, direction: cmp < 0 ? 'down' : 'up' });
  }
  return out;
}

/** The file's current text. On v2 the raw `cpu.weight` read, when known: a weight->shares->weight round trip can drift. */
function previousText(
  version: CgroupVersion,
  key: SettingKey,
  file: SettingFile,
  current: CgroupSettings,
  ctx: { weightFormula: WeightFormula },
): string {
  if (version === 'v2' && key === 'cpuShares' && current.cpuWeight !== undefined)
    return String(current.cpuWeight);
  return file.format(current, ctx);
}

/** A comparable size for ordering; null = unlimited. v2 CPU weight is compared as a weight. */
function magnitude(
  version: CgroupVersion,
  key: SettingKey,
  s: CgroupSettings,
  weightFormula: WeightFormula,
): bigint | null {
  switch (key) {
    case 'memoryLimit':
      return s.memoryLimitBytes;
    case 'memswLimit':
      return s.memswLimitBytes ?? null;
    case 'cpuQuota':
      // Ratio to the period, scaled: the kernel compares quota/period, and the period is never changed here.
      return s.cpuQuotaUs === null ? null : (BigInt(s.cpuQuotaUs) * 1_000_000n) / BigInt(s.cpuPeriodUs);
    case 'cpuShares':
      // v2: the weight as read when known (current), else the one the target formats to.
      if (version === 'v2') return BigInt(s.cpuWeight ?? weightFromShares(s.cpuShares, weightFormula));
      return BigInt(s.cpuShares);
  }
}

/** Unlimited (null) compares as +infinity. */
function compareUnlimitedHigh(a: bigint | null, b: bigint | null): number {
  if (a === null || b === null) return a === b ? 0 : a === null ? 1 : -1;
  return a === b ? 0 : a < b ? -1 : 1;
}

function containerTarget(c: PlanContainer): CgroupSettings {
  const { desired, current } = c;
  const memoryLimitBytes = memoryLimitValue(desired.memoryLimitBytes);
  return {
    ...current,
    cpuWeight: undefined,
    cpuShares: sharesFromMillicores(desired.cpuRequestMilli),
    // The live period: a kubelet with --cpu-cfs-quota-period other than 100 ms scaled quotas by it.
    cpuQuotaUs: quotaFromMillicores(desired.cpuLimitMilli, current.cpuPeriodUs),
    memoryLimitBytes,
    // runc sets memsw equal to the memory limit when the pod may not swap; keep that invariant.
    ...(current.memswLimitBytes === undefined ? {} : { memswLimitBytes: memoryLimitBytes }),
  };
}

/**
 * The kubelet's ResourceConfigForPod: shares from the sum of requests (BestEffort -> the minimum); a quota
 * only when every container declares a CPU limit, from the SUM OF MILLICORES (not of per-container quotas,
 * which differ by rounding and the 1 ms floor); a memory limit only when every container declares one.
 */
function podTargetOf(input: PlanInput, current: CgroupSettings): CgroupSettings {
  const cs = input.containers.map((c) => c.desired);
  const overheadCpu = input.overhead?.cpuMilli ?? 0;
  const overheadMem = input.overhead?.memoryBytes ?? 0n;
  const requestMilli = cs.reduce((sum, d) => sum + (d.cpuRequestMilli ?? 0), 0);
  const bestEffort = cs.every(
    (d) => !d.cpuRequestMilli && !d.cpuLimitMilli && !d.memoryRequestBytes && !d.memoryLimitBytes,
  );
  const allCpuLimits = cs.every((d) => d.cpuLimitMilli !== null && d.cpuLimitMilli > 0);
  const allMemoryLimits = cs.every((d) => d.memoryLimitBytes !== null && d.memoryLimitBytes > 0n);
  return {
    ...current,
    cpuWeight: undefined,
    cpuShares: bestEffort ? MIN_SHARES : sharesFromMillicores(requestMilli + overheadCpu),
    cpuQuotaUs: allCpuLimits
      ? quotaFromMillicores(
          cs.reduce((s, d) => s + (d.cpuLimitMilli ?? 0), 0) + overheadCpu,
          current.cpuPeriodUs,
        )
      : null,
    memoryLimitBytes: allMemoryLimits
      ? cs.reduce((s, d) => s + (d.memoryLimitBytes ?? 0n), 0n) + overheadMem
      : null,
  };
}

/** A memory limit that is being lowered must stay above the working set plus the margin, or the kernel reclaims and then OOM-kills (v2) or refuses with EBUSY (v1). */
function wouldOom(
  level: 'pod' | 'container',
  container: string | undefined,
  current: CgroupSettings,
  target: CgroupSettings,
  workingSet: bigint,
  margin: MemoryMargin,
): PlannerRefusal | undefined {
  const limit = target.memoryLimitBytes;
  // Only a lowered limit can be refused: keeping or raising one never makes things worse.
  if (limit === null || compareUnlimitedHigh(limit, current.memoryLimitBytes) >= 0) return undefined;
  const marginBytes = marginFor(workingSet, margin);
  if (limit >= workingSet + marginBytes) return undefined;
  const who = level === 'pod' ? 'pod' : `container ${container}`;
  return {
    ok: false,
    code: PlanRefusalCodes.WOULD_OOM,
    message:
      `${who}: memory limit ${limit} bytes is below its working set ${workingSet} bytes ` +
      `plus a margin of ${marginBytes} bytes`,
    ...(container === undefined ? {} : { container }),
    detail: { level, workingSetBytes: workingSet, marginBytes, limitBytes: limit },
  };
}

export function marginFor(workingSet: bigint, margin: MemoryMargin): bigint {
  const proportional = BigInt(Math.ceil(Number(workingSet) * margin.fraction));
  return proportional > margin.bytes ? proportional : margin.bytes;
}

function validate(input: PlanInput): PlannerRefusal | undefined {
  const refuse = (message: string, container?: string): PlannerRefusal => ({
    ok: false,
    code: PlanRefusalCodes.INVALID_DESIRED,
    message,
    ...(container === undefined ? {} : { container }),
  });
  if (input.containers.length === 0) return refuse('a pod has at least one container');
  const seen = new Set<string>();
  for (const c of input.containers) {
    if (seen.has(c.name)) return refuse(`container ${c.name} listed twice`, c.name);
    seen.add(c.name);
    const d = c.desired;
    for (const [what, v] of [
      ['CPU request', d.cpuRequestMilli],
      ['CPU limit', d.cpuLimitMilli],
    ] as const) {
      if (v !== null && (!Number.isSafeInteger(v) || v < 0)) {
        return refuse(
          `container ${c.name}: ${what} ${v}m is not a non-negative whole number of millicores`,
          c.name,
        );
      }
    }
    for (const [what, v] of [
      ['memory request', d.memoryRequestBytes],
      ['memory limit', d.memoryLimitBytes],
    ] as const) {
      if (v !== null && v < 0n) return refuse(`container ${c.name}: ${what} ${v} bytes is negative`, c.name);
    }
    if (d.cpuLimitMilli !== null && d.cpuRequestMilli !== null && d.cpuLimitMilli < d.cpuRequestMilli) {
      return refuse(
        `container ${c.name}: CPU limit ${d.cpuLimitMilli}m is below its request ${d.cpuRequestMilli}m`,
        c.name,
      );
    }
    if (
      d.memoryLimitBytes !== null &&
      d.memoryRequestBytes !== null &&
      d.memoryLimitBytes < d.memoryRequestBytes
    ) {
      return refuse(
        `container ${c.name}: memory limit ${d.memoryLimitBytes} bytes is below its request ${d.memoryRequestBytes} bytes`,
        c.name,
      );
    }
    if (!Number.isSafeInteger(c.current.cpuPeriodUs) || c.current.cpuPeriodUs <= 0) {
      return refuse(`container ${c.name}: CFS period ${c.current.cpuPeriodUs} us is not usable`, c.name);
    }
  }
  return undefined;
}
