// Path safety on real directories: pod UIDs, container IDs and container names that try to leave the cgroup
// root (`../`, `/`, NUL) and symlinks planted in the tree are refused before anything is written, and nothing
// outside the tree changes. First on a temporary directory laid out like cgroup v1 mounts (where symlinks
// can be planted), then on a real cgroup v1 sandbox (where the kernel itself refuses symlinks).
import { lstat, mkdir, mkdtemp, readFile, rm, symlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createAgentMetrics } from '../../agent/metrics.ts';
import { ActuationFailures, createActuator } from '../../agent/reconcile/actuator.ts';
import type { CheckpointEntry } from '../../agent/reconcile/checkpoint.ts';
import { memoryCheckpoint } from '../support/memory-checkpoint.ts';
import type { StatusPublisher } from '../../agent/reconcile/publisher.ts';
import { createReconciler } from '../../agent/reconcile/reconciler.ts';
import type { PodLike } from '../../agent/resize/pod.ts';
import { decodeStatus } from '../../agent/resize/status.ts';
import type { DesiredContainer } from '../../agent/resize/validate.ts';
import { systemClock } from '../../agent/util/backoff.ts';
import { executePlan } from '../../cgroup/executor.ts';
import { DEFAULT_MEMORY_MARGIN } from '../../cgroup/planner.ts';
import type { CgroupLayout } from '../../cgroup/types.ts';
import {
  createRealSandbox,
  newContainerId,
  newPodUid,
  nodeCgroupFs,
  realCgroupsAvailable,
  type RealSandbox,
} from '../support/real-cgroup.ts';

const Mi = 1024n * 1024n;
const noop = (): void => undefined;
const log = { info: noop, warn: noop, error: noop, debug: noop };

const desiredOf = (cpuLimit: number): DesiredContainer[] => [
  {
    name: 'app',
    resources: { requests: { cpu: 100, memory: 64n * Mi }, limits: { cpu: cpuLimit, memory: 256n * Mi } },
  },
];

function podOf(uid: string, containerID: string, annotations: Record<string, string> = {}): PodLike {
  return {
    metadata: { name: 'web', namespace: 'shop', uid, annotations },
    spec: {
      nodeName: 'node-a',
      containers: [
        {
          name: 'app',
          resources: { requests: { cpu: '100m', memory: '64Mi' }, limits: { cpu: '200m', memory: '256Mi' } },
        },
      ],
    },
    status: {
      phase: 'Running',
      qosClass: 'Burstable',
      containerStatuses: [{ name: 'app', containerID, state: { running: {} } }],
    },
  };
}

/** Every file below `dir` with its content, to prove nothing changed. */
async function snapshot(dir: string): Promise<Record<string, string>> {
  const out: Record<string, string> = {};
  const { readdir } = await import('node:fs/promises');
  for (const e of await readdir(dir, { recursive: true, withFileTypes: true })) {
    const p = join(e.parentPath, e.name);
    if (e.isFile()) out[p] = await readFile(p, 'utf8');
  }
  return out;
}

describe('path safety on a temporary directory laid out like cgroup v1 mounts', () => {
  let root: string;
  let outside: string;
  let layout: CgroupLayout;
  const V1_FILES = {
    'cpu.shares': '102\n',
    'cpu.cfs_quota_us': '20000\n',
    'cpu.cfs_period_us': '100000\n',
    'memory.limit_in_bytes': `${256n * Mi}\n`,
    'memory.usage_in_bytes': '0\n',
    'memory.stat': 'total_inactive_file 0\n',
  };

  /** A directory holding the v1 files the actuator reads and writes, in every "hierarchy". */
  async function cgroupDir(rel: string): Promise<void> {
    for (const h of ['cpu', 'cpuacct', 'memory']) {
      await mkdir(join(root, h, rel), { recursive: true });
      for (const [f, v] of Object.entries(V1_FILES)) await writeFile(join(root, h, rel, f), v);
    }
  }

  beforeAll(async () => {
    const base = await mkdtemp(join(tmpdir(), 'resizelet-paths-'));
    root = join(base, 'mnt');
    outside = join(base, 'outside');
    layout = {
      controllers: {
        cpu: { version: 'v1', mount: join(root, 'cpu') },
        cpuacct: { version: 'v1', mount: join(root, 'cpuacct') },
        memory: { version: 'v1', mount: join(root, 'memory') },
      },
      driver: 'cgroupfs',
      runtime: 'containerd',
      weightFormula: 'linear',
      podsRoot: 'kubepods',
    };
    await cgroupDir('kubepods/burstable');
    // What an escape would reach: a directory with the same files, outside every mount.
    for (const h of ['cpu', 'memory']) {
      await mkdir(join(outside, h), { recursive: true });
      for (const [f, v] of Object.entries(V1_FILES)) await writeFile(join(outside, h, f), v);
    }
  });

  afterAll(async () => {
    await rm(join(root, '..'), { recursive: true, force: true });
  });

  const actuator = () =>
    createActuator({
      fs: nodeCgroupFs,
      layout,
      memoryMargin: DEFAULT_MEMORY_MARGIN,
      log,
      writeProcFile: async () => undefined,
      procRoot: '/proc',
    });

  it.each([
    ['a UID with ../', '../../../outside', `containerd://${'a'.repeat(64)}`],
    ['a UID with /', `${newPodUid()}/../../..`, `containerd://${'a'.repeat(64)}`],
    ['a UID with NUL', `${newPodUid()}\u0000`, `containerd://${'a'.repeat(64)}`],
    ['a container ID with ../', newPodUid(), 'containerd://../../../../outside/cpu'],
    ['a container ID with /', newPodUid(), `containerd://${'a'.repeat(32)}/${'b'.repeat(31)}`],
    ['a container ID with NUL', newPodUid(), `containerd://${'a'.repeat(63)}\u0000`],
    ['an absolute container ID', newPodUid(), `containerd:///${'a'.repeat(63)}`],
  ])('refuses %s before touching the filesystem', async (_what, uid, containerID) => {
    const before = await snapshot(join(root, '..'));
    const a = await actuator().apply(podOf(uid, containerID), desiredOf(1000));
    expect(a.ok).toBe(false);
    expect(!a.ok && a.code).toBe(ActuationFailures.unsafePath);
    expect(await snapshot(join(root, '..'))).toEqual(before);
  });

  it('refuses a pod directory that is a symlink planted to lead out of the mount', async () => {
    const uid = newPodUid();
    const id = newContainerId();
    for (const h of ['cpu', 'cpuacct', 'memory']) {
      const target = join(outside, h === 'memory' ? 'memory' : 'cpu');
      await mkdir(join(target, id), { recursive: true }).catch(() => undefined);
      for (const [f, v] of Object.entries(V1_FILES)) await writeFile(join(target, id, f), v);
      await symlink(target, join(root, h, 'kubepods/burstable', `pod${uid}`));
    }
    const before = await snapshot(outside);
    const a = await actuator().apply(podOf(uid, `containerd://${id}`), desiredOf(1000));
    expect(!a.ok && a.code).toBe(ActuationFailures.unsafePath);
    expect(!a.ok && a.message).toMatch(/outside the cgroup mount/);
    expect(await snapshot(outside)).toEqual(before);
  });

  it('refuses a cgroup file that is a symlink planted to a file outside the tree', async () => {
    const uid = newPodUid();
    const id = newContainerId();
    await cgroupDir(`kubepods/burstable/pod${uid}`);
    await cgroupDir(`kubepods/burstable/pod${uid}/${id}`);
    const quota = join(root, 'cpu', `kubepods/burstable/pod${uid}/${id}`, 'cpu.cfs_quota_us');
    await rm(quota);
    await symlink(join(outside, 'cpu', 'cpu.cfs_quota_us'), quota);
    const before = await snapshot(outside);
    const a = await actuator().apply(podOf(uid, `containerd://${id}`), desiredOf(1000));
    expect(!a.ok && a.code).toBe(ActuationFailures.unsafePath);
    expect(await snapshot(outside)).toEqual(before);
    expect((await lstat(quota)).isSymbolicLink()).toBe(true);
  });

  it('through the reconciler: a hostile ID is answered Rejected with the reason, and nothing is written', async () => {
    const published: string[] = [];
    const entries = new Map<string, CheckpointEntry>();
    const pod = podOf(newPodUid(), 'containerd://../../../../outside/cpu', {
      'resizelet.io/resize': '{"app":{"limits":{"cpu":"1"}}}',
    });
    const publisher: StatusPublisher = {
      publish: (_p, text) => void published.push(text),
      event: noop,
      cancel: noop,
      backlog: 0,
      idle: async () => undefined,
      stop: noop,
    };
    const checkpoint = memoryCheckpoint(entries);
    const reconciler = createReconciler({
      nodeName: 'node-a',
      cache: { get: () => pod, list: () => [pod] },
      actuator: actuator(),
      checkpoint,
      publisher,
      metrics: createAgentMetrics(),
      log,
      clock: systemClock,
      node: () => ({
        allocatable: { cpuMilli: 4000, memoryBytes: 8n * 1024n * Mi },
        memoryCapacityBytes: undefined,
      }),
      enqueue: noop,
      deferredRetryMs: 60_000,
    });
    const before = await snapshot(join(root, '..'));
    await reconciler.handle('shop/web');
    reconciler.stop();
    const status = decodeStatus(published.at(-1));
    expect(status?.resizeStatus).toBe('Rejected');
    expect(status?.message).toMatch(/container ID .* is not 64 lowercase hex digits/);
    expect(entries.size).toBe(0);
    expect(await snapshot(join(root, '..'))).toEqual(before);
  });
});

const available = realCgroupsAvailable();
if (!available.ok) console.warn(`skipping path safety on real cgroups: ${available.reason}`);

describe.skipIf(!available.ok)('path safety on a real cgroup v1 sandbox', () => {
  let sandbox: RealSandbox;
  let victimPath: string;
  let victimId: string;
  const victimUid = newPodUid();

  beforeAll(async () => {
    sandbox = await createRealSandbox();
    const podPath = await sandbox.makePod(victimUid, 'Burstable', { cpuQuotaUs: 20_000, cpuShares: 102 });
    victimId = newContainerId();
    victimPath = await sandbox.makeContainer(podPath, victimId, { cpuQuotaUs: 20_000, cpuShares: 102 });
  });

  afterAll(async () => {
    await sandbox?.cleanup();
  });

  const actuator = () =>
    createActuator({
      fs: nodeCgroupFs,
      layout: sandbox.layout,
      memoryMargin: DEFAULT_MEMORY_MARGIN,
      log,
      writeProcFile: async () => undefined,
      procRoot: '/proc',
    });

  it('the kernel refuses symlinks in cgroupfs, so a planted link can only exist on other filesystems', async () => {
    const at = `${sandbox.layout.controllers.cpu.mount}/${sandbox.layout.podsRoot}/link`;
    await expect(symlink('/tmp', at)).rejects.toMatchObject({ code: 'EPERM' });
  });

  it("refuses traversal in a UID or container ID and leaves the sandbox's own limits alone", async () => {
    const rootQuota = () => sandbox.readText('cpu', sandbox.name, 'cpu.cfs_quota_us');
    const before = await rootQuota();
    for (const [uid, id] of [
      [`../../${victimUid}`, `containerd://${victimId}`],
      [newPodUid(), `containerd://../../../..`],
      [newPodUid(), `containerd://${victimId}/..`],
    ] as const) {
      const a = await actuator().apply(podOf(uid, id), desiredOf(4000));
      expect(!a.ok && a.code).toBe(ActuationFailures.unsafePath);
    }
    expect(await rootQuota()).toBe(before);
    expect((await sandbox.read(victimPath)).settings.cpuQuotaUs).toBe(20_000);
  });

  it("cannot reach another pod's container by naming its ID: the path stays under the pod's own cgroup", async () => {
    const a = await actuator().apply(podOf(newPodUid(), `containerd://${victimId}`), desiredOf(4000));
    expect(a.ok).toBe(false);
    expect(!a.ok && a.code).toBe('RESIZELET_ERR_CGROUP_MISSING');
    expect((await sandbox.read(victimPath)).settings.cpuQuotaUs).toBe(20_000);
  });

  it('writes only the setting files it owns: never cgroup.procs, tasks or notify_on_release', async () => {
    for (const file of ['cgroup.procs', 'tasks', 'notify_on_release', 'cpu.stat']) {
      const before = await sandbox.readText('cpu', victimPath, file);
      const r = await executePlan({
        fs: nodeCgroupFs,
        layout: sandbox.layout,
        plan: {
          ok: true,
          writes: [
            {
              level: 'container',
              path: victimPath,
              controller: 'cpu',
              file,
              value: '1',
              previous: before,
              reason: 'hostile',
            },
          ],
        },
      });
      expect(r.ok).toBe(false);
      expect(r.error?.code).toBe('RESIZELET_ERR_PATH_UNSAFE');
      expect(await sandbox.readText('cpu', victimPath, file)).toBe(before);
    }
  });
});
