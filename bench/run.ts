// `npm run bench -- NAME [args]` runs bench/NAME.ts, which prints a table and writes bench/results/NAME.json.
// Each benchmark runs in its own process so one's memory and timers never skew another's figures.
import { spawnSync } from 'node:child_process';
import { existsSync, readdirSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

const here = fileURLToPath(new URL('.', import.meta.url));
const available = readdirSync(here)
  .filter((f) => f.endsWith('.ts') && f !== 'run.ts' && !f.startsWith('_'))
  .map((f) => f.slice(0, -3));
const [name, ...args] = process.argv.slice(2);
if (!name || !existsSync(`${here}${name}.ts`)) {
  process.stderr.write(`usage: npm run bench -- NAME [args]\navailable: ${available.join(', ')}\n`);
  process.exit(2);
}
const r = spawnSync(process.execPath, ['--import', 'tsx', `${here}${name}.ts`, ...args], {
  stdio: 'inherit',
});
process.exit(r.status ?? 1);
