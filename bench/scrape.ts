// `npm run bench -- scrape`: the /metrics endpoint on a node of 250 pods x 2 containers (plus each pod's
// sandbox), built as real cgroup v1 directories and removed afterwards. The endpoint runs in its own process
// as the image runs the agent: this file bundled by scripts/build.mjs (as the Dockerfile does), on plain
// Node with the DaemonSet's NODE_OPTIONS, in a cgroup of its own beside the pods. This process only scrapes
// it, as Prometheus does (gzip accepted):
//   1. a burst of back-to-back scrapes: latency p50/p99 and size, with the server's event loop watched at
//      1 ms resolution for stalls;
//   2. an idle minute at a 10 s scrape interval: the server's CPU (from /proc/<pid>/stat) and peak RSS.
// Writes bench/results/scrape.json. Options: --pods N, --scrapes N (burst), --idle-seconds S, --plain (no
// gzip), --tsx (run the endpoint from source: +~50 MB RSS for the loader), --node-options=... (the server's
// V8 flags instead of the DaemonSet's NODE_OPTIONS), --cpu-limit=QUANTITY (instead of the DaemonSet's, to
// tell the limit's throttling from the rest). The server gets deploy/daemonset.yaml's environment and CPU and
// memory limits.
import { fork, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { readFileSync } from 'node:fs';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import http from 'node:http';
import { loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import { monitorEventLoopDelay } from 'node:perf_hooks';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import v8 from 'node:v8';
import { nodeSyncFs } from '../agent/cgroup-stats.ts';
import { buildHttpApp } from '../agent/http.ts';
import { createAgentMetrics } from '../agent/metrics.ts';
import type { PodView } from '../agent/reconcile/reconciler.ts';
import { specResources, type PodLike } from '../agent/resize/pod.ts';
import { parseCpuMillicores } from '../agent/resize/quantity.ts';
import type { CgroupLayout } from '../cgroup/types.ts';
import {
  cpuTimeMs,
  createRealSandbox,
  newContainerId,
  newPodUid,
  realCgroupsAvailable,
} from '../test/support/real-cgroup.ts';
import { compileAsImage, deployedAgent } from './_deployed.ts';
import { percentile, printTable, round, writeResult } from './_report.ts';

const Mi = 1024n * 1024n;

interface ServeInput {
  layout: CgroupLayout;
  pods: PodLike[];
  allocated: string[];
}

type ToServer = { type: 'eld-start' } | { type: 'eld-stop' } | { type: 'memory' };
type FromServer =
  | { type: 'listening'; port: number }
  | { type: 'eld'; maxMs: number }
  | { type: 'memory'; usage: NodeJS.MemoryUsage; spaces: Record<string, number> };

// ---------------------------------------------------------------------------------------------------------
// The server process

async function serve(inputPath: string): Promise<void> {
  const input = JSON.parse(readFileSync(inputPath, 'utf8')) as ServeInput;
  const allocated = new Set(input.allocated);
  // A share of the pods carry an allocation and a Completed status, as resized pods would.
  const views: PodView[] = input.pods
    .filter((p) => allocated.has(p.metadata!.uid!))
    .map((p) => ({
      key: `${p.metadata!.namespace}/${p.metadata!.name}`,
      uid: p.metadata!.uid!,
      allocation: p.spec!.containers.map((c) => ({ name: c.name, resources: specResources(c) })),
      status: {
        resizeStatus: 'Completed',
        allocatedResources: [],
        lastTransitionTime: new Date().toISOString(),
        message: 'resized app in place',
      },
      containerIds: {},
    }));
  const app = await buildHttpApp({
    nodeName: 'bench-node',
    layout: input.layout,
    files: nodeSyncFs,
    pods: () => input.pods,
    views: () => views,
    metrics: createAgentMetrics(),
    informer: { synced: true, lastEventAt: Date.now() },
    sandboxImage: 'registry.k8s.io/pause:3.9',
  });
  await app.listen({ host: '127.0.0.1', port: 0 });
  const address = app.server.address();
  const port = typeof address === 'object' && address ? address.port : 0;
  // Only on while the burst runs: a 1 ms timer would itself cost the idle CPU being measured.
  let eld: ReturnType<typeof monitorEventLoopDelay> | undefined;
  process.on('message', (m: ToServer) => {
    if (m.type === 'eld-start') {
      eld = monitorEventLoopDelay({ resolution: 1 });
      eld.enable();
    } else if (m.type === 'memory') {
      const spaces = Object.fromEntries(v8.getHeapSpaceStatistics().map((x) => [x.space_name, x.space_size]));
      process.send!({ type: 'memory', usage: process.memoryUsage(), spaces } satisfies FromServer);
    } else if (m.type === 'eld-stop' && eld) {
      eld.disable();
      process.send!({ type: 'eld', maxMs: eld.max / 1e6 } satisfies FromServer);
      eld = undefined;
    }
  });
  process.on('disconnect', () => void app.close().then(() => process.exit(0)));
  // An orderly exit on the bench's SIGTERM, so --cpu-prof and the like in --node-options get written.
  process.on('SIGTERM', () => process.exit(0));
  process.send!({ type: 'listening', port } satisfies FromServer);
}

// ---------------------------------------------------------------------------------------------------------
// The driver

/**
 * One scrape as Prometheus makes it (gzip accepted unless `plain`): its time and the bytes received, and
 * with `keep` the body.
 */
function scrape(
  agent: http.Agent,
  port: number,
  plain: boolean,
  keep = false,
): Promise<{ ms: number; bytes: number; body: string }> {
  const t = performance.now();
  const headers = plain ? {} : { 'accept-encoding': 'gzip' };
  return new Promise((resolve, reject) => {
    const req = http.get({ host: '127.0.0.1', port, path: '/metrics', agent, headers }, (res) => {
      let bytes = 0;
      const kept: Buffer[] = [];
      res.on('data', (chunk: Buffer) => {
        bytes += chunk.length;
        if (keep) kept.push(chunk);
      });
      res.on('end', () => {
        if (res.statusCode !== 200) reject(new Error(`/metrics answered ${res.statusCode}`));
        else resolve({ ms: performance.now() - t, bytes, body: Buffer.concat(kept).toString('utf8') });
      });
      res.on('error', reject);
    });
    req.on('error', reject);
  });
}

function rssMb(pid: number): number {
  const m = /^VmRSS:\s+(\d+) kB$/m.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  return m ? Number(m[1]) / 1024 : NaN;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

function nextMessage<T extends FromServer['type']>(
  child: ChildProcess,
  type: T,
): Promise<Extract<FromServer, { type: T }>> {
  return new Promise((resolve, reject) => {
    const onMessage = (m: FromServer) => {
      if (m.type !== type) return;
      child.off('message', onMessage);
      child.off('exit', onExit);
      resolve(m as Extract<FromServer, { type: T }>);
    };
    const onExit = (code: number | null) =>
      reject(new Error(`bench server exited (${code}) before "${type}"`));
    child.on('message', onMessage);
    child.once('exit', onExit);
  });
}

async function drive(): Promise<void> {
  const { values } = parseArgs({
    args: process.argv.slice(2),
    options: {
      pods: { type: 'string', default: '250' },
      scrapes: { type: 'string', default: '200' },
      'idle-seconds': { type: 'string', default: '60' },
      tsx: { type: 'boolean', default: false },
      plain: { type: 'boolean', default: false },
      'node-options': { type: 'string' },
      'cpu-limit': { type: 'string' },
    },
  });
  const podCount = Number(values.pods);
  const scrapeCount = Number(values.scrapes);
  const idleSeconds = Number(values['idle-seconds']);
  const available = realCgroupsAvailable();
  if (!available.ok) {
    process.stderr.write(`scrape bench needs real cgroup v1 hierarchies: ${available.reason}\n`);
    process.exit(1);
  }

  const loadStart = loadavg()[0]!;
  const sandbox = await createRealSandbox();
  const dir = await mkdtemp(join(tmpdir(), 'resizelet-bench-scrape-'));
  let child: ChildProcess | undefined;
  const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
  try {
    // The kubelet's values for a Burstable pod of two containers (100m/64Mi requests, 200m/128Mi limits
    // each): pod quota = the sum of limits, shares = the sum of requests; the sandbox gets 2 shares.
    const t0 = performance.now();
    const pods: PodLike[] = [];
    for (let i = 0; i < podCount; i++) {
      const uid = newPodUid();
      const podPath = await sandbox.makePod(uid, 'Burstable', {
        cpuShares: 204,
        cpuQuotaUs: 40_000,
        memoryLimitBytes: 256n * Mi,
      });
      await sandbox.makeContainer(podPath, newContainerId(), { cpuShares: 2 });
      const ids = [newContainerId(), newContainerId()];
      for (const id of ids) {
        await sandbox.makeContainer(podPath, id, {
          cpuShares: 102,
          cpuQuotaUs: 20_000,
          memoryLimitBytes: 128n * Mi,
        });
      }
      pods.push({
        metadata: { uid, name: `pod-${i}`, namespace: 'bench' },
        spec: {
          nodeName: 'bench-node',
          containers: ['app', 'sidecar'].map((name) => ({
            name,
            image: `registry.example/${name}:1.0`,
            resources: {
              requests: { cpu: '100m', memory: '64Mi' },
              limits: { cpu: '200m', memory: '128Mi' },
            },
          })),
        },
        status: {
          phase: 'Running',
          qosClass: 'Burstable',
          containerStatuses: ['app', 'sidecar'].map((name, j) => ({
            name,
            containerID: `containerd://${ids[j]}`,
            state: { running: {} },
          })),
        },
      });
    }
    const buildMs = performance.now() - t0;
    const input: ServeInput = {
      layout: sandbox.layout,
      pods,
      allocated: pods.filter((_, i) => i % 5 === 0).map((p) => p.metadata!.uid!),
    };
    const inputPath = join(dir, 'input.json');
    await writeFile(inputPath, JSON.stringify(input));

    const entry = values.tsx ? fileURLToPath(import.meta.url) : await compileAsImage('bench/scrape.ts', dir);
    // The DaemonSet's environment (NODE_OPTIONS among it) as the image's node sees it; the V8 flags go
    // on the command line instead so they hold whatever NODE_OPTIONS this shell has.
    const deployed = deployedAgent();
    const cpuLimitMilli = values['cpu-limit']
      ? parseCpuMillicores(values['cpu-limit'])
      : deployed.cpuLimitMilli;
    const { NODE_OPTIONS: deployedOptions = '', ...deployedEnv } = deployed.env;
    const nodeOptions = (values['node-options'] ?? deployedOptions).split(' ').filter(Boolean);
    const env = { ...process.env, ...deployedEnv };
    delete env.NODE_OPTIONS;
    child = fork(entry, ['--serve', inputPath], {
      execArgv: values.tsx ? ['--import', 'tsx', ...nodeOptions] : nodeOptions,
      env,
      stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
    });
    const { port } = await nextMessage(child, 'listening');
    const pid = child.pid!;
    // The agent runs in its own cgroup beside the pods, as a DaemonSet pod would, with the DaemonSet's
    // limits (a CFS quota throttles every thread of the process, the gzip threads included), and so the
    // measurement is not at the mercy of whatever else this shared machine runs at the root level.
    const limits: Record<string, [string, string][]> = {
      cpu: [
        ['cpu.cfs_period_us', '100000'],
        ['cpu.cfs_quota_us', String(cpuLimitMilli * 100)],
      ],
      cpuacct: [],
      memory: [['memory.limit_in_bytes', String(deployed.memoryLimitBytes)]],
    };
    for (const [h, files] of Object.entries(limits)) {
      const agentDir = `/sys/fs/cgroup/${h}/${sandbox.name}/agent`;
      await mkdir(agentDir, { recursive: true });
      for (const [file, value] of files) await writeFile(`${agentDir}/${file}`, value);
      await writeFile(`${agentDir}/cgroup.procs`, String(pid));
    }

    // How often the CFS quota stopped the agent: every thread of it waits out the rest of the period.
    const cpuStatFile = `/sys/fs/cgroup/cpu/${sandbox.name}/agent/cpu.stat`;
    const throttling = () => {
      const text = readFileSync(cpuStatFile, 'utf8');
      const field = (k: string) => Number(new RegExp(`^${k} (\\d+)$`, 'm').exec(text)?.[1] ?? NaN);
      return { periods: field('nr_throttled'), ms: field('throttled_time') / 1e6 };
    };

    // 1. Burst.
    for (let i = 0; i < 5; i++) await scrape(agent, port, values.plain);
    const throttled0 = throttling();
    const burstCpu0 = cpuTimeMs(pid);
    child.send({ type: 'eld-start' } satisfies ToServer);
    const times: number[] = [];
    let bytes = 0;
    for (let i = 0; i < scrapeCount; i++) {
      const r = await scrape(agent, port, values.plain);
      times.push(r.ms);
      bytes = r.bytes;
    }
    const cpuPerScrape = (cpuTimeMs(pid) - burstCpu0) / scrapeCount;
    const throttled1 = throttling();
    const burstThrottled = {
      periods: throttled1.periods - throttled0.periods,
      ms: throttled1.ms - throttled0.ms,
    };
    child.send({ type: 'eld-stop' } satisfies ToServer);
    const { maxMs: stallMs } = await nextMessage(child, 'eld');
    // The exposition's own size, whatever the burst's encoding, and how long that scrape's walk of the
    // cgroups took (the server's own resizelet_scrape_cgroup_read_seconds): the part of a scrape's latency
    // that is reading files.
    const plainScrape = await scrape(agent, port, true, true);
    const textBytes = plainScrape.bytes;
    const walkMs =
      Number(/^resizelet_scrape_cgroup_read_seconds (\S+)$/m.exec(plainScrape.body)?.[1] ?? NaN) * 1000;

    // 2. Idle at a 10 s scrape interval.
    await sleep(2_000); // let the burst's garbage collection settle
    const cpu0 = cpuTimeMs(pid);
    const t1 = performance.now();
    let rssPeak = rssMb(pid);
    for (let s = 1; s <= idleSeconds; s++) {
      await sleep(1_000);
      if (s % 10 === 0) await scrape(agent, port, values.plain);
      rssPeak = Math.max(rssPeak, rssMb(pid));
    }
    const idleMillicores = ((cpuTimeMs(pid) - cpu0) / (performance.now() - t1)) * 1000;
    child.send({ type: 'memory' } satisfies ToServer);
    const mem = await nextMessage(child, 'memory');

    const result = {
      pods: podCount,
      containers: podCount * 2,
      scrape_p50_ms: round(percentile(times, 50)),
      scrape_p99_ms: round(percentile(times, 99)),
      bytes: textBytes,
      event_loop_max_stall_ms: round(stallMs),
      idle_cpu_millicores: round(idleMillicores),
      rss_mb: round(rssPeak, 1),
    };
    const path = writeResult('scrape', result);
    process.stdout.write(
      `\n/metrics on ${podCount} pods x 2 containers + sandboxes (${podCount * 4} cgroups, built in ` +
        `${round(buildMs / 1000, 1)} s); ${scrapeCount} scrapes back to back, then ${idleSeconds} s at a 10 s interval\n\n`,
    );
    const row = (metric: string, value: number, target: string, ok: boolean) => ({
      metric,
      value,
      target,
      ok: ok ? 'yes' : 'NO',
    });
    printTable([
      row('scrape p50 (ms)', result.scrape_p50_ms, '< 25', result.scrape_p50_ms < 25),
      row('scrape p99 (ms)', result.scrape_p99_ms, '< 60', result.scrape_p99_ms < 60),
      row('server CPU per scrape (ms)', round(cpuPerScrape), '', true),
      row('of a scrape: cgroup walk (ms)', round(walkMs), '', true),
      row(
        `burst: throttled by the ${cpuLimitMilli}m limit, ms (${burstThrottled.periods} periods)`,
        round(burstThrottled.ms),
        '',
        true,
      ),
      row('bytes per scrape (text)', result.bytes, '', true),
      row(`bytes on the wire (${values.plain ? 'plain' : 'gzip'})`, bytes, '', true),
      row(
        'event loop max stall (ms)',
        result.event_loop_max_stall_ms,
        '<= 20',
        result.event_loop_max_stall_ms <= 20,
      ),
      row('idle CPU (millicores)', result.idle_cpu_millicores, '< 10', result.idle_cpu_millicores < 10),
      row('RSS peak (MB)', result.rss_mb, '< 100', result.rss_mb < 100),
    ]);
    const mb = (n: number | undefined) => round((n ?? 0) / 2 ** 20, 1);
    process.stdout.write(
      `\nserver memory at the end: rss ${mb(mem.usage.rss)} MB = V8 heap ${mb(mem.usage.heapTotal)} MB ` +
        `(used ${mb(mem.usage.heapUsed)}, young generation ${mb(mem.spaces.new_space)}, old ${mb(mem.spaces.old_space)}) ` +
        `+ external ${mb(mem.usage.external)} MB + code, stacks and Node itself\n`,
    );
    process.stdout.write(
      `load average (1 min) of the machine: ${round(loadStart, 2)} at the start, ${round(loadavg()[0]!, 2)} at the end\n`,
    );
    process.stdout.write(`\nwrote ${path}\n`);
  } finally {
    agent.destroy();
    if (child && child.exitCode === null) {
      const exited = once(child, 'exit');
      child.kill('SIGTERM');
      await exited;
    }
    await sandbox.cleanup();
    await rm(dir, { recursive: true, force: true });
  }
}

const serveAt = process.argv.indexOf('--serve');
if (serveAt >= 0) await serve(process.argv[serveAt + 1]!);
else await drive();
