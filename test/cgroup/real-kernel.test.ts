// The planner and executor against a real cgroup v1 kernel: a CPU-burning child throttled and released, a
// child holding memory protected from a too-small limit, and the kernel's own refusals (EINVAL, EBUSY)
// undone by the executor. Needs root and writable v1 hierarchies; skips visibly otherwise.
import { setTimeout as sleep } from 'node:timers/promises';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { executePlan } from '../../cgroup/executor.ts';
import { planResize, type PlanContainer } from '../../cgroup/planner.ts';
import {
  PlanRefusalCodes,
  WriteErrorCodes,
  type CgroupPath,
  type CgroupWrite,
  type DesiredResources,
} from '../../cgroup/types.ts';
import {
  cpuTimeMs,
  createRealSandbox,
  newContainerId,
  newPodUid,
  realCgroupsAvailable,
  TEST_SCRIPTS,
  type RealSandbox,
} from '../support/real-cgroup.ts';

const available = realCgroupsAvailable();
if (!available.ok) console.warn(`[real-kernel] skipping the real cgroup v1 tests: ${available.reason}`);

const Mi = 1024n * 1024n;
const MEASURE_MS = 2_000;

const want = (cpuReq: number | null, cpuLim: number | null, memReq: bigint | null, memLim: bigint | null) =>
  ({
    cpuRequestMilli: cpuReq,
    cpuLimitMilli: cpuLim,
    memoryRequestBytes: memReq,
    memoryLimitBytes: memLim,
  }) satisfies DesiredResources;

describe.skipIf(!available.ok)('real cgroup v1 kernel', () => {
  let sb: RealSandbox;
  beforeAll(async () => {
    sb = await createRealSandbox();
  });
  afterAll(async () => {
    await sb?.cleanup();
  });

  /** Reads the pod and its containers from the kernel and asks the planner for the one container's new resources. */
  async function plan(
    podPath: CgroupPath,
    container: { name: string; path: CgroupPath },
    desired: DesiredResources,
  ) {
    const pod = await sb.read(podPath);
    const c = await sb.read(container.path);
    const containers: PlanContainer[] = [
      { name: container.name, path: container.path, current: c.settings, usage: c.usage, desired },
    ];
    return planResize({
      versions: { cpu: 'v1', cpuacct: 'v1', memory: 'v1' },
      weightFormula: sb.layout.weightFormula,
      pod: { path: podPath, current: pod.settings, usage: pod.usage },
      containers,
    });
  }

  const rows = (writes: CgroupWrite[]) => writes.map((w) => `${w.level} ${w.file}=${w.value}`);
  const text = async (controller: 'cpu' | 'memory', path: CgroupPath, file: string) =>
    (await sb.readText(controller, path, file)).trim();

  /** Share of one core the process got over the window, and how many periods were throttled meanwhile. */
  async function measure(pid: number, path: CgroupPath) {
    const stat0 = await sb.cpuStat(path);
    const cpu0 = cpuTimeMs(pid);
    const t0 = performance.now();
    await sleep(MEASURE_MS);
    const cpu1 = cpuTimeMs(pid);
    const t1 = performance.now();
    const stat1 = await sb.cpuStat(path);
    return { cores: (cpu1 - cpu0) / (t1 - t0), throttled: stat1.nrThrottled - stat0.nrThrottled };
  }

  it('holds a CPU-burning child near a 200m limit, then lets the same process run at 1 CPU', async () => {
    // Burstable, request 100m, no limit yet: the kubelet's pod has shares only.
    const podPath = await sb.makePod(newPodUid(), 'Burstable', { cpuShares: 102, cpuQuotaUs: null });
    const app = { name: 'app', path: await sb.makeContainer(podPath, newContainerId(), { cpuShares: 102 }) };
    const burner = await sb.spawnInCgroup(app.path, TEST_SCRIPTS.burnCpu, ['60']);

    const limit200 = await plan(podPath, app, want(100, 200, null, null));
    if (!limit200.ok) throw new Error(limit200.message);
    // The container's quota comes down first; then the pod gets one (now every container has a limit).
    expect(rows(limit200.writes)).toEqual(['container cpu.cfs_quota_us=20000', 'pod cpu.cfs_quota_us=20000']);
    expect((await executePlan({ fs: sb.fs, layout: sb.layout, plan: limit200 })).ok).toBe(true);
    await sleep(200); // let the first throttled periods pass
    const slow = await measure(burner.pid, app.path);

    const limit1000 = await plan(podPath, app, want(100, 1000, null, null));
    if (!limit1000.ok) throw new Error(limit1000.message);
    // Raising: the pod first, or the kernel refuses the container's quota above the pod's.
    expect(rows(limit1000.writes)).toEqual([
      'pod cpu.cfs_quota_us=100000',
      'container cpu.cfs_quota_us=100000',
    ]);
    expect((await executePlan({ fs: sb.fs, layout: sb.layout, plan: limit1000 })).ok).toBe(true);
    await sleep(200);
    const fast = await measure(burner.pid, app.path);

    console.info(
      `[real-kernel] CPU share of one core over ${MEASURE_MS} ms: at 200m ${slow.cores.toFixed(3)} ` +
        `(${slow.throttled} periods throttled), at 1 CPU ${fast.cores.toFixed(3)} (${fast.throttled} throttled)`,
    );
    expect(slow.throttled).toBeGreaterThan(0);
    expect(slow.cores).toBeGreaterThanOrEqual(0.12);
    expect(slow.cores).toBeLessThanOrEqual(0.3);
    expect(fast.cores).toBeGreaterThanOrEqual(0.6);
    // Same process, never restarted, still in its cgroup.
    expect(burner.alive()).toBe(true);
    expect((await text('cpu', app.path, 'cgroup.procs')).split('\n')).toContain(String(burner.pid));
  });

  it('refuses a limit under a real working set, then grows and shrinks the limit in place', async () => {
    const podPath = await sb.makePod(newPodUid(), 'Burstable', {
      cpuShares: 102,
      memoryLimitBytes: 128n * Mi,
    });
    const path = await sb.makeContainer(podPath, newContainerId(), {
      cpuShares: 102,
      memoryLimitBytes: 128n * Mi,
    });
    const app = { name: 'app', path };
    const holder = await sb.spawnInCgroup(path, TEST_SCRIPTS.holdMemory, ['64', '60']);
    const { usage } = await sb.read(path);
    expect(usage.workingSetBytes).toBeGreaterThanOrEqual(64n * Mi);
    const memswPresent = (await sb.read(path)).settings.memswLimitBytes !== undefined;

    const before = await text('memory', path, 'memory.limit_in_bytes');
    const tooSmall = await plan(podPath, app, want(100, null, 16n * Mi, 32n * Mi));
    expect(tooSmall).toMatchObject({ ok: false, code: PlanRefusalCodes.WOULD_OOM, container: 'app' });
    expect(!tooSmall.ok && tooSmall.message).toContain(`limit ${32n * Mi} bytes`);
    expect(await text('memory', path, 'memory.limit_in_bytes')).toBe(before);
    expect(holder.alive()).toBe(true);

    const grow = await plan(podPath, app, want(100, null, 64n * Mi, 256n * Mi));
    if (!grow.ok) throw new Error(grow.message);
    // memsw must rise before the limit: the kernel refuses a limit above memsw (EINVAL).
    expect(rows(grow.writes)).toEqual([
      `pod memory.limit_in_bytes=${256n * Mi}`,
      ...(memswPresent ? [`container memory.memsw.limit_in_bytes=${256n * Mi}`] : []),
      `container memory.limit_in_bytes=${256n * Mi}`,
    ]);
    const grown = await executePlan({ fs: sb.fs, layout: sb.layout, plan: grow });
    expect(grown.ok).toBe(true);
    expect(await text('memory', path, 'memory.limit_in_bytes')).toBe(String(256n * Mi));
    if (memswPresent)
      expect(await text('memory', path, 'memory.memsw.limit_in_bytes')).toBe(String(256n * Mi));
    expect(await text('memory', podPath, 'memory.limit_in_bytes')).toBe(String(256n * Mi));

    // 200 MB is not page-aligned: the kernel keeps 199999488 and the executor accepts that read-back.
    const shrink = await plan(podPath, app, want(100, null, 64n * Mi, 200_000_000n));
    if (!shrink.ok) throw new Error(shrink.message);
    const shrunk = await executePlan({ fs: sb.fs, layout: sb.layout, plan: shrink });
    expect(shrunk.ok).toBe(true);
    expect(await text('memory', path, 'memory.limit_in_bytes')).toBe('199999488');
    expect(holder.alive()).toBe(true);
  });

  it('sees v1 answer EBUSY when it cannot reclaim below a new limit, and restores what was written', async () => {
    const podPath = await sb.makePod(newPodUid(), 'Burstable', {
      cpuShares: 102,
      memoryLimitBytes: 256n * Mi,
    });
    const path = await sb.makeContainer(podPath, newContainerId(), {
      cpuShares: 102,
      memoryLimitBytes: 256n * Mi,
    });
    const holder = await sb.spawnInCgroup(path, TEST_SCRIPTS.holdMemory, ['64', '60']);
    // What the planner would refuse, written by hand: 16 MiB under 64 MiB of anonymous memory and no swap.
    const bad = {
      ok: true as const,
      writes: [
        w('pod', podPath, 'memory', 'memory.limit_in_bytes', String(192n * Mi), String(256n * Mi)),
        w('container', path, 'memory', 'memory.limit_in_bytes', String(16n * Mi), String(256n * Mi)),
      ],
    };
    const res = await executePlan({ fs: sb.fs, layout: sb.layout, plan: bad });
    expect(res.error?.code).toBe(WriteErrorCodes.BUSY);
    expect(res.results.map((r) => r.status)).toEqual(['restored', 'failed']);
    expect(await text('memory', podPath, 'memory.limit_in_bytes')).toBe(String(256n * Mi));
    expect(await text('memory', path, 'memory.limit_in_bytes')).toBe(String(256n * Mi));
    expect(holder.alive()).toBe(true);
  });

  it("sees v1 refuse a container quota above the pod's or under 1 ms (EINVAL), and restores", async () => {
    const podPath = await sb.makePod(newPodUid(), 'Guaranteed', { cpuShares: 102, cpuQuotaUs: 10_000 });
    const path = await sb.makeContainer(podPath, newContainerId(), { cpuShares: 102, cpuQuotaUs: 10_000 });
    const bad = {
      ok: true as const,
      writes: [
        w('container', path, 'cpu', 'cpu.shares', '204', '102'),
        w('container', path, 'cpu', 'cpu.cfs_quota_us', '20000', '10000'),
      ],
    };
    const res = await executePlan({ fs: sb.fs, layout: sb.layout, plan: bad });
    expect(res.error?.code).toBe(WriteErrorCodes.INVALID);
    expect(res.results.map((r) => r.status)).toEqual(['restored', 'failed']);
    expect(await text('cpu', path, 'cpu.shares')).toBe('102');
    expect(await text('cpu', path, 'cpu.cfs_quota_us')).toBe('10000');

    const floor = {
      ok: true as const,
      writes: [w('container', path, 'cpu', 'cpu.cfs_quota_us', '500', '10000')],
    };
    expect((await executePlan({ fs: sb.fs, layout: sb.layout, plan: floor })).error?.code).toBe(
      WriteErrorCodes.INVALID,
    );
    expect(await text('cpu', path, 'cpu.cfs_quota_us')).toBe('10000');
  });
});

function w(
  level: 'pod' | 'container',
  path: CgroupPath,
  controller: 'cpu' | 'memory',
  file: string,
  value: string,
  previous: string,
): CgroupWrite {
  return { level, path, controller, file, value, previous, reason: 'hand-made to provoke the kernel' };
}
