// `npm run bench -- scrape`: the /metrics endpoint of the agent itself, on a node of 250 pods x 2 containers
// (plus each pod's sandbox) built as real cgroup v1 directories and removed afterwards. The agent runs as
// the image runs it: the bundle of scripts/build.mjs on plain Node, with the DaemonSet's NODE_OPTIONS,
// environment and CPU/memory limits (in a cgroup of its own beside the pods), against the in-repo fake API
// server holding the node's pods; a fifth of them are resized first, so the agent holds allocations and
// Completed statuses as on a node in use. The only thing added to it is bench/_scrape-probe.mjs, which
// watches its event loop while asked. This process scrapes it as Prometheus does (gzip accepted):
//   1. paced scrapes, one every --pace-ms (default 250 ms: a scrape each second from four Prometheus
//      replicas would be one every 250 ms): latency p50/p99 and the agent's longest event-loop stall;
//   2. a saturating burst, scrapes back to back: the same figures when the scrapes alone keep the agent's
//      CPU limit busy (the CFS quota then freezes the whole process, resize loop included);
//   3. an idle minute at a 10 s scrape interval: the agent's CPU (from /proc/<pid>/stat) and peak RSS.
// Writes bench/results/scrape.json: the issue's fields from phases 1 and 3, the burst's as saturated_*.
// Options: --pods N, --scrapes N (paced), --pace-ms MS, --burst N (0: none), --idle-seconds S, --plain (no
// gzip), --tsx (run the agent from source: more memory for the loader), --node-options=... (instead of the
// DaemonSet's NODE_OPTIONS), --cpu-limit=QUANTITY (instead of the DaemonSet's), --keep-log=PATH (the agent's
// output, e.g. with --node-options=--trace-gc).
import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { createWriteStream, readFileSync } from 'node:fs';
import { copyFile, mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import http from 'node:http';
import { loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { parseCpuMillicores } from '../agent/resize/quantity.ts';
import { requestHash } from '../agent/resize/request.ts';
import { startFakeApiServer, type Pod } from '../test/fakes/apiserver.ts';
import { sandboxAgentArgs, statusOf, waitFor, withAnnotations } from '../test/agent/support.ts';
import {
  cpuTimeMs,
  createRealSandbox,
  newContainerId,
  newPodUid,
  realCgroupsAvailable,
} from '../test/support/real-cgroup.ts';
import { compileAsImage, deployedAgent } from './_deployed.ts';
import { percentile, printTable, round, writeResult } from './_report.ts';

const repo = fileURLToPath(new URL('../', import.meta.url));
const NODE = 'bench-node';
const NAMESPACE = 'bench';
const Mi = 1024n * 1024n;
/** What the resized fifth of the pods ask for their `app` container (the spec: 100m/64Mi, 200m/128Mi). */
const RESIZE = JSON.stringify({
  app: { requests: { cpu: '150m', memory: '64Mi' }, limits: { cpu: '300m', memory: '192Mi' } },
});

type FromProbe =
  | { type: 'eld'; maxMs: number }
  | { type: 'memory'; usage: NodeJS.MemoryUsage; spaces: Record<string, number> };

/** One scrape as Prometheus makes it (gzip accepted unless `plain`): its time, bytes received, and the body. */
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

function nextMessage<T extends FromProbe['type']>(
  child: ChildProcess,
  type: T,
): Promise<Extract<FromProbe, { type: T }>> {
  return new Promise((resolve, reject) => {
    const onMessage = (m: FromProbe) => {
      if (m.type !== type) return;
      child.off('message', onMessage);
      child.off('exit', onExit);
      resolve(m as Extract<FromProbe, { type: T }>);
    };
    const onExit = (code: number | null) => reject(new Error(`the agent exited (${code}) before "${type}"`));
    child.on('message', onMessage);
    child.once('exit', onExit);
  });
}

/** A Burstable pod of two containers (100m/64Mi requests, 200m/128Mi limits each), running as `ids`. */
function benchPod(i: number, uid: string, ids: string[]): Pod {
  const names = ['app', 'sidecar'];
  return {
    metadata: { uid, name: `pod-${i}`, namespace: NAMESPACE },
    spec: {
      nodeName: NODE,
      restartPolicy: 'Always',
      containers: names.map((name) => ({
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
      containerStatuses: names.map((name, j) => ({
        name,
        containerID: `containerd://${ids[j]}`,
        image: `registry.example/${name}:1.0`,
        imageID: '',
        ready: true,
        restartCount: 0,
        state: { running: { startedAt: new Date().toISOString() } },
      })),
    },
  } as Pod;
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    args: process.argv.slice(2),
    options: {
      pods: { type: 'string', default: '250' },
      scrapes: { type: 'string', default: '200' },
      'pace-ms': { type: 'string', default: '250' },
      burst: { type: 'string', default: '100' },
      'idle-seconds': { type: 'string', default: '60' },
      tsx: { type: 'boolean', default: false },
      plain: { type: 'boolean', default: false },
      'node-options': { type: 'string' },
      'cpu-limit': { type: 'string' },
      'keep-log': { type: 'string' },
    },
  });
  const podCount = Number(values.pods);
  const scrapeCount = Number(values.scrapes);
  const paceMs = Number(values['pace-ms']);
  const burstCount = Number(values.burst);
  const idleSeconds = Number(values['idle-seconds']);
  const plain = values.plain;
  const available = realCgroupsAvailable();
  if (!available.ok) {
    process.stderr.write(`scrape bench needs real cgroup v1 hierarchies: ${available.reason}\n`);
    process.exit(1);
  }

  const loadStart = loadavg()[0]!;
  const sandbox = await createRealSandbox();
  const dir = await mkdtemp(join(tmpdir(), 'resizelet-bench-scrape-'));
  // The checkpoint's run copy, as the DaemonSet keeps it on the node's memory-backed /run.
  const runDir = await mkdtemp('/dev/shm/resizelet-bench-scrape-');
  const api = await startFakeApiServer({ namespaces: [NAMESPACE] });
  let child: ChildProcess | undefined;
  const keepAlive = new http.Agent({ keepAlive: true, maxSockets: 1 });
  try {
    api.upsertNode({
      metadata: { name: NODE },
      status: { allocatable: { cpu: '1000', memory: '4Ti' }, capacity: { cpu: '1000', memory: '4Ti' } },
    });
    // The kubelet's values for each pod: pod quota = the sum of limits, shares = the sum of requests; the
    // sandbox gets 2 shares and no quota.
    const t0 = performance.now();
    const pods: Pod[] = [];
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
      pods.push(api.upsertPod(benchPod(i, uid, ids)));
    }
    const buildMs = performance.now() - t0;
    await api.writeKubeconfig(join(dir, 'kubeconfig'));

    // The DaemonSet's environment and V8 flags (read from deploy/daemonset.yaml), the probe added.
    const deployed = deployedAgent();
    const cpuLimitMilli = values['cpu-limit']
      ? parseCpuMillicores(values['cpu-limit'])
      : deployed.cpuLimitMilli;
    const { NODE_OPTIONS: deployedOptions = '', ...deployedEnv } = deployed.env;
    const nodeOptions = (values['node-options'] ?? deployedOptions).split(' ').filter(Boolean);
    const entry = values.tsx
      ? ['--import', 'tsx', `${repo}bin/resizelet.ts`]
      : [await compileAsImage('bin/resizelet.ts', dir)];
    const log = createWriteStream(join(dir, 'agent.log'));
    child = spawn(
      process.execPath,
      [
        ...nodeOptions,
        '--import',
        `${repo}bench/_scrape-probe.mjs`,
        ...entry,
        'agent',
        ...sandboxAgentArgs({
          nodeName: NODE,
          dir,
          podsRoot: sandbox.layout.podsRoot,
          reconcileInterval: '10s', // the agent's default
        }),
        `--run-checkpoint=${join(runDir, 'checkpoint.json')}`,
        ...['--systemd-bus', 'none', '--log-level', 'info'],
      ],
      {
        cwd: repo,
        env: { ...process.env, ...deployedEnv, KUBERNETES_SERVICE_HOST: '' },
        stdio: ['ignore', 'pipe', 'pipe', 'ipc'],
      },
    );
    const agentProcess = child;
    let logged = '';
    const onLog = (chunk: Buffer) => {
      log.write(chunk);
      if (logged.length < 1_000_000) logged += chunk.toString();
    };
    agentProcess.stdout!.on('data', onLog);
    agentProcess.stderr!.on('data', onLog);
    const pid = agentProcess.pid!;
    const port = await waitFor(
      'the agent\'s "endpoint listening" log line',
      () => {
        if (agentProcess.exitCode !== null) throw new Error(`the agent exited:\n${logged.slice(-2000)}`);
        const m = /"port":(\d+)[^\n]*"msg":"endpoint listening"/.exec(logged);
        return m ? Number(m[1]) : undefined;
      },
      60_000,
    );

    // The agent runs in its own cgroup beside the pods, as a DaemonSet pod would, with the DaemonSet's
    // limits (a CFS quota throttles every thread of the process, the gzip threads included).
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
    const cpuStatFile = `/sys/fs/cgroup/cpu/${sandbox.name}/agent/cpu.stat`;
    const throttling = () => {
      const text = readFileSync(cpuStatFile, 'utf8');
      const field = (k: string) => Number(new RegExp(`^${k} (\\d+)$`, 'm').exec(text)?.[1] ?? NaN);
      return { periods: field('nr_throttled'), ms: field('throttled_time') / 1e6 };
    };

    // A fifth of the pods resized, as on a node in use: allocations in the checkpoint, statuses to report.
    const resized = pods.filter((_, i) => i % 5 === 0);
    for (const p of resized) {
      const current = api.getPod(NAMESPACE, p.metadata!.name!)!;
      api.upsertPod(withAnnotations(current, { 'resizelet.io/resize': RESIZE }));
    }
    const hash = requestHash(RESIZE);
    await waitFor(
      `${resized.length} resizes to complete`,
      () =>
        resized.every((p) => {
          const s = statusOf(api, NAMESPACE, p.metadata!.name!);
          if (s?.observedRequest === hash && s.resizeStatus === 'Rejected')
            throw new Error(`the agent rejected the bench's resize: ${JSON.stringify(s)}`);
          return s?.observedRequest === hash && s.resizeStatus === 'Completed';
        }),
      120_000,
    );
    // Every cgroup walked (node level, pods, sandboxes, containers) before measuring.
    const expected = podCount * 4;
    await waitFor(
      `a walk of all ${expected} pod cgroups`,
      async () => {
        const body = (await scrape(keepAlive, port, true, true)).body;
        return Number(/^resizelet_scrape_cgroups (\S+)$/m.exec(body)?.[1] ?? NaN) >= expected;
      },
      30_000,
    );
    for (let i = 0; i < 5; i++) await scrape(keepAlive, port, plain);

    /** `count` scrapes, each started `pace` ms after the last began (0: back to back). */
    const run = async (count: number, pace: number) => {
      const throttled0 = throttling();
      const cpu0 = cpuTimeMs(pid);
      agentProcess.send({ type: 'eld-start' });
      const times: number[] = [];
      let bytes = 0;
      for (let i = 0; i < count; i++) {
        const started = performance.now();
        const r = await scrape(keepAlive, port, plain);
        times.push(r.ms);
        bytes = r.bytes;
        const rest = pace - (performance.now() - started);
        if (rest > 0) await sleep(rest);
      }
      const cpuPerScrape = (cpuTimeMs(pid) - cpu0) / count;
      const throttled1 = throttling();
      agentProcess.send({ type: 'eld-stop' });
      const { maxMs } = await nextMessage(agentProcess, 'eld');
      return {
        p50: round(percentile(times, 50)),
        p99: round(percentile(times, 99)),
        stall: round(maxMs),
        cpuPerScrape: round(cpuPerScrape),
        bytes,
        throttledMs: round(throttled1.ms - throttled0.ms),
        throttledPeriods: throttled1.periods - throttled0.periods,
      };
    };

    // 1. Paced.
    const paced = await run(scrapeCount, paceMs);
    // 2. Saturating burst.
    await sleep(1_000);
    const burst = burstCount > 0 ? await run(burstCount, 0) : undefined;

    // The exposition's own size, whatever the encoding, and how long that scrape's walk of the cgroups took
    // (the agent's own resizelet_scrape_cgroup_read_seconds): the part of a scrape that is reading files.
    const plainScrape = await scrape(keepAlive, port, true, true);
    const textBytes = plainScrape.bytes;
    const walkMs =
      Number(/^resizelet_scrape_cgroup_read_seconds (\S+)$/m.exec(plainScrape.body)?.[1] ?? NaN) * 1000;

    // 3. Idle at a 10 s scrape interval.
    await sleep(2_000); // let the burst's garbage collection settle
    const cpu0 = cpuTimeMs(pid);
    const t1 = performance.now();
    let rssPeak = rssMb(pid);
    for (let s = 1; s <= idleSeconds; s++) {
      await sleep(1_000);
      if (s % 10 === 0) await scrape(keepAlive, port, plain);
      rssPeak = Math.max(rssPeak, rssMb(pid));
    }
    const idleMillicores = ((cpuTimeMs(pid) - cpu0) / (performance.now() - t1)) * 1000;
    agentProcess.send({ type: 'memory' });
    const mem = await nextMessage(agentProcess, 'memory');

    const result = {
      pods: podCount,
      containers: podCount * 2,
      scrape_p50_ms: paced.p50,
      scrape_p99_ms: paced.p99,
      bytes: textBytes,
      event_loop_max_stall_ms: paced.stall,
      idle_cpu_millicores: round(idleMillicores),
      rss_mb: round(rssPeak, 1),
      pace_ms: paceMs,
      agent_cpu_per_scrape_ms: paced.cpuPerScrape,
      cgroup_walk_ms: round(walkMs),
      gzip_bytes: plain ? null : paced.bytes,
      ...(burst
        ? {
            saturated_p50_ms: burst.p50,
            saturated_p99_ms: burst.p99,
            saturated_event_loop_max_stall_ms: burst.stall,
            saturated_throttled_ms: burst.throttledMs,
          }
        : {}),
    };
    const path = writeResult('scrape', result);
    process.stdout.write(
      `\n/metrics of the agent on ${podCount} pods x 2 containers + sandboxes (${podCount * 4} cgroups, built in ` +
        `${round(buildMs / 1000, 1)} s; ${resized.length} pods resized); ${scrapeCount} scrapes one every ` +
        `${paceMs} ms${burst ? `, ${burstCount} back to back` : ''}, then ${idleSeconds} s at a 10 s interval\n\n`,
    );
    const row = (metric: string, value: number, target: string, ok: boolean | null) => ({
      metric,
      value,
      target,
      ok: ok === null ? '' : ok ? 'yes' : 'NO',
    });
    printTable([
      row(`scrape p50 (ms), paced`, paced.p50, '< 25', paced.p50 < 25),
      row(`scrape p99 (ms), paced`, paced.p99, '< 60', paced.p99 < 60),
      row('event loop max stall (ms), paced', paced.stall, '<= 20', paced.stall <= 20),
      row('agent CPU per scrape (ms), paced', paced.cpuPerScrape, '', null),
      row('of a scrape: cgroup walk (ms)', round(walkMs), '', null),
      row(`paced: throttled by the ${cpuLimitMilli}m limit (ms)`, paced.throttledMs, '', null),
      ...(burst
        ? [
            row('back to back: scrape p50 (ms)', burst.p50, '', null),
            row('back to back: scrape p99 (ms)', burst.p99, '', null),
            row('back to back: event loop max stall (ms)', burst.stall, '', null),
            row(
              `back to back: throttled (ms, ${burst.throttledPeriods} periods)`,
              burst.throttledMs,
              '',
              null,
            ),
          ]
        : []),
      row('bytes per scrape (text)', result.bytes, '', null),
      row(`bytes on the wire (${plain ? 'plain' : 'gzip'})`, paced.bytes, '', null),
      row('idle CPU (millicores)', result.idle_cpu_millicores, '< 10', result.idle_cpu_millicores < 10),
      row('RSS peak (MB)', result.rss_mb, '< 100', result.rss_mb < 100),
    ]);
    const mb = (n: number | undefined) => round((n ?? 0) / 2 ** 20, 1);
    process.stdout.write(
      `\nagent memory at the end: rss ${mb(mem.usage.rss)} MB = V8 heap ${mb(mem.usage.heapTotal)} MB ` +
        `(used ${mb(mem.usage.heapUsed)}, young generation ${mb(mem.spaces.new_space)}, old ${mb(mem.spaces.old_space)}, ` +
        `code ${mb(mem.spaces.code_space)}) + external ${mb(mem.usage.external)} MB + Node's own code, stacks, malloc\n`,
    );
    process.stdout.write(
      `load average (1 min) of the machine: ${round(loadStart, 2)} at the start, ${round(loadavg()[0]!, 2)} at the end\n`,
    );
    process.stdout.write(`\nwrote ${path}\n`);
  } finally {
    keepAlive.destroy();
    if (child && child.exitCode === null && child.signalCode === null) {
      const exited = once(child, 'exit');
      child.kill('SIGTERM');
      await exited;
    }
    await api.close();
    if (values['keep-log']) await copyFile(join(dir, 'agent.log'), values['keep-log']).catch(() => undefined);
    await sandbox.cleanup();
    await rm(dir, { recursive: true, force: true });
    await rm(runDir, { recursive: true, force: true });
  }
}

await main();
