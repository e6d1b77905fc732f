// Test child: waits for one line on stdin (the parent moves it into its cgroups first, so all the work is
// charged there), prints "ready", then burns one CPU until killed, stdin closes (the parent died) or
// its maximum lifetime (argv[2] seconds, default 120) runs out, so it can never outlive a crashed test run.
import process from 'node:process';
import { setImmediate, setTimeout } from 'node:timers';
import { createInterface } from 'node:readline';

const maxSeconds = Number(process.argv[2] ?? 120);
const rl = createInterface({ input: process.stdin });
rl.once('line', () => {
  setTimeout(() => process.exit(0), maxSeconds * 1000).unref();
  process.stdout.write('ready\n');
  let x = 0;
  // Spin in 50 ms slices and yield in between, so stdin EOF and the lifetime timer are still noticed.
  const burn = () => {
    const until = Date.now() + 50;
    while (Date.now() < until) x = Math.sqrt(x + 1.5);
    setImmediate(burn);
  };
  burn();
});
process.stdin.on('end', () => process.exit(0));
