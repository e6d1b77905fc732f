// The node-local checkpoint: every allocation the agent enforces, so a restarted agent enforces them before
// the API server answers. Written atomically (temp file, fsync, rename, fsync of the directory) so a crash
// or power loss leaves either the old or the new file, never a torn one; a checksum catches anything else
// (a truncated copy, a hand edit). Concurrent saves share one write ("group commit").
import { createHash } from 'node:crypto';
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
  version: 1;
  node: string;
  entries: CheckpointEntry[];
  /** sha256 of JSON.stringify(entries). */
  checksum: string;
}

/** The slice of node:fs/promises the checkpoint needs; injected so fault tests can fail any step. */
export interface CheckpointFs {
  readFile(path: string, encoding: 'utf8'): Promise<string>;
  open(
    path: string,
    flags: string,
  ): Promise<{
    writeFile(data: string): Promise<void>;
    sync(): Promise<void>;
    close(): Promise<void>;
  }>;
  rename(from: string, to: string): Promise<void>;
  mkdir(path: string, opts: { recursive: true }): Promise<unknown>;
  rm(path: string, opts: { force: true }): Promise<void>;
}

export interface LoadResult {
  /** Set when the file existed but could not be trusted; the agent must rebuild and say so loudly. */
  problem?: string;
}

export interface Checkpoint {
  load(): Promise<LoadResult>;
  get(uid: string): CheckpointEntry | undefined;
  all(): CheckpointEntry[];
  set(entry: CheckpointEntry): void;
  delete(uid: string): void;
  /** Resolves once a write holding every change made before the call is durable. */
  save(): Promise<void>;
  readonly path: string;
}

const sha256 = (text: string): string => createHash('sha256').update(text).digest('hex');
const checksumOf = (entries: CheckpointEntry[]): string => sha256(JSON.stringify(entries));

// Entries are replaced, never changed in place (set() takes a new object): each one's JSON is made once and
// reused by every later write, so a save under a resize storm serializes one entry, not the whole node.
const entryJson = new WeakMap<CheckpointEntry, string>();
function jsonOf(entry: CheckpointEntry): string {
  let text = entryJson.get(entry);
  if (text === undefined) {
    text = JSON.stringify(entry);
    entryJson.set(entry, text);
  }
  return text;
}

export function createCheckpoint(opts: {
  fs: CheckpointFs;
  path: string;
  node: string;
  /** Called after each successful write with its duration: fsync stalls on the node's disk show here. */
  onWrite?: (ms: number) => void;
}): Checkpoint {
  const { fs, path, node } = opts;
  const entries = new Map<string, CheckpointEntry>();
  // Writes run one after another on this chain; `pending` is the next write, not yet started, which every
  // caller arriving before it starts shares (it snapshots the entries synchronously when it starts).
  let chain: Promise<void> = Promise.resolve();
  let pending: Promise<void> | undefined;

  async function writeOnce(): Promise<void> {
    // The same text as JSON.stringify of a CheckpointFile, built from the entries' cached JSON.
    const entriesJson = `[${Array.from(entries.values(), jsonOf).join(',')}]`;
    const text = `{"version":1,"node":${JSON.stringify(node)},"entries":${entriesJson},"checksum":"${sha256(entriesJson)}"}`;
    const dir = dirname(path);
    const tmp = join(dir, `.${basename(path)}.tmp`);
    // Each step is a round trip through the thread pool and back to a busy event loop: the directory is
    // made only when it is missing (the first write, or after someone removed it), not before every write.
    const handle = await fs.open(tmp, 'w').catch(async (err: unknown) => {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
      await fs.mkdir(dir, { recursive: true });
      return fs.open(tmp, 'w');
    });
    try {
      await handle.writeFile(text);
      await handle.sync();
    } finally {
      await handle.close();
    }
    await fs.rename(tmp, path);
    // The rename is only durable once the directory entry is: fsync the directory too.
    const dirHandle = await fs.open(dir, 'r');
    try {
      await dirHandle.sync();
    } finally {
      await dirHandle.close();
    }
  }

  return {
    path,
    async load() {
      let text: string;
      try {
        text = await fs.readFile(path, 'utf8');
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code === 'ENOENT') return {};
        return { problem: `cannot read checkpoint ${path}: ${(err as Error).message}` };
      }
      let file: CheckpointFile;
      try {
        file = JSON.parse(text) as CheckpointFile;
      } catch {
        return { problem: `checkpoint ${path} is not valid JSON (${text.length} bytes; truncated?)` };
      }
      if (file?.version !== 1 || !Array.isArray(file.entries) || checksumOf(file.entries) !== file.checksum) {
        return { problem: `checkpoint ${path} failed its checksum; it was corrupted or edited` };
      }
      if (file.node !== node) {
        return {
          problem: `checkpoint ${path} belongs to node ${JSON.stringify(file.node)}, not ${JSON.stringify(node)}`,
        };
      }
      entries.clear();
      for (const e of file.entries) entries.set(e.uid, e);
      return {};
    },
    get: (uid) => entries.get(uid),
    all: () => [...entries.values()],
    set(entry) {
      entries.set(entry.uid, entry);
    },
    delete(uid) {
      entries.delete(uid);
    },
    save() {
      if (pending) return pending;
      const next = chain
        .catch(() => undefined)
        .then(async () => {
          pending = undefined;
          const started = performance.now();
          await writeOnce();
          opts.onWrite?.(performance.now() - started);
        });
      pending = next;
      chain = next;
      return next;
    },
  };
}
