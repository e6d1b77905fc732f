// Applies a plan through the CgroupFs port: write only what differs, read every write back, stop at the
// first failure and put back what was already written. The planner decided the order; this module only
// keeps the node safe while following it.
import { PathError, resolveInside } from './paths.ts';
import { SETTING_FILES, sameSettingValue, type SettingFile } from './resources.ts';
import {
  WriteErrorCodes,
  type CgroupFs,
  type CgroupLayout,
  type CgroupWrite,
  type ExecutionResult,
  type Plan,
  type WriteErrorCode,
  type WriteResult,
} from './types.ts';

/** The pino-compatible slice the executor logs through. */
export interface ExecutorLog {
  info(obj: Record<string, unknown>, msg: string): void;
  warn(obj: Record<string, unknown>, msg: string): void;
  error(obj: Record<string, unknown>, msg: string): void;
}

export interface ExecutePlanOptions {
  fs: CgroupFs;
  layout: Pick<CgroupLayout, 'controllers'>;
  plan: Plan;
  log?: ExecutorLog;
  /**
   * Plan write index -> other texts the file may read back. Only for writes whose value another owner of
   * the cgroup also holds and renders its own way: systemd, for values handed to it as unit properties
   * (cgroup/systemd-apply.ts), may show its rounding of a CPU quota. Exactly those texts, nothing between.
   */
  alsoAccept?: ReadonlyMap<number, readonly string[]>;
}

export class CgroupWriteError extends Error {
  constructor(
    readonly code: WriteErrorCode,
    message: string,
    /** The errno name (`EINVAL`, ...) when the failure came from the kernel. */
    readonly errno?: string,
  ) {
    super(message);
    this.name = 'CgroupWriteError';
  }
}

/**
 * errno -> stable code. What each one means on a cgroup file:
 * - ENOENT: the cgroup is gone (the container exited or was restarted with a new cgroup), or the file does
 *   not exist on this kernel.
 * - EBUSY: on v1 `memory.limit_in_bytes`/`memsw`, the kernel tried to reclaim the cgroup's pages down to the
 *   new limit and could not (anonymous memory without swap cannot be reclaimed): the limit is left unchanged.
 * - EINVAL: the kernel refused the value itself: on v1 a child's CFS quota above its parent's (or a parent
 *   lowered below a child's), a quota under the 1 ms floor (1000 us), a memory limit above memsw, memsw
 *   below the limit.
 * - EACCES/EPERM: not root, or a read-only cgroupfs mount (a pod without the host's cgroupfs mounted rw).
 */
export function writeErrorCodeFromErrno(errno: string | undefined): WriteErrorCode {
  switch (errno) {
    case 'ENOENT':
      return WriteErrorCodes.CGROUP_MISSING;
    case 'EBUSY':
      return WriteErrorCodes.BUSY;
    case 'EINVAL':
      return WriteErrorCodes.INVALID;
    case 'EACCES':
    case 'EPERM':
    case 'EROFS':
      return WriteErrorCodes.PERMISSION;
    default:
      return WriteErrorCodes.IO;
  }
}

function toWriteError(err: unknown, op: string, file: string): CgroupWriteError {
  if (err instanceof CgroupWriteError) return err;
  if (err instanceof PathError) return new CgroupWriteError(WriteErrorCodes.PATH_UNSAFE, err.message);
  const errno = typeof err === 'object' && err !== null && 'code' in err ? String(err.code) : undefined;
  const detail = err instanceof Error ? err.message : String(err);
  return new CgroupWriteError(writeErrorCodeFromErrno(errno), `${op} ${file}: ${detail}`, errno);
}

/** A write resolved to its absolute file and its table entry, checked before anything is written. */
interface Target {
  write: CgroupWrite;
  absPath: string;
  file: SettingFile;
}

/**
 * Resolve and check every write before the first one happens, so an unsafe or unknown target aborts the
 * plan with nothing written.
 */
async function resolveTargets(
  fs: CgroupFs,
  layout: ExecutePlanOptions['layout'],
  writes: CgroupWrite[],
): Promise<{ targets: Target[] } | { index: number; error: CgroupWriteError }> {
  const targets: Target[] = [];
  for (const [index, write] of writes.entries()) {
    try {
      targets.push(await resolveTarget(fs, layout, write));
    } catch (err) {
      return { index, error: toWriteError(err, 'resolve', `${write.path}/${write.file}`) };
    }
  }
  return { targets };
}

async function resolveTarget(
  fs: CgroupFs,
  layout: ExecutePlanOptions['layout'],
  write: CgroupWrite,
): Promise<Target> {
  const mount = layout.controllers[write.controller];
  // Only the files resizelet means to write: never cgroup.procs, release_agent (a known container escape),
  // notify_on_release or anything a corrupted plan could name.
  const file = SETTING_FILES[mount.version].find(
    (f) => f.controller === write.controller && f.file === write.file && !f.readOnly,
  );
  if (!file) {
    throw new CgroupWriteError(
      WriteErrorCodes.PATH_UNSAFE,
      `${write.controller}/${write.file} is not a ${mount.version} file resizelet writes`,
    );
  }
  // Pods and containers are never the hierarchy's root, whose limits apply to the whole node.
  if (write.path === '')
    throw new CgroupWriteError(WriteErrorCodes.PATH_UNSAFE, `refusing the root of ${mount.mount}`);
  // Lexical checks, then the real path: a symlink planted in the tree (cgroupfs has none) could lead anywhere.
  const dir = await resolveInside(fs, mount.mount, write.path);
  const absPath = `${dir}/${write.file}`;
  const st = await fs.lstat(absPath);
  if (st.isSymbolicLink() || st.isDirectory()) {
    throw new CgroupWriteError(WriteErrorCodes.PATH_UNSAFE, `${absPath} is not a plain cgroup file`);
  }
  return { write, absPath, file };
}

/** What an applied write needs to be undone: the text the file held just before. */
interface Applied {
  index: number;
  target: Target;
  before: string;
}

export async function executePlan(opts: ExecutePlanOptions): Promise<ExecutionResult> {
  const { fs, layout, plan, log } = opts;
  const writes = plan.writes;
  const results: WriteResult[] = writes.map((write) => ({ write, status: 'skipped' }));

  const resolved = await resolveTargets(fs, layout, writes);
  if ('error' in resolved) {
    // Nothing was written: the offending write is 'failed', every other one 'skipped'.
    const { index, error: e } = resolved;
    const write = writes[index]!;
    results[index] = { write, status: 'failed', error: { code: e.code, message: e.message } };
    log?.warn(
      { err: e, code: e.code, path: write.path, file: write.file },
      'cgroup plan refused before writing',
    );
    return { ok: false, results, error: { code: e.code, message: e.message, write } };
  }
  const { targets } = resolved;

  const applied: Applied[] = [];
  for (let i = 0; i < targets.length; i++) {
    const target = targets[i]!;
    const { write, absPath, file } = target;
    const result = results[i]!;
    let before: string;
    try {
      before = await fs.readFile(absPath, 'utf8');
    } catch (err) {
      return fail(i, toWriteError(err, 'read', absPath));
    }
    if (sameSettingValue(file, write.value, before)) {
      result.status = 'unchanged';
      continue;
    }
    try {
      await fs.writeFile(absPath, write.value);
    } catch (err) {
      // A refused write leaves the file as it was (the kernel applies a cgroup write whole or not at all),
      // so there is nothing of this one to undo.
      return fail(i, toWriteError(err, 'write', absPath));
    }
    applied.push({ index: i, target, before });
    let after: string;
    try {
      after = await fs.readFile(absPath, 'utf8');
    } catch (err) {
      return fail(i, toWriteError(err, 'read back', absPath));
    }
    // The kubelet and the runtime write these files too, and a kernel may clamp: trust only what reads back.
    const accepted = opts.alsoAccept?.get(i) ?? [];
    if (
      !sameSettingValue(file, write.value, after) &&
      !accepted.some((t) => sameSettingValue(file, t, after))
    ) {
      const e = new CgroupWriteError(
        WriteErrorCodes.READBACK_MISMATCH,
        `${absPath}: wrote ${JSON.stringify(write.value)}, read back ${JSON.stringify(after.trim())}`,
      );
      return fail(i, e);
    }
    result.status = 'written';
    log?.info(
      { file: absPath, value: write.value, previous: before.trim(), reason: write.reason },
      'cgroup write',
    );
  }
  return { ok: true, results };

  // `applied` already holds the failed write when it reached the file (a read-back failure or mismatch), so
  // it is undone with the others.
  async function fail(index: number, e: CgroupWriteError): Promise<ExecutionResult> {
    const write = writes[index]!;
    results[index] = { write, status: 'failed', error: { code: e.code, message: e.message } };
    log?.warn(
      { err: e, code: e.code, file: write.file, path: write.path, value: write.value },
      'cgroup write failed',
    );
    await restore(applied, results, fs, log);
    return { ok: false, results, error: { code: e.code, message: e.message, write } };
  }
}

/**
 * Undo in reverse order. The plan's order kept every intermediate state valid for the kernel (pod raised
 * before a child grew, limit lowered before memsw...), so walking the same states backwards is valid too.
 */
async function restore(applied: Applied[], results: WriteResult[], fs: CgroupFs, log?: ExecutorLog) {
  for (const { index, target, before } of [...applied].reverse()) {
    const result = results[index]!;
    try {
      // Writing back the text as read works for every file: v1's page-max reads back and is accepted as
      // "unlimited", v2's "max 100000" is the format cpu.max takes.
      await fs.writeFile(target.absPath, before.trim());
      const now = await fs.readFile(target.absPath, 'utf8');
      if (!sameSettingValue(target.file, before.trim(), now)) {
        throw new CgroupWriteError(
          WriteErrorCodes.READBACK_MISMATCH,
          `${target.absPath}: restored ${JSON.stringify(before.trim())}, read back ${JSON.stringify(now.trim())}`,
        );
      }
      if (result.status !== 'failed') result.status = 'restored';
    } catch (err) {
      const e = toWriteError(err, 'restore', target.absPath);
      // The file is now neither the old nor the new value we know: the caller must re-read before retrying.
      results[index] = {
        write: target.write,
        status: 'restore-failed',
        error: { code: e.code, message: e.message },
      };
      log?.error(
        { err: e, code: e.code, file: target.absPath, value: before.trim() },
        'cgroup restore failed',
      );
    }
  }
}
