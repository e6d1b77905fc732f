// `npm run bench -- http-transport [calls]`: what the agent's API transport costs it. The calls a resize
// makes (a merge patch of a pod's annotations and an Event create), against the fake API server in its own
// process, once through client-node's own fetch-based transport and once through agent/kube/transport.ts
// (undici's request). Both share one connection pool
// (withSharedConnections), so only the layer that differs is measured. CPU is this process's alone.
// Writes bench/results/http-transport.json.
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as k8s from '@kubernetes/client-node';
import { loadKubeConfig } from '../agent/kube/api.ts';
import { makeApiClient } from '../agent/kube/transport.ts';
import { startApiProcess, stopApiProcess } from './_api-process.ts';
import { percentile, printTable, round, writeResult } from './_report.ts';

const CALLS = Number(process.argv[2] ?? 3000);
const CONCURRENCY = 8;
const PODS = 50;

interface Transport {
  name: string;
  core: k8s.CoreV1Api;
}

interface Row {
  transport: string;
  calls: number;
  cpu_us_per_call: number;
  call_p50_ms: number;
  call_p99_ms: number;
}

let eventSerial = 0;
const mergePatch = k8s.setHeaderOptions('Content-Type', k8s.PatchStrategy.MergePatch);
const cpuUs = (since: NodeJS.CpuUsage): number => {
  const c = process.cpuUsage(since);
  return c.user + c.system;
};

async function measureCalls(t: Transport, calls: number): Promise<{ cpu: number; ms: number[] }> {
  const ms: number[] = [];
  let next = 0;
  const one = async (i: number): Promise<void> => {
    const name = `p${i % PODS}`;
    const t0 = performance.now();
    if (i % 2 === 0) {
      await t.core.patchNamespacedPod(
        { namespace: 'bench', name, body: { metadata: { annotations: { 'example.com/n': String(i) } } } },
        mergePatch,
      );
    } else {
      await t.core.createNamespacedEvent({
        namespace: 'bench',
        body: {
          metadata: { name: `${name}.${eventSerial++}`, namespace: 'bench' },
          involvedObject: { apiVersion: 'v1', kind: 'Pod', name, namespace: 'bench' },
          reason: 'ResizeCompleted',
          message: 'resized app in place',
          type: 'Normal',
        },
      });
    }
    ms.push(performance.now() - t0);
  };
  const cpu0 = process.cpuUsage();
  await Promise.all(
    Array.from({ length: CONCURRENCY }, async () => {
      while (next < calls) await one(next++);
    }),
  );
  return { cpu: cpuUs(cpu0), ms };
}

const dir = await mkdtemp(join(tmpdir(), 'resizelet-bench-transport-'));
const pods = Array.from({ length: PODS }, (_, i) => ({
  metadata: { name: `p${i}`, namespace: 'bench', uid: `u-${i}` },
  spec: {
    nodeName: 'bench-node',
    containers: [
      {
        name: 'app',
        image: 'x',
        resources: { requests: { cpu: '100m', memory: '64Mi' }, limits: { cpu: '200m', memory: '128Mi' } },
      },
    ],
  },
  status: { phase: 'Running', qosClass: 'Burstable' },
}));
await writeFile(
  join(dir, 'state.json'),
  JSON.stringify({ namespaces: [{ metadata: { name: 'bench' } }], pods }),
);
const api = await startApiProcess(join(dir, 'state.json'), join(dir, 'kubeconfig'));
const rows: Row[] = [];
try {
  const kc = loadKubeConfig(join(dir, 'kubeconfig'));
  const transports: Transport[] = [
    { name: 'client-node (fetch)', core: kc.makeApiClient(k8s.CoreV1Api) },
    { name: 'resizelet (undici request)', core: makeApiClient(kc, k8s.CoreV1Api) },
  ];
  // Two rounds, alternating, so neither transport pays alone for the JIT or a noisy moment; the second
  // round is reported.
  for (let pass = 0; pass < 2; pass++) {
    for (const t of transports) {
      const calls = await measureCalls(t, CALLS);
      if (pass === 0) continue;
      rows.push({
        transport: t.name,
        calls: CALLS,
        cpu_us_per_call: Math.round(calls.cpu / CALLS),
        call_p50_ms: round(percentile(calls.ms, 50)),
        call_p99_ms: round(percentile(calls.ms, 99)),
      });
    }
  }
} finally {
  await stopApiProcess(api.child);
  await rm(dir, { recursive: true, force: true });
}

printTable(rows.map((r) => ({ ...r })));
const [fetchRow, requestRow] = rows as [Row, Row];
const path = writeResult('http-transport', {
  calls: CALLS,
  concurrency: CONCURRENCY,
  fetch_cpu_us_per_call: fetchRow.cpu_us_per_call,
  request_cpu_us_per_call: requestRow.cpu_us_per_call,
  rows,
});
process.stdout.write(`\nwrote ${path}\n`);
process.exit(0);
