// `npm run bench -- autoscale [runs]`: how fast the autoscaler reacts, on real cgroups with real processes.
// The agent (in this process) and the in-repo fake API server; per run a fresh pod with two containers:
// `cpu` runs a process that saturates its 200m limit from the moment it starts, `mem` one that grows its
// memory 8 MiB/s past the 256Mi limit it started under. Reaction = from the CPU process starting (its
// "ready" line) to 400m (the doubled limit) being in its cgroup's cpu.cfs_quota_us, polled every 5 ms.
// Then the CPU process stops and the run watches the scale-down and one more quiet window, counting
// flaps: a value that goes up after going down, or down after going up (per container, resource, kind).
// OOM kills are read from every container's and pod's memory.oom_control at the end of each run.
// Writes bench/results/autoscale.json.
import { readFileSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { pino } from 'pino';
import { loadConfig, type Config } from '../agent/config.ts';
import { startAgent } from '../agent/main.ts';
import { parseResizeRequest } from '../agent/resize/request.ts';
import { startFakeApiServer, type FakeApiServer, type Pod } from '../test/fakes/apiserver.ts';
import {
  TEST_SCRIPTS,
  createRealSandbox,
  newContainerId,
  newPodUid,
  realCgroupsAvailable,
  type RealSandbox,
} from '../test/support/real-cgroup.ts';
import { percentile, printTable, round, writeResult } from './_report.ts';

const RUNS = Number(process.argv[2] ?? 10);
const NODE = 'bench-node';
const NS = 'bench';
const Mi = 1024n * 1024n;
const GROW_MEMORY = fileURLToPath(new URL('../test/autoscale/grow-memory.mjs', import.meta.url));
const POLICY = '{"cpu":{"max":"800m"},"memory":{"max":"1Gi"},"scaleDown":{"quietWindow":"3s"}}';

interface RunResult {
  run: number;
  reaction_s: number;
  /** What raised the CPU limit: cpu-throttling or cpu-utilization (from the AutoscaleDecision Event). */
  trigger: string;
  memory_raised: boolean;
  scaled_down: boolean;
  requests: number;
  oom_kills: number;
  flaps: number;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Reversals of direction per container/resource/kind across the autoscaler's requests, in order. */
function flapsIn(texts: string[], start: Map<string, number | bigint>): number {
  const value = new Map(start);
  const last = new Map<string, 'up' | 'down'>();
  let flaps = 0;
  for (const t of texts) {
    const r = parseResizeRequest(t);
    if (!r.ok) continue;
    for (const [container, change] of r.value) {
      for (const side of ['requests', 'limits'] as const) {
        for (const res of ['cpu', 'memory'] as const) {
          const v = change[side][res];
          if (v === undefined) continue;
          const key = `${container}/${res}/${side}`;
          const before = value.get(key);
          value.set(key, v);
          if (before === undefined || before === v) continue;
          const dir = v > before ? 'up' : 'down';
          if (last.has(key) && last.get(key) !== dir) flaps++;
          last.set(key, dir);
        }
      }
    }
  }
  return flaps;
}

async function run(
  i: number,
  sandbox: RealSandbox,
  api: FakeApiServer,
  seen: () => boolean,
): Promise<RunResult> {
  const uid = newPodUid();
  const [cpuId, memId] = [newContainerId(), newContainerId()];
  const podPath = await sandbox.makePod(uid, 'Burstable', {
    cpuShares: 153,
    cpuQuotaUs: 30_000,
    memoryLimitBytes: 384n * Mi,
  });
  const cpuCtr = await sandbox.makeContainer(podPath, cpuId, {
    cpuShares: 102,
    cpuQuotaUs: 20_000,
    memoryLimitBytes: 128n * Mi,
  });
  const memCtr = await sandbox.makeContainer(podPath, memId, {
    cpuShares: 51,
    cpuQuotaUs: 10_000,
    memoryLimitBytes: 256n * Mi,
  });
  const grower = await sandbox.spawnInCgroup(memCtr, GROW_MEMORY, ['200', '4', '500', '272']);
  const name = `r${i}`;
  const running = (id: string, n: string) => ({
    name: n,
    containerID: `containerd://${id}`,
    restartCount: 0,
    ready: true,
    image: 'x',
    imageID: 'x',
    state: { running: { startedAt: new Date().toISOString() } },
  });
  const pod: Pod = {
    metadata: { name, namespace: NS, uid, annotations: { 'resizelet.io/autoscale': POLICY } },
    spec: {
      nodeName: NODE,
      containers: [
        {
          name: 'cpu',
          image: 'x',
          resources: { requests: { cpu: '100m', memory: '32Mi' }, limits: { cpu: '200m', memory: '128Mi' } },
        },
        {
          name: 'mem',
          image: 'x',
          resources: { requests: { cpu: '50m', memory: '64Mi' }, limits: { cpu: '100m', memory: '256Mi' } },
        },
      ],
    },
    status: {
      phase: 'Running',
      qosClass: 'Burstable',
      containerStatuses: [running(cpuId, 'cpu'), running(memId, 'mem')] as never,
    },
  };
  api.upsertPod(pod);
  while (!seen()) await sleep(10);
  // Let the sampler take a first look at the idle containers, as it would have long before a real spike.
  await sleep(700);

  const texts: string[] = [];
  const track = () => {
    const t = api.getPod(NS, name)?.metadata?.annotations?.['resizelet.io/resize'];
    if (t !== undefined && texts[texts.length - 1] !== t) texts.push(t);
  };
  const quotaFile = `${sandbox.layout.controllers.cpu.mount}/${cpuCtr}/cpu.cfs_quota_us`;
  const burner = await sandbox.spawnInCgroup(cpuCtr, TEST_SCRIPTS.burnCpu, ['60']);
  const t0 = performance.now();
  grower.process.stdin!.write('grow\n');
  let reaction = NaN;
  while (performance.now() - t0 < 20_000) {
    if (readFileSync(quotaFile, 'utf8').trim() === '40000') {
      reaction = (performance.now() - t0) / 1000;
      break;
    }
    track();
    await sleep(5);
  }
  burner.process.kill('SIGKILL');

  // The scale-down (cpu requests) after the quiet window, the memory raise, then one more quiet window.
  const memLimitFile = `${sandbox.layout.controllers.memory.mount}/${memCtr}/memory.limit_in_bytes`;
  const sharesFile = `${sandbox.layout.controllers.cpu.mount}/${cpuCtr}/cpu.shares`;
  const deadline = performance.now() + 20_000;
  let memoryRaised = false;
  let scaledDown = false;
  while (performance.now() < deadline && !(memoryRaised && scaledDown)) {
    track();
    memoryRaised = BigInt(readFileSync(memLimitFile, 'utf8').trim()) > 256n * Mi;
    scaledDown = Number(readFileSync(sharesFile, 'utf8').trim()) < 102;
    await sleep(20);
  }
  const tailEnd = performance.now() + 3_500;
  while (performance.now() < tailEnd) {
    track();
    await sleep(20);
  }

  const oom = (path: string) =>
    Number(
      /oom_kill (\d+)/.exec(
        readFileSync(`${sandbox.layout.controllers.memory.mount}/${path}/memory.oom_control`, 'utf8'),
      )?.[1] ?? 0,
    );
  const oomKills = oom(cpuCtr) + oom(memCtr) + oom(podPath);
  grower.process.kill('SIGKILL');
  const raise = api
    .events()
    .map((e) => e as { reason?: string; message?: string; involvedObject?: { name?: string } })
    .find((e) => e.involvedObject?.name === name && e.message?.includes('cpu limit 200m -> 400m'));
  const trigger = /cpu throttled in/.test(raise?.message ?? '')
    ? 'cpu-throttling'
    : /cpu at \d+%/.test(raise?.message ?? '')
      ? 'cpu-utilization'
      : '?';
  api.deletePod(NS, name);
  const start = new Map<string, number | bigint>([
    ['cpu/cpu/requests', 100],
    ['cpu/cpu/limits', 200],
    ['cpu/memory/requests', 32n * Mi],
    ['cpu/memory/limits', 128n * Mi],
    ['mem/cpu/requests', 50],
    ['mem/cpu/limits', 100],
    ['mem/memory/requests', 64n * Mi],
    ['mem/memory/limits', 256n * Mi],
  ]);
  return {
    run: i,
    reaction_s: round(reaction, 2),
    trigger,
    memory_raised: memoryRaised,
    scaled_down: scaledDown,
    requests: texts.length,
    oom_kills: oomKills,
    flaps: flapsIn(texts, start),
  };
}

const available = realCgroupsAvailable();
if (!available.ok) {
  process.stderr.write(`bench autoscale needs writable cgroup v1 hierarchies: ${available.reason}\n`);
  process.exit(1);
}
const dir = await mkdtemp(join(tmpdir(), 'resizelet-bench-autoscale-'));
const sandbox = await createRealSandbox();
const api = await startFakeApiServer({ namespaces: [NS] });
api.upsertNode({
  metadata: { name: NODE },
  status: { allocatable: { cpu: '2', memory: '8Gi' }, capacity: { cpu: '2', memory: '8Gi' } },
});
await api.writeKubeconfig(join(dir, 'kubeconfig'));
const config = loadConfig({
  argv: [
    ...['--node-name', NODE, '--kubeconfig', join(dir, 'kubeconfig')],
    ...['--pods-root', sandbox.layout.podsRoot, '--cgroup-driver', 'cgroupfs', '--runtime', 'containerd'],
    ...[
      '--checkpoint',
      join(dir, 'checkpoint.json'),
      '--listen',
      '127.0.0.1:0',
      '--autoscale-interval',
      '500ms',
    ],
  ],
  env: {},
  homeKubeconfig: undefined,
}) as Config;
const agent = await startAgent(config, pino({ level: 'silent' }));
const runs: RunResult[] = [];
try {
  for (let i = 0; i < RUNS; i++) {
    const name = `r${i}`;
    runs.push(await run(i, sandbox, api, () => agent.informer.get(NS, name) !== undefined));
    process.stderr.write(`run ${i}: ${JSON.stringify(runs[runs.length - 1])}\n`);
  }
} finally {
  await agent.stop();
  await api.close();
  await sandbox.cleanup();
  await rm(dir, { recursive: true, force: true });
}

printTable(
  runs.map((r) => ({ ...r, memory_raised: String(r.memory_raised), scaled_down: String(r.scaled_down) })),
);
const reactions = runs.map((r) => r.reaction_s);
const result = {
  reaction_p50_s: round(percentile(reactions, 50), 2),
  reaction_max_s: round(Math.max(...reactions), 2),
  oom_kills: runs.reduce((n, r) => n + r.oom_kills, 0),
  flaps: runs.reduce((n, r) => n + r.flaps, 0),
  runs: runs.length,
  window_s: 2,
  interval_ms: config.autoscaleIntervalMs,
  /** Which trigger raised the limit first, per run: throttling needs 5 throttled periods in each half. */
  triggers: Object.fromEntries(
    [...new Set(runs.map((r) => r.trigger))].map((t) => [t, runs.filter((r) => r.trigger === t).length]),
  ),
  memory_raised_runs: runs.filter((r) => r.memory_raised).length,
  scaled_down_runs: runs.filter((r) => r.scaled_down).length,
  reactions_s: reactions,
};
const path = writeResult('autoscale', result);
process.stdout.write(
  `\nreaction p50 ${result.reaction_p50_s} s, max ${result.reaction_max_s} s (target: p50 < 3 s with the default 2 s window)\n` +
    `oom kills ${result.oom_kills}, flaps ${result.flaps}\nwrote ${path}\n`,
);
