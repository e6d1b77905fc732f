#!/usr/bin/env node
// The launcher behind the package's `resizelet` and `kubectl-resizelet` commands (npm link, npm install -g
// of the checkout, the container's /usr/local/bin). Plain JavaScript that any Node can parse, because the
// `node` on a user's PATH may be older than the Node >= 22.19 the code needs:
// - too old: re-run this file on the Node 24 the project installs from npm (node_modules/node), else say so;
// - a source checkout (bin/resizelet.ts is here): run the TypeScript through tsx, a dev dependency, so an
//   edit takes effect without a build;
// - an installation without sources (the container image): run the build in dist/.
import { spawn } from 'node:child_process';
import { existsSync, realpathSync } from 'node:fs';
import { dirname, join } from 'node:path';
import process from 'node:process';
import { fileURLToPath, pathToFileURL } from 'node:url';

const self = realpathSync(fileURLToPath(import.meta.url));
const root = join(dirname(self), '..');
const [major = 0, minor = 0] = process.versions.node.split('.').map(Number);
const recentEnough = major > 22 || (major === 22 && minor >= 19);

if (!recentEnough) {
  const bundled = join(root, 'node_modules', 'node', 'bin', 'node');
  if (!existsSync(bundled) || process.env.RESIZELET_LAUNCHER_REEXEC === '1') {
    process.stderr.write(
      `resizelet: needs Node.js 22.19 or newer, and this is ${process.version} (${process.execPath}); ` +
        'install a newer Node, or run "npm ci" in the resizelet checkout to get its own Node 24\n',
    );
    process.exit(1);
  }
  const child = spawn(bundled, [self, ...process.argv.slice(2)], {
    stdio: 'inherit',
    env: { ...process.env, RESIZELET_LAUNCHER_REEXEC: '1' },
  });
  // A terminal's Ctrl-C and hang-up reach the whole process group, the child included: the launcher only
  // has to outlive them (a second SIGINT forwarded from here would cut the agent's ordered shutdown short).
  // A SIGTERM is sent to one process, this one: pass it on.
  process.on('SIGINT', () => undefined);
  process.on('SIGHUP', () => undefined);
  process.on('SIGTERM', () => child.kill('SIGTERM'));
  child.on('exit', (code, signal) => {
    if (signal) process.kill(process.pid, signal);
    else process.exit(code ?? 1);
  });
} else {
  const source = join(root, 'bin', 'resizelet.ts');
  const built = join(root, 'dist', 'bin', 'resizelet.js');
  if (existsSync(source) && existsSync(join(root, 'node_modules', 'tsx'))) {
    const { register } = await import('tsx/esm/api');
    register();
    await import(pathToFileURL(source).href);
  } else if (existsSync(built)) {
    await import(pathToFileURL(built).href);
  } else {
    process.stderr.write(
      `resizelet: ${root} has neither its TypeScript sources with tsx (run "npm ci" there) nor a build in dist/ ` +
        '(see the Dockerfile for the build command)\n',
    );
    process.exit(1);
  }
}
