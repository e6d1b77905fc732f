// What each cgroup file the scrape reads holds, per controller and cgroup version, and how its bytes are
// parsed in place into cAdvisor's numbers (cgroup-stats.ts reads the files; this module only knows them).
import type { CgroupVersion, Controller } from '../cgroup/types.ts';
import type { CgroupStats } from './cgroup-stats.ts';

/** cAdvisor's threshold for "unlimited" memory (metrics/prometheus.go maxMemorySize): kernel rounding. */
const UNLIMITED_MEMORY = 2 ** 62;

export type Draft = CgroupStats;

/** A file's bytes as read: parsed in place, so a scrape of ~9k files decodes no strings. */
export interface Bytes {
  buf: Buffer;
  len: number;
}

export interface StatFile {
  file: string;
  /** A missing optional file (memory.oom_control on old kernels) leaves the value at 0. */
  optional?: boolean;
  /** Skip the read unless needed (cpu.stat on v1 only matters with a quota). */
  when?: (d: Draft) => boolean;
  parse(b: Bytes, d: Draft): void;
}

export class ParseError extends Error {}

const SPACE = 0x20;
const NEWLINE = 0x0a;
const MINUS = 0x2d;
const isDigit = (c: number) => c >= 0x30 && c <= 0x39;

/** The integer at `at` (optionally negative), followed by whitespace or the end; -0 for "no number there". */
function intAt(b: Bytes, at: number): number {
  let i = at;
  const negative = b.buf[i] === MINUS;
  if (negative) i++;
  if (i >= b.len || !isDigit(b.buf[i]!)) return NaN;
  let n = 0;
  for (; i < b.len && isDigit(b.buf[i]!); i++) n = n * 10 + (b.buf[i]! - 0x30);
  if (i < b.len && b.buf[i] !== NEWLINE && b.buf[i] !== SPACE) return NaN;
  return negative ? -n : n;
}

/** A single-integer file (`20000\n`, `-1\n`). */
function int(b: Bytes): number {
  const n = intAt(b, 0);
  if (Number.isNaN(n))
    throw new ParseError(`expected an integer, got ${JSON.stringify(text(b).slice(0, 40))}`);
  return n;
}

const text = (b: Bytes) => b.buf.toString('latin1', 0, b.len);

const needles = new Map<string, Buffer>();
/** The value of `key` in a flat-keyed file (`key value` lines); 0 when absent, like cAdvisor. */
function field(b: Bytes, key: string): number {
  // "\n<key> " (the trailing space keeps `total_rss` from matching `total_rss_huge`), or the first line.
  let needle = needles.get(key);
  if (!needle) needles.set(key, (needle = Buffer.from(`\n${key} `, 'latin1')));
  let at: number;
  if (b.len > needle.length - 1 && b.buf.compare(needle, 1, needle.length, 0, needle.length - 1) === 0) {
    at = needle.length - 1;
  } else {
    const i = b.buf.indexOf(needle, 0);
    if (i < 0 || i + needle.length > b.len) return 0;
    at = i + needle.length;
  }
  const n = intAt(b, at);
  return Number.isNaN(n) ? 0 : n;
}

const memoryLimit = (n: number): number | null => (n < 0 || n > UNLIMITED_MEMORY ? null : n);
/** v1 `-1` (and any negative) means no quota. */
const quotaOf = (n: number): number | null => (n < 0 ? null : n);
const startsWithMax = (b: Bytes) => b.len >= 3 && b.buf[0] === 0x6d && b.buf[1] === 0x61 && b.buf[2] === 0x78;

/**
 * The files per controller and cgroup version, in read order (the quota before the v1 cpu.stat that depends
 * on it). The version is taken per controller from the layout, so a hybrid host reads each from its own
 * hierarchy. On v2 `cpu.stat` carries the usage, so "cpuacct" has no files of its own.
 */
export const STAT_FILES: Record<CgroupVersion, Record<Controller, readonly StatFile[]>> = {
  v1: {
    cpu: [
      { file: 'cpu.cfs_quota_us', parse: (b, d) => void (d.cpuQuotaUs = quotaOf(int(b))) },
      { file: 'cpu.cfs_period_us', parse: (b, d) => void (d.cpuPeriodUs = int(b)) },
      { file: 'cpu.shares', parse: (b, d) => void (d.cpuShares = int(b)) },
      {
        file: 'cpu.stat',
        when: (d) => d.cpuQuotaUs !== null,
        parse: (b, d) => {
          d.cfs = {
            periods: field(b, 'nr_periods'),
            throttledPeriods: field(b, 'nr_throttled'),
            throttledNs: field(b, 'throttled_time'),
          };
        },
      },
    ],
    cpuacct: [{ file: 'cpuacct.usage', parse: (b, d) => void (d.cpuUsageNs = int(b)) }],
    memory: [
      { file: 'memory.usage_in_bytes', parse: (b, d) => void (d.memoryUsageBytes = int(b)) },
      { file: 'memory.limit_in_bytes', parse: (b, d) => void (d.memoryLimitBytes = memoryLimit(int(b))) },
      {
        // Hierarchical counters, as cAdvisor (total_rss, total_inactive_file).
        file: 'memory.stat',
        parse: (b, d) => {
          d.rssBytes = field(b, 'total_rss');
          d.inactiveFileBytes = field(b, 'total_inactive_file');
        },
      },
      {
        file: 'memory.oom_control',
        optional: true,
        parse: (b, d) => void (d.oomKills = field(b, 'oom_kill')),
      },
    ],
  },
  v2: {
    cpu: [
      {
        // "$MAX $PERIOD" (cgroup-v2.rst).
        file: 'cpu.max',
        parse: (b, d) => {
          const space = b.buf.indexOf(SPACE);
          if (space < 0 || space >= b.len)
            throw new ParseError(`expected "$MAX $PERIOD", got ${JSON.stringify(text(b))}`);
          d.cpuQuotaUs = startsWithMax(b) ? null : quotaOf(int(b));
          d.cpuPeriodUs = intAt(b, space + 1);
          if (Number.isNaN(d.cpuPeriodUs)) throw new ParseError(`bad period in ${JSON.stringify(text(b))}`);
        },
      },
      {
        // cAdvisor presents v2 weight in v1 shares with the KEP-2254 linear inverse, whatever formula the
        // runtime used to derive the weight: series stay comparable with the kubelet's cAdvisor.
        file: 'cpu.weight',
        parse: (b, d) => void (d.cpuShares = 2 + Math.floor(((int(b) - 1) * 262142) / 9999)),
      },
      {
        file: 'cpu.stat',
        parse: (b, d) => {
          d.cpuUsageNs = field(b, 'usage_usec') * 1000;
          if (d.cpuQuotaUs !== null) {
            d.cfs = {
              periods: field(b, 'nr_periods'),
              throttledPeriods: field(b, 'nr_throttled'),
              throttledNs: field(b, 'throttled_usec') * 1000,
            };
          }
        },
      },
    ],
    cpuacct: [],
    memory: [
      { file: 'memory.current', parse: (b, d) => void (d.memoryUsageBytes = int(b)) },
      {
        file: 'memory.max',
        parse: (b, d) => void (d.memoryLimitBytes = startsWithMax(b) ? null : memoryLimit(int(b))),
      },
      {
        file: 'memory.stat',
        parse: (b, d) => {
          d.rssBytes = field(b, 'anon');
          d.inactiveFileBytes = field(b, 'inactive_file');
        },
      },
      { file: 'memory.events', optional: true, parse: (b, d) => void (d.oomKills = field(b, 'oom_kill')) },
    ],
  },
};

export const emptyDraft = (): Draft => ({
  cpuUsageNs: 0,
  cpuQuotaUs: null,
  cpuPeriodUs: 0,
  cpuShares: 0,
  cfs: null,
  memoryUsageBytes: 0,
  workingSetBytes: 0,
  rssBytes: 0,
  memoryLimitBytes: null,
  oomKills: 0,
  inactiveFileBytes: 0,
});
