// node:fs/promises for the checkpoint, with chosen fsyncs held while a gate is closed: a node disk that
// stalls, on demand.
import * as fsp from 'node:fs/promises';
import type { CheckpointFs } from '../../agent/reconcile/checkpoint.ts';

/** The fsyncs of the paths `holds` picks wait while the gate is closed; `held` counts those that waited. */
export function gatedFsync(holds: (path: string) => boolean): {
  fs: CheckpointFs;
  close(): void;
  open(): void;
  readonly held: number;
} {
  let gate: Promise<void> | undefined;
  let release: (() => void) | undefined;
  let held = 0;
  const fs: CheckpointFs = {
    readFile: (p, enc) => fsp.readFile(p, enc),
    rename: (a, b) => fsp.rename(a, b),
    mkdir: (p, o) => fsp.mkdir(p, o),
    rm: (p, o) => fsp.rm(p, o),
    async open(p, flags) {
      const handle = await fsp.open(p, flags);
      return {
        writeFile: (data) => handle.writeFile(data),
        async sync() {
          if (gate && holds(p)) {
            held++;
            await gate;
          }
          await handle.sync();
        },
        close: () => handle.close(),
      };
    },
  };
  return {
    fs,
    close() {
      gate = new Promise((r) => (release = r));
    },
    open() {
      gate = undefined;
      release?.();
    },
    get held() {
      return held;
    },
  };
}
