#!/usr/bin/env node
// Entry point for the `resizelet` command (and `kubectl resizelet`): `agent` runs the node agent,
// `resize` and `status` are the user's CLI (bin/cli/). The CLI is loaded only when asked for, so the
// agent starts without it and the CLI without the agent.
const [command] = process.argv.slice(2);

if (command === 'agent') {
  const { runAgent } = await import('../agent/main.ts');
  process.exitCode = await runAgent(process.argv.slice(3));
} else {
  const { runCli } = await import('./cli/main.ts');
  const code = await runCli(process.argv.slice(2), {
    stdout: (text) => void process.stdout.write(text),
    stderr: (text) => void process.stderr.write(text),
    env: process.env,
    now: () => Date.now(),
  });
  // The API client keeps idle connections open for a few seconds; a CLI should not wait for them.
  // stdout and stderr are synchronous for files, pipes and terminals on Linux, so nothing is lost.
  process.exit(code);
}
