// The systemd path end to end over a real dbus-daemon: the agent's actuator -> SetUnitProperties on a private
// bus -> a test double of systemd's manager that writes the cgroup files as systemd does and can be told to
// refuse, hang or vanish; then daemon-reloads and the reconcile loop's drift counter.
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { createAgentMetrics } from '../../agent/metrics.ts';
import { createActuator, type Actuator } from '../../agent/reconcile/actuator.ts';
import { memoryCheckpoint } from '../support/memory-checkpoint.ts';
import { createReconciler } from '../../agent/reconcile/reconciler.ts';
import type { PodLike } from '../../agent/resize/pod.ts';
import { systemClock } from '../../agent/util/backoff.ts';
import { executePlan } from '../../cgroup/executor.ts';
import { DEFAULT_MEMORY_MARGIN } from '../../cgroup/planner.ts';
import { applyViaSystemd, createSystemdSync } from '../../cgroup/systemd-apply.ts';
import { createDbusSystemdPort, isPeerToPeerAddress, type SystemdPort } from '../../cgroup/systemd-bus.ts';
import type { CgroupFs, CgroupWrite } from '../../cgroup/types.ts';
import { buildNodeTree, CGROUP_ROOT, memCgroupFs, type NodeTree } from '../support/cgroup-tree.ts';
import {
  startDbusDaemon,
  startFakeSystemd,
  type DbusDaemon,
  type FakeSystemd,
} from '../support/fake-systemd.ts';

const Mi = 1024n * 1024n;
const UID = '3b9f1c2e-7a41-4f0c-9d2b-5e6a7b8c9d0e';
const ID = 'ab'.repeat(32);
const V2 = { cpu: 'v2', cpuacct: 'v2', memory: 'v2' } as const;
const quiet = {
  info: () => undefined,
  warn: () => undefined,
  error: () => undefined,
  debug: () => undefined,
};

// Everything a test starts, stopped after it whatever happened.
const cleanups: Array<() => Promise<void> | void> = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

async function daemon(dir?: string): Promise<DbusDaemon> {
  const d = await startDbusDaemon(dir ? { dir } : {});
  cleanups.push(async () => {
    await d.stop();
    if (!dir) d.cleanup();
  });
  return d;
}

/** A v2 systemd-driver node with one Burstable pod, app at 250m/500m 64Mi/128Mi, as the kubelet made it. */
function node(): NodeTree & { podPath: string; ctrPath: string } {
  const tree = buildNodeTree({
    version: 'v2',
    driver: 'systemd',
    runtime: 'containerd',
    pods: [
      {
        uid: UID,
        qos: 'Burstable',
        name: 'web',
        containers: [
          {
            id: ID,
            name: 'app',
            cpuRequestMilli: 250,
            cpuLimitMilli: 500,
            memoryRequestBytes: 64n * Mi,
            memoryLimitBytes: 128n * Mi,
          },
        ],
      },
    ],
  });
  return { ...tree, podPath: tree.pods[0]!.path, ctrPath: tree.pods[0]!.containers[0]!.path };
}

async function fakeFor(tree: ReturnType<typeof node>, opts: { bus?: string; privateSocket?: string }) {
  const fake = await startFakeSystemd({ ...opts, cgroups: { fs: tree.fs, layout: tree.layout } });
  cleanups.push(() => fake.stop());
  await fake.addUnit(tree.podPath);
  await fake.addUnit(tree.ctrPath);
  return fake;
}

function port(address: string, callTimeoutMs = 2_000): SystemdPort {
  const p = createDbusSystemdPort({ address, callTimeoutMs });
  cleanups.push(() => p.close());
  return p;
}

const pod: PodLike = {
  metadata: { uid: UID, name: 'web', namespace: 'default' },
  spec: {
    nodeName: 'node-1',
    containers: [
      {
        name: 'app',
        resources: { requests: { cpu: '250m', memory: '64Mi' }, limits: { cpu: '500m', memory: '128Mi' } },
      },
    ],
  },
  status: {
    phase: 'Running',
    qosClass: 'Burstable',
    containerStatuses: [{ name: 'app', containerID: `containerd://${ID}`, state: { running: {} } }],
  },
};

const sized = (cpuReq: number, cpuLim: number, memReq: bigint, memLim: bigint) => [
  {
    name: 'app',
    resources: { requests: { cpu: cpuReq, memory: memReq }, limits: { cpu: cpuLim, memory: memLim } },
  },
];
const GROW = sized(500, 1000, 128n * Mi, 256n * Mi);

function actuator(tree: NodeTree, systemdPort?: SystemdPort, timeoutMs = 3_000, fs: CgroupFs = tree.fs) {
  return createActuator({
    fs,
    layout: tree.layout,
    memoryMargin: DEFAULT_MEMORY_MARGIN,
    log: quiet,
    writeProcFile: async () => undefined,
    procRoot: '/proc',
    ...(systemdPort ? { systemd: createSystemdSync({ port: systemdPort, versions: V2, timeoutMs }) } : {}),
  });
}

const read = (tree: NodeTree, path: string, file: string): string =>
  String(tree.vol.readFileSync(`${CGROUP_ROOT}/${path}/${file}`, 'utf8')).trim();

/** The files the resize touches, pod then container. */
const files = (tree: ReturnType<typeof node>): string[] =>
  [tree.podPath, tree.ctrPath].flatMap((p) =>
    ['cpu.max', 'cpu.weight', 'memory.max'].map((f) => `${f}=${read(tree, p, f)}`),
  );

/** The recorded SetUnitProperties calls as `<unit prefix> runtime=<b> Name=value:sig ...`. */
const callRows = (fake: FakeSystemd): string[] =>
  fake.calls
    .filter((c) => c.method === 'SetUnitProperties')
    .map(
      (c) =>
        `${c.unit!.startsWith('kubepods') ? 'pod' : 'ctr'} runtime=${c.runtime} ` +
        c.properties!.map((p) => `${p.name}=${String(p.value)}:${p.signature}`).join(' '),
    );

const GROWN = [
  'cpu.max=100000 100000',
  'cpu.weight=20',
  `memory.max=${256n * Mi}`,
  'cpu.max=100000 100000',
  'cpu.weight=20',
  `memory.max=${256n * Mi}`,
];

describe('the agent through a real dbus-daemon', () => {
  it('sends the right properties to the right units in the safe order, runtime=true, before writing', async () => {
    const d = await daemon();
    const tree = node();
    const fake = await fakeFor(tree, { bus: d.address });
    const act = actuator(tree, port(d.address));

    const grown = await act.apply(pod, GROW);
    expect(grown.ok && grown.systemdFallback).toBe(undefined);
    // Memory first, then CPU; per resource the pod is raised before its container grows into it.
    expect(callRows(fake)).toEqual([
      `pod runtime=true MemoryMax=${256n * Mi}:t`,
      `ctr runtime=true MemoryMax=${256n * Mi}:t`,
      'pod runtime=true CPUQuotaPerSecUSec=1000000:t CPUWeight=20:t',
      'ctr runtime=true CPUQuotaPerSecUSec=1000000:t CPUWeight=20:t',
    ]);
    expect(files(tree)).toEqual(GROWN);
    // systemd wrote every file before answering; they still count as this resize's writes.
    expect(grown.ok && grown.written).toBe(6);

    fake.calls.length = 0;
    const shrunk = await act.apply(pod, sized(100, 200, 32n * Mi, 64n * Mi));
    expect(shrunk.ok).toBe(true);
    // Shrinking: the container before the pod, so the pod never drops below its child.
    expect(callRows(fake)).toEqual([
      `ctr runtime=true MemoryMax=${64n * Mi}:t`,
      `pod runtime=true MemoryMax=${64n * Mi}:t`,
      'ctr runtime=true CPUWeight=4:t CPUQuotaPerSecUSec=200000:t',
      'pod runtime=true CPUWeight=4:t CPUQuotaPerSecUSec=200000:t',
    ]);
  });

  it('on cgroup v1 sends CPUShares and MemoryLimit, and leaves memsw to the direct writes', async () => {
    const d = await daemon();
    const tree = buildNodeTree({
      version: 'v1',
      driver: 'systemd',
      runtime: 'containerd',
      v1Mounts: 'comounted',
      pods: [
        {
          uid: UID,
          qos: 'Burstable',
          name: 'web',
          containers: [
            {
              id: ID,
              name: 'app',
              cpuRequestMilli: 250,
              cpuLimitMilli: 500,
              memoryRequestBytes: 64n * Mi,
              memoryLimitBytes: 128n * Mi,
            },
          ],
        },
      ],
    });
    const [podPath, ctrPath] = [tree.pods[0]!.path, tree.pods[0]!.containers[0]!.path];
    const fake = await startFakeSystemd({ bus: d.address, cgroups: { fs: tree.fs, layout: tree.layout } });
    cleanups.push(() => fake.stop());
    await fake.addUnit(podPath);
    await fake.addUnit(ctrPath);
    const v1 = { cpu: 'v1', cpuacct: 'v1', memory: 'v1' } as const;
    const act = createActuator({
      fs: tree.fs,
      layout: tree.layout,
      memoryMargin: DEFAULT_MEMORY_MARGIN,
      log: quiet,
      writeProcFile: async () => undefined,
      procRoot: '/proc',
      systemd: createSystemdSync({ port: port(d.address), versions: v1 }),
    });
    const result = await act.apply(pod, GROW);
    expect(result.ok && result.systemdFallback).toBe(undefined);
    expect(callRows(fake)).toEqual([
      `pod runtime=true MemoryLimit=${256n * Mi}:t`,
      `ctr runtime=true MemoryLimit=${256n * Mi}:t`,
      'pod runtime=true CPUQuotaPerSecUSec=1000000:t CPUShares=512:t',
      'ctr runtime=true CPUQuotaPerSecUSec=1000000:t CPUShares=512:t',
    ]);
    // systemd's own write of the container's limit came before the direct memsw raise: the kernel refused it
    // (limit above memsw), systemd carried on as it does, and the direct writes then applied both in order.
    expect(fake.ignoredWriteErrors).toEqual([expect.stringMatching(/memory\.limit_in_bytes: EINVAL/)]);
    const v1read = (ctl: string, p: string, f: string) =>
      String(tree.vol.readFileSync(`${CGROUP_ROOT}/${ctl}/${p}/${f}`, 'utf8')).trim();
    expect(v1read('memory', ctrPath, 'memory.memsw.limit_in_bytes')).toBe(String(256n * Mi));
    expect(v1read('memory', ctrPath, 'memory.limit_in_bytes')).toBe(String(256n * Mi));
    expect(v1read('cpu,cpuacct', ctrPath, 'cpu.cfs_quota_us')).toBe('100000');
    expect(v1read('cpu,cpuacct', podPath, 'cpu.shares')).toBe('512');
  });

  it('sends unlimited as UINT64_MAX ("infinity")', async () => {
    const d = await daemon();
    const tree = node();
    const fake = await fakeFor(tree, { bus: d.address });
    const act = actuator(tree, port(d.address));
    const noLimits = [{ name: 'app', resources: { requests: { cpu: 250, memory: 64n * Mi }, limits: {} } }];
    expect((await act.apply(pod, noLimits)).ok).toBe(true);
    const inf = '18446744073709551615';
    expect(callRows(fake)).toEqual([
      `pod runtime=true MemoryMax=${inf}:t`,
      `ctr runtime=true MemoryMax=${inf}:t`,
      `pod runtime=true CPUQuotaPerSecUSec=${inf}:t`,
      `ctr runtime=true CPUQuotaPerSecUSec=${inf}:t`,
    ]);
    expect(read(tree, tree.ctrPath, 'cpu.max')).toBe('max 100000');
    expect(read(tree, tree.podPath, 'memory.max')).toBe('max');
  });

  it('falls back to direct writes when systemd refuses, and the next apply re-sends everything', async () => {
    const d = await daemon();
    const tree = node();
    const fake = await fakeFor(tree, { bus: d.address });
    const act = actuator(tree, port(d.address));

    fake.failWith('org.freedesktop.DBus.Error.AccessDenied', 'Permission denied');
    const result = await act.apply(pod, GROW);
    expect(result.ok).toBe(true);
    expect(result.systemdFallback).toMatchObject({ reason: 'refused' });
    expect(result.systemdFallback?.message).toContain('AccessDenied');
    // The first refusal ends the exchange: systemd holds nothing, the files hold the resize.
    expect(fake.calls).toHaveLength(1);
    expect(fake.runtimeProperties(`cri-containerd-${ID}.scope`).size).toBe(0);
    expect(files(tree)).toEqual(GROWN);
    expect(result.ok && result.written).toBe(6);

    // The reconcile loop's next pass: nothing differs in the files, but systemd is brought up to date.
    fake.failWith(null);
    fake.calls.length = 0;
    const again = await act.apply(pod, GROW);
    expect(again.ok && again.written).toBe(0);
    expect(again.systemdFallback).toBeUndefined();
    expect(callRows(fake)).toEqual([
      `pod runtime=true CPUQuotaPerSecUSec=1000000:t CPUWeight=20:t MemoryMax=${256n * Mi}:t`,
      `ctr runtime=true CPUQuotaPerSecUSec=1000000:t CPUWeight=20:t MemoryMax=${256n * Mi}:t`,
    ]);
    // In sync now: a daemon-reload keeps the resize, and further passes stay silent.
    await fake.reload();
    expect(files(tree)).toEqual(GROWN);
    fake.calls.length = 0;
    await act.apply(pod, GROW);
    expect(fake.calls).toEqual([]);
  });

  it('never waits on a hung systemd longer than the deadline', async () => {
    const d = await daemon();
    const tree = node();
    const fake = await fakeFor(tree, { bus: d.address });
    const act = actuator(tree, port(d.address, 5_000), 300);
    fake.hang(true);
    const started = Date.now();
    const result = await act.apply(pod, GROW);
    expect(Date.now() - started).toBeLessThan(2_000);
    expect(result.systemdFallback).toMatchObject({ reason: 'timeout' });
    expect(result.systemdFallback?.message).toBe('timeout: no answer from systemd within 300 ms');
    expect(files(tree)).toEqual(GROWN);
    fake.hang(false);
  });

  it('falls back when the bus is gone, and reconnects once it is back', async () => {
    const d = await daemon();
    const tree = node();
    const first = await fakeFor(tree, { bus: d.address });
    const p = port(d.address);
    const act = actuator(tree, p);
    expect((await act.apply(pod, sized(300, 600, 64n * Mi, 128n * Mi))).systemdFallback).toBeUndefined();
    expect(first.calls.length).toBeGreaterThan(0);

    await d.stop(); // e.g. dbus restarted by the package upgrade that is about to daemon-reload
    const result = await act.apply(pod, GROW);
    expect(result.ok).toBe(true);
    expect(result.systemdFallback).toMatchObject({ reason: 'unreachable' });
    expect(files(tree)).toEqual(GROWN);

    const back = await daemon(d.dir);
    const second = await fakeFor(tree, { bus: back.address });
    const resync = await act.apply(pod, GROW);
    expect(resync.systemdFallback).toBeUndefined();
    expect(callRows(second)).toHaveLength(2);
  });

  it("talks to systemd's private socket peer-to-peer (no bus daemon, no Hello)", async () => {
    const d = await daemon();
    const tree = node();
    const dir = join(d.dir, 'run', 'systemd');
    mkdirSync(dir, { recursive: true });
    const address = `unix:path=${dir}/private`;
    expect(isPeerToPeerAddress(address)).toBe(true);
    expect(isPeerToPeerAddress(d.address)).toBe(false);
    const fake = await fakeFor(tree, { privateSocket: `${dir}/private` });
    const result = await actuator(tree, port(address)).apply(pod, GROW);
    expect(result.systemdFallback).toBeUndefined();
    expect(callRows(fake)).toHaveLength(4);
    expect(files(tree)).toEqual(GROWN);
  });

  it('writes directly, without a fallback, to a cgroup whose unit systemd does not know', async () => {
    const d = await daemon();
    const tree = node();
    const fake = await startFakeSystemd({ bus: d.address, cgroups: { fs: tree.fs, layout: tree.layout } });
    cleanups.push(() => fake.stop());
    await fake.addUnit(tree.podPath); // the container's scope is unknown: NoSuchUnit
    const result = await actuator(tree, port(d.address)).apply(pod, GROW);
    expect(result.systemdFallback).toBeUndefined();
    expect(fake.calls).toHaveLength(4);
    expect(fake.runtimeProperties(`cri-containerd-${ID}.scope`).size).toBe(0);
    expect(files(tree)).toEqual(GROWN);
  });

  it('takes the values back out of systemd when the direct writes fail', async () => {
    const d = await daemon();
    const tree = node();
    // A systemd that records but writes nothing, so the executor makes every write and can fail one.
    const fake = await startFakeSystemd({ bus: d.address });
    cleanups.push(() => fake.stop());
    const failing: CgroupFs = {
      ...tree.fs,
      writeFile: async (path, data) => {
        if (path.endsWith(`${tree.ctrPath}/cpu.max`) && data.startsWith('100000')) {
          throw Object.assign(new Error('EIO: injected'), { code: 'EIO' });
        }
        return tree.fs.writeFile(path, data);
      },
    };
    const result = await actuator(tree, port(d.address), 3_000, failing).apply(pod, GROW);
    expect(result.ok).toBe(false);
    expect(callRows(fake)).toEqual([
      `pod runtime=true MemoryMax=${256n * Mi}:t`,
      `ctr runtime=true MemoryMax=${256n * Mi}:t`,
      'pod runtime=true CPUQuotaPerSecUSec=1000000:t CPUWeight=20:t',
      'ctr runtime=true CPUQuotaPerSecUSec=1000000:t CPUWeight=20:t',
      // undone newest first, each call's properties in reverse
      'ctr runtime=true CPUWeight=10:t CPUQuotaPerSecUSec=500000:t',
      'pod runtime=true CPUWeight=10:t CPUQuotaPerSecUSec=500000:t',
      `ctr runtime=true MemoryMax=${128n * Mi}:t`,
      `pod runtime=true MemoryMax=${128n * Mi}:t`,
    ]);
    expect(read(tree, tree.podPath, 'memory.max')).toBe(String(128n * Mi));
  });
});

describe('read-back after a write that went through systemd', () => {
  // 333m: systemd renders 33300 now, but a reload on systemd < v257 brings back the whole percent, 33000.
  const path = 'kubepods.slice/kubepods-pod1.slice';
  const write: CgroupWrite = {
    level: 'pod',
    path,
    controller: 'cpu',
    file: 'cpu.max',
    value: '33300 100000',
    previous: '50000 100000',
    reason: '',
  };
  const layout = {
    controllers: {
      cpu: { version: 'v2', mount: CGROUP_ROOT },
      cpuacct: { version: 'v2', mount: CGROUP_ROOT },
      memory: { version: 'v2', mount: CGROUP_ROOT },
    },
  } as const;

  /** A cgroup whose cpu.max reads `shows` right after any write (systemd re-applying behind our back). */
  async function run(shows: string, viaSystemd: boolean) {
    const tree = node();
    const base = memCgroupFs(tree.vol);
    tree.vol.mkdirSync(`${CGROUP_ROOT}/${path}`, { recursive: true });
    tree.vol.writeFileSync(`${CGROUP_ROOT}/${path}/cpu.max`, '50000 100000\n');
    const fs: CgroupFs = {
      ...base,
      writeFile: async (p, data) => {
        await base.writeFile(p, data);
        if (p.endsWith('/cpu.max')) await base.writeFile(p, shows);
      },
    };
    const plan = { ok: true as const, writes: [write] };
    const recorder: SystemdPort = { setUnitProperties: async () => undefined, close: async () => undefined };
    const sd = await applyViaSystemd({ port: recorder, plan, versions: V2, periodOf: () => 100_000 });
    return executePlan({ fs, layout, plan, ...(viaSystemd ? { alsoAccept: sd.alsoAccept } : {}) });
  }

  it("accepts systemd's rendering of the value it was given", async () => {
    expect((await run('33000 100000', true)).ok).toBe(true);
  });
  it('refuses it for a write systemd never saw', async () => {
    expect((await run('33000 100000', false)).error?.code).toBe('RESIZELET_ERR_READBACK_MISMATCH');
  });
  it('refuses anything else, even close by', async () => {
    expect((await run('33100 100000', true)).error?.code).toBe('RESIZELET_ERR_READBACK_MISMATCH');
    expect((await run('34000 100000', true)).error?.code).toBe('RESIZELET_ERR_READBACK_MISMATCH');
  });
});

// ---------------------------------------------------------------------------------------------------------
// daemon-reload vs the reconcile loop

function reconcilerFor(act: Actuator, requested: PodLike) {
  const metrics = createAgentMetrics();
  const statuses: string[] = [];
  const reconciler = createReconciler({
    nodeName: 'node-1',
    cache: {
      get: (ns, name) => (ns === 'default' && name === 'web' ? requested : undefined),
      list: () => [requested],
    },
    actuator: act,
    checkpoint: memoryCheckpoint(),
    publisher: {
      publish: (_pod, text, onAck) => {
        statuses.push(text);
        onAck?.();
      },
      event: () => undefined,
      cancel: () => undefined,
      backlog: 0,
      idle: async () => undefined,
      stop: () => undefined,
    },
    metrics,
    log: quiet,
    clock: systemClock,
    node: () => ({
      allocatable: { cpuMilli: 8_000, memoryBytes: 16n * 1024n * Mi },
      memoryCapacityBytes: 16n * 1024n * Mi,
    }),
    enqueue: () => undefined,
    deferredRetryMs: 60_000,
  });
  cleanups.push(() => reconciler.stop());
  return { reconciler, metrics, statuses };
}

const counter = async (metrics: ReturnType<typeof createAgentMetrics>, name: string): Promise<number> => {
  const m = await metrics.registry.getSingleMetric(name)?.get();
  return (m?.values ?? []).reduce((s, v) => s + v.value, 0);
};

const requested: PodLike = {
  ...pod,
  metadata: {
    ...pod.metadata,
    annotations: {
      'resizelet.io/resize':
        '{"app":{"requests":{"cpu":"500m","memory":"128Mi"},"limits":{"cpu":"1","memory":"256Mi"}}}',
    },
  },
};

describe('daemon-reload and the drift counter', () => {
  async function scenario(withDbus: boolean) {
    const d = await daemon();
    const tree = node();
    const fake = await fakeFor(tree, { bus: d.address });
    const { reconciler, metrics, statuses } = reconcilerFor(
      actuator(tree, withDbus ? port(d.address) : undefined),
      requested,
    );
    await reconciler.handle('default/web');
    expect(JSON.parse(statuses.at(-1)!)).toMatchObject({ resizeStatus: 'Completed' });
    expect(files(tree)).toEqual(GROWN);
    expect(await reconciler.reconcileAll()).toEqual({ pods: 1, corrections: 0 });

    await fake.reload(); // `systemctl daemon-reload`, e.g. from a package upgrade
    const afterReload = files(tree);
    const check = await reconciler.reconcileAll();
    return { afterReload, check, drift: await counter(metrics, 'resizelet_drift_corrections_total'), tree };
  }

  it('with D-Bus a reload changes nothing: no drift', async () => {
    const { afterReload, check, drift } = await scenario(true);
    expect(afterReload).toEqual(GROWN);
    expect(check.corrections).toBe(0);
    expect(drift).toBe(0);
  });

  it('without it a reload puts the spec back, and the drift check counts every correction', async () => {
    const { afterReload, check, drift, tree } = await scenario(false);
    expect(afterReload).toEqual([
      'cpu.max=50000 100000',
      'cpu.weight=10',
      `memory.max=${128n * Mi}`,
      'cpu.max=50000 100000',
      'cpu.weight=10',
      `memory.max=${128n * Mi}`,
    ]);
    expect(check.corrections).toBe(6);
    expect(drift).toBe(6);
    expect(files(tree)).toEqual(GROWN);
  });

  it('marks the status and the metric when systemd was unreachable, then re-applies through it', async () => {
    const d = await daemon();
    const tree = node();
    const fake = await fakeFor(tree, { bus: d.address });
    const { reconciler, metrics, statuses } = reconcilerFor(actuator(tree, port(d.address)), requested);
    fake.failWith('org.freedesktop.DBus.Error.AccessDenied', 'Permission denied');
    await reconciler.handle('default/web');
    const status = JSON.parse(statuses.at(-1)!) as { resizeStatus: string; message: string };
    expect(status.resizeStatus).toBe('Completed');
    expect(status.message).toMatch(
      /^resized app in place \(6 cgroup writes\) \(systemd unreachable: refused: .*AccessDenied.*; applied directly, will re-apply\)$/,
    );
    const fallbacks = await metrics.registry.getSingleMetric('resizelet_systemd_fallbacks_total')?.get();
    expect(fallbacks?.values).toEqual([{ value: 1, labels: { reason: 'refused' } }]);

    // systemd is back: the reconcile loop hands it the allocation, and a reload after that is harmless.
    fake.failWith(null);
    expect(await reconciler.reconcileAll()).toEqual({ pods: 1, corrections: 0 });
    await fake.reload();
    expect(files(tree)).toEqual(GROWN);
    expect((await reconciler.reconcileAll()).corrections).toBe(0);
    expect(await counter(metrics, 'resizelet_systemd_fallbacks_total')).toBe(1);
  });
});
