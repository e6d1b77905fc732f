// systemd's view of the settings resizelet writes. With the kubelet's systemd cgroup driver every pod cgroup is
// a `.slice` unit and every container cgroup a `.scope` unit, and systemd re-applies its own idea of each
// unit's limits on `systemctl daemon-reload`: values written only into the cgroup files are put back to the
// pod spec's (see docs/cgroups.md). This module turns a plan's writes into the unit properties that make
// systemd hold the same values, and models what systemd then writes into the files. Pure: no I/O.
//
// Everything below follows systemd's src/core (v252, the fixture node's, unless a later change is named):
// - dbus-cgroup.c `bus_cgroup_set_property`: CPUQuotaPerSecUSec, CPUQuotaPeriodUSec, CPUWeight, CPUShares,
//   MemoryMax and MemoryLimit are all D-Bus `t` (uint64); UINT64_MAX is "infinity" (USEC_INFINITY and
//   CGROUP_LIMIT_MAX). The value is kept exactly in memory; with runtime=true it is also serialized into a
//   drop-in under /run/systemd/system.control/, which is what a daemon-reload reads back.
// - cgroup.c `cgroup_apply_unified_cpu_quota` / `cgroup_apply_legacy_cpu_quota` and
//   `cgroup_cpu_adjust_period`: how a per-second quota becomes `cpu.max` / `cpu.cfs_quota_us`.
import { DEFAULT_CPU_PERIOD_US } from './convert.ts';
import { SETTING_FILES, type SettingKey } from './resources.ts';
import type { CgroupPath, CgroupSettings, CgroupVersion, CgroupWrite, Controller } from './types.ts';

/** UINT64_MAX: systemd's "infinity" for every property here (USEC_INFINITY, CGROUP_LIMIT_MAX). */
export const SYSTEMD_INFINITY = 0xffff_ffff_ffff_ffffn;

const USEC_PER_SEC = 1_000_000n;
const USEC_PER_MSEC = 1_000n;
/** CGROUP_CPU_QUOTA_DEFAULT_PERIOD_USEC: the period systemd uses when the unit sets none. */
export const SYSTEMD_DEFAULT_PERIOD_USEC = 100_000n;

export const SystemdProperties = {
  cpuQuotaPerSec: 'CPUQuotaPerSecUSec',
  cpuQuotaPeriod: 'CPUQuotaPeriodUSec',
  /** v2 `cpu.weight`. */
  cpuWeight: 'CPUWeight',
  /** v1 `cpu.shares`. */
  cpuShares: 'CPUShares',
  /** v2 `memory.max`. */
  memoryMax: 'MemoryMax',
  /** v1 `memory.limit_in_bytes`. */
  memoryLimit: 'MemoryLimit',
} as const;
export type SystemdPropertyName = (typeof SystemdProperties)[keyof typeof SystemdProperties];

/** One unit property as sent to SetUnitProperties: every property resizelet sets is a D-Bus `t`. */
export interface SystemdProperty {
  name: SystemdPropertyName;
  value: bigint;
}

/**
 * How finely a runtime CPUQuotaPerSecUSec survives a daemon-reload, in usec per second. The drop-in stores
 * `CPUQuota=` as a percentage: before v257 as a whole percent (`"CPUQuota=%0.f%%"` of `usec / 10000`, so
 * 10 ms per second), since v257 (systemd PR #33171) with two decimals (100 us per second). The running
 * value is exact either way; only what a reload reads back is truncated.
 */
export const SystemdQuotaGranularity = {
  beforeV257: 10_000n,
  sinceV257: 100n,
} as const;

// ---------------------------------------------------------------------------------------------------------
// Unit names

/** systemd's unit name rules (unit-name.c): these characters, at most 255 bytes, a known type suffix. */
const UNIT_NAME = /^[A-Za-z0-9:_.\\@-]+\.(?:slice|scope)$/;

/**
 * The unit that owns a cgroup: with the systemd driver the last path segment IS the unit name
 * (`kubepods-burstable-pod<uid_>.slice`, `cri-containerd-<id>.scope`). null for a directory systemd does not
 * own, such as CRI-O's spoofed sandbox cgroup `crio-<id>` or any cgroupfs-driver path.
 */
export function unitNameOf(path: CgroupPath): string | null {
  const last = path.split('/').pop() ?? '';
  if (last.length > 255 || !UNIT_NAME.test(last) || last.startsWith('.')) return null;
  return last;
}

// ---------------------------------------------------------------------------------------------------------
// Values

/**
 * A CFS quota and period -> CPUQuotaPerSecUSec. Rounded UP: systemd writes `quota * period / 1e6` rounded
 * down, so the ceiling is the smallest per-second value that renders back to exactly `quotaUs` (a value
 * rounded down would render one microsecond short for periods that do not divide 1 s evenly).
 */
export function quotaPerSecFromCfs(quotaUs: number | null, periodUs: number): bigint {
  if (quotaUs === null) return SYSTEMD_INFINITY;
  const period = BigInt(periodUs);
  return (BigInt(quotaUs) * USEC_PER_SEC + period - 1n) / period;
}

/**
 * What systemd writes for a unit's CPUQuotaPerSecUSec and CPUQuotaPeriodUSec (`SYSTEMD_INFINITY` = not set):
 * `cgroup_cpu_adjust_period_and_log` then `cgroup_apply_unified_cpu_quota`. An unlimited quota always
 * goes out with the default period, whatever the unit's period; otherwise the period is clamped to
 * [1 ms, 1 s] and raised until the quota is at least 1 ms per period, and the quota is
 * `MAX(quota * period / USEC_PER_SEC, USEC_PER_MSEC)` in integer arithmetic.
 */
export function renderCpuQuota(
  quotaPerSec: bigint,
  periodSetting: bigint = SYSTEMD_INFINITY,
): { quotaUs: number | null; periodUs: number } {
  if (quotaPerSec === SYSTEMD_INFINITY)
    return { quotaUs: null, periodUs: Number(SYSTEMD_DEFAULT_PERIOD_USEC) };
  const requested = periodSetting === SYSTEMD_INFINITY ? SYSTEMD_DEFAULT_PERIOD_USEC : periodSetting;
  const floor = (USEC_PER_MSEC * USEC_PER_SEC) / quotaPerSec;
  let period = requested;
  if (period < USEC_PER_MSEC) period = USEC_PER_MSEC;
  if (period < floor) period = floor;
  if (period > USEC_PER_SEC) period = USEC_PER_SEC;
  let quota = (quotaPerSec * period) / USEC_PER_SEC;
  if (quota < USEC_PER_MSEC) quota = USEC_PER_MSEC;
  return { quotaUs: Number(quota), periodUs: Number(period) };
}

/**
 * The CPUQuotaPerSecUSec a daemon-reload reads back from the runtime drop-in: truncated to `granularity`.
 * null when the drop-in holds `CPUQuota=0%` (or `0.00%`), which `config_parse_cpu_quota` rejects: the
 * unit's own (spec) value comes back instead.
 */
export function persistedQuotaPerSec(
  quotaPerSec: bigint,
  granularity: bigint = SystemdQuotaGranularity.beforeV257,
): bigint | null {
  if (quotaPerSec === SYSTEMD_INFINITY) return SYSTEMD_INFINITY;
  const kept = (quotaPerSec / granularity) * granularity;
  return kept > 0n ? kept : null;
}

const SETTING_OF_FILE: Record<string, SettingKey> = Object.fromEntries(
  (['v1', 'v2'] as const).flatMap((v) =>
    SETTING_FILES[v].filter((f) => !f.readOnly).map((f) => [f.file, f.key as SettingKey]),
  ),
);

const bigOrInfinity = (v: bigint | null | undefined): bigint =>
  v === null || v === undefined ? SYSTEMD_INFINITY : v;

/**
 * The unit properties that make systemd hold the value `text` of one cgroup file. `periodUs` is the live CFS
 * period of that cgroup (v1 keeps it in a file the write does not name). Empty for files systemd has no
 * property for (v1 `memory.memsw.limit_in_bytes`: systemd never writes it, so a reload leaves it alone).
 */
export function propertiesForFile(
  version: CgroupVersion,
  file: string,
  text: string,
  periodUs: number,
): SystemdProperty[] {
  const table = SETTING_FILES[version].find((f) => f.file === file && !f.readOnly);
  if (!table) return [];
  // The weight formula only matters for the shares a v2 weight is presented as; the raw weight is used.
  const parsed = table.parse(text, { weightFormula: 'linear' });
  switch (SETTING_OF_FILE[file]) {
    case 'cpuQuota': {
      const period = parsed.cpuPeriodUs ?? periodUs;
      const out: SystemdProperty[] = [];
      // Sent only off the default: systemd then keeps the unit's own period (runc sets one at creation).
      if (period !== DEFAULT_CPU_PERIOD_US) {
        out.push({ name: SystemdProperties.cpuQuotaPeriod, value: BigInt(period) });
      }
      out.push({
        name: SystemdProperties.cpuQuotaPerSec,
        value: quotaPerSecFromCfs(parsed.cpuQuotaUs ?? null, period),
      });
      return out;
    }
    case 'cpuShares':
      return version === 'v2'
        ? [{ name: SystemdProperties.cpuWeight, value: BigInt(parsed.cpuWeight ?? 0) }]
        : [{ name: SystemdProperties.cpuShares, value: BigInt(parsed.cpuShares ?? 0) }];
    case 'memoryLimit':
      return [
        {
          name: version === 'v2' ? SystemdProperties.memoryMax : SystemdProperties.memoryLimit,
          value: bigOrInfinity(parsed.memoryLimitBytes),
        },
      ];
    default:
      return [];
  }
}

/** Every property systemd should hold for a cgroup whose files read `settings` (a full re-sync). */
export function propertiesFromSettings(
  versions: Record<Controller, CgroupVersion>,
  settings: CgroupSettings,
): SystemdProperty[] {
  const out: SystemdProperty[] = [];
  for (const key of ['cpuQuota', 'cpuShares', 'memoryLimit'] as const) {
    const controller: Controller = key === 'memoryLimit' ? 'memory' : 'cpu';
    const version = versions[controller];
    const file = SETTING_FILES[version].find((f) => f.key === key && !f.readOnly);
    if (!file) continue;
    // The raw v2 weight as read: a weight -> shares -> weight round trip can drift by one.
    const text =
      version === 'v2' && key === 'cpuShares'
        ? settings.cpuWeight === undefined
          ? undefined
          : String(settings.cpuWeight)
        : file.format(settings, { weightFormula: 'linear' });
    if (text === undefined) continue;
    out.push(...propertiesForFile(version, file.file, text, settings.cpuPeriodUs));
  }
  return out;
}

// ---------------------------------------------------------------------------------------------------------
// Plans -> calls

/** One SetUnitProperties call: the properties of consecutive plan writes to one unit. */
export interface UnitPropertySet {
  unit: string;
  path: CgroupPath;
  properties: SystemdProperty[];
  /** Indices into the plan's writes this call stands for. */
  writes: number[];
}

export interface UnitMappingOptions {
  versions: Record<Controller, CgroupVersion>;
  /** The live CFS period of a cgroup path. */
  periodOf(path: CgroupPath): number;
  /** Map the new values (apply) or the previous ones (undo). Default 'value'. */
  use?: 'value' | 'previous';
}

/**
 * The calls that carry a plan's writes into systemd, IN PLAN ORDER: consecutive writes to one unit share a
 * call, and a unit the plan comes back to gets another one. systemd writes the cgroup files itself before it
 * answers each call, so keeping the planner's order keeps its kernel-safety (pod raised before a container
 * grows, containers shrunk before the pod is lowered) for systemd's writes too.
 * `unmapped` lists the writes no call carries: paths that are no unit, files with no property (v1 memsw).
 */
export function unitPropertySets(
  writes: readonly CgroupWrite[],
  opts: UnitMappingOptions,
): { sets: UnitPropertySet[]; unmapped: number[] } {
  const sets: UnitPropertySet[] = [];
  const unmapped: number[] = [];
  for (const [i, w] of writes.entries()) {
    const unit = unitNameOf(w.path);
    const version = opts.versions[w.controller];
    const text = opts.use === 'previous' ? w.previous : w.value;
    const props = unit === null ? [] : propertiesForFile(version, w.file, text, opts.periodOf(w.path));
    if (unit === null || props.length === 0) {
      unmapped.push(i);
      continue;
    }
    const last = sets.at(-1);
    const clash = last?.properties.some((p) => props.some((q) => q.name === p.name));
    if (last && last.unit === unit && last.path === w.path && !clash) {
      last.properties.push(...props);
      last.writes.push(i);
    } else {
      sets.push({ unit, path: w.path, properties: props, writes: [i] });
    }
  }
  return { sets, unmapped };
}

// ---------------------------------------------------------------------------------------------------------
// What systemd writes

/** One cgroup file as systemd writes it for a unit's properties. */
export interface RenderedFile {
  controller: Controller;
  file: string;
  value: string;
}

/**
 * The files systemd writes for a unit holding `props` (the unit's effective properties: missing ones are
 * not written). Only each version's native property is rendered: resizelet never sends CPUWeight on v1 or
 * MemoryLimit on v2.
 */
export function renderProperties(
  versions: Record<Controller, CgroupVersion>,
  props: ReadonlyMap<SystemdPropertyName, bigint>,
): RenderedFile[] {
  const out: RenderedFile[] = [];
  const cpuV = versions.cpu;
  const quota = props.get(SystemdProperties.cpuQuotaPerSec);
  const period = props.get(SystemdProperties.cpuQuotaPeriod);
  if (quota !== undefined || period !== undefined) {
    const r = renderCpuQuota(quota ?? SYSTEMD_INFINITY, period ?? SYSTEMD_INFINITY);
    if (cpuV === 'v2') out.push({ controller: 'cpu', file: 'cpu.max', value: cpuMaxText('v2', r) });
    else {
      out.push({ controller: 'cpu', file: 'cpu.cfs_period_us', value: String(r.periodUs) });
      out.push({ controller: 'cpu', file: 'cpu.cfs_quota_us', value: cpuMaxText('v1', r) });
    }
  }
  const weight = props.get(cpuV === 'v2' ? SystemdProperties.cpuWeight : SystemdProperties.cpuShares);
  if (weight !== undefined) {
    out.push({ controller: 'cpu', file: cpuV === 'v2' ? 'cpu.weight' : 'cpu.shares', value: String(weight) });
  }
  const memV = versions.memory;
  const mem = props.get(memV === 'v2' ? SystemdProperties.memoryMax : SystemdProperties.memoryLimit);
  if (mem !== undefined) {
    out.push({
      controller: 'memory',
      file: memV === 'v2' ? 'memory.max' : 'memory.limit_in_bytes',
      value: mem === SYSTEMD_INFINITY ? (memV === 'v2' ? 'max' : '-1') : String(mem),
    });
  }
  return out;
}

/** A rendered quota in the file's own format: v2 `cpu.max` ("$MAX $PERIOD"), v1 `cpu.cfs_quota_us`. */
export function cpuMaxText(version: CgroupVersion, r: { quotaUs: number | null; periodUs: number }): string {
  if (version === 'v2') return `${r.quotaUs ?? 'max'} ${r.periodUs}`;
  return String(r.quotaUs ?? -1);
}

/**
 * The texts a CPU quota file may read once systemd holds the properties sent for `write`, other than the
 * exact value: what systemd renders for them now, and after a daemon-reload has truncated the per-second
 * quota to `granularity`. Exactly those, nothing in between: the executor accepts them on read-back only
 * for writes that went through systemd. Empty for every other file (systemd writes weights and memory
 * limits exactly as sent; the kernel's page rounding applies to both writers alike).
 */
export function systemdRenderingsOf(
  version: CgroupVersion,
  file: string,
  text: string,
  periodUs: number,
  granularity: bigint = SystemdQuotaGranularity.beforeV257,
): string[] {
  if (SETTING_OF_FILE[file] !== 'cpuQuota') return [];
  const props = new Map(propertiesForFile(version, file, text, periodUs).map((p) => [p.name, p.value]));
  const quota = props.get(SystemdProperties.cpuQuotaPerSec) ?? SYSTEMD_INFINITY;
  const period = props.get(SystemdProperties.cpuQuotaPeriod) ?? SYSTEMD_INFINITY;
  const out = new Set<string>();
  for (const q of [quota, persistedQuotaPerSec(quota, granularity)]) {
    if (q !== null) out.add(cpuMaxText(version, renderCpuQuota(q, period)));
  }
  out.delete(text.trim());
  return [...out];
}
