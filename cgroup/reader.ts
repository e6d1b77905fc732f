// Reads one cgroup's settings and usage by walking the file tables of resources.ts, through the CgroupFs
// port only. The version is looked up per controller, not per node: a hybrid host can have cpu on v1 and
// memory on v2, and each file is read from the hierarchy that holds its controller.
//
// Errors: a cgroup (or a required file in it) that does not exist -> ReadError RESIZELET_ERR_CGROUP_MISSING;
// a file whose text does not parse -> CgroupParseError; a path that escapes the mount -> PathError.
import { PathError, resolveInside } from './paths.ts';
import { CgroupParseError, emptyUsage, finishUsage, SETTING_FILES, USAGE_FILES } from './resources.ts';
import { CgroupVersions, WriteErrorCodes } from './types.ts';
import type {
  CgroupFs,
  CgroupLayout,
  CgroupPath,
  CgroupReading,
  CgroupSettings,
  CgroupUsage,
  CgroupVersion,
  Controller,
} from './types.ts';

export const ReadErrorCodes = {
  CGROUP_MISSING: WriteErrorCodes.CGROUP_MISSING,
  PERMISSION: WriteErrorCodes.PERMISSION,
  IO: WriteErrorCodes.IO,
} as const;
export type ReadErrorCode = (typeof ReadErrorCodes)[keyof typeof ReadErrorCodes];

export class ReadError extends Error {
  override readonly name = 'ReadError';
  constructor(
    readonly code: ReadErrorCode,
    message: string,
    /** The absolute path that failed. */
    readonly path: string,
    options?: { cause?: unknown },
  ) {
    super(message, options);
  }
}

const errnoOf = (err: unknown): string | undefined =>
  typeof err === 'object' && err !== null && 'code' in err && typeof err.code === 'string'
    ? err.code
    : undefined;

/**
 * ENOENT: the cgroup is gone (container exited, pod deleted). ENODEV: a file of a cgroup that was removed
 * while we held it open. Both mean "missing"; permission problems and anything else are reported as such.
 */
function toReadError(err: unknown, path: string, what: string): ReadError {
  const errno = errnoOf(err);
  const msg = err instanceof Error ? err.message : String(err);
  if (errno === 'ENOENT' || errno === 'ENODEV' || errno === 'ENOTDIR') {
    return new ReadError(ReadErrorCodes.CGROUP_MISSING, `${what} does not exist (${errno})`, path, {
      cause: err,
    });
  }
  if (errno === 'EACCES' || errno === 'EPERM') {
    return new ReadError(ReadErrorCodes.PERMISSION, `cannot read ${what}: ${msg}`, path, { cause: err });
  }
  return new ReadError(ReadErrorCodes.IO, `cannot read ${what}: ${msg}`, path, { cause: err });
}

/** Resolves (and safety-checks) the cgroup's directory once per hierarchy for one read. */
function cgroupDirs(
  fs: CgroupFs,
  layout: CgroupLayout,
  path: CgroupPath,
): (c: Controller) => Promise<string> {
  const byMount = new Map<string, Promise<string>>();
  return (controller) => {
    const mount = layout.controllers[controller].mount;
    let dir = byMount.get(mount);
    if (dir === undefined) {
      dir = resolveInside(fs, mount, path).catch((err: unknown) => {
        if (err instanceof PathError) throw err;
        throw toReadError(
          err,
          `${mount}/${path}`,
          `cgroup ${JSON.stringify(path)} in the ${controller} hierarchy`,
        );
      });
      byMount.set(mount, dir);
    }
    return dir;
  };
}

/** The entries of a per-version table whose controller is at that version on this node. */
function filesFor<T extends { controller: Controller }>(
  table: Record<CgroupVersion, readonly T[]>,
  layout: CgroupLayout,
): T[] {
  return CgroupVersions.flatMap((v) =>
    table[v].filter((f) => layout.controllers[f.controller].version === v),
  );
}

/** A file's text, or null for an optional file that is absent. */
async function readOne(
  fs: CgroupFs,
  dirOf: (c: Controller) => Promise<string>,
  entry: { controller: Controller; file: string; optional?: boolean },
  layout: CgroupLayout,
): Promise<string | null> {
  const dir = await dirOf(entry.controller);
  const abs = `${dir}/${entry.file}`;
  try {
    return await fs.readFile(abs, 'utf8');
  } catch (err) {
    if (entry.optional && errnoOf(err) === 'ENOENT') return null;
    const e = toReadError(err, abs, entry.file);
    // A v2 cgroup only has cpu.* / memory.* files once the parent enables the controller for its children.
    if (e.code === ReadErrorCodes.CGROUP_MISSING && layout.controllers[entry.controller].version === 'v2') {
      e.message += `; if the cgroup exists, is "${entry.controller}" in its parent's cgroup.subtree_control?`;
    }
    throw e;
  }
}

const REQUIRED_SETTINGS = ['cpuQuotaUs', 'cpuPeriodUs', 'cpuShares', 'memoryLimitBytes'] as const;

async function settingsWith(
  fs: CgroupFs,
  layout: CgroupLayout,
  path: CgroupPath,
  dirOf: (c: Controller) => Promise<string>,
): Promise<CgroupSettings> {
  const entries = filesFor(SETTING_FILES, layout);
  const texts = await Promise.all(entries.map((e) => readOne(fs, dirOf, e, layout)));
  const ctx = { weightFormula: layout.weightFormula };
  const out: Partial<CgroupSettings> = {};
  entries.forEach((e, i) => {
    const text = texts[i];
    if (text !== null && text !== undefined) Object.assign(out, e.parse(text, ctx));
  });
  for (const k of REQUIRED_SETTINGS) {
    // Only reachable with a layout whose controllers lack a file table entry, e.g. a hand-made override.
    if (!(k in out)) throw new CgroupParseError(path, '', `no file of this layout provides ${k}`);
  }
  return out as CgroupSettings;
}

async function usageWith(
  fs: CgroupFs,
  layout: CgroupLayout,
  dirOf: (c: Controller) => Promise<string>,
): Promise<CgroupUsage> {
  const entries = filesFor(USAGE_FILES, layout);
  const texts = await Promise.all(entries.map((e) => readOne(fs, dirOf, e, layout)));
  const raw = emptyUsage();
  entries.forEach((e, i) => {
    const text = texts[i];
    if (text !== null && text !== undefined) e.parse(text, raw);
  });
  return finishUsage(raw);
}

/** Current limits of one cgroup, in kernel units (`null` = unlimited). */
export function readSettings(fs: CgroupFs, layout: CgroupLayout, path: CgroupPath): Promise<CgroupSettings> {
  return settingsWith(fs, layout, path, cgroupDirs(fs, layout, path));
}

/** Usage counters of one cgroup (CPU time, throttling, memory, working set, RSS, OOM kills). */
export function readUsage(fs: CgroupFs, layout: CgroupLayout, path: CgroupPath): Promise<CgroupUsage> {
  return usageWith(fs, layout, cgroupDirs(fs, layout, path));
}

/** Settings and usage together, resolving the directory once per hierarchy. */
export async function readCgroup(
  fs: CgroupFs,
  layout: CgroupLayout,
  path: CgroupPath,
): Promise<CgroupReading> {
  const dirOf = cgroupDirs(fs, layout, path);
  const [settings, usage] = await Promise.all([
    settingsWith(fs, layout, path, dirOf),
    usageWith(fs, layout, dirOf),
  ]);
  return { path, settings, usage };
}

/** PIDs in the cgroup itself (not its children), from `cgroup.procs` in the cpu hierarchy. */
export async function listProcs(fs: CgroupFs, layout: CgroupLayout, path: CgroupPath): Promise<number[]> {
  const text = await readOne(
    fs,
    cgroupDirs(fs, layout, path),
    { controller: 'cpu', file: 'cgroup.procs' },
    layout,
  );
  const pids: number[] = [];
  for (const line of (text ?? '').split('\n')) {
    const t = line.trim();
    if (t === '') continue;
    if (!/^\d+$/.test(t))
      throw new CgroupParseError('cgroup.procs', text ?? '', `bad pid ${JSON.stringify(t)}`);
    pids.push(Number(t));
  }
  return pids;
}

/**
 * Names of the child cgroups (directories, never symlinks) in the cpu hierarchy, sorted: a pod's children are
 * its containers, its sandbox and, with CRI-O, conmon (see `classifyChildDir` in paths.ts).
 */
export async function listChildren(fs: CgroupFs, layout: CgroupLayout, path: CgroupPath): Promise<string[]> {
  const dir = await cgroupDirs(fs, layout, path)('cpu');
  let names: string[];
  try {
    names = await fs.readdir(dir);
  } catch (err) {
    throw toReadError(err, dir, `cgroup ${JSON.stringify(path)}`);
  }
  const out: string[] = [];
  for (const name of names) {
    try {
      const st = await fs.lstat(`${dir}/${name}`);
      if (st.isDirectory() && !st.isSymbolicLink()) out.push(name);
    } catch (err) {
      // A child removed between readdir and lstat is simply gone.
      if (errnoOf(err) !== 'ENOENT') throw toReadError(err, `${dir}/${name}`, `cgroup entry ${name}`);
    }
  }
  return out.sort();
}
