// Scrape-time cgroup statistics: the numbers cAdvisor reports for one cgroup, read fast enough to walk every
// pod, sandbox and container of a node on each Prometheus scrape.
//
// Why not cgroup/reader.ts: its `readCgroup` is built for the resize path (realpath containment checks per
// hierarchy, every setting file, exact bigints, async fs) and costs ~0.5 ms per cgroup on this kind of
// machine: ~500 ms for a node of 250 pods. Here, as measured on a 2-core v1 host with 1,000 cgroups:
// - async `fs.promises.readFile` is ~100 us per file (threadpool round trips), sync `readFileSync` ~10 us,
//   of which most is the open() path walk through kernfs; a `pread(fd, 0)` on a kept descriptor is ~2 us
//   (memory.stat ~10 us: the kernel formats ~40 counters). seq_file regenerates the text on every read at
//   offset 0, so a kept descriptor always sees the live value (a resize shows on the next scrape).
// - so descriptors are kept open between scrapes (bounded by `maxOpenFiles`; the rest are opened per
//   read) and closed by `sweep()` once their cgroup was not seen in a full scrape (pod deleted, container
//   restarted under a new ID). A read on a descriptor of a removed cgroup fails with ENODEV: dropped, reopened
//   by path once in case the path was recreated.
// - reads are synchronous: cgroupfs never waits on a disk, and the caller (cadvisor.ts) bounds each batch
//   between event-loop yields, so no scrape stalls the loop for long.
// Only the files a series needs are read (no memsw), and flat-keyed files are searched for the few keys
// used rather than parsed whole.
//
// Paths are built from validated segments (podCgroupPath checks the UID; child names come from the kernel's
// readdir and are only used when classifyChildDir recognises them), and cgroupfs holds no symlinks: the
// realpath containment check of the write path is not repeated for these reads.
import * as nodeFs from 'node:fs';
import type { CgroupLayout, CgroupPath, CgroupVersion, Controller } from '../cgroup/types.ts';

/** The synchronous slice of `node:fs` the reader needs; memfs volumes provide it too (tests). */
export interface SyncFs {
  openSync(path: string, flags: 'r'): number;
  readSync(fd: number, buffer: Uint8Array, offset: number, length: number, position: number): number;
  closeSync(fd: number): void;
  readdirSync(path: string, options: { withFileTypes: true }): SyncDirent[];
  existsSync(path: string): boolean;
}

export interface SyncDirent {
  name: string;
  isDirectory(): boolean;
}

/** The real filesystem. */
export const nodeSyncFs: SyncFs = {
  openSync: (path, flags) => nodeFs.openSync(path, flags),
  readSync: (fd, buffer, offset, length, position) => nodeFs.readSync(fd, buffer, offset, length, position),
  closeSync: (fd) => nodeFs.closeSync(fd),
  readdirSync: (path, options) => nodeFs.readdirSync(path, options),
  existsSync: (path) => nodeFs.existsSync(path),
};

/** One cgroup's numbers in cAdvisor's terms (kernel units). */
export interface CgroupStats {
  cpuUsageNs: number;
  /** null = no CFS quota (`-1` / `max`): cAdvisor then emits no quota and no CFS series. */
  cpuQuotaUs: number | null;
  cpuPeriodUs: number;
  /** v1 `cpu.shares`; on v2 cAdvisor's conversion of `cpu.weight` (2 + (w-1)*262142/9999). */
  cpuShares: number;
  /** Read only when a quota is set, as cAdvisor only reports CFS statistics then. */
  cfs: { periods: number; throttledPeriods: number; throttledNs: number } | null;
  memoryUsageBytes: number;
  /** usage - inactive_file, floored at 0 (cAdvisor's and the kubelet's eviction definition). */
  workingSetBytes: number;
  /** v1 total_rss, v2 anon. */
  rssBytes: number;
  /** null = unlimited (anything above 2^62: the v1 page-aligned LONG_MAX, v2 `max`). */
  memoryLimitBytes: number | null;
  oomKills: number;
}

export const StatsErrorCodes = {
  PERMISSION: 'RESIZELET_ERR_CGROUP_PERMISSION',
  IO: 'RESIZELET_ERR_CGROUP_IO',
  PARSE: 'RESIZELET_ERR_CGROUP_PARSE',
} as const;
export type StatsErrorCode = (typeof StatsErrorCodes)[keyof typeof StatsErrorCodes];

export class StatsError extends Error {
  override readonly name = 'StatsError';
  constructor(
    readonly code: StatsErrorCode,
    message: string,
    readonly path: string,
  ) {
    super(message);
  }
}

/** cAdvisor's threshold for "unlimited" memory (metrics/prometheus.go maxMemorySize): kernel rounding. */
const UNLIMITED_MEMORY = 2 ** 62;

interface Draft extends CgroupStats {
  inactiveFileBytes: number;
}

interface StatFile {
  file: string;
  /** A missing optional file (memory.oom_control on old kernels) leaves the value at 0. */
  optional?: boolean;
  /** Skip the read unless needed (cpu.stat on v1 only matters with a quota). */
  when?: (d: Draft) => boolean;
  parse(text: string, d: Draft, path: string): void;
}

function num(text: string, file: string): number {
  const n = Number(text);
  if (text.trim() === '' || Number.isNaN(n)) {
    throw new StatsError(
      StatsErrorCodes.PARSE,
      `cannot parse ${file} ${JSON.stringify(text.slice(0, 40))}`,
      file,
    );
  }
  return n;
}

/** The value of `key` in a flat-keyed file (`key value` lines); 0 when absent, like cAdvisor. */
function field(text: string, key: string): number {
  // The trailing space keeps `total_rss` from matching `total_rss_huge`.
  const needle = `${key} `;
  let at = 0;
  if (!text.startsWith(needle)) {
    const i = text.indexOf(`\n${needle}`);
    if (i < 0) return 0;
    at = i + 1;
  }
  at += needle.length;
  const end = text.indexOf('\n', at);
  const n = Number(text.slice(at, end < 0 ? undefined : end));
  return Number.isNaN(n) ? 0 : n;
}

const memoryLimit = (n: number): number | null => (n < 0 || n > UNLIMITED_MEMORY ? null : n);

/**
 * The files per controller and cgroup version, in read order (the quota before the v1 cpu.stat that depends
 * on it). The version is taken per controller from the layout, so a hybrid host reads each from its own
 * hierarchy. On v2 `cpu.stat` carries the usage, so "cpuacct" has no files of its own.
 */
const STAT_FILES: Record<CgroupVersion, Record<Controller, readonly StatFile[]>> = {
  v1: {
    cpu: [
      { file: 'cpu.cfs_quota_us', parse: (t, d, f) => void (d.cpuQuotaUs = quotaOf(num(t, f))) },
      { file: 'cpu.cfs_period_us', parse: (t, d, f) => void (d.cpuPeriodUs = num(t, f)) },
      { file: 'cpu.shares', parse: (t, d, f) => void (d.cpuShares = num(t, f)) },
      {
        file: 'cpu.stat',
        when: (d) => d.cpuQuotaUs !== null,
        parse: (t, d) => {
          d.cfs = {
            periods: field(t, 'nr_periods'),
            throttledPeriods: field(t, 'nr_throttled'),
            throttledNs: field(t, 'throttled_time'),
          };
        },
      },
    ],
    cpuacct: [{ file: 'cpuacct.usage', parse: (t, d, f) => void (d.cpuUsageNs = num(t, f)) }],
    memory: [
      { file: 'memory.usage_in_bytes', parse: (t, d, f) => void (d.memoryUsageBytes = num(t, f)) },
      {
        file: 'memory.limit_in_bytes',
        parse: (t, d, f) => void (d.memoryLimitBytes = memoryLimit(num(t, f))),
      },
      {
        // Hierarchical counters, as cAdvisor (total_rss, total_inactive_file).
        file: 'memory.stat',
        parse: (t, d) => {
          d.rssBytes = field(t, 'total_rss');
          d.inactiveFileBytes = field(t, 'total_inactive_file');
        },
      },
      {
        file: 'memory.oom_control',
        optional: true,
        parse: (t, d) => void (d.oomKills = field(t, 'oom_kill')),
      },
    ],
  },
  v2: {
    cpu: [
      {
        // "$MAX $PERIOD" (cgroup-v2.rst).
        file: 'cpu.max',
        parse: (t, d, f) => {
          const [max, period] = t.trim().split(' ');
          d.cpuQuotaUs = max === 'max' ? null : quotaOf(num(max ?? '', f));
          d.cpuPeriodUs = num(period ?? '', f);
        },
      },
      {
        // cAdvisor presents v2 weight in v1 shares with the KEP-2254 linear inverse, whatever formula the
        // runtime used to derive the weight: series stay comparable with the kubelet's cAdvisor.
        file: 'cpu.weight',
        parse: (t, d, f) => void (d.cpuShares = 2 + Math.floor(((num(t, f) - 1) * 262142) / 9999)),
      },
      {
        file: 'cpu.stat',
        parse: (t, d) => {
          d.cpuUsageNs = field(t, 'usage_usec') * 1000;
          if (d.cpuQuotaUs !== null) {
            d.cfs = {
              periods: field(t, 'nr_periods'),
              throttledPeriods: field(t, 'nr_throttled'),
              throttledNs: field(t, 'throttled_usec') * 1000,
            };
          }
        },
      },
    ],
    cpuacct: [],
    memory: [
      { file: 'memory.current', parse: (t, d, f) => void (d.memoryUsageBytes = num(t, f)) },
      {
        file: 'memory.max',
        parse: (t, d, f) => void (d.memoryLimitBytes = t.trim() === 'max' ? null : memoryLimit(num(t, f))),
      },
      {
        file: 'memory.stat',
        parse: (t, d) => {
          d.rssBytes = field(t, 'anon');
          d.inactiveFileBytes = field(t, 'inactive_file');
        },
      },
      { file: 'memory.events', optional: true, parse: (t, d) => void (d.oomKills = field(t, 'oom_kill')) },
    ],
  },
};

/** v1 `-1` (and any negative) means no quota. */
const quotaOf = (n: number): number | null => (n < 0 ? null : n);

const emptyDraft = (): Draft => ({
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

const errnoOf = (err: unknown): string | undefined =>
  typeof err === 'object' && err !== null && 'code' in err && typeof err.code === 'string'
    ? err.code
    : undefined;

/** The cgroup (or the file's cgroup) no longer exists: removed before or while we read it. */
const isGone = (err: unknown): boolean => {
  const e = errnoOf(err);
  return e === 'ENOENT' || e === 'ENODEV' || e === 'ENOTDIR';
};

function toStatsError(err: unknown, path: string): StatsError {
  const e = errnoOf(err);
  const msg = err instanceof Error ? err.message : String(err);
  if (err instanceof StatsError) return new StatsError(err.code, `${path}: ${err.message}`, path);
  if (e === 'EACCES' || e === 'EPERM') return new StatsError(StatsErrorCodes.PERMISSION, msg, path);
  return new StatsError(StatsErrorCodes.IO, msg, path);
}

export interface StatsReader {
  /** The cgroup's numbers, or null when it does not exist (any more). Throws StatsError otherwise. */
  read(path: CgroupPath): CgroupStats | null;
  /** Names of the child directories in the cpu hierarchy, sorted; null when the cgroup does not exist. */
  children(path: CgroupPath): string[] | null;
  /** Whether the cgroup directory exists in every hierarchy the layout uses. */
  exists(path: CgroupPath): boolean;
  /** Closes descriptors not used since the previous sweep; call after each full walk of the node. */
  sweep(): void;
  close(): void;
  readonly openFiles: number;
}

export interface StatsReaderOptions {
  fs: SyncFs;
  layout: Pick<CgroupLayout, 'controllers'>;
  /**
   * Descriptors kept open between scrapes. A v1 node needs 8-9 per cgroup (pod, sandbox, containers): the
   * default covers ~1,800 cgroups. Each costs the kernel ~5 KiB (file, seq_file buffer); past the bound
   * files are opened per read, slower but correct.
   */
  maxOpenFiles?: number;
}

export const DEFAULT_MAX_OPEN_FILES = 16_384;

export function createStatsReader(opts: StatsReaderOptions): StatsReader {
  const { fs, layout } = opts;
  const maxOpen = opts.maxOpenFiles ?? DEFAULT_MAX_OPEN_FILES;
  const kept = new Map<string, { fd: number; generation: number }>();
  let generation = 0;
  let buf = Buffer.alloc(16 * 1024);

  const mountOf = (c: Controller) => layout.controllers[c].mount.replace(/\/+$/, '');
  const abs = (c: Controller, path: CgroupPath) => (path === '' ? mountOf(c) : `${mountOf(c)}/${path}`);
  // Each controller's files, from the version that controller has on this node.
  const plan = (['cpu', 'cpuacct', 'memory'] as const).map(
    (c) => [c, STAT_FILES[layout.controllers[c].version][c]] as const,
  );
  // Hierarchies to check for existence: co-mounted controllers share one.
  const mounts = [...new Set((['cpu', 'cpuacct', 'memory'] as const).map((c) => mountOf(c)))];

  function closeQuietly(fd: number): void {
    try {
      fs.closeSync(fd);
    } catch {
      // nothing to do: the descriptor is forgotten either way
    }
  }

  /** The whole file from offset 0: seq_file formats it afresh on every read at 0. */
  function pread(fd: number): string {
    for (;;) {
      const n = fs.readSync(fd, buf, 0, buf.length, 0);
      if (n < buf.length) return buf.toString('latin1', 0, n);
      buf = Buffer.alloc(buf.length * 2);
    }
  }

  function readText(file: string): string | null {
    const entry = kept.get(file);
    if (entry) {
      try {
        const text = pread(entry.fd);
        entry.generation = generation;
        return text;
      } catch (err) {
        closeQuietly(entry.fd);
        kept.delete(file);
        if (!isGone(err)) throw err;
        // ENODEV: its cgroup was removed; the path may have been created again, so open it afresh.
      }
    }
    let fd: number;
    try {
      fd = fs.openSync(file, 'r');
    } catch (err) {
      if (isGone(err)) return null;
      throw err;
    }
    let keep = kept.size < maxOpen;
    try {
      const text = pread(fd);
      if (keep) kept.set(file, { fd, generation });
      return text;
    } catch (err) {
      keep = false;
      if (isGone(err)) return null;
      throw err;
    } finally {
      if (!keep) closeQuietly(fd);
    }
  }

  return {
    read(path) {
      const d = emptyDraft();
      for (const [controller, files] of plan) {
        const dir = abs(controller, path);
        for (const f of files) {
          if (f.when && !f.when(d)) continue;
          const file = `${dir}/${f.file}`;
          let text: string | null;
          try {
            text = readText(file);
          } catch (err) {
            throw toStatsError(err, file);
          }
          if (text === null) {
            if (f.optional) continue;
            return null;
          }
          try {
            f.parse(text, d, f.file);
          } catch (err) {
            throw toStatsError(err, file);
          }
        }
      }
      const { inactiveFileBytes, ...stats } = d;
      const ws = stats.memoryUsageBytes - inactiveFileBytes;
      stats.workingSetBytes = ws > 0 ? ws : 0;
      return stats;
    },

    children(path) {
      const dir = abs('cpu', path);
      try {
        return fs
          .readdirSync(dir, { withFileTypes: true })
          .filter((e) => e.isDirectory())
          .map((e) => String(e.name))
          .sort();
      } catch (err) {
        if (isGone(err)) return null;
        throw toStatsError(err, dir);
      }
    },

    exists(path) {
      return mounts.every((m) => fs.existsSync(path === '' ? m : `${m}/${path}`));
    },

    sweep() {
      for (const [file, e] of kept) {
        if (e.generation !== generation) {
          closeQuietly(e.fd);
          kept.delete(file);
        }
      }
      generation++;
    },

    close() {
      for (const e of kept.values()) closeQuietly(e.fd);
      kept.clear();
    },

    get openFiles() {
      return kept.size;
    },
  };
}
