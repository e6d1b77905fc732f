// `npm run bench -- soak [minutes] [--tsx]` (default 10): the agent as a real process (compiled as in the
// image; `--tsx` runs the TypeScript) for a long time under churn.
// 250 pods (real cgroup v1 directories, removed afterwards) on the in-repo fake API server, in five
// namespaces, one of them with a ResourceQuota and a LimitRange. Every 100 ms a random resize, valid or
// invalid (invalid JSON, unknown container, extended resource, request above limit, QoS change, a limit
// above the LimitRange, a 20 KiB annotation); every 2 s a container restart (a new container ID and cgroup
// with the spec's values, as the kubelet would); every 3 s drift (a wrong CPU quota written by hand).
//
// The driver keeps a model of what every pod should hold, and only sends a pod a new request once the last
// one was answered (so each request's verdict is known). At the end, after a drain:
// - missed: requests not answered within 30 s, or never;
// - wrong_final_state: pods whose status (verdict, allocation) or live cgroups differ from the model;
// - RSS of the agent process (run with the DaemonSet's NODE_OPTIONS) right after a forced full
//   GC, every 10 s (bench/_soak-probe.mjs); growth is the least-squares slope after a warm-up.
// Writes bench/results/soak.json.
import { spawn } from 'node:child_process';
import { createWriteStream } from 'node:fs';
import { mkdtemp, realpath, rm, rmdir, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { requestHash } from '../agent/resize/request.ts';
import { quotaFromMillicores, sharesFromMillicores } from '../cgroup/convert.ts';
import { startFakeApiServer, type FakeApiServer, type Pod } from '../test/fakes/apiserver.ts';
import {
  createRealSandbox,
  newContainerId,
  newPodUid,
  realCgroupsAvailable,
  type RealSandbox,
} from '../test/support/real-cgroup.ts';
import { appPod, runningStatus, sandboxAgentArgs } from '../test/agent/support.ts';
import { compileAsImage, deployedAgent } from './_deployed.ts';
import { printTable, round, writeResult } from './_report.ts';

const args = process.argv.slice(2);
const minutes = Number(args.find((a) => !a.startsWith('--')) ?? 10);
/** `--tsx`: run the agent's TypeScript through tsx instead of compiled (source maps and all: more memory). */
const viaTsx = args.includes('--tsx');
const PODS = 250;
const NAMESPACES = ['soak-a', 'soak-b', 'soak-c', 'soak-d', 'soak-quota'];
const QUOTA_NS = 'soak-quota';
const NODE = 'soak-node';
const Mi = 1024n * 1024n;
const RESIZE_EVERY_MS = 100;
const RESTART_EVERY_MS = 2_000;
const DRIFT_EVERY_MS = 3_000;
const RSS_EVERY_MS = 10_000;
const ANSWER_DEADLINE_MS = 30_000;
const repo = fileURLToPath(new URL('../', import.meta.url));

interface Alloc {
  reqCpu: number;
  limCpu: number;
  reqMem: bigint;
  limMem: bigint;
}

interface Model {
  name: string;
  namespace: string;
  uid: string;
  podPath: string;
  containerId: string;
  containerPath: string;
  /** What the pod must hold. */
  alloc: Alloc;
  /** The last request sent and the verdict it must get. */
  text?: string;
  expect?: 'Completed' | 'Rejected';
  sentAt?: number;
  answered: boolean;
  missedCounted: boolean;
  /** Resized at least once: only then does the agent keep its values true against drift. */
  managed: boolean;
}

const SPEC: Alloc = { reqCpu: 100, limCpu: 200, reqMem: 64n * Mi, limMem: 256n * Mi };

const rand = (n: number): number => Math.floor(Math.random() * n);
const pick = <T>(xs: readonly T[]): T => xs[rand(xs.length)]!;
const cpuText = (m: number): string => (m % 1000 === 0 ? `${m / 1000}` : `${m}m`);
const memText = (b: bigint): string => `${b / Mi}Mi`;

/** A full request (all four values): its validity does not depend on what the pod held before. */
function validRequest(m: Model): { text: string; alloc: Alloc } {
  const maxCpu = m.namespace === QUOTA_NS ? 2000 : 4000;
  // Not below the spec's 200m: on cgroup v1 a pod quota below the spec's makes the runtime's creation of a
  // restarted container fail with EINVAL (a child's quota above its parent's), so no agent could help it.
  const limCpu = 200 + rand((maxCpu - 200) / 10) * 10;
  const reqCpu = 10 + rand(Math.max(1, (limCpu - 10) / 10)) * 10; // < limCpu: stays Burstable
  const limMem = BigInt(64 + rand(449)) * Mi;
  const reqMem = BigInt(32 + rand(Number(limMem / Mi) - 31)) * Mi;
  const alloc = { reqCpu: Math.min(reqCpu, limCpu - 10), limCpu, reqMem, limMem };
  const text = JSON.stringify({
    app: {
      requests: { cpu: cpuText(alloc.reqCpu), memory: memText(alloc.reqMem) },
      limits: { cpu: cpuText(alloc.limCpu), memory: memText(alloc.limMem) },
    },
  });
  return { text, alloc };
}

function invalidRequest(m: Model): string {
  const kinds = [
    '{"app":',
    '{"nope":{"limits":{"cpu":"1"}}}',
    '{"app":{"limits":{"nvidia.com/gpu":"1"}}}',
    '{"app":{"requests":{"cpu":"900m","memory":"64Mi"},"limits":{"cpu":"500m","memory":"256Mi"}}}',
    // Requests equal to limits: the pod would become Guaranteed.
    '{"app":{"requests":{"cpu":"500m","memory":"256Mi"},"limits":{"cpu":"500m","memory":"256Mi"}}}',
    '{"app":{"limits":{"cpu":"lots"}}}',
    `{"app":{"limits":{"cpu":"${'9'.repeat(20_000)}"}}}`,
    '{"__proto__":{"limits":{"cpu":"1"}}}',
  ];
  if (m.namespace === QUOTA_NS) kinds.push('{"app":{"requests":{"cpu":"100m"},"limits":{"cpu":"3"}}}');
  // Inner whitespace as a nonce (the hash ignores only the outer): a repeated kind is still a new request.
  return pick(kinds).replace('{', `{${' '.repeat(1 + rand(16))}`);
}

function expectedCgroup(a: Alloc): { shares: number; quota: number | null; memory: bigint } {
  return { shares: sharesFromMillicores(a.reqCpu), quota: quotaFromMillicores(a.limCpu), memory: a.limMem };
}

function sameAlloc(wire: unknown, a: Alloc): boolean {
  return (
    JSON.stringify(wire) ===
    JSON.stringify([
      {
        name: 'app',
        requests: { cpu: cpuText(a.reqCpu), memory: memText(a.reqMem) },
        limits: { cpu: cpuText(a.limCpu), memory: memText(a.limMem) },
      },
    ])
  );
}

/** Least-squares slope of y over x. */
function slope(points: Array<[number, number]>): number {
  const n = points.length;
  if (n < 2) return 0;
  const mx = points.reduce((s, [x]) => s + x, 0) / n;
  const my = points.reduce((s, [, y]) => s + y, 0) / n;
  let num = 0;
  let den = 0;
  for (const [x, y] of points) {
    num += (x - mx) * (y - my);
    den += (x - mx) ** 2;
  }
  return den === 0 ? 0 : num / den;
}

async function main(): Promise<void> {
  const available = realCgroupsAvailable();
  if (!available.ok) {
    process.stderr.write(`bench soak needs writable cgroup v1 hierarchies: ${available.reason}\n`);
    process.exit(1);
  }
  const dir = await mkdtemp(join(tmpdir(), 'resizelet-soak-'));
  // The checkpoint's run copy, as the DaemonSet keeps it on the node's memory-backed /run.
  const runDir = await mkdtemp('/dev/shm/resizelet-soak-');
  const sandbox: RealSandbox = await createRealSandbox();
  const api: FakeApiServer = await startFakeApiServer({ namespaces: NAMESPACES });
  let agentPid: number | undefined;
  try {
    api.upsertNode({
      metadata: { name: NODE },
      status: { allocatable: { cpu: '1000', memory: '4Ti' }, capacity: { cpu: '1000', memory: '4Ti' } },
    });
    api.upsertObject({
      apiVersion: 'v1',
      kind: 'ResourceQuota',
      metadata: { name: 'compute', namespace: QUOTA_NS },
      spec: { hard: { 'limits.cpu': '1000', 'requests.memory': '1Ti' } },
    });
    api.upsertObject({
      apiVersion: 'v1',
      kind: 'LimitRange',
      metadata: { name: 'bounds', namespace: QUOTA_NS },
      spec: { limits: [{ type: 'Container', max: { cpu: '2' } }] },
    });
    const models: Model[] = [];
    for (let i = 0; i < PODS; i++) {
      const uid = newPodUid();
      const containerId = newContainerId();
      const cg = { cpuShares: 102, cpuQuotaUs: 20_000, memoryLimitBytes: 256n * Mi };
      const podPath = await sandbox.makePod(uid, 'Burstable', cg);
      const containerPath = await sandbox.makeContainer(podPath, containerId, cg);
      const m: Model = {
        name: `p${i}`,
        namespace: NAMESPACES[i % NAMESPACES.length]!,
        uid,
        podPath,
        containerId,
        containerPath,
        alloc: { ...SPEC },
        answered: true,
        missedCounted: false,
        managed: false,
      };
      models.push(m);
      api.upsertPod({
        ...appPod({ name: m.name, namespace: m.namespace, uid, node: NODE }),
        status: runningStatus(containerId),
      });
    }
    await api.writeKubeconfig(join(dir, 'kubeconfig'));

    const agentLog = createWriteStream(join(dir, 'agent.log'));
    const agent = spawn(
      process.execPath,
      [
        // As the DaemonSet runs it (its NODE_OPTIONS, read from deploy/daemonset.yaml), plus the GC probe.
        ...(deployedAgent().env.NODE_OPTIONS?.split(' ').filter(Boolean) ?? []),
        '--expose-gc',
        // For hunting a leak, e.g. SOAK_NODE_ARGS="--heapsnapshot-signal=SIGUSR1 --diagnostic-dir=/tmp/x".
        ...(process.env.SOAK_NODE_ARGS?.split(' ').filter(Boolean) ?? []),
        '--import',
        `${repo}bench/_soak-probe.mjs`,
        ...(viaTsx
          ? ['--import', 'tsx', `${repo}bin/resizelet.ts`]
          : [await compileAsImage('bin/resizelet.ts', dir)]),
        'agent',
        ...sandboxAgentArgs({
          nodeName: NODE,
          dir,
          podsRoot: sandbox.layout.podsRoot,
          reconcileInterval: '2s',
        }),
        `--run-checkpoint=${join(runDir, 'checkpoint.json')}`,
        '--deferred-retry',
        '1s',
        '--systemd-bus',
        'none',
        '--log-level',
        'warn',
      ],
      { cwd: repo, env: { ...process.env, KUBERNETES_SERVICE_HOST: '' }, stdio: ['ignore', 'pipe', 'pipe'] },
    );
    agentPid = agent.pid;
    agent.stdout.pipe(agentLog);
    agent.stderr.pipe(agentLog);
    // RSS right after a forced full GC (see bench/_soak-probe.mjs), one answer per SIGUSR2.
    const memWaiters: Array<(mb: number) => void> = [];
    const heapAfterGc: number[] = [];
    let errBuf = '';
    agent.stderr.on('data', (chunk: Buffer) => {
      errBuf += chunk.toString();
      let i;
      while ((i = errBuf.indexOf('\n')) >= 0) {
        const line = errBuf.slice(0, i);
        errBuf = errBuf.slice(i + 1);
        if (line.startsWith('SOAK-MEM ')) {
          const m = JSON.parse(line.slice(9)) as { rss: number; heapUsed: number };
          heapAfterGc.push(m.heapUsed / 1024 / 1024);
          memWaiters.shift()?.(m.rss / 1024 / 1024);
        }
      }
    });
    const rssAfterGc = (): Promise<number> =>
      new Promise((resolve, reject) => {
        const t = setTimeout(() => reject(new Error('no SOAK-MEM answer from the agent')), 10_000);
        memWaiters.push((mb) => {
          clearTimeout(t);
          resolve(mb);
        });
        agent.kill('SIGUSR2');
      });
    const agentExit = new Promise<void>((resolve) => agent.once('exit', () => resolve()));
    // Ready once it answers a first probe request.
    const probe = models[0]!;
    const first = validRequest(probe);
    api.upsertPod(withRequest(api, probe, first.text));
    await until(() => answered(api, probe, first.text), 60_000, 'the agent to answer a first request');
    probe.alloc = first.alloc;
    probe.managed = true;

    const counters = { resizes: 1, valid: 1, invalid: 0, restarts: 0, drifts: 0, missed: 0 };
    const latencies: number[] = [];
    const rss: Array<[number, number]> = [];
    const t0 = Date.now();
    const durationMs = minutes * 60_000;
    // RSS after a full GC settles within the first two minutes (code compiled, pools sized, one-off releases).
    const warmupMs = Math.min(120_000, durationMs / 5);
    let nextResize = t0;
    let nextRestart = t0 + RESTART_EVERY_MS;
    let nextDrift = t0 + DRIFT_EVERY_MS;
    let nextRss = t0;
    let lastReport = t0;

    while (Date.now() - t0 < durationMs) {
      const now = Date.now();
      // Bookkeeping: answers and misses.
      for (const m of models) {
        if (m.answered || !m.text) continue;
        if (answered(api, m, m.text)) {
          m.answered = true;
          latencies.push(now - m.sentAt!);
        } else if (!m.missedCounted && now - m.sentAt! > ANSWER_DEADLINE_MS) {
          m.missedCounted = true;
          counters.missed++;
        }
      }
      if (now >= nextResize) {
        nextResize += RESIZE_EVERY_MS;
        const idle = models.filter((m) => m.answered);
        if (idle.length > 0) {
          const m = pick(idle);
          let text: string;
          if (Math.random() < 0.7) {
            const v = validRequest(m);
            text = v.text;
            m.alloc = v.alloc;
            m.expect = 'Completed';
            m.managed = true;
            counters.valid++;
          } else {
            text = invalidRequest(m);
            m.expect = 'Rejected';
            counters.invalid++;
          }
          m.text = text;
          m.sentAt = now;
          m.answered = false;
          m.missedCounted = false;
          api.upsertPod(withRequest(api, m, text));
          counters.resizes++;
        }
      }
      if (now >= nextRestart) {
        nextRestart += RESTART_EVERY_MS;
        await restart(api, sandbox, pick(models));
        counters.restarts++;
      }
      if (now >= nextDrift) {
        nextDrift += DRIFT_EVERY_MS;
        const managed = models.filter((m) => m.managed && m.answered);
        if (managed.length > 0) {
          const m = pick(managed);
          const file = `${sandbox.layout.controllers.cpu.mount}/${m.containerPath}/cpu.cfs_quota_us`;
          await writeFile(file, String(1000 + rand(50) * 1000)).catch(() => undefined);
          counters.drifts++;
        }
      }
      if (now >= nextRss) {
        nextRss += RSS_EVERY_MS;
        rss.push([(now - t0) / 1000, await rssAfterGc()]);
      }
      if (now - lastReport >= 60_000) {
        lastReport = now;
        process.stdout.write(
          `  ${round((now - t0) / 60_000, 1)} min: ${counters.resizes} resizes, ${counters.missed} missed, rss ${round(rss.at(-1)?.[1] ?? 0, 1)} MB\n`,
        );
      }
      if (agent.exitCode !== null)
        throw new Error(`the agent exited (${agent.exitCode}); see ${dir}/agent.log`);
      await new Promise((r) => setTimeout(r, 10));
    }

    // Drain: every last request answered, every cgroup converged (drift and restarts are retried).
    const drainStart = Date.now();
    const wrong = async (): Promise<Model[]> => {
      const out: Model[] = [];
      for (const m of models) if (!(await finalStateRight(api, sandbox, m))) out.push(m);
      return out;
    };
    let bad = await wrong();
    while (bad.length > 0 && Date.now() - drainStart < 60_000) {
      await new Promise((r) => setTimeout(r, 500));
      bad = await wrong();
    }
    for (const m of models) {
      if (m.text && !answered(api, m, m.text) && !m.missedCounted) counters.missed++;
    }
    const rssWindow = rss.filter(([t]) => t * 1000 >= warmupMs);
    const startSample = rssWindow[0] ?? rss[0];
    const endSample = rss.at(-1);
    const growthPerHour = slope(rssWindow) * 3600;
    // The live JavaScript heap after the same collections: a leak in the agent's own objects shows here first.
    const heapWindow = rss
      .map(([t], i): [number, number] => [t, heapAfterGc[i] ?? 0])
      .filter(([t]) => t * 1000 >= warmupMs);
    latencies.sort((a, b) => a - b);
    const result = {
      duration_s: round((Date.now() - t0 - (Date.now() - drainStart)) / 1000, 1),
      resizes: counters.resizes,
      missed: counters.missed,
      wrong_final_state: bad.length,
      rss_start_mb: round(startSample?.[1] ?? 0, 1),
      rss_end_mb: round(endSample?.[1] ?? 0, 1),
      rss_growth_mb_per_hour: round(growthPerHour, 2),
      heap_live_start_mb: round(heapWindow[0]?.[1] ?? 0, 1),
      heap_live_end_mb: round(heapWindow.at(-1)?.[1] ?? 0, 1),
      heap_live_growth_mb_per_hour: round(slope(heapWindow) * 3600, 2),
      pods: PODS,
      valid_resizes: counters.valid,
      invalid_resizes: counters.invalid,
      container_restarts: counters.restarts,
      drift_writes: counters.drifts,
      answer_p50_ms: latencies[Math.floor(latencies.length * 0.5)] ?? -1,
      answer_p99_ms: latencies[Math.floor(latencies.length * 0.99)] ?? -1,
      rss_warmup_s: warmupMs / 1000,
      agent: viaTsx ? 'tsx' : 'compiled',
      rss_samples: rss.map(([t, mb]) => [round(t, 0), round(mb, 1)]),
      heap_live_samples: rss.map(([t], i) => [round(t, 0), round(heapAfterGc[i] ?? 0, 1)]),
    };
    if (bad.length > 0) {
      process.stderr.write(`wrong final state: ${bad.map((m) => `${m.namespace}/${m.name}`).join(', ')}\n`);
    }
    const { rss_samples: _rss, heap_live_samples: _heap, ...shown } = result;
    printTable([shown]);
    const path = writeResult('soak', result);
    process.stdout.write(
      `\ntargets: missed 0, wrong_final_state 0, rss_growth_mb_per_hour < 5\nwrote ${path} (agent log: ${dir}/agent.log)\n`,
    );
    agent.kill('SIGTERM');
    await agentExit;
    agentPid = undefined;
  } finally {
    if (agentPid !== undefined) {
      try {
        process.kill(agentPid, 'SIGKILL');
      } catch {
        // already gone
      }
    }
    await api.close();
    await sandbox.cleanup();
    if (process.env.RESIZELET_SOAK_KEEP !== '1') await rm(dir, { recursive: true, force: true });
    await rm(runDir, { recursive: true, force: true });
  }
}

function withRequest(api: FakeApiServer, m: Model, text: string): Pod {
  const current = api.getPod(m.namespace, m.name)!;
  return {
    ...current,
    metadata: {
      ...current.metadata,
      annotations: { ...current.metadata?.annotations, 'resizelet.io/resize': text },
    },
  };
}

function statusOf(api: FakeApiServer, m: Model): Record<string, unknown> | undefined {
  const text = api.getPod(m.namespace, m.name)?.metadata?.annotations?.['resizelet.io/resource-status'];
  return text ? (JSON.parse(text) as Record<string, unknown>) : undefined;
}

function answered(api: FakeApiServer, m: Model, text: string): boolean {
  const s = statusOf(api, m);
  return (
    s?.observedRequest === requestHash(text) &&
    (s.resizeStatus === 'Completed' || s.resizeStatus === 'Rejected')
  );
}

async function finalStateRight(api: FakeApiServer, sandbox: RealSandbox, m: Model): Promise<boolean> {
  if (m.text) {
    const s = statusOf(api, m);
    if (!s || !answered(api, m, m.text) || s.resizeStatus !== m.expect) return false;
    if (!sameAlloc(s.allocatedResources, m.alloc)) return false;
  }
  const want = expectedCgroup(m.alloc);
  try {
    const c = (await sandbox.read(m.containerPath)).settings;
    const p = (await sandbox.read(m.podPath)).settings;
    return (
      c.cpuShares === want.shares &&
      c.cpuQuotaUs === want.quota &&
      c.memoryLimitBytes === want.memory &&
      p.cpuQuotaUs === want.quota &&
      p.memoryLimitBytes === want.memory
    );
  } catch {
    return false;
  }
}

/** The kubelet restarts the container: a new ID and cgroup with the spec's values; the old cgroup goes. */
async function restart(api: FakeApiServer, sandbox: RealSandbox, m: Model): Promise<void> {
  const old = m.containerPath;
  m.containerId = newContainerId();
  m.containerPath = await sandbox.makeContainer(m.podPath, m.containerId, {
    cpuShares: 102,
    cpuQuotaUs: 20_000,
    memoryLimitBytes: 256n * Mi,
  });
  const current = api.getPod(m.namespace, m.name)!;
  const count = (current.status?.containerStatuses?.[0]?.restartCount ?? 0) + 1;
  api.upsertPod({ ...current, status: runningStatus(m.containerId, count) });
  const mounts = await Promise.all(Object.values(sandbox.layout.controllers).map((c) => realpath(c.mount)));
  for (const mount of new Set(mounts)) await rmdir(`${mount}/${old}`).catch(() => undefined);
  // A container that was never resized runs on its spec, as the kubelet created it: the model agrees.
}

async function until(probe: () => boolean, timeoutMs: number, what: string): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!probe()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

await main();
process.exit(0);
