// The walk of the node: which cgroups are found for the node's pods and how each is labelled, on every
// driver and runtime layout; children listed again only when they may have changed.
import { describe, expect, test } from 'vitest';
import { createNodeScanner } from '../../agent/cadvisor/scanner.ts';
import type { NodeScan } from '../../agent/cadvisor/targets.ts';
import { createStatsReader } from '../../agent/cgroup-stats.ts';
import type { PodLike } from '../../agent/resize/pod.ts';
import { buildNodeTree, CGROUP_ROOT, loadV2Fixture, type NodeTreeSpec } from '../support/cgroup-tree.ts';
import { memSyncFs } from './helpers.ts';

const Mi = 1024n * 1024n;
const id = (c: string) => c.repeat(64);
const UID = '11111111-2222-3333-4444-555555555555';

function scannerFor(spec: Omit<NodeTreeSpec, 'pods'> & Partial<Pick<NodeTreeSpec, 'pods'>>) {
  const tree = buildNodeTree({
    pods: [
      {
        uid: UID,
        qos: 'Burstable',
        name: 'web',
        namespace: 'shop',
        containers: [
          {
            id: id('a'),
            name: 'app',
            cpuRequestMilli: 100,
            cpuLimitMilli: 200,
            memoryLimitBytes: 64n * Mi,
            memoryRequestBytes: 64n * Mi,
          },
          { id: id('b'), name: 'sidecar', cpuRequestMilli: 50 },
        ],
      },
    ],
    ...spec,
  });
  const reader = createStatsReader({ fs: memSyncFs(tree.vol), layout: tree.layout });
  let t = 0;
  const scanner = createNodeScanner({ reader, layout: tree.layout, sandboxImage: 'pause:3.9', now: () => t });
  return { tree, reader, scanner, advance: (ms: number) => (t += ms) };
}

const rows = (s: NodeScan) => s.cgroups.map((c) => ({ level: c.level, ...c.labels }));

describe('labels, as the kubelet cAdvisor sets them', () => {
  test('containerd + cgroupfs: pod level and sandbox have container="", containers their name and ID', async () => {
    const { tree, scanner } = scannerFor({ version: 'v1', driver: 'cgroupfs', runtime: 'containerd' });
    const scan = await scanner.scan({ pods: tree.apiPods as PodLike[] });
    const pod = tree.pods[0]!;
    expect(rows(scan)).toEqual([
      { level: 'node', container: '', id: '/kubepods', image: '', name: '', namespace: '', pod: '' },
      {
        level: 'node',
        container: '',
        id: '/kubepods/burstable',
        image: '',
        name: '',
        namespace: '',
        pod: '',
      },
      {
        level: 'node',
        container: '',
        id: '/kubepods/besteffort',
        image: '',
        name: '',
        namespace: '',
        pod: '',
      },
      { level: 'pod', container: '', id: `/${pod.path}`, image: '', name: '', namespace: 'shop', pod: 'web' },
      ...[
        { level: 'container', container: 'app', name: id('a'), image: '' },
        { level: 'container', container: 'sidecar', name: id('b'), image: '' },
        { level: 'sandbox', container: '', name: pod.sandboxId, image: 'pause:3.9' },
      ]
        .map((c) => ({ ...c, id: `/${pod.path}/${c.name}`, namespace: 'shop', pod: 'web' }))
        .sort((a, b) => a.id.localeCompare(b.id)),
    ]);
    expect(scan.problems).toEqual([]);
  });

  test('CRI-O + systemd on v2: scopes are matched, conmon is skipped as cAdvisor does', async () => {
    const { tree, scanner } = scannerFor({ version: 'v2', driver: 'systemd', runtime: 'crio' });
    const scan = await scanner.scan({ pods: tree.apiPods as PodLike[] });
    const pod = tree.pods[0]!;
    expect(pod.containers[0]!.conmonPath).toBeDefined();
    expect(scan.cgroups.some((c) => c.labels.id.includes('conmon'))).toBe(false);
    const byLevel = (level: string) => scan.cgroups.filter((c) => c.level === level).map((c) => c.labels.id);
    expect(byLevel('container').sort()).toEqual(pod.containers.map((c) => `/${c.path}`).sort());
    expect(byLevel('sandbox')).toEqual([`/${pod.sandboxPath}`]);
    expect(byLevel('node')).toEqual([
      '/kubepods.slice',
      '/kubepods.slice/kubepods-burstable.slice',
      '/kubepods.slice/kubepods-besteffort.slice',
    ]);
  });

  test('the real v2 systemd node: every pod, sandbox and container of the recording is found', async () => {
    const node = loadV2Fixture();
    const reader = createStatsReader({ fs: memSyncFs(node.vol), layout: node.layout });
    const scan = await createNodeScanner({ reader, layout: node.layout }).scan({
      pods: node.apiPods as PodLike[],
    });
    expect(scan.problems).toEqual([]);
    const pods = node.apiPods.length;
    expect(scan.cgroups.filter((c) => c.level === 'pod')).toHaveLength(pods);
    expect(scan.cgroups.filter((c) => c.level === 'sandbox')).toHaveLength(pods);
    expect(scan.cgroups.filter((c) => c.level === 'container').length).toBeGreaterThanOrEqual(pods);
    for (const c of scan.cgroups.filter((x) => x.level === 'container')) {
      expect(c.labels.id).toMatch(/^\/kubepods\.slice\/.*\/cri-containerd-[0-9a-f]{64}\.scope$/);
    }
  });
});

describe('which pods and when to list again', () => {
  test('a pod with no cgroup yet is skipped quietly; a pod UID that is not one is a problem, not a crash', async () => {
    const { tree, scanner } = scannerFor({ version: 'v1', driver: 'cgroupfs', runtime: 'containerd' });
    const pending: PodLike = {
      metadata: { uid: '99999999-2222-3333-4444-555555555555', name: 'pending', namespace: 'shop' },
      spec: { containers: [{ name: 'c' }] },
      status: { qosClass: 'BestEffort' },
    };
    const evil: PodLike = {
      metadata: { uid: '../../../system.slice', name: 'evil', namespace: 'shop' },
      spec: { containers: [{ name: 'c' }] },
      status: { qosClass: 'Guaranteed' },
    };
    const scan = await scanner.scan({ pods: [pending, evil, ...(tree.apiPods as PodLike[])] });
    expect(scan.problems).toEqual([
      expect.objectContaining({ path: 'shop/evil', code: 'RESIZELET_ERR_PATH_UNSAFE' }),
    ]);
    expect(scan.cgroups.filter((c) => c.labels.pod === 'web')).toHaveLength(4);
    expect(scan.cgroups.some((c) => c.labels.pod === 'pending')).toBe(false);
  });

  test('a restarted container (new ID in the status, new cgroup) is found at once; the old one goes', async () => {
    const { tree, scanner } = scannerFor({ version: 'v1', driver: 'cgroupfs', runtime: 'containerd' });
    const pods = tree.apiPods as PodLike[];
    await scanner.scan({ pods });
    const pod = tree.pods[0]!;
    const fresh = id('c');
    for (const h of ['cpu', 'cpuacct', 'memory']) {
      tree.vol.cpSync(
        `${CGROUP_ROOT}/${h}/${pod.containers[0]!.path}`,
        `${CGROUP_ROOT}/${h}/${pod.path}/${fresh}`,
        {
          recursive: true,
        },
      );
      tree.vol.rmSync(`${CGROUP_ROOT}/${h}/${pod.containers[0]!.path}`, { recursive: true });
    }
    // The informer hands a new pod object on every update (it never edits one in place).
    const updated = structuredClone(pods[0]!);
    updated.status!.containerStatuses![0]!.containerID = `containerd://${fresh}`;
    pods[0] = updated;
    const scan = await scanner.scan({ pods });
    const app = scan.cgroups.filter((c) => c.labels.container === 'app');
    expect(app.map((c) => c.labels.name)).toEqual([fresh]);
    expect(scan.cgroups.some((c) => c.labels.name === id('a'))).toBe(false);
  });

  test('listings are reused while nothing changed, and refreshed after relistAfterMs', async () => {
    const { tree, scanner, advance } = scannerFor({
      version: 'v1',
      driver: 'cgroupfs',
      runtime: 'containerd',
    });
    const pods = tree.apiPods as PodLike[];
    const pod = tree.pods[0]!;
    await scanner.scan({ pods });
    // A directory appearing without any status change (a new sandbox after the old one died) ...
    const sandbox2 = id('d');
    for (const h of ['cpu', 'cpuacct', 'memory']) {
      tree.vol.cpSync(
        `${CGROUP_ROOT}/${h}/${pod.sandboxPath}`,
        `${CGROUP_ROOT}/${h}/${pod.path}/${sandbox2}`,
        {
          recursive: true,
        },
      );
    }
    const names = async () => (await scanner.scan({ pods })).cgroups.map((c) => c.labels.name);
    expect(await names()).not.toContain(sandbox2);
    advance(61_000);
    expect(await names()).toContain(sandbox2);
  });

  test('reads are done in batches that yield to the event loop', async () => {
    const { tree, reader } = scannerFor({ version: 'v1', driver: 'cgroupfs', runtime: 'containerd' });
    const scanner = createNodeScanner({ reader, layout: tree.layout, batch: 2 });
    let ticks = 0;
    const tick = () => {
      ticks++;
      if (ticks < 100) setImmediate(tick);
    };
    setImmediate(tick);
    await scanner.scan({ pods: tree.apiPods as PodLike[] });
    expect(ticks).toBeGreaterThanOrEqual(3);
  });
});
