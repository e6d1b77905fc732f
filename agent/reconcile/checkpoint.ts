// The node-local checkpoint: every allocation the agent enforces, so a restarted agent enforces them before
// the API server answers. The disk copy is written atomically (temp file, fsync, rename, fsync of the
// directory) so a crash or power loss leaves either the old or the new file, never a torn one; the run copy
// (below) by temp file and rename. A checksum catches anything else (a truncated copy, a hand edit).
// Concurrent saves share one write per copy ("group commit").
//
// Two copies, because the two ways an agent loses its memory are not alike:
// - the agent restarts (a crash, an OOM kill, a rollout) while the node runs on: the containers keep their
//   cgroups, and the checkpoint must hold every allocation a status already calls Completed, or the
//   restarted agent would put back an older one. The run copy, on the node's memory-backed /run, holds it
//   without waiting for any disk, and survives any number of agent restarts;
// - the node reboots: /run is empty, and every container starts again from its spec anyway. The disk copy
//   survives this, but its fsync follows the disk (measured on this project's VM: about 290 ms, every
//   15 s or so). It may lag the statuses by the writes still in flight at the power cut; those allocations
//   are then not in the checkpoint, not proven by the (new) cgroups, so their requests are judged again.
// Without a run copy, save() waits for the disk.
import { createHash } from 'node:crypto';
import { crc32 } from 'node:zlib';
import { dirname, join, basename } from 'node:path';
import type { WireAllocation } from '../resize/status.ts';

export interface CheckpointEntry {
  uid: string;
  namespace: string;
  name: string;
  /** The allocation to enforce, in container order. */
  allocation: WireAllocation[];
  observedRequest?: string;
  /**
   * `applying` while a plan's writes are in flight: after a crash the agent re-applies `allocation`, so a
   * container ends with the new allocation, never a mix of old and new writes.
   */
  phase: 'applying' | 'applied';
  previous?: WireAllocation[];
  /** QoS class and running container IDs, so allocations can be enforced before the API server answers. */
  qos: string;
  containerIds: Record<string, string>;
  updatedAt: string;
}

interface CheckpointFile {
  /** 2 since the file carries a generation; a version 1 file (no generation) still loads, as generation 0. */
  version: 1 | 2;
  node: string;
  /** Counts every change; of two copies, the one with the higher generation is the newer. */
  generation?: number;
  entries: CheckpointEntry[];
  /**
   * Version 2: CRC-32 (8 hex digits) of `${generation}\n${JSON.stringify(entries)}`; version 1: sha256 of
   * the entries' JSON alone. It catches a torn or edited file, not an attacker (the file is root's).
   */
  checksum: string;
}

/** The slice of node:fs/promises the checkpoint needs; injected so fault tests can fail any step. */
export interface CheckpointFs {
  readFile(path: string, encoding: 'utf8'): Promise<string>;
  open(
    path: string,
    flags: string,
  ): Promise<{
    writeFile(data: Uint8Array): Promise<void>;
    sync(): Promise<void>;
    close(): Promise<void>;
  }>;
  rename(from: string, to: string): Promise<void>;
  mkdir(path: string, opts: { recursive: true }): Promise<unknown>;
  rm(path: string, opts: { force: true }): Promise<void>;
}

export interface LoadResult {
  /** Set when a copy existed but none could be trusted; the agent must rebuild and say so loudly. */
  problem?: string;
  /** Which copy the entries came from; absent when there was none. */
  loadedFrom?: CopyName;
  /** Copies that exist but could not be trusted while the other one loaded: worth an alarm. */
  unreadable?: string[];
  /** Copies passed over for being older than the one loaded: expected after an agent crash. */
  older?: string[];
}

export type CopyName = 'run' | 'disk';

export interface Checkpoint {
  load(): Promise<LoadResult>;
  get(uid: string): CheckpointEntry | undefined;
  all(): CheckpointEntry[];
  set(entry: CheckpointEntry): void;
  delete(uid: string): void;
  /**
   * Resolves once every change made before the call is where a restarted agent would load it: in the run
   * copy, or on disk when there is no run copy (or its write failed).
   */
  save(): Promise<void>;
  /** Resolves once every change made before the call is on disk, fsynced: it survives a reboot too. */
  flush(): Promise<void>;
  readonly path: string;
  readonly runPath?: string;
}

const sha256 = (text: string): string => createHash('sha256').update(text).digest('hex');
/** The version 2 checksum of a generation and its entries' JSON (text or its UTF-8 bytes). */
const checksumV2 = (generation: number, entriesJson: string | Uint8Array): string =>
  crc32(entriesJson, crc32(`${generation}\n`))
    .toString(16)
    .padStart(8, '0');

// Entries are replaced, never changed in place (set() takes a new object): each one's JSON is encoded once
// and reused by every later write, so a save under a resize storm encodes one entry, not the whole node;
// the file is assembled and checksummed as bytes (a string of the whole file would be encoded again by
// every write: measured, ~0.45 ms a write for 250 pods as strings and sha256, ~0.12 ms as bytes and CRC-32).
const entryBytes = new WeakMap<CheckpointEntry, Buffer>();
function bytesOf(entry: CheckpointEntry): Buffer {
  let bytes = entryBytes.get(entry);
  if (bytes === undefined) {
    bytes = Buffer.from(JSON.stringify(entry));
    entryBytes.set(entry, bytes);
  }
  return bytes;
}
const OPEN = Buffer.from('[');
const COMMA = Buffer.from(',');
const CLOSE = Buffer.from(']');

type ReadCopy =
  | { kind: 'missing' }
  | { kind: 'bad'; problem: string }
  | { kind: 'ok'; version: 1 | 2; generation: number; entries: CheckpointEntry[] };

async function readCopy(fs: CheckpointFs, path: string, node: string): Promise<ReadCopy> {
  let text: string;
  try {
    text = await fs.readFile(path, 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return { kind: 'missing' };
    return { kind: 'bad', problem: `cannot read checkpoint ${path}: ${(err as Error).message}` };
  }
  let file: CheckpointFile;
  try {
    file = JSON.parse(text) as CheckpointFile;
  } catch {
    return {
      kind: 'bad',
      problem: `checkpoint ${path} is not valid JSON (${text.length} bytes; truncated?)`,
    };
  }
  const generation = file?.version === 2 ? file.generation : 0;
  const valid =
    Array.isArray(file?.entries) &&
    typeof generation === 'number' &&
    (file.version === 2
      ? checksumV2(generation, JSON.stringify(file.entries)) === file.checksum
      : file.version === 1 && sha256(JSON.stringify(file.entries)) === file.checksum);
  if (!valid) {
    return { kind: 'bad', problem: `checkpoint ${path} failed its checksum; it was corrupted or edited` };
  }
  if (file.node !== node) {
    return {
      kind: 'bad',
      problem: `checkpoint ${path} belongs to node ${JSON.stringify(file.node)}, not ${JSON.stringify(node)}`,
    };
  }
  return { kind: 'ok', version: file.version, generation, entries: file.entries };
}

/** One copy's writes, one after another; callers arriving before the next write starts share it. */
function createCopyWriter(opts: {
  fs: CheckpointFs;
  path: string;
  /** The file's bytes and generation, taken synchronously when a write starts. */
  snapshot(): { bytes: Buffer; generation: number };
  /**
   * Whether to fsync (the file before its rename, the directory after). Only the disk copy does: fsync
   * guards against a power cut, which the run copy's tmpfs does not survive anyway, and without it the run
   * copy's write is three thread-pool round trips, not seven. Against a crash of the agent, the rename
   * alone is enough: the kernel has the file.
   */
  durable: boolean;
  onWrite?: (ms: number) => void;
  onFailure?: (err: unknown) => void;
}): {
  /** A write of the entries as they are when it starts; shared by every caller until it starts. */
  request(): Promise<void>;
  /** Resolves once this copy holds `generation`: at once, with the write in flight, or a new one. */
  holding(generation: number): Promise<void>;
} {
  const { fs, path } = opts;
  const dir = dirname(path);
  const tmp = join(dir, `.${basename(path)}.tmp`);
  let chain: Promise<void> = Promise.resolve();
  let pending: Promise<void> | undefined;
  let written = -1; // the generation of the last write that succeeded
  let inFlight: { generation: number; done: Promise<void> } | undefined;

  async function writeOnce(bytes: Buffer): Promise<void> {
    // Each step is a round trip through the thread pool and back to a busy event loop: the directory is
    // made only when it is missing (the first write, or after someone removed it), not before every write.
    const handle = await fs.open(tmp, 'w').catch(async (err: unknown) => {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
      await fs.mkdir(dir, { recursive: true });
      return fs.open(tmp, 'w');
    });
    try {
      await handle.writeFile(bytes);
      if (opts.durable) await handle.sync();
    } finally {
      await handle.close();
    }
    await fs.rename(tmp, path);
    if (!opts.durable) return;
    // The rename is only durable once the directory entry is: fsync the directory too.
    const dirHandle = await fs.open(dir, 'r');
    try {
      await dirHandle.sync();
    } finally {
      await dirHandle.close();
    }
  }

  return {
    request() {
      if (pending) return pending;
      const next = chain
        .catch(() => undefined)
        .then(async () => {
          pending = undefined;
          const { bytes, generation } = opts.snapshot();
          const started = performance.now();
          const done = writeOnce(bytes);
          inFlight = { generation, done };
          await done.catch((err: unknown) => {
            opts.onFailure?.(err);
            throw err;
          });
          written = generation;
          opts.onWrite?.(performance.now() - started);
        });
      pending = next;
      chain = next;
      return next;
    },
    holding(generation) {
      if (written === generation) return Promise.resolve();
      if (!pending && inFlight?.generation === generation) return inFlight.done;
      return this.request();
    },
  };
}

export function createCheckpoint(opts: {
  fs: CheckpointFs;
  /** The disk copy. */
  path: string;
  /** The run copy, on a memory-backed filesystem that outlives the agent but not the node (/run). */
  runPath?: string;
  node: string;
  /** Called after each successful write with its duration: fsync stalls on the node's disk show here. */
  onWrite?: (ms: number, copy: CopyName) => void;
  /** Every failed write, once per write and copy: count problems here, not in save()'s callers. */
  onError?: (err: unknown, copy: CopyName) => void;
}): Checkpoint {
  const { fs, path, runPath, node } = opts;
  const entries = new Map<string, CheckpointEntry>();
  let generation = 0;

  // Both copies usually write the same generation: the bytes are made once.
  let last: { bytes: Buffer; generation: number } | undefined;
  function snapshot(): { bytes: Buffer; generation: number } {
    if (last?.generation === generation) return last;
    // The same text as JSON.stringify of a CheckpointFile, built from the entries' cached bytes.
    const parts: Buffer[] = [OPEN];
    for (const entry of entries.values()) {
      if (parts.length > 1) parts.push(COMMA);
      parts.push(bytesOf(entry));
    }
    parts.push(CLOSE);
    const entriesJson = Buffer.concat(parts);
    const head = `{"version":2,"node":${JSON.stringify(node)},"generation":${generation},"entries":`;
    const tail = `,"checksum":"${checksumV2(generation, entriesJson)}"}`;
    last = { bytes: Buffer.concat([Buffer.from(head), entriesJson, Buffer.from(tail)]), generation };
    return last;
  }
  // Every failed write reaches onError once (callers sharing a write each hear of it through save(), and
  // with a run copy a failed disk write reaches no caller at all).
  const disk = createCopyWriter({
    fs,
    path,
    snapshot,
    durable: true,
    onWrite: (ms) => opts.onWrite?.(ms, 'disk'),
    onFailure: (err) => opts.onError?.(err, 'disk'),
  });
  const run =
    runPath === undefined
      ? undefined
      : createCopyWriter({
          fs,
          path: runPath,
          snapshot,
          durable: false,
          onWrite: (ms) => opts.onWrite?.(ms, 'run'),
          onFailure: (err) => opts.onError?.(err, 'run'),
        });

  // save() answers in call order: a save that fell back to the disk (its run write failed) must not resolve
  // after a later save that the run copy answered, or a pod's older Completed would be published last.
  let answered: Promise<unknown> = Promise.resolve();

  return {
    path,
    runPath,
    async load() {
      const copies: Array<[CopyName, string]> = run && runPath ? [['run', runPath]] : [];
      copies.push(['disk', path]);
      const read = await Promise.all(
        copies.map(async ([name, p]) => [name, await readCopy(fs, p, node)] as const),
      );
      let best: { name: CopyName; generation: number; entries: CheckpointEntry[] } | undefined;
      const unreadable: string[] = [];
      const older: string[] = [];
      for (const [name, copy] of read) {
        if (copy.kind === 'bad') unreadable.push(copy.problem);
        if (copy.kind !== 'ok') continue;
        const candidate = { name, generation: copy.generation, entries: copy.entries };
        // A version 1 disk copy was written by an agent without a run copy (a rollback): it is newer than
        // any run copy left over from before, whatever the generations say. On a tie, the disk copy (read
        // last), which is durable.
        const rollback = name === 'disk' && copy.version === 1;
        if (!best) best = candidate;
        else if (rollback || copy.generation >= best.generation) {
          older.push(
            rollback
              ? `${best.name} copy predates the version 1 disk copy (an agent without a run copy wrote it since)`
              : `${best.name} copy is older (generation ${best.generation}, loaded ${candidate.generation})`,
          );
          best = candidate;
        } else {
          older.push(`${name} copy is older (generation ${candidate.generation}, loaded ${best.generation})`);
        }
      }
      // Generations continue from a microsecond clock, not just from the copy loaded, so that writes after
      // this start outrank a copy left over from another history (the flag dropped and added back, say).
      generation = Math.max(best?.generation ?? 0, Date.now() * 1000);
      if (!best) return unreadable.length > 0 ? { problem: unreadable.join('; ') } : {};
      entries.clear();
      for (const e of best.entries) entries.set(e.uid, e);
      return {
        loadedFrom: best.name,
        ...(unreadable.length > 0 ? { unreadable } : {}),
        ...(older.length > 0 ? { older } : {}),
      };
    },
    get: (uid) => entries.get(uid),
    all: () => [...entries.values()],
    set(entry) {
      entries.set(entry.uid, entry);
      generation++;
    },
    delete(uid) {
      if (entries.delete(uid)) generation++;
    },
    save() {
      const onDisk = disk.request();
      if (!run) return onDisk;
      onDisk.catch(() => undefined); // reported through onError
      // A run copy that cannot be written (a full /run, say) leaves the disk copy to answer.
      const result = run.request().catch(() => onDisk);
      const inOrder = answered.then(
        () => result,
        () => result,
      );
      answered = inOrder.catch(() => undefined);
      return inOrder;
    },
    flush() {
      return disk.holding(generation);
    },
  };
}
