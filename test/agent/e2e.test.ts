// End to end on this machine: the agent as a real process, the fake API server, real cgroup v1 directories
// and a real CPU-burning process. Skips (visibly) where cgroups are not writable; CI runs as root.
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startFakeApiServer, type FakeApiServer, type Pod } from '../fakes/apiserver.ts';
import {
  TEST_SCRIPTS,
  cpuTimeMs,
  createRealSandbox,
  newContainerId,
  newPodUid,
  realCgroupsAvailable,
  type RealSandbox,
  type SandboxChild,
} from '../support/real-cgroup.ts';
import {
  appPod,
  runningStatus,
  sandboxAgentArgs,
  startAgentProcess,
  statusOf,
  waitFor,
  withAnnotations,
  type AgentProcess,
} from './support.ts';

const available = realCgroupsAvailable();
if (!available.ok) console.warn(`skipping agent end-to-end tests: ${available.reason}`);

const NODE = 'e2e-node';
const NS = 'shop';
const Mi = 1024n * 1024n;

/** CPU use of a process in cores over a window. */
async function coresOver(pid: number, ms: number): Promise<number> {
  const a = cpuTimeMs(pid);
  const t = Date.now();
  await new Promise((r) => setTimeout(r, ms));
  return (cpuTimeMs(pid) - a) / (Date.now() - t);
}

describe.skipIf(!available.ok)('agent end to end (real process, fake API server, real cgroups)', () => {
  let sandbox: RealSandbox;
  let api: FakeApiServer;
  let agent: AgentProcess | undefined;
  let dir: string;
  let burner: SandboxChild;
  let podPath: string;
  let containerId: string;
  let pod: Pod;
  const uid = newPodUid();

  const agentArgs = (): string[] => [
    ...sandboxAgentArgs({ nodeName: NODE, dir, podsRoot: sandbox.layout.podsRoot }),
    '--deferred-retry',
    '500ms',
    '--log-level',
    'debug',
  ];

  const quota = async (path: string): Promise<number | null> =>
    (await sandbox.read(path)).settings.cpuQuotaUs;

  function runningPod(id: string): Pod {
    return { ...pod, status: runningStatus(id) };
  }

  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'resizelet-e2e-'));
    sandbox = await createRealSandbox();
    // The kubelet's values for requests 100m/64Mi, limits 200m/256Mi.
    podPath = await sandbox.makePod(uid, 'Burstable', {
      cpuShares: 102,
      cpuQuotaUs: 20_000,
      memoryLimitBytes: 256n * Mi,
    });
    containerId = newContainerId();
    const ctr = await sandbox.makeContainer(podPath, containerId, {
      cpuShares: 102,
      cpuQuotaUs: 20_000,
      memoryLimitBytes: 256n * Mi,
    });
    burner = await sandbox.spawnInCgroup(ctr, TEST_SCRIPTS.burnCpu, ['120']);

    api = await startFakeApiServer({ namespaces: [NS] });
    api.upsertNode({
      metadata: { name: NODE },
      status: { allocatable: { cpu: '2', memory: '8Gi' }, capacity: { cpu: '2', memory: '8Gi' } },
    });
    pod = appPod({ name: 'web', namespace: NS, uid, node: NODE });
    pod = api.upsertPod(runningPod(containerId));
    await api.writeKubeconfig(join(dir, 'kubeconfig'));
    agent = startAgentProcess(agentArgs());
    await agent.waitForLog(/endpoint listening/);
  }, 60_000);

  afterAll(async () => {
    await agent?.kill('SIGKILL');
    await api?.close();
    await sandbox?.cleanup();
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  it('completes a resize: the process speeds up with the same PID, Events tell the story', async () => {
    const ctr = `${podPath}/${containerId}`;
    const before = await coresOver(burner.pid, 1500);
    expect(before).toBeLessThan(0.3);

    const current = api.getPod(NS, 'web')!;
    api.upsertPod(withAnnotations(current, { 'resizelet.io/resize': '{"app":{"limits":{"cpu":"1"}}}' }));
    const status = await waitFor('Completed', () => {
      const s = statusOf(api, NS, 'web');
      return s?.resizeStatus === 'Completed' ? s : undefined;
    });
    expect(status.allocatedResources).toEqual([
      { name: 'app', requests: { cpu: '100m', memory: '64Mi' }, limits: { cpu: '1', memory: '256Mi' } },
    ]);
    expect(await quota(ctr)).toBe(100_000);
    expect(await quota(podPath)).toBe(100_000);
    const after = await coresOver(burner.pid, 1500);
    expect(after).toBeGreaterThan(0.5);
    expect(burner.alive()).toBe(true);
    // Straight to Completed (the status never said Accepted): one Event, with the new sizes.
    const resizeEvents = api
      .events()
      .map((e) => e as { reason?: string; message?: string })
      .filter((e) => e.reason?.startsWith('Resize'));
    expect(resizeEvents.map((e) => e.reason)).toEqual(['ResizeCompleted']);
    expect(resizeEvents[0]!.message).toMatch(
      /^resized app in place \(\d+ cgroup writes\): app: requests \{"cpu":"100m","memory":"64Mi"\} limits \{"cpu":"1","memory":"256Mi"\}$/,
    );
  });

  it('rejects an invalid request with a clear message and writes nothing', async () => {
    const ctr = `${podPath}/${containerId}`;
    const current = api.getPod(NS, 'web')!;
    api.upsertPod(
      withAnnotations(current, { 'resizelet.io/resize': '{"app":{"limits":{"nvidia.com/gpu":"1"}}}' }),
    );
    const status = await waitFor('Rejected', () => {
      const s = statusOf(api, NS, 'web');
      return s?.resizeStatus === 'Rejected' ? s : undefined;
    });
    expect(status.message).toMatch(/only cpu and memory can be resized in place, not "nvidia.com\/gpu"/);
    expect(await quota(ctr)).toBe(100_000);
  });

  it('defers a request that does not fit now and completes it when room frees up', async () => {
    api.upsertPod({
      metadata: { name: 'hog', namespace: NS, uid: newPodUid() },
      spec: {
        nodeName: NODE,
        containers: [{ name: 'h', image: 'x', resources: { requests: { cpu: '1700m' } } }],
      },
      status: { phase: 'Running', qosClass: 'Burstable' },
    });
    const current = api.getPod(NS, 'web')!;
    api.upsertPod(
      withAnnotations(current, {
        'resizelet.io/resize': '{"app":{"requests":{"cpu":"500m"},"limits":{"cpu":"1"}}}',
      }),
    );
    const deferred = await waitFor('Deferred', () => {
      const s = statusOf(api, NS, 'web');
      return s?.resizeStatus === 'Deferred' ? s : undefined;
    });
    expect(deferred.message).toMatch(/not enough free CPU on the node: asked 500m, 300m free of 2000m/);
    api.deletePod(NS, 'hog');
    await waitFor(
      'Completed after the hog left',
      () => statusOf(api, NS, 'web')?.resizeStatus === 'Completed' || undefined,
    );
    // shares follow the new request: 500m -> 512
    expect((await sandbox.read(`${podPath}/${containerId}`)).settings.cpuShares).toBe(512);
  });

  it('re-applies the allocation to a restarted container within a second', async () => {
    const newId = newContainerId();
    // The kubelet recreates the container from the pod spec: 200m limit.
    const ctr = await sandbox.makeContainer(podPath, newId, {
      cpuShares: 102,
      cpuQuotaUs: 20_000,
      memoryLimitBytes: 256n * Mi,
    });
    const t0 = Date.now();
    api.upsertPod({ ...runningPod(newId), metadata: api.getPod(NS, 'web')!.metadata });
    await waitFor(
      'restarted container re-applied',
      async () => ((await quota(ctr)) === 100_000 ? true : undefined),
      5_000,
    );
    expect(Date.now() - t0).toBeLessThan(1_000);
    containerId = newId;
  });

  it('corrects hand-written drift on the next reconcile', async () => {
    const ctr = `${podPath}/${containerId}`;
    const logsBefore = agent!.logs.length;
    // No read-back of the hand-written 30000 here: the agent may correct it before the test reads it
    // (a CI run lost that race). The log line written after this point proves the agent saw the drift.
    await writeFile(`${sandbox.layout.controllers.cpu.mount}/${ctr}/cpu.cfs_quota_us`, '30000');
    await waitFor('drift corrected', async () => ((await quota(ctr)) === 100_000 ? true : undefined), 5_000);
    await waitFor(
      'a correction logged after the hand-written value',
      () => agent!.logs.slice(logsBefore).some((l) => /drift corrected/.test(l)) || undefined,
      5_000,
    );
  });

  it('after SIGKILL, a restarted agent enforces the checkpoint before the API answers, then converges', async () => {
    const ctr = `${podPath}/${containerId}`;
    await agent!.kill('SIGKILL');
    // While the agent is down something resets the container to its spec value, and the API goes away.
    await writeFile(`${sandbox.layout.controllers.cpu.mount}/${ctr}/cpu.cfs_quota_us`, '20000');
    api.setUnreachable(true);
    agent = startAgentProcess(agentArgs());
    await agent.waitForLog(/checkpoint enforced/);
    expect(await quota(ctr)).toBe(100_000);
    // A new request written while the agent could not see the API is picked up once it can.
    const current = api.getPod(NS, 'web')!;
    api.upsertPod(
      withAnnotations(current, {
        'resizelet.io/resize': '{"app":{"requests":{"cpu":"500m"},"limits":{"cpu":"1500m"}}}',
      }),
    );
    api.setUnreachable(false);
    await waitFor(
      'Completed after restart',
      () => {
        const s = statusOf(api, NS, 'web');
        return s?.resizeStatus === 'Completed' && JSON.stringify(s.allocatedResources).includes('1500m')
          ? s
          : undefined;
      },
      20_000,
    );
    expect(await quota(ctr)).toBe(150_000);
    expect(burner.alive()).toBe(true);
  }, 60_000);

  it('RestartContainer: stops the container, waits for the kubelet, applies the allocation to the new one', async () => {
    // The current container (after the simulated restart above) gets a process of its own to stop.
    const inContainer = await sandbox.spawnInCgroup(`${podPath}/${containerId}`, TEST_SCRIPTS.burnCpu, [
      '120',
    ]);
    const current = api.getPod(NS, 'web')!;
    api.upsertPod(
      withAnnotations(current, {
        'resizelet.io/resize': '{"app":{"limits":{"memory":"512Mi"}}}',
        'resizelet.io/resize-policy': '{"memory":"RestartContainer"}',
      }),
    );
    const accepted = await waitFor('Accepted while restarting', () => {
      const s = statusOf(api, NS, 'web');
      return s?.resizeStatus === 'Accepted' ? s : undefined;
    });
    expect(accepted.message).toMatch(
      /restarting app to apply the resize \(RestartContainer policy; 1 processes signalled\)/,
    );
    // The agent stopped the container's process: the kubelet would now restart the container.
    await waitFor('container process stopped', () => (!inContainer.alive() ? true : undefined), 15_000);
    // Play the kubelet: a new container from the pod spec (256Mi limit).
    const newId = newContainerId();
    const ctr = await sandbox.makeContainer(podPath, newId, {
      cpuShares: 512,
      cpuQuotaUs: 20_000,
      memoryLimitBytes: 256n * Mi,
    });
    api.upsertPod({ ...runningPod(newId), metadata: api.getPod(NS, 'web')!.metadata });
    await waitFor(
      'Completed after the restart',
      () => statusOf(api, NS, 'web')?.resizeStatus === 'Completed' || undefined,
      15_000,
    );
    expect((await sandbox.read(ctr)).settings.memoryLimitBytes).toBe(512n * Mi);
    const reasons = api.events().map((e) => (e as { reason?: string }).reason);
    expect(reasons).toContain('ResizeRestartingContainer');
  }, 60_000);
});
