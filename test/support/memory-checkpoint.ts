// A checkpoint held in memory only, for tests that drive the reconciler without a filesystem.
import type { Checkpoint, CheckpointEntry } from '../../agent/reconcile/checkpoint.ts';

/** Saves and flushes resolve at once; `entries` is the map it reads and writes, for tests to inspect. */
export function memoryCheckpoint(entries = new Map<string, CheckpointEntry>()): Checkpoint {
  return {
    path: '/nonexistent',
    load: async () => ({}),
    get: (uid) => entries.get(uid),
    all: () => [...entries.values()],
    set: (e) => void entries.set(e.uid, e),
    delete: (uid) => void entries.delete(uid),
    save: async () => undefined,
    flush: async () => undefined,
  };
}
