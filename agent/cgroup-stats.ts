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
//   read), all of a cgroup's released as soon as it reads as gone, and closed by `sweep()` once their
//   cgroup was not read in a full walk (pod deleted, container restarted under a new ID). A read on a
//   descriptor of a removed cgroup fails with ENODEV: dropped, and the path opened afresh once in case it
//   was created again.
// - reads are synchronous: cgroupfs never waits on a disk, and the caller (cadvisor/scanner.ts) bounds each
//   batch between event-loop yields, so no scrape stalls the loop for long.
// Only the files a series needs are read (no memsw; the list is in cgroup-stat-files.ts), parsed in place in
// the read buffer (no string per file), and flat-keyed files are searched for the few keys used rather than
// parsed whole.
//
// Paths are built from validated segments (podCgroupPath checks the UID; child names come from the kernel's
// readdir and are only used when classifyChildDir recognises them), and cgroupfs holds no symlinks: the
// realpath containment check of the write path is not repeated for these reads.
import * as nodeFs from 'node:fs';
import type { CgroupLayout, CgroupPath, Controller } from '../cgroup/types.ts';
import { emptyDraft, ParseError, STAT_FILES, type Bytes } from './cgroup-stat-files.ts';

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
  /** Inactive page cache (v1 total_inactive_file, v2 inactive_file): reclaimable first. */
  inactiveFileBytes: number;
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
  if (err instanceof ParseError) return new StatsError(StatsErrorCodes.PARSE, `${path}: ${msg}`, path);
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
  /** Closes descriptors of cgroups not read since the previous sweep; call after each full walk of the node. */
  sweep(): void;
  close(): void;
  /** Descriptors currently kept open. */
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

/** A cgroup's kept descriptors, one slot per file of the plan (-1: not open). */
interface Kept {
  fds: number[];
  generation: number;
}

export function createStatsReader(opts: StatsReaderOptions): StatsReader {
  const { fs, layout } = opts;
  const maxOpen = opts.maxOpenFiles ?? DEFAULT_MAX_OPEN_FILES;
  const kept = new Map<CgroupPath, Kept>();
  let openFiles = 0;
  let generation = 0;
  const bytes: Bytes = { buf: Buffer.alloc(16 * 1024), len: 0 };

  const mountOf = (c: Controller) => layout.controllers[c].mount.replace(/\/+$/, '');
  // Every file to read, flattened in order, with its hierarchy's mount.
  const plan = (['cpu', 'cpuacct', 'memory'] as const).flatMap((c) =>
    STAT_FILES[layout.controllers[c].version][c].map((f) => ({ ...f, mount: mountOf(c) })),
  );
  // Hierarchies to check for existence: co-mounted controllers share one.
  const mounts = [...new Set((['cpu', 'cpuacct', 'memory'] as const).map((c) => mountOf(c)))];
  const abs = (mount: string, path: CgroupPath) => (path === '' ? mount : `${mount}/${path}`);

  function closeQuietly(fd: number): void {
    try {
      fs.closeSync(fd);
    } catch {
      // nothing to do: the descriptor is forgotten either way
    }
  }

  function release(entry: Kept, slot: number): void {
    const fd = entry.fds[slot]!;
    if (fd < 0) return;
    closeQuietly(fd);
    entry.fds[slot] = -1;
    openFiles--;
  }

  /** The whole file from offset 0: seq_file formats it afresh on every read at 0. */
  function pread(fd: number): void {
    for (;;) {
      bytes.len = fs.readSync(fd, bytes.buf, 0, bytes.buf.length, 0);
      if (bytes.len < bytes.buf.length) return;
      bytes.buf = Buffer.alloc(bytes.buf.length * 2);
    }
  }

  const fileOf = (slot: number, path: CgroupPath) => `${abs(plan[slot]!.mount, path)}/${plan[slot]!.file}`;

  /**
   * Reads slot `slot` of the cgroup into `bytes`; false when the file (its cgroup) does not exist. The path
   * string is only built to open a file: a scrape of kept descriptors allocates none.
   */
  function load(entry: Kept, slot: number, path: CgroupPath): boolean {
    const fd = entry.fds[slot]!;
    if (fd >= 0) {
      try {
        pread(fd);
        return true;
      } catch (err) {
        release(entry, slot);
        if (!isGone(err)) throw err;
        // ENODEV: its cgroup was removed; the path may have been created again, so open it afresh.
      }
    }
    let opened: number;
    try {
      opened = fs.openSync(fileOf(slot, path), 'r');
    } catch (err) {
      if (isGone(err)) return false;
      throw err;
    }
    let keep = openFiles < maxOpen;
    try {
      pread(opened);
      return true;
    } catch (err) {
      keep = false;
      if (isGone(err)) return false;
      throw err;
    } finally {
      if (keep) {
        entry.fds[slot] = opened;
        openFiles++;
      } else closeQuietly(opened);
    }
  }

  return {
    read(path) {
      let entry = kept.get(path);
      if (!entry) {
        entry = { fds: plan.map(() => -1), generation };
        kept.set(path, entry);
      }
      entry.generation = generation;
      const d = emptyDraft();
      for (let slot = 0; slot < plan.length; slot++) {
        const f = plan[slot]!;
        if (f.when && !f.when(d)) continue;
        try {
          if (!load(entry, slot, path)) {
            if (f.optional) continue;
            // Gone: let go of what is still held for it now rather than at the next sweep.
            for (let i = 0; i < entry.fds.length; i++) release(entry, i);
            kept.delete(path);
            return null;
          }
          f.parse(bytes, d);
        } catch (err) {
          throw toStatsError(err, fileOf(slot, path));
        }
      }
      const ws = d.memoryUsageBytes - d.inactiveFileBytes;
      d.workingSetBytes = ws > 0 ? ws : 0;
      return d;
    },

    children(path) {
      const dir = abs(mountOf('cpu'), path);
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
      return mounts.every((m) => fs.existsSync(abs(m, path)));
    },

    sweep() {
      // forEach, not for-of over entries: no [key, value] array per cgroup on every scrape.
      kept.forEach((entry, path) => {
        if (entry.generation === generation) return;
        for (let slot = 0; slot < entry.fds.length; slot++) release(entry, slot);
        kept.delete(path);
      });
      generation++;
    },

    close() {
      for (const entry of kept.values())
        for (let slot = 0; slot < entry.fds.length; slot++) release(entry, slot);
      kept.clear();
    },

    get openFiles() {
      return openFiles;
    },
  };
}
