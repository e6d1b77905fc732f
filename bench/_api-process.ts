// The fake API server in its own process, as a real API server would be: its CPU is not the measured
// process's. Loaded from a state file; with --annotate-stdin, lines written to its stdin set annotations.
import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { readFile } from 'node:fs/promises';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';

/** The fake API server as a child process, loaded with a state file; resolves with its URL and token. */
export async function startApiProcess(
  statePath: string,
  kubeconfigPath: string,
): Promise<{ child: ChildProcess; url: string; token: string }> {
  const child = spawn(
    process.execPath,
    [
      '--import',
      'tsx',
      fileURLToPath(new URL('../test/fakes/apiserver-main.ts', import.meta.url)),
      '--state',
      statePath,
      '--kubeconfig',
      kubeconfigPath,
      '--annotate-stdin',
    ],
    {
      stdio: ['pipe', 'pipe', 'inherit'],
    },
  );
  const [line] = (await once(createInterface({ input: child.stdout! }), 'line')) as [string];
  const { url } = JSON.parse(line) as { url: string };
  const kc = JSON.parse(await readFile(kubeconfigPath, 'utf8')) as {
    users: Array<{ user: { token: string } }>;
  };
  return { child, url, token: kc.users[0]!.user.token };
}

/** SIGTERM the child this benchmark started, by its handle, and wait for it to exit. */
export async function stopApiProcess(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  const exited = once(child, 'exit');
  child.kill('SIGTERM');
  await exited;
}
