// The cgroup files resizelet reads and writes, described as data: one table per cgroup version, mapping a
// logical setting to its controller, file, parser and formatter. Code elsewhere walks these tables instead
// of branching on the version. Pure: no I/O.
import { sharesFromWeight, V1_MEMORY_UNLIMITED, weightFromShares } from './convert.ts';
import type { CgroupSettings, CgroupUsage, CgroupVersion, Controller, WeightFormula } from './types.ts';

/** The settings the planner can change. Period is read (it scales quota) but never written. */
export const SettingKeys = ['memswLimit', 'memoryLimit', 'cpuQuota', 'cpuShares'] as const;
export type SettingKey = (typeof SettingKeys)[number];

export interface SettingContext {
  weightFormula: WeightFormula;
}

export interface SettingFile {
  key: SettingKey | 'cpuPeriod';
  controller: Controller;
  file: string;
  /** Absent on some nodes (memsw needs swap accounting); a missing optional file is not an error. */
  optional?: boolean;
  /** Read-only files are parsed into settings but never planned as writes. */
  readOnly?: boolean;
  parse(text: string, ctx: SettingContext): Partial<CgroupSettings>;
  /** The exact string to write for the given settings. */
  format(s: CgroupSettings, ctx: SettingContext): string;
  /**
   * Whether a file reading `readBack` holds what writing `written` asks for, allowing only the kernel's own
   * normalization. Absent = the text must match exactly (trimmed). See `sameSettingValue`.
   */
  equivalent?(written: string, readBack: string): boolean;
}

export class CgroupParseError extends Error {
  readonly code = 'RESIZELET_ERR_CGROUP_PARSE';
  constructor(
    readonly file: string,
    readonly text: string,
    detail: string,
  ) {
    super(`cannot parse ${file} ${JSON.stringify(text.slice(0, 80))}: ${detail}`);
  }
}

function parseInteger(file: string, text: string): number {
  const t = text.trim();
  if (!/^-?\d+$/.test(t)) throw new CgroupParseError(file, text, 'expected an integer');
  return Number(t);
}

function parseBig(file: string, text: string): bigint {
  const t = text.trim();
  if (!/^-?\d+$/.test(t)) throw new CgroupParseError(file, text, 'expected an integer');
  return BigInt(t);
}

/** v1 memory limits: the page-aligned LONG_MAX (or anything at or above it) means unlimited. */
function parseV1Memory(file: string, text: string): bigint | null {
  const n = parseBig(file, text);
  return n < 0n || n >= V1_MEMORY_UNLIMITED ? null : n;
}

/** v2 `max` files: "max" or an integer. */
function parseV2Max(file: string, text: string): bigint | null {
  const t = text.trim();
  return t === 'max' ? null : parseBig(file, t);
}

/**
 * The kernel keeps memory limits in pages: a byte count reads back rounded DOWN to the page size (v1
 * `memory.limit_in_bytes`/`memsw`, v2 `memory.max`, via page_counter_memparse). 4 KiB on x86-64 and most
 * arm64 kernels; a 64 KiB-page kernel would need this raised.
 */
export const MEMORY_PAGE_SIZE = 4096n;

/** Memory limits: unlimited matches unlimited (-1 reads back as the v1 page-max), bytes match their page floor. */
function memoryEquivalent(parse: (text: string) => bigint | null): (w: string, r: string) => boolean {
  return (written, readBack) => {
    let w: bigint | null;
    let r: bigint | null;
    try {
      w = parse(written);
      r = parse(readBack);
    } catch {
      return false;
    }
    if (w === null || r === null) return w === r;
    return r === w - (w % MEMORY_PAGE_SIZE);
  };
}

/** `file.equivalent` when the file has one, else exact (trimmed) text equality: nothing else is normalized. */
export function sameSettingValue(file: SettingFile, written: string, readBack: string): boolean {
  return file.equivalent ? file.equivalent(written, readBack) : written.trim() === readBack.trim();
}

export const SETTING_FILES: Record<CgroupVersion, readonly SettingFile[]> = {
  v1: [
    {
      key: 'cpuPeriod',
      controller: 'cpu',
      file: 'cpu.cfs_period_us',
      readOnly: true,
      parse: (t) => ({ cpuPeriodUs: parseInteger('cpu.cfs_period_us', t) }),
      format: (s) => String(s.cpuPeriodUs),
    },
    {
      key: 'cpuQuota',
      controller: 'cpu',
      file: 'cpu.cfs_quota_us',
      parse: (t) => {
        const q = parseInteger('cpu.cfs_quota_us', t);
        return { cpuQuotaUs: q < 0 ? null : q };
      },
      format: (s) => String(s.cpuQuotaUs ?? -1),
    },
    {
      key: 'cpuShares',
      controller: 'cpu',
      file: 'cpu.shares',
      parse: (t) => ({ cpuShares: parseInteger('cpu.shares', t) }),
      format: (s) => String(s.cpuShares),
    },
    {
      key: 'memoryLimit',
      controller: 'memory',
      file: 'memory.limit_in_bytes',
      parse: (t) => ({ memoryLimitBytes: parseV1Memory('memory.limit_in_bytes', t) }),
      format: (s) => (s.memoryLimitBytes === null ? '-1' : String(s.memoryLimitBytes)),
      equivalent: memoryEquivalent((t) => parseV1Memory('memory.limit_in_bytes', t)),
    },
    {
      key: 'memswLimit',
      controller: 'memory',
      file: 'memory.memsw.limit_in_bytes',
      optional: true,
      parse: (t) => ({ memswLimitBytes: parseV1Memory('memory.memsw.limit_in_bytes', t) }),
      format: (s) => {
        const v = s.memswLimitBytes ?? null;
        return v === null ? '-1' : String(v);
      },
      equivalent: memoryEquivalent((t) => parseV1Memory('memory.memsw.limit_in_bytes', t)),
    },
  ],
  v2: [
    {
      key: 'cpuQuota',
      controller: 'cpu',
      file: 'cpu.max',
      // "$MAX $PERIOD": MAX is "max" or a quota in us (cgroup-v2.rst, cpu.max).
      parse: (t) => {
        const parts = t.trim().split(/\s+/);
        const [max, period] = parts;
        if (parts.length !== 2 || max === undefined || period === undefined) {
          throw new CgroupParseError('cpu.max', t, 'expected "$MAX $PERIOD"');
        }
        return {
          cpuQuotaUs: max === 'max' ? null : parseInteger('cpu.max', max),
          cpuPeriodUs: parseInteger('cpu.max', period),
        };
      },
      format: (s) => `${s.cpuQuotaUs ?? 'max'} ${s.cpuPeriodUs}`,
    },
    {
      key: 'cpuShares',
      controller: 'cpu',
      file: 'cpu.weight',
      parse: (t, ctx) => {
        const w = parseInteger('cpu.weight', t);
        return { cpuWeight: w, cpuShares: sharesFromWeight(w, ctx.weightFormula) };
      },
      format: (s, ctx) => String(weightFromShares(s.cpuShares, ctx.weightFormula)),
    },
    {
      key: 'memoryLimit',
      controller: 'memory',
      file: 'memory.max',
      parse: (t) => ({ memoryLimitBytes: parseV2Max('memory.max', t) }),
      format: (s) => (s.memoryLimitBytes === null ? 'max' : String(s.memoryLimitBytes)),
      equivalent: memoryEquivalent((t) => parseV2Max('memory.max', t)),
    },
  ],
};

/** Flat-keyed files (`key value` per line): cpu.stat, memory.stat, memory.events, memory.oom_control. */
export function parseFlatKeyed(file: string, text: string): Map<string, bigint> {
  const out = new Map<string, bigint>();
  for (const line of text.split('\n')) {
    const t = line.trim();
    if (t === '') continue;
    const [k, v, ...rest] = t.split(/\s+/);
    if (k === undefined || v === undefined || rest.length > 0 || !/^-?\d+$/.test(v)) {
      throw new CgroupParseError(file, text, `bad line ${JSON.stringify(line)}`);
    }
    out.set(k, BigInt(v));
  }
  return out;
}

export interface UsageFile {
  controller: Controller;
  file: string;
  optional?: boolean;
  /** Fold the file's content into the usage being built. */
  parse(text: string, into: RawUsage): void;
}

const get = (m: Map<string, bigint>, k: string): bigint => m.get(k) ?? 0n;

/**
 * Usage sources per version, with cAdvisor's definitions: working set = usage - inactive_file (floored at
 * 0; v1 reads the hierarchical `total_` counters); RSS = total_rss (v1) / anon (v2).
 */
export const USAGE_FILES: Record<CgroupVersion, readonly UsageFile[]> = {
  v1: [
    {
      controller: 'cpuacct',
      file: 'cpuacct.usage',
      parse: (t, u) => {
        u.cpuUsageNs = parseBig('cpuacct.usage', t);
      },
    },
    {
      controller: 'cpu',
      file: 'cpu.stat',
      parse: (t, u) => {
        const m = parseFlatKeyed('cpu.stat', t);
        u.nrPeriods = Number(get(m, 'nr_periods'));
        u.nrThrottled = Number(get(m, 'nr_throttled'));
        u.throttledNs = get(m, 'throttled_time');
      },
    },
    {
      controller: 'memory',
      file: 'memory.usage_in_bytes',
      parse: (t, u) => {
        u.memoryUsageBytes = parseBig('memory.usage_in_bytes', t);
      },
    },
    {
      controller: 'memory',
      file: 'memory.stat',
      parse: (t, u) => {
        const m = parseFlatKeyed('memory.stat', t);
        u.rssBytes = get(m, 'total_rss');
        u.inactiveFileBytes = get(m, 'total_inactive_file');
      },
    },
    {
      controller: 'memory',
      file: 'memory.oom_control',
      optional: true,
      parse: (t, u) => {
        u.oomKills = Number(get(parseFlatKeyed('memory.oom_control', t), 'oom_kill'));
      },
    },
  ],
  v2: [
    {
      controller: 'cpu',
      file: 'cpu.stat',
      parse: (t, u) => {
        const m = parseFlatKeyed('cpu.stat', t);
        u.cpuUsageNs = get(m, 'usage_usec') * 1000n;
        u.nrPeriods = Number(get(m, 'nr_periods'));
        u.nrThrottled = Number(get(m, 'nr_throttled'));
        u.throttledNs = get(m, 'throttled_usec') * 1000n;
      },
    },
    {
      controller: 'memory',
      file: 'memory.current',
      parse: (t, u) => {
        u.memoryUsageBytes = parseBig('memory.current', t);
      },
    },
    {
      controller: 'memory',
      file: 'memory.stat',
      parse: (t, u) => {
        const m = parseFlatKeyed('memory.stat', t);
        u.rssBytes = get(m, 'anon');
        u.inactiveFileBytes = get(m, 'inactive_file');
      },
    },
    {
      controller: 'memory',
      file: 'memory.events',
      optional: true,
      parse: (t, u) => {
        u.oomKills = Number(get(parseFlatKeyed('memory.events', t), 'oom_kill'));
      },
    },
  ],
};

/** Usage while its files are being read: working set needs inactive_file and usage from two files. */
export interface RawUsage extends CgroupUsage {
  inactiveFileBytes: bigint;
}

export function emptyUsage(): RawUsage {
  return {
    inactiveFileBytes: 0n,
    cpuUsageNs: 0n,
    nrPeriods: 0,
    nrThrottled: 0,
    throttledNs: 0n,
    memoryUsageBytes: 0n,
    workingSetBytes: 0n,
    rssBytes: 0n,
    oomKills: 0,
  };
}

/** Working set = usage - inactive_file, floored at 0, as cAdvisor and the kubelet's eviction manager do. */
export function finishUsage(raw: RawUsage): CgroupUsage {
  const { inactiveFileBytes, ...usage } = raw;
  const ws = usage.memoryUsageBytes - inactiveFileBytes;
  return { ...usage, workingSetBytes: ws < 0n ? 0n : ws };
}
