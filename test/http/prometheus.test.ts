// Proof with a real Prometheus: it scrapes the endpoint every second while a real process burns CPU in a
// real cgroup v1 container limited to 200m, and the classic "CPU above 80% of its limit" rule fires through
// Prometheus's own HTTP API; after an in-place resize to 1 CPU (written through the planner and executor)
// the same expression no longer returns the container. Prometheus must also see every scrape healthy and
// every series parsed.
//
// Prometheus is Debian's package. It is installed here when missing (CI's .ci/run installs it first) with
// every service start denied, and started as this test's own child on 127.0.0.1 with a temp config and
// storage; only that PID is ever stopped.
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import type { FastifyInstance } from 'fastify';
import { nodeSyncFs } from '../../agent/cgroup-stats.ts';
import { buildHttpApp } from '../../agent/http.ts';
import { createAgentMetrics } from '../../agent/metrics.ts';
import type { PodLike } from '../../agent/resize/pod.ts';
import { executePlan } from '../../cgroup/executor.ts';
import { planResize } from '../../cgroup/planner.ts';
import type { CgroupPath } from '../../cgroup/types.ts';
import {
  createRealSandbox,
  newContainerId,
  newPodUid,
  realCgroupsAvailable,
  type RealSandbox,
} from '../support/real-cgroup.ts';
import { parseExposition, seriesKey } from './helpers.ts';

const Mi = 1024n * 1024n;
const RULE =
  'sum(rate(container_cpu_usage_seconds_total{container!=""}[15s])) by (pod, container) / ' +
  'sum(container_spec_cpu_quota{container!=""} / container_spec_cpu_period{container!=""}) by (pod, container) ' +
  '* 100 > 80';

const hasPrometheus = () =>
  spawnSync('sh', ['-c', 'command -v prometheus'], { encoding: 'utf8' }).status === 0;

/** Installs Debian's prometheus with service starts denied (policy-rc.d exit 101), as .ci/run does. */
function installPrometheus(): string | undefined {
  if (hasPrometheus()) return undefined;
  if (process.getuid?.() !== 0) return 'prometheus is not installed and installing it needs root';
  const policy = '/usr/sbin/policy-rc.d';
  const ours = !existsSync(policy);
  if (ours) writeFileSync(policy, '#!/bin/sh\nexit 101\n', { mode: 0o755 });
  try {
    const env = { ...process.env, DEBIAN_FRONTEND: 'noninteractive' };
    const opts = { env, encoding: 'utf8' as const, timeout: 240_000 };
    spawnSync('apt-get', ['update', '-qq'], opts);
    const r = spawnSync('apt-get', ['install', '-y', '-qq', '--no-install-recommends', 'prometheus'], opts);
    if (r.status !== 0)
      return `apt-get install prometheus failed: ${(r.stderr || r.stdout).trim().slice(-300)}`;
  } finally {
    if (ours) rmSync(policy, { force: true });
  }
  return hasPrometheus() ? undefined : 'prometheus is still not on PATH after installing it';
}

const cgroups = realCgroupsAvailable();
const skipReason = cgroups.ok ? installPrometheus() : `real cgroups unavailable: ${cgroups.reason}`;
if (skipReason) console.warn(`SKIPPED the real Prometheus proof: ${skipReason}`);

/** A CPU burner at ~40% of one core (40 ms busy, 60 ms asleep), in spawnInCgroup's protocol. */
const DUTY_BURNER = `
import { createInterface } from 'node:readline';
createInterface({ input: process.stdin }).once('line', () => {
  setTimeout(() => process.exit(0), Number(process.argv[2] ?? 90) * 1000).unref();
  process.stdout.write('ready\\n');
  let x = 0;
  const cycle = () => {
    const until = Date.now() + 40;
    while (Date.now() < until) x = Math.sqrt(x + 1.5);
    setTimeout(cycle, 60);
  };
  cycle();
});
process.stdin.on('end', () => process.exit(0));
`;

async function freePort(): Promise<number> {
  const srv = createServer();
  srv.listen(0, '127.0.0.1');
  await once(srv, 'listening');
  const port = (srv.address() as { port: number }).port;
  srv.close();
  await once(srv, 'close');
  return port;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

describe.skipIf(skipReason !== undefined)(
  `a real Prometheus scraping the endpoint${skipReason ? ` (skipped: ${skipReason})` : ''}`,
  () => {
    let sandbox: RealSandbox;
    let app: FastifyInstance;
    let prometheus: ChildProcess | undefined;
    let dir: string;
    let promUrl: string;
    let endpoint: string;
    let podPath: CgroupPath;
    let ctrPath: CgroupPath;

    async function query(
      expr: string,
    ): Promise<{ metric: Record<string, string>; value: [number, string] }[]> {
      const res = await fetch(`${promUrl}/api/v1/query?query=${encodeURIComponent(expr)}`);
      const body = (await res.json()) as { status: string; data: { result: never[] }; error?: string };
      if (body.status !== 'success') throw new Error(`query ${expr} failed: ${body.error}`);
      return body.data.result;
    }

    /** Polls until `check` passes or the deadline passes (then returns the last value for the assertion). */
    async function until<T>(fn: () => Promise<T>, check: (v: T) => boolean, ms: number): Promise<T> {
      const deadline = Date.now() + ms;
      for (;;) {
        const v = await fn();
        if (check(v) || Date.now() > deadline) return v;
        await sleep(500);
      }
    }

    beforeAll(async () => {
      sandbox = await createRealSandbox();
      dir = mkdtempSync(join(tmpdir(), 'resizelet-prometheus-'));
      const uid = newPodUid();
      const appId = newContainerId();
      // The kubelet's and runc's values for a Burstable pod whose one container asks 100m/64Mi, limit
      // 200m/128Mi; its sandbox has no limits.
      podPath = await sandbox.makePod(uid, 'Burstable', {
        cpuShares: 102,
        cpuQuotaUs: 20_000,
        memoryLimitBytes: 128n * Mi,
      });
      ctrPath = await sandbox.makeContainer(podPath, appId, {
        cpuShares: 102,
        cpuQuotaUs: 20_000,
        memoryLimitBytes: 128n * Mi,
      });
      await sandbox.makeContainer(podPath, newContainerId(), { cpuShares: 2 });
      const burner = join(dir, 'duty-burner.mjs');
      writeFileSync(burner, DUTY_BURNER);
      await sandbox.spawnInCgroup(ctrPath, burner, ['90']);

      const pod: PodLike = {
        metadata: { uid, name: 'burner', namespace: 'proof' },
        spec: {
          containers: [
            {
              name: 'app',
              resources: {
                requests: { cpu: '100m', memory: '64Mi' },
                limits: { cpu: '200m', memory: '128Mi' },
              },
            },
          ],
        },
        status: {
          phase: 'Running',
          qosClass: 'Burstable',
          containerStatuses: [{ name: 'app', containerID: `containerd://${appId}`, state: { running: {} } }],
        },
      };
      app = await buildHttpApp({
        nodeName: 'proof-node',
        layout: sandbox.layout,
        files: nodeSyncFs,
        pods: () => [pod],
        views: () => [],
        metrics: createAgentMetrics(),
        informer: { synced: true, lastEventAt: Date.now() },
      });
      await app.listen({ host: '127.0.0.1', port: 0 });
      const appPort = (app.server.address() as { port: number }).port;
      endpoint = `127.0.0.1:${appPort}`;

      const promPort = await freePort();
      promUrl = `http://127.0.0.1:${promPort}`;
      const config = join(dir, 'prometheus.yml');
      writeFileSync(
        config,
        [
          'global:',
          '  scrape_interval: 1s',
          '  scrape_timeout: 1s',
          '  evaluation_interval: 1s',
          'scrape_configs:',
          '  - job_name: resizelet',
          '    static_configs:',
          `      - targets: ['${endpoint}']`,
          '',
        ].join('\n'),
      );
      prometheus = spawn(
        'prometheus',
        [
          `--config.file=${config}`,
          `--storage.tsdb.path=${join(dir, 'data')}`,
          `--web.listen-address=127.0.0.1:${promPort}`,
          '--log.level=warn',
        ],
        { stdio: ['ignore', 'ignore', 'inherit'] },
      );
      await until(
        () =>
          fetch(`${promUrl}/-/ready`).then(
            (r) => r.ok,
            () => false,
          ),
        (ok) => ok,
        20_000,
      );
    }, 60_000);

    afterAll(async () => {
      if (prometheus && prometheus.exitCode === null && prometheus.signalCode === null) {
        const exited = once(prometheus, 'exit');
        prometheus.kill('SIGTERM');
        const timer = setTimeout(() => prometheus?.kill('SIGKILL'), 5_000);
        await exited;
        clearTimeout(timer);
      }
      await app?.close();
      await sandbox?.cleanup();
      if (dir) rmSync(dir, { recursive: true, force: true });
    }, 30_000);

    test('the 80%-of-limit rule fires at 200m and stops after an in-place resize to 1 CPU', async () => {
      const t0 = Date.now();
      const firing = await until(
        () => query(RULE),
        (r) => r.length > 0,
        25_000,
      );
      expect(firing.map((r) => r.metric)).toEqual([{ container: 'app', pod: 'burner' }]);
      // Hold it until the 15 s window is full of samples: the rule fires on a full window, not on
      // extrapolation from the first few.
      await sleep(Math.max(0, 16_000 - (Date.now() - t0)));
      const full = await query(RULE);
      expect(full.map((r) => r.metric)).toEqual([{ container: 'app', pod: 'burner' }]);
      expect(Number(full[0]!.value[1])).toBeGreaterThan(80);

      // Resize to 1 CPU through the cgroup layer, as the agent would: the pod level first, then the container.
      const [pod, ctr] = await Promise.all([sandbox.read(podPath), sandbox.read(ctrPath)]);
      const desired = {
        cpuRequestMilli: 100,
        cpuLimitMilli: 1000,
        memoryRequestBytes: 64n * Mi,
        memoryLimitBytes: 128n * Mi,
      };
      const plan = planResize({
        versions: { cpu: 'v1', cpuacct: 'v1', memory: 'v1' },
        weightFormula: 'linear',
        pod: { path: podPath, current: pod.settings, usage: pod.usage },
        containers: [{ name: 'app', path: ctrPath, current: ctr.settings, usage: ctr.usage, desired }],
      });
      if (!plan.ok) throw new Error(`resize refused: ${plan.message}`);
      const done = await executePlan({ fs: sandbox.fs, layout: sandbox.layout, plan });
      expect(done.ok).toBe(true);

      // The quota series changes at the next scrape, and with it the ratio: the rule stops returning the
      // container although the 15 s rate window still holds the throttled samples.
      const quota = await until(
        () => query('container_spec_cpu_quota{container="app"}'),
        (r) => r[0]?.value[1] === '100000',
        10_000,
      );
      expect(quota[0]?.value[1]).toBe('100000');
      const after = await until(
        () => query(RULE),
        (r) => r.length === 0,
        10_000,
      );
      expect(after).toEqual([]);
      // And the container really runs faster now: its usage ratio against 1 CPU is its own ~40% duty cycle.
      await sleep(2_000);
      expect(await query(RULE)).toEqual([]);
    }, 45_000);

    test('every scrape was healthy and every series parsed', async () => {
      expect((await query('up{job="resizelet"}')).map((r) => r.value[1])).toEqual(['1']);
      // Every scrape of the run: a parse error would fail each one. On a starved machine one may miss the
      // 1 s timeout (not the endpoint's doing); more than one in ten would be a finding.
      const [total, healthy] = await Promise.all([
        query('count_over_time(up{job="resizelet"}[1m])'),
        query('sum_over_time(up{job="resizelet"}[1m])'),
      ]);
      const scrapes = { total: Number(total[0]?.value[1]), healthy: Number(healthy[0]?.value[1]) };
      expect(scrapes.total).toBeGreaterThan(10);
      expect(scrapes.healthy / scrapes.total, JSON.stringify(scrapes)).toBeGreaterThanOrEqual(0.9);
      const targets = (await (await fetch(`${promUrl}/api/v1/targets`)).json()) as {
        data: { activeTargets: { health: string; lastError: string; scrapeUrl: string }[] };
      };
      expect(targets.data.activeTargets).toEqual([
        expect.objectContaining({ health: 'up', lastError: '', scrapeUrl: `http://${endpoint}/metrics` }),
      ]);
      // Prometheus rejected no sample (a parse error would fail the whole scrape: up would be 0). Its own
      // counters say so; it does not scrape itself here, so they are read from its /metrics.
      const own = parseExposition(await (await fetch(`${promUrl}/metrics`)).text());
      for (const name of [
        'prometheus_target_scrapes_sample_out_of_order_total',
        'prometheus_target_scrapes_sample_duplicate_timestamp_total',
        'prometheus_target_scrapes_sample_out_of_bounds_total',
      ]) {
        expect({ name, value: own.samples.find((s) => s.name === name)?.value }).toEqual({ name, value: 0 });
      }

      // Every series of a scrape of ours is in Prometheus, with its labels (the gc histogram gains series
      // as new kinds of collection happen, so it is only checked for presence).
      const ours = parseExposition(await (await fetch(`http://${endpoint}/metrics`)).text());
      await sleep(1_500);
      const stored = await query('{job="resizelet"}');
      const keys = new Set(
        stored.map((r) => {
          const { __name__: name, job: _job, instance: _instance, ...labels } = r.metric;
          return seriesKey({ name: name!, labels });
        }),
      );
      // In Prometheus an empty label value is the label's absence: container="" is stored without it.
      const nonEmpty = (l: Record<string, string>) =>
        Object.fromEntries(Object.entries(l).filter(([, v]) => v !== ''));
      const missing = ours.samples
        .filter((s) => !s.name.startsWith('nodejs_gc_duration_seconds'))
        .map((s) => seriesKey({ name: s.name, labels: nonEmpty(s.labels) }))
        .filter((k) => !keys.has(k));
      expect(missing).toEqual([]);
      expect(ours.samples.length).toBeGreaterThan(40);
      const scraped = Number((await query('scrape_samples_scraped{job="resizelet"}'))[0]?.value[1]);
      const counts = { scraped, ours: ours.samples.length };
      expect(Math.abs(counts.scraped - counts.ours), JSON.stringify(counts)).toBeLessThanOrEqual(20);
    }, 20_000);
  },
);
