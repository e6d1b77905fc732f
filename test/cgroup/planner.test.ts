import { describe, expect, it } from 'vitest';
import { PlanReasons, planResize, type PlanContainer, type PlanInput } from '../../cgroup/planner.ts';
import { PlanRefusalCodes, type CgroupSettings, type DesiredResources } from '../../cgroup/types.ts';

const Mi = 1024n * 1024n;
const POD = 'kubepods/burstable/pod1';

const V1 = { cpu: 'v1', cpuacct: 'v1', memory: 'v1' } as const;
const V2 = { cpu: 'v2', cpuacct: 'v2', memory: 'v2' } as const;

function settings(s: Partial<CgroupSettings> = {}): CgroupSettings {
  return { cpuQuotaUs: null, cpuPeriodUs: 100_000, cpuShares: 1024, memoryLimitBytes: null, ...s };
}

function desired(cpuReq: number | null, cpuLim: number | null, memReq: bigint | null, memLim: bigint | null) {
  return {
    cpuRequestMilli: cpuReq,
    cpuLimitMilli: cpuLim,
    memoryRequestBytes: memReq,
    memoryLimitBytes: memLim,
  } satisfies DesiredResources;
}

function container(
  name: string,
  current: CgroupSettings,
  want: DesiredResources,
  workingSet = 0n,
): PlanContainer {
  return { name, path: `${POD}/${name}`, current, desired: want, usage: { workingSetBytes: workingSet } };
}

function input(pod: CgroupSettings, containers: PlanContainer[], extra: Partial<PlanInput> = {}): PlanInput {
  return {
    versions: V1,
    weightFormula: 'linear',
    pod: { path: POD, current: pod, usage: { workingSetBytes: 0n } },
    containers,
    ...extra,
  };
}

/** The plan as (path, file, value) rows: what the tests assert on. */
function rows(i: PlanInput): string[] {
  const plan = planResize(i);
  if (!plan.ok) throw new Error(`refused: ${plan.code} ${plan.message}`);
  return plan.writes.map((w) => `${w.path} ${w.file}=${w.value}`);
}

// A Burstable pod like the fixture's `web`: app 250m/500m 64Mi/128Mi, sidecar 50m/100m 16Mi/32Mi.
const app = settings({
  cpuShares: 256,
  cpuQuotaUs: 50_000,
  memoryLimitBytes: 128n * Mi,
  memswLimitBytes: 128n * Mi,
});
const sidecar = settings({
  cpuShares: 51,
  cpuQuotaUs: 10_000,
  memoryLimitBytes: 32n * Mi,
  memswLimitBytes: 32n * Mi,
});
const webPod = settings({ cpuShares: 307, cpuQuotaUs: 60_000, memoryLimitBytes: 160n * Mi });
const appWant = desired(250, 500, 64n * Mi, 128n * Mi);
const sidecarWant = desired(50, 100, 16n * Mi, 32n * Mi);

describe('planResize', () => {
  it('plans nothing when the cgroups already hold what the pod spec asks (the kubelet values)', () => {
    expect(
      rows(input(webPod, [container('app', app, appWant), container('sidecar', sidecar, sidecarWant)])),
    ).toEqual([]);
  });

  it('raises the pod before a growing container, memsw before the limit', () => {
    const i = input(webPod, [
      container('app', app, desired(250, 1000, 64n * Mi, 256n * Mi)),
      container('sidecar', sidecar, sidecarWant),
    ]);
    expect(rows(i)).toEqual([
      `${POD} memory.limit_in_bytes=${288n * Mi}`,
      `${POD}/app memory.memsw.limit_in_bytes=${256n * Mi}`,
      `${POD}/app memory.limit_in_bytes=${256n * Mi}`,
      `${POD} cpu.cfs_quota_us=110000`,
      `${POD}/app cpu.cfs_quota_us=100000`,
    ]);
    const plan = planResize(i);
    expect(plan.ok && plan.writes.map((w) => w.reason)).toEqual([
      PlanReasons.podRaise,
      `${PlanReasons.containerIncrease}; ${PlanReasons.memswFirst}`,
      `${PlanReasons.containerIncrease}; ${PlanReasons.memswFirst}`,
      PlanReasons.podRaise,
      PlanReasons.containerIncrease,
    ]);
  });

  it('shrinks the container before the pod, the limit before memsw', () => {
    const i = input(webPod, [
      container('app', app, desired(100, 200, 64n * Mi, 96n * Mi)),
      container('sidecar', sidecar, sidecarWant),
    ]);
    expect(rows(i)).toEqual([
      `${POD}/app memory.limit_in_bytes=${96n * Mi}`,
      `${POD}/app memory.memsw.limit_in_bytes=${96n * Mi}`,
      `${POD} memory.limit_in_bytes=${128n * Mi}`,
      `${POD}/app cpu.shares=102`,
      `${POD}/app cpu.cfs_quota_us=20000`,
      `${POD} cpu.shares=153`,
      `${POD} cpu.cfs_quota_us=30000`,
    ]);
    const plan = planResize(i);
    expect(plan.ok && plan.writes[1]?.reason).toBe(
      `${PlanReasons.containerDecrease}; ${PlanReasons.limitFirst}`,
    );
  });

  it('shrinks one container before growing another when they trade within an unchanged pod', () => {
    const i = input(webPod, [
      container('app', app, desired(250, 400, 64n * Mi, 112n * Mi)),
      container('sidecar', sidecar, desired(50, 200, 16n * Mi, 48n * Mi)),
    ]);
    expect(rows(i)).toEqual([
      `${POD}/app memory.limit_in_bytes=${112n * Mi}`,
      `${POD}/app memory.memsw.limit_in_bytes=${112n * Mi}`,
      `${POD}/sidecar memory.memsw.limit_in_bytes=${48n * Mi}`,
      `${POD}/sidecar memory.limit_in_bytes=${48n * Mi}`,
      `${POD}/app cpu.cfs_quota_us=40000`,
      `${POD}/sidecar cpu.cfs_quota_us=20000`,
    ]);
  });

  it('treats unlimited as +infinity: removing a limit is a raise, adding one is a lowering', () => {
    // app drops its limits: the pod loses its quota and memory limit (not every container has one now).
    const drop = input(webPod, [
      container('app', app, desired(250, null, 64n * Mi, null)),
      container('sidecar', sidecar, sidecarWant),
    ]);
    expect(rows(drop)).toEqual([
      `${POD} memory.limit_in_bytes=-1`,
      `${POD}/app memory.memsw.limit_in_bytes=-1`,
      `${POD}/app memory.limit_in_bytes=-1`,
      `${POD} cpu.cfs_quota_us=-1`,
      `${POD}/app cpu.cfs_quota_us=-1`,
    ]);

    // and back: limits appear, containers first, then the pod gets its sum.
    const unlimitedApp = settings({ cpuShares: 256, memoryLimitBytes: null, memswLimitBytes: null });
    const openPod = settings({ cpuShares: 307 });
    const add = input(openPod, [
      container('app', unlimitedApp, appWant),
      container('sidecar', sidecar, sidecarWant),
    ]);
    expect(rows(add)).toEqual([
      `${POD}/app memory.limit_in_bytes=${128n * Mi}`,
      `${POD}/app memory.memsw.limit_in_bytes=${128n * Mi}`,
      `${POD} memory.limit_in_bytes=${160n * Mi}`,
      `${POD}/app cpu.cfs_quota_us=50000`,
      `${POD} cpu.cfs_quota_us=60000`,
    ]);
  });

  it('orders memsw against the limit when they move in opposite directions', () => {
    // memsw unlimited (swap allowed by hand) while the limit grows: memsw comes down to the new limit first,
    // which is still above the old limit, then the limit rises to meet it.
    const c = settings({
      cpuShares: 256,
      cpuQuotaUs: 50_000,
      memoryLimitBytes: 128n * Mi,
      memswLimitBytes: null,
    });
    const i = input(settings({ cpuShares: 256, cpuQuotaUs: 50_000, memoryLimitBytes: 128n * Mi }), [
      container('app', c, desired(250, 500, 64n * Mi, 256n * Mi)),
    ]);
    expect(rows(i)).toEqual([
      `${POD} memory.limit_in_bytes=${256n * Mi}`,
      `${POD}/app memory.memsw.limit_in_bytes=${256n * Mi}`,
      `${POD}/app memory.limit_in_bytes=${256n * Mi}`,
    ]);
  });

  it('sets a pod quota only when every container has a CPU limit, from the sum of millicores', () => {
    const openPod = settings({ cpuShares: 10 });
    // 5m + 5m: each container gets the 1 ms floor; the pod gets the kubelet's quota of 10m, floored to 1 ms too.
    const small = (name: string) => container(name, settings({ cpuShares: 5 }), desired(5, 5, null, null));
    expect(rows(input(openPod, [small('a'), small('b')]))).toEqual([
      `${POD}/a cpu.cfs_quota_us=1000`,
      `${POD}/b cpu.cfs_quota_us=1000`,
      `${POD} cpu.cfs_quota_us=1000`,
    ]);
    // One container without a limit: the pod stays unlimited.
    const mixed = input(openPod, [
      small('a'),
      container('b', settings({ cpuShares: 5 }), desired(5, null, null, null)),
    ]);
    expect(rows(mixed)).toEqual([`${POD}/a cpu.cfs_quota_us=1000`]);
  });

  it('scales quotas by the live CFS period', () => {
    const c = settings({ cpuPeriodUs: 50_000, cpuShares: 256 });
    const pod = settings({ cpuPeriodUs: 50_000, cpuShares: 256 });
    expect(rows(input(pod, [container('app', c, desired(250, 500, null, null))]))).toEqual([
      `${POD}/app cpu.cfs_quota_us=25000`,
      `${POD} cpu.cfs_quota_us=25000`,
    ]);
  });

  it('gives a BestEffort pod and its containers the minimum shares and no limits', () => {
    const be = settings({ cpuShares: 1024 });
    expect(
      rows(input(be, [container('app', settings({ cpuShares: 1024 }), desired(null, null, null, null))])),
    ).toEqual([`${POD}/app cpu.shares=2`, `${POD} cpu.shares=2`]);
  });

  it('adds the RuntimeClass overhead to the pod sums', () => {
    const c = settings({ cpuShares: 256, cpuQuotaUs: 50_000, memoryLimitBytes: 128n * Mi });
    const pod = settings({ cpuShares: 256, cpuQuotaUs: 50_000, memoryLimitBytes: 128n * Mi });
    expect(
      rows(
        input(pod, [container('app', c, appWant)], { overhead: { cpuMilli: 100, memoryBytes: 32n * Mi } }),
      ),
    ).toEqual([
      `${POD} memory.limit_in_bytes=${160n * Mi}`,
      `${POD} cpu.cfs_quota_us=60000`,
      `${POD} cpu.shares=358`,
    ]);
  });

  it('writes no memsw where the file does not exist, and never the pod level memsw', () => {
    const c = settings({ cpuShares: 256, cpuQuotaUs: 50_000, memoryLimitBytes: 128n * Mi });
    const pod = settings({
      cpuShares: 256,
      cpuQuotaUs: 50_000,
      memoryLimitBytes: 128n * Mi,
      memswLimitBytes: null,
    });
    expect(rows(input(pod, [container('app', c, desired(250, 500, 64n * Mi, 256n * Mi))]))).toEqual([
      `${POD} memory.limit_in_bytes=${256n * Mi}`,
      `${POD}/app memory.limit_in_bytes=${256n * Mi}`,
    ]);
  });

  it('compares memory limits as the kernel stores them: rounded down to the page', () => {
    // 100M is not page-aligned; the kernel holds 99999744. Planning the same spec again writes nothing.
    const c = settings({
      cpuShares: 256,
      cpuQuotaUs: 50_000,
      memoryLimitBytes: 99_999_744n,
      memswLimitBytes: 99_999_744n,
    });
    const pod = settings({ cpuShares: 256, cpuQuotaUs: 50_000, memoryLimitBytes: 99_999_744n });
    expect(rows(input(pod, [container('app', c, desired(250, 500, null, 100_000_000n))]))).toEqual([]);
  });

  describe('cgroup v2', () => {
    it('writes cpu.max, cpu.weight and memory.max, with weights from the node formula', () => {
      const c = settings({ cpuShares: 2, cpuWeight: 1 });
      const pod = settings({ cpuShares: 2, cpuWeight: 1 });
      const want = [container('app', c, desired(1000, 2000, null, 256n * Mi))];
      expect(rows(input(pod, want, { versions: V2, weightFormula: 'linear' }))).toEqual([
        `${POD}/app memory.max=${256n * Mi}`,
        `${POD} memory.max=${256n * Mi}`,
        `${POD} cpu.weight=39`,
        `${POD}/app cpu.max=200000 100000`,
        `${POD} cpu.max=200000 100000`,
        `${POD}/app cpu.weight=39`,
      ]);
      expect(rows(input(pod, want, { versions: V2, weightFormula: 'quadratic' }))).toContain(
        `${POD}/app cpu.weight=100`,
      );
    });

    it('compares weights as weights of the node formula: a live quadratic weight is not rewritten', () => {
      // 250m -> 256 shares -> quadratic weight 35. The reader reports shares as the smallest value mapping to
      // 35, which is not 256; comparing shares would plan a pointless write.
      const c = settings({ cpuShares: 250, cpuWeight: 35 });
      const pod = settings({ cpuShares: 250, cpuWeight: 35 });
      const i = input(pod, [container('app', c, desired(250, null, null, null))], {
        versions: V2,
        weightFormula: 'quadratic',
      });
      expect(rows(i)).toEqual([]);
      // The same live weight under the linear formula is a real difference (250m -> 10).
      expect(rows({ ...i, weightFormula: 'linear' })).toEqual([
        `${POD}/app cpu.weight=10`,
        `${POD} cpu.weight=10`,
      ]);
    });
  });

  describe('refusals', () => {
    it('refuses a memory limit below the working set plus the margin, naming the container', () => {
      const i = input(webPod, [
        container('app', app, desired(250, 500, 32n * Mi, 64n * Mi), 60n * Mi),
        container('sidecar', sidecar, sidecarWant),
      ]);
      const plan = planResize(i);
      expect(plan).toMatchObject({ ok: false, code: PlanRefusalCodes.WOULD_OOM, container: 'app' });
      expect(!plan.ok && plan.message).toContain(`working set ${60n * Mi}`);
      expect(!plan.ok && plan.message).toContain(`limit ${64n * Mi}`);
      // A bigger margin than the 8 MiB floor: 5% of 200 MiB = 10 MiB.
      const big = { ...app, memoryLimitBytes: 512n * Mi, memswLimitBytes: 512n * Mi };
      const pct = input(webPod, [container('app', big, desired(250, 500, 32n * Mi, 208n * Mi), 200n * Mi)]);
      expect(planResize(pct)).toMatchObject({ ok: false, code: PlanRefusalCodes.WOULD_OOM });
      expect(planResize({ ...pct, memoryMargin: { bytes: 1n * Mi, fraction: 0.01 } }).ok).toBe(true);
    });

    it('refuses a pod limit below the pod working set', () => {
      const i = input(webPod, [
        container('app', app, desired(250, 500, 32n * Mi, 64n * Mi), 20n * Mi),
        container('sidecar', sidecar, sidecarWant),
      ]);
      i.pod.usage = { workingSetBytes: 95n * Mi };
      expect(planResize(i)).toMatchObject({ ok: false, code: PlanRefusalCodes.WOULD_OOM });
    });

    it('does not refuse a limit that is kept or raised, even under pressure', () => {
      const i = input(webPod, [
        container('app', app, desired(250, 1000, 64n * Mi, 128n * Mi), 127n * Mi),
        container('sidecar', sidecar, sidecarWant),
      ]);
      expect(rows(i)).toEqual([`${POD} cpu.cfs_quota_us=110000`, `${POD}/app cpu.cfs_quota_us=100000`]);
    });

    it.each([
      ['a CPU limit below the request', desired(500, 250, null, null)],
      ['a memory limit below the request', desired(null, null, 64n * Mi, 32n * Mi)],
      ['a negative CPU request', desired(-1, null, null, null)],
      ['a fractional millicore', desired(0.5, null, null, null)],
      ['a negative memory limit', desired(null, null, null, -1n)],
    ])('refuses %s', (_, want) => {
      const plan = planResize(input(webPod, [container('app', app, want)]));
      expect(plan).toMatchObject({ ok: false, code: PlanRefusalCodes.INVALID_DESIRED, container: 'app' });
    });
  });
});
