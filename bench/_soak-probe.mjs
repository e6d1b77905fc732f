// Loaded into the agent by bench/soak.ts only (`node --expose-gc --import bench/_soak-probe.mjs`), never in
// production. On SIGUSR2: a full garbage collection, then one line with process.memoryUsage() on stderr.
// RSS between collections is a sawtooth of garbage waiting for V8's next major GC, hundreds of MB tall;
// measured right after a forced one, what is left is what the agent really keeps, so growth shows.
import process from 'node:process';

process.on('SIGUSR2', () => {
  // "last-resort": V8's collect-all-available-garbage, which also gives freed pages back (as under memory
  // pressure), so the figure does not step with how much heap V8 happens to keep committed.
  globalThis.gc?.({ type: 'major', execution: 'sync', flavor: 'last-resort' });
  process.stderr.write(`SOAK-MEM ${JSON.stringify(process.memoryUsage())}\n`);
});
