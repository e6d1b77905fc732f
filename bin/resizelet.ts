#!/usr/bin/env node
// Entry point for the `resizelet` command (and `kubectl resizelet`). Subcommands are wired as they land.
const [command] = process.argv.slice(2);

if (command === 'agent') {
  const { runAgent } = await import('../agent/main.ts');
  process.exitCode = await runAgent(process.argv.slice(3));
} else {
  process.stderr.write('usage: resizelet agent [flags]\n');
  process.exitCode = 2;
}
