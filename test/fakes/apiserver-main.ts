// Runs the fake API server as its own process, for the demo and for tests that start the agent as a
// separate process:
//
//   tsx test/fakes/apiserver-main.ts --state cluster.json --kubeconfig /tmp/kubeconfig
//   (or positionally: tsx test/fakes/apiserver-main.ts cluster.json /tmp/kubeconfig)
//
// The state file is {"nodes": [...], "pods": [...], "namespaces": [...], "objects": [...]} or a v1
// List whose items are dispatched by kind. Prints one line of JSON, {"url":..., "kubeconfig":...},
// once the server listens, and runs until SIGTERM or SIGINT.
//
// With --annotate-stdin, each line on stdin is a JSON array of {"namespace","name","annotations"}: set
// (null: removed) on those pods as one write each, as if clients elsewhere had patched them. Load
// generators (bench resize) use it so that sending requests costs the agent's process nothing.
import { readFile } from 'node:fs/promises';
import { createInterface } from 'node:readline';
import { parseArgs } from 'node:util';
import { startFakeApiServer } from './apiserver.ts';
import type { FakeApiServer } from './apiserver.ts';
import type { KubeObject } from './kube/resources.ts';

interface StateFile {
  namespaces?: KubeObject[];
  nodes?: KubeObject[];
  pods?: KubeObject[];
  objects?: KubeObject[];
  items?: KubeObject[];
}

function load(server: FakeApiServer, state: StateFile): void {
  const ns = (name: string) => ({ apiVersion: 'v1', kind: 'Namespace', metadata: { name } });
  for (const n of state.namespaces ?? []) server.upsertObject({ apiVersion: 'v1', kind: 'Namespace', ...n });
  for (const n of state.nodes ?? []) server.upsertNode(n);
  for (const p of state.pods ?? []) server.upsertPod(p);
  for (const o of [...(state.objects ?? []), ...(state.items ?? [])]) {
    if (o.kind === 'Pod') server.upsertPod(o);
    else if (o.kind === 'Node') server.upsertNode(o);
    else {
      if (o.metadata?.namespace) server.upsertObject(ns(o.metadata.namespace));
      server.upsertObject(o);
    }
  }
}

interface AnnotateLine {
  namespace: string;
  name: string;
  annotations: Record<string, string | null>;
}

function annotateFromStdin(server: FakeApiServer): void {
  createInterface({ input: process.stdin }).on('line', (line) => {
    for (const a of JSON.parse(line) as AnnotateLine[]) {
      const pod = server.getPod(a.namespace, a.name);
      if (!pod) continue;
      const annotations: Record<string, string> = { ...pod.metadata?.annotations };
      for (const [k, v] of Object.entries(a.annotations)) {
        if (v === null) delete annotations[k];
        else annotations[k] = v;
      }
      server.upsertPod({ ...pod, metadata: { ...pod.metadata, annotations } });
    }
  });
}

async function main(argv: string[]): Promise<void> {
  const { values, positionals } = parseArgs({
    args: argv,
    options: {
      state: { type: 'string' },
      kubeconfig: { type: 'string' },
      'bookmark-interval-ms': { type: 'string' },
      'annotate-stdin': { type: 'boolean' },
    },
    allowPositionals: true,
  });
  const statePath = values.state ?? positionals[0];
  const kubeconfigPath = values.kubeconfig ?? positionals[1];
  const bookmarks = values['bookmark-interval-ms'];
  const server = await startFakeApiServer(bookmarks ? { bookmarkIntervalMs: Number(bookmarks) } : {});
  if (statePath) load(server, JSON.parse(await readFile(statePath, 'utf8')) as StateFile);
  if (kubeconfigPath) await server.writeKubeconfig(kubeconfigPath);
  process.stdout.write(JSON.stringify({ url: server.url, kubeconfig: kubeconfigPath ?? null }) + '\n');
  if (values['annotate-stdin']) annotateFromStdin(server);

  const stop = () => {
    void server.close().then(() => process.exit(0));
  };
  process.once('SIGTERM', stop);
  process.once('SIGINT', stop);
}

main(process.argv.slice(2)).catch((err: unknown) => {
  process.stderr.write(`fake apiserver: ${err instanceof Error ? err.message : String(err)}\n`);
  process.exit(1);
});
