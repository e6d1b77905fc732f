// Loaded into the agent by bench/scrape.ts only (`node --import bench/_scrape-probe.mjs`, with an IPC
// channel), never in production. It watches the agent's event loop at 1 ms resolution while the bench asks
// (a 1 ms timer would itself cost the idle CPU the bench measures, so it is off otherwise), and reports the
// V8 heap on request. Nothing else: the agent under measurement is the deployed bundle, unchanged.
import { monitorEventLoopDelay } from 'node:perf_hooks';
import process from 'node:process';
import v8 from 'node:v8';

/** @type {import('node:perf_hooks').IntervalHistogram | undefined} */
let eld;
process.on('message', (/** @type {{ type: string }} */ m) => {
  if (m.type === 'eld-start') {
    eld = monitorEventLoopDelay({ resolution: 1 });
    eld.enable();
  } else if (m.type === 'eld-stop' && eld) {
    eld.disable();
    process.send?.({ type: 'eld', maxMs: eld.max / 1e6 });
    eld = undefined;
  } else if (m.type === 'memory') {
    const spaces = Object.fromEntries(v8.getHeapSpaceStatistics().map((s) => [s.space_name, s.space_size]));
    process.send?.({ type: 'memory', usage: process.memoryUsage(), spaces });
  }
});
// The channel must not keep the agent alive on its own, nor end it: the bench stops it with SIGTERM.
process.channel?.unref();
