// The autoscaler with real processes: the agent as a real process, the fake API server, real cgroup v1
// directories, and children that saturate a CPU limit, grow their memory, or idle. All pods start together
// (beforeAll) and each test follows one pod's story, so the whole file takes about as long as the slowest
// story rather than their sum. Skips (visibly) where cgroups are not writable; CI runs as root.
import { once } from 'node:events';
import { createServer } from 'node:net';
import { readFileSync } from 'node:fs';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startFakeApiServer, type FakeApiServer, type Pod } from '../fakes/apiserver.ts';
import {
  runningContainerStatus,
  startAgentProcess,
  statusOf,
  waitFor,
  type AgentProcess,
} from '../agent/support.ts';
import {
  TEST_SCRIPTS,
  createRealSandbox,
  newContainerId,
  newPodUid,
  realCgroupsAvailable,
  type RealSandbox,
  type SandboxChild,
} from '../support/real-cgroup.ts';

const available = realCgroupsAvailable();
if (!available.ok) console.warn(`skipping autoscaler real-process tests: ${available.reason}`);

const NODE = 'autoscale-node';
const NS = 'auto';
const Mi = 1024n * 1024n;
const GROW_MEMORY = fileURLToPath(new URL('./grow-memory.mjs', import.meta.url));

interface Story {
  name: string;
  podPath: string;
  ctr: string;
  child: SandboxChild;
}

/**
 * The agent runs under tsx, which starts the real node process as its child: a SIGKILL of the wrapper
 * alone would leave the agent running. Kill the whole tree this test started, leaves first.
 */
function killTree(pid: number): void {
  let children: number[] = [];
  try {
    children = readFileSync(`/proc/${pid}/task/${pid}/children`, 'utf8')
      .split(' ')
      .filter(Boolean)
      .map(Number);
  } catch {
    // already gone
  }
  for (const c of children) killTree(c);
  try {
    process.kill(pid, 'SIGKILL');
  } catch {
    // already gone
  }
}

async function freePort(): Promise<number> {
  const srv = createServer();
  await new Promise<void>((r) => srv.listen(0, '127.0.0.1', r));
  const port = (srv.address() as { port: number }).port;
  await new Promise<void>((r) => srv.close(() => r()));
  return port;
}

describe.skipIf(!available.ok)(
  'autoscaler with real processes (agent process, fake API, real cgroups)',
  () => {
    let sandbox: RealSandbox;
    let api: FakeApiServer;
    let agent: AgentProcess | undefined;
    let dir: string;
    let port: number;
    const stories = new Map<string, Story>();
    /** Every request annotation text each pod carried, in order (sampled every 50 ms). */
    const requests = new Map<string, string[]>();
    let watcher: NodeJS.Timeout | undefined;
    let memoryHeld = 0;

    const cpuQuota = async (path: string) => (await sandbox.read(path)).settings.cpuQuotaUs;
    const text = (path: string, file: string, controller: 'cpu' | 'memory' = 'memory') =>
      sandbox.readText(controller, path, file);
    const oomKills = async (path: string) =>
      Number(/oom_kill (\d+)/.exec(await text(path, 'memory.oom_control'))?.[1]);
    const eventsFor = (name: string, reason: string) =>
      api
        .events()
        .map((e) => e as { reason?: string; message?: string; involvedObject?: { name?: string } })
        .filter((e) => e.involvedObject?.name === name && e.reason === reason);

    async function addPod(opts: {
      name: string;
      policy: string;
      requests: { cpu: string; memory: string };
      limits: { cpu: string; memory: string };
      cgroup: { cpuShares: number; cpuQuotaUs: number; memoryLimitBytes: bigint };
      script: string;
      args: string[];
    }): Promise<void> {
      const uid = newPodUid();
      const id = newContainerId();
      const podPath = await sandbox.makePod(uid, 'Burstable', opts.cgroup);
      const ctr = await sandbox.makeContainer(podPath, id, opts.cgroup);
      const child = await sandbox.spawnInCgroup(ctr, opts.script, opts.args);
      stories.set(opts.name, { name: opts.name, podPath, ctr, child });
      const pod: Pod = {
        metadata: {
          name: opts.name,
          namespace: NS,
          uid,
          annotations: { 'resizelet.io/autoscale': opts.policy },
        },
        spec: {
          nodeName: NODE,
          restartPolicy: 'Always',
          containers: [
            { name: 'app', image: 'x', resources: { requests: opts.requests, limits: opts.limits } },
          ],
        },
        status: {
          phase: 'Running',
          qosClass: 'Burstable',
          containerStatuses: [runningContainerStatus('app', id)],
        },
      };
      api.upsertPod(pod);
    }

    beforeAll(async () => {
      dir = await mkdtemp(join(tmpdir(), 'resizelet-autoscale-'));
      sandbox = await createRealSandbox();
      api = await startFakeApiServer({ namespaces: [NS] });
      api.upsertNode({
        metadata: { name: NODE },
        status: { allocatable: { cpu: '2', memory: '8Gi' }, capacity: { cpu: '2', memory: '8Gi' } },
      });
      // The kubelet's values for requests 100m/64Mi, limits 200m/256Mi.
      const small = { cpuShares: 102, cpuQuotaUs: 20_000, memoryLimitBytes: 256n * Mi };
      await addPod({
        name: 'cpu',
        policy: '{"cpu":{"max":"800m"}}',
        requests: { cpu: '100m', memory: '64Mi' },
        limits: { cpu: '200m', memory: '256Mi' },
        cgroup: small,
        script: TEST_SCRIPTS.burnCpu,
        args: ['120'],
      });
      await addPod({
        name: 'rec',
        policy: '{"mode":"Recommend","cpu":{"max":"1"}}',
        requests: { cpu: '100m', memory: '64Mi' },
        limits: { cpu: '200m', memory: '256Mi' },
        cgroup: small,
        script: TEST_SCRIPTS.burnCpu,
        args: ['120'],
      });
      // Holds 160 MiB; once the agent runs, grows 4 MiB every 500 ms (8 MiB/s) to 288 MiB: past the 256Mi
      // limit it started under, so without the autoscaler the kernel would OOM-kill it. From the 90 %
      // watermark (230 MiB) to the limit leaves the agent ~3 s to react.
      await addPod({
        name: 'mem',
        policy: '{"cpu":false,"memory":{"max":"1Gi"}}',
        requests: { cpu: '100m', memory: '64Mi' },
        limits: { cpu: '500m', memory: '256Mi' },
        cgroup: { cpuShares: 102, cpuQuotaUs: 50_000, memoryLimitBytes: 256n * Mi },
        script: GROW_MEMORY,
        args: ['160', '4', '500', '288'],
      });
      stories.get('mem')!.child.process.stdout!.on('data', (chunk: Buffer) => {
        for (const m of chunk.toString().matchAll(/held (\d+)/g))
          memoryHeld = Math.max(memoryHeld, Number(m[1]));
      });
      // Idle, holding 32 MiB: requests 500m/256Mi are far above what it uses.
      await addPod({
        name: 'idle',
        policy: '{"cpu":{"min":"50m"},"memory":{"min":"64Mi"},"scaleDown":{"quietWindow":"3s"}}',
        requests: { cpu: '500m', memory: '256Mi' },
        limits: { cpu: '1', memory: '512Mi' },
        cgroup: { cpuShares: 512, cpuQuotaUs: 100_000, memoryLimitBytes: 512n * Mi },
        script: TEST_SCRIPTS.holdMemory,
        args: ['32', '120'],
      });
      api.upsertPod({
        metadata: {
          name: 'bad',
          namespace: NS,
          uid: newPodUid(),
          annotations: { 'resizelet.io/autoscale': '{"cpu":{"window":"2 seconds"}}' },
        },
        spec: { nodeName: NODE, containers: [{ name: 'app', image: 'x' }] },
        status: { phase: 'Running', qosClass: 'BestEffort' },
      });

      watcher = setInterval(() => {
        for (const name of stories.keys()) {
          const t = api.getPod(NS, name)?.metadata?.annotations?.['resizelet.io/resize'];
          const seen = requests.get(name) ?? [];
          if (t !== undefined && seen[seen.length - 1] !== t) requests.set(name, [...seen, t]);
        }
      }, 50);

      port = await freePort();
      await api.writeKubeconfig(join(dir, 'kubeconfig'));
      agent = startAgentProcess([
        ...['--node-name', NODE, '--kubeconfig', join(dir, 'kubeconfig')],
        ...['--pods-root', sandbox.layout.podsRoot, '--cgroup-driver', 'cgroupfs', '--runtime', 'containerd'],
        ...['--checkpoint', join(dir, 'checkpoint.json'), '--listen', `127.0.0.1:${port}`],
        ...['--autoscale-interval', '500ms', '--deferred-retry', '500ms', '--log-level', 'info'],
      ]);
      await agent.waitForLog(/endpoint listening/, 30_000);
      // The agent is up: now the memory child may start growing.
      stories.get('mem')!.child.process.stdin!.write('grow\n');
    }, 60_000);

    afterAll(async () => {
      if (watcher) clearInterval(watcher);
      if (agent?.child.pid !== undefined) {
        const exited = agent.child.exitCode === null ? once(agent.child, 'exit') : undefined;
        killTree(agent.child.pid);
        await exited;
      }
      await api?.close();
      await sandbox?.cleanup();
      if (dir) await rm(dir, { recursive: true, force: true });
    });

    it('Recommend mode changes nothing but reports: status recommendation, Event, metric', async () => {
      const { ctr } = stories.get('rec')!;
      const status = await waitFor(
        'a recommendation in the status',
        () => {
          const s = statusOf(api, NS, 'rec');
          return s?.recommendation ? s : undefined;
        },
        20_000,
      );
      expect(status.recommendation).toEqual([
        { name: 'app', requests: { cpu: '100m', memory: '64Mi' }, limits: { cpu: '400m', memory: '256Mi' } },
      ]);
      // It answers no request and holds the spec.
      expect(status.observedRequest).toBeUndefined();
      expect(status.allocatedResources).toEqual([
        { name: 'app', requests: { cpu: '100m', memory: '64Mi' }, limits: { cpu: '200m', memory: '256Mi' } },
      ]);
      expect(api.getPod(NS, 'rec')?.metadata?.annotations?.['resizelet.io/resize']).toBeUndefined();
      expect(await cpuQuota(ctr)).toBe(20_000);
      expect(eventsFor('rec', 'AutoscaleDecision')[0]?.message).toMatch(
        /^autoscaler recommends \(Recommend mode, nothing changed\): raise cpu limit 200m -> 400m: cpu at \d+% of its 200m limit over 2s/,
      );
      const metrics = await (await fetch(`http://127.0.0.1:${port}/metrics`)).text();
      expect(metrics).toMatch(
        /resizelet_autoscale_recommendation\{namespace="auto",pod="rec",container="app",kind="limit",resource="cpu"\} 0\.4/,
      );
    });

    it('reports a bad policy on the pod once, as an Event, and does not crash', async () => {
      const events = await waitFor('AutoscalePolicyInvalid', () => {
        const e = eventsFor('bad', 'AutoscalePolicyInvalid');
        return e.length > 0 ? e : undefined;
      });
      expect(events[0]!.message).toBe(
        'resizelet.io/autoscale: cpu.window: "2 seconds" is not a duration; write e.g. "500ms", "2s", "5m" or "1h"; the pod is not autoscaled until the policy is fixed',
      );
      await new Promise((r) => setTimeout(r, 1_500));
      expect(eventsFor('bad', 'AutoscalePolicyInvalid')).toHaveLength(1);
    });

    it('doubles a saturated 200m limit, then again up to max 800m, with the same PID', async () => {
      const { ctr, podPath, child } = stories.get('cpu')!;
      await waitFor(
        '400m in the cgroup',
        async () => ((await cpuQuota(ctr)) === 40_000 ? true : undefined),
        20_000,
      );
      await waitFor(
        '800m in the cgroup',
        async () => ((await cpuQuota(ctr)) === 80_000 ? true : undefined),
        20_000,
      );
      expect(await cpuQuota(podPath)).toBe(80_000);
      // The watcher samples the annotation every 50 ms; the cgroup can get there first.
      await waitFor('the 800m request seen by the watcher', () =>
        (requests.get('cpu')?.length ?? 0) >= 2 ? true : undefined,
      );
      expect(child.alive()).toBe(true);
      expect((await text(ctr, 'cgroup.procs', 'cpu')).split('\n')).toContain(String(child.pid));
      const status = statusOf(api, NS, 'cpu')!;
      expect(status).toMatchObject({ resizeStatus: 'Completed', source: 'autoscaler' });
      expect(requests.get('cpu')).toEqual([
        '{"app":{"limits":{"cpu":"400m"}}}',
        '{"app":{"limits":{"cpu":"800m"}}}',
      ]);
      const reasons = eventsFor('cpu', 'AutoscaleDecision').map((e) => e.message);
      expect(reasons[0]).toMatch(
        /^autoscaler: raise cpu limit 200m -> 400m: cpu at \d+% of its 200m limit over 2s/,
      );
      // At max: it keeps saturating 800m, and nothing more is asked.
      await new Promise((r) => setTimeout(r, 3_000));
      expect(await cpuQuota(ctr)).toBe(80_000);
      expect(requests.get('cpu')).toHaveLength(2);
    });

    it('an idle process gets its requests lowered after the quiet window, and they stay put', async () => {
      const { ctr, child } = stories.get('idle')!;
      const status = await waitFor(
        'requests lowered',
        () => {
          const s = statusOf(api, NS, 'idle');
          return s?.resizeStatus === 'Completed' ? s : undefined;
        },
        20_000,
      );
      expect(status.allocatedResources).toEqual([
        { name: 'app', requests: { cpu: '50m', memory: '64Mi' }, limits: { cpu: '1', memory: '512Mi' } },
      ]);
      // shares follow the request: 50m -> 51
      expect((await sandbox.read(ctr)).settings.cpuShares).toBe(51);
      expect(child.alive()).toBe(true);
      // No flapping across two further quiet windows.
      const before = requests.get('idle')!.length;
      await new Promise((r) => setTimeout(r, 6_500));
      expect(requests.get('idle')).toHaveLength(before);
      expect(requests.get('idle')).toEqual(['{"app":{"requests":{"cpu":"50m","memory":"64Mi"}}}']);
      expect(eventsFor('idle', 'AutoscaleDecision')).toHaveLength(1);
    });

    it('a process growing toward its memory limit is given more before any OOM kill', async () => {
      const { ctr, podPath, child } = stories.get('mem')!;
      // It has grown past the 256Mi it started under, and is still alive.
      await waitFor('the child holding 272 MiB', () => (memoryHeld >= 272 ? true : undefined), 40_000);
      expect(child.alive()).toBe(true);
      expect(await oomKills(ctr)).toBe(0);
      expect(await oomKills(podPath)).toBe(0);
      expect(BigInt((await text(ctr, 'memory.limit_in_bytes')).trim())).toBe(512n * Mi);
      expect(
        BigInt((await readFile(`/proc/${child.pid}/status`, 'utf8')).match(/VmRSS:\s+(\d+)/)![1]!) * 1024n,
      ).toBeGreaterThan(256n * Mi);
      expect(requests.get('mem')).toEqual(['{"app":{"limits":{"memory":"512Mi"}}}']);
      expect(eventsFor('mem', 'AutoscaleDecision')[0]?.message).toMatch(
        /raise memory limit 256Mi -> 512Mi: working set \d+(\.\d)?Mi is \d+% of the 256Mi memory limit \(watermark 90%\)/,
      );
    });
  },
);
