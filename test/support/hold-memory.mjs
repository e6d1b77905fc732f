// Test child: waits for one line on stdin (the parent moves it into its cgroups first: v1 charges a page
// to the cgroup of the task that first touches it and does not move charges by default), then allocates
// argv[2] MiB, touches every page so it is resident, prints "ready <bytes>" and holds it until killed,
// stdin closes or argv[3] seconds (default 120) pass.
import { Buffer } from 'node:buffer';
import process from 'node:process';
import { setTimeout } from 'node:timers';
import { createInterface } from 'node:readline';

const mib = Number(process.argv[2] ?? 64);
const maxSeconds = Number(process.argv[3] ?? 120);
let held;
const rl = createInterface({ input: process.stdin });
rl.once('line', () => {
  // Outside the V8 heap; fill() writes every page (a fresh mapping of zero pages would not be charged).
  held = Buffer.allocUnsafeSlow(mib * 1024 * 1024);
  held.fill(0xa5);
  setTimeout(() => process.exit(0), maxSeconds * 1000).unref();
  process.stdout.write(`ready ${held.length}\n`);
});
process.stdin.on('end', () => process.exit(held ? 0 : 1));
// Keep the event loop alive while holding.
process.stdin.resume();
