// Test child: waits for one line on stdin (the parent moves it into its cgroups first: v1 charges a page to
// the cgroup of the task that first touches it), then holds argv[2] MiB and prints "ready <MiB>"; on a second
// line it grows by argv[3] MiB every argv[4] ms up to argv[5] MiB, touching every page so it is resident, and
// prints "held <MiB>" after each step. Holds the last amount until killed, stdin closes or 120 s pass.
import { Buffer } from 'node:buffer';
import process from 'node:process';
import { clearInterval, setInterval, setTimeout } from 'node:timers';
import { createInterface } from 'node:readline';

const [startMiB, stepMiB, everyMs, maxMiB] = process.argv.slice(2, 6).map(Number);
const chunks = [];
let held = 0;
const grow = (mib) => {
  // Outside the V8 heap; fill() writes every page (a fresh mapping of zero pages would not be charged).
  const b = Buffer.allocUnsafeSlow(mib * 1024 * 1024);
  b.fill(0x5a);
  chunks.push(b);
  held += mib;
};
const rl = createInterface({ input: process.stdin });
let lines = 0;
rl.on('line', () => {
  lines++;
  if (lines === 1) {
    setTimeout(() => process.exit(0), 120_000).unref();
    grow(startMiB);
    process.stdout.write(`ready ${held}\n`);
    return;
  }
  if (lines !== 2) return;
  // The second line starts the growth, so the parent can first start whatever is to keep up with it.
  const timer = setInterval(() => {
    if (held + stepMiB > maxMiB) return clearInterval(timer);
    grow(stepMiB);
    process.stdout.write(`held ${held}\n`);
  }, everyMs);
});
process.stdin.on('end', () => process.exit(0));
process.stdin.resume();
