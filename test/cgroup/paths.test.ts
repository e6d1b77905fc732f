import fc from 'fast-check';
import { Volume } from 'memfs';
import { describe, expect, it } from 'vitest';
import {
  absolutePath,
  assertPodUid,
  classifyChildDir,
  containerCgroupPath,
  parseContainerId,
  PathError,
  podCgroupPath,
  resolveInside,
} from '../../cgroup/paths.ts';
import type { CgroupDriver, CgroupLayout, ContainerRuntime, QosClass } from '../../cgroup/types.ts';
import { buildNodeTree, memCgroupFs } from '../support/cgroup-tree.ts';

const UID = 'cf465464-3b26-4394-955d-7a1709b6fe93';
const UID_ = 'cf465464_3b26_4394_955d_7a1709b6fe93';
const ID = 'b5e6703d62095484165930a4d6e60514ed70b5c2aca88589e9e5238177c03292';

const layoutOf = (
  driver: CgroupDriver,
  runtime: ContainerRuntime = 'containerd',
  podsRoot?: string,
): CgroupLayout => ({
  controllers: {
    cpu: { version: 'v1', mount: '/sys/fs/cgroup/cpu' },
    cpuacct: { version: 'v1', mount: '/sys/fs/cgroup/cpuacct' },
    memory: { version: 'v1', mount: '/sys/fs/cgroup/memory' },
  },
  driver,
  runtime,
  weightFormula: 'linear',
  podsRoot: podsRoot ?? (driver === 'systemd' ? 'kubepods.slice' : 'kubepods'),
});

const expectUnsafe = (fn: () => unknown): void => {
  try {
    fn();
  } catch (err) {
    expect(err).toBeInstanceOf(PathError);
    expect((err as PathError).code).toBe('RESIZELET_ERR_PATH_UNSAFE');
    return;
  }
  throw new Error('expected a PathError');
};

describe('parseContainerId', () => {
  it.each([
    ['containerd', 'containerd'],
    ['cri-o', 'crio'],
    ['docker', 'docker'],
  ] as const)('reads the %s:// scheme as runtime %s', (scheme, runtime) => {
    expect(parseContainerId(`${scheme}://${ID}`)).toEqual({ runtime, id: ID });
  });

  it.each([
    ['empty', ''],
    ['no scheme', ID],
    ['unknown scheme', `rkt://${ID}`],
    ['scheme in capitals', `CONTAINERD://${ID}`],
    ['uppercase hex', `containerd://${ID.toUpperCase()}`],
    ['63 digits', `containerd://${ID.slice(1)}`],
    ['65 digits', `containerd://${ID}0`],
    ['parent directory', 'containerd://../../../system.slice'],
    ['a slash inside', `containerd://${ID.slice(0, 32)}/${ID.slice(33)}`],
    ['a trailing ..', `containerd://${ID}/..`],
    ['NUL', `containerd://${ID.slice(1)}\0`],
    ['trailing newline', `containerd://${ID}\n`],
    ['prototype key as scheme', `constructor://${ID}`],
  ])('refuses %s', (_what, input) => {
    expectUnsafe(() => parseContainerId(input));
  });

  it('refuses non-strings', () => {
    expectUnsafe(() => parseContainerId(undefined));
    expectUnsafe(() => parseContainerId({ toString: () => `containerd://${ID}` }));
  });

  it('returns only 64-hex IDs, whatever the input', () => {
    const prefixes = fc.constantFrom('containerd://', 'cri-o://', 'docker://', '');
    fc.assert(
      fc.property(fc.string({ unit: 'binary' }), prefixes, (s, p) => {
        try {
          return /^[0-9a-f]{64}$/.test(parseContainerId(p + s).id);
        } catch (err) {
          return err instanceof PathError;
        }
      }),
    );
    // And a valid ID with anything appended never slips through.
    fc.assert(
      fc.property(fc.string({ minLength: 1 }), (tail) => {
        try {
          parseContainerId(`containerd://${ID}${tail}`);
          return false;
        } catch (err) {
          return err instanceof PathError;
        }
      }),
    );
  });
});

describe('pod UIDs', () => {
  it('accepts API-server UUIDs and the 32-hex hash the kubelet gives static pods', () => {
    expect(assertPodUid(UID)).toBe(UID);
    expect(assertPodUid('5e1b8d3c0a7f4c3e9f1d2b6a8c4e0f12')).toBe('5e1b8d3c0a7f4c3e9f1d2b6a8c4e0f12');
  });

  it.each([
    ['empty', ''],
    ['uppercase', UID.toUpperCase()],
    ['dots', '../../../etc'],
    ['a slash', `${UID.slice(0, 8)}/${UID.slice(9)}`],
    ['NUL', `${UID.slice(0, -1)}\0`],
    ['underscores (already escaped)', UID_],
    ['an extra segment', `${UID}-0000`],
  ])('refuses %s before it becomes a path segment', (_what, uid) => {
    expectUnsafe(() => podCgroupPath(layoutOf('cgroupfs'), { uid, qos: 'Burstable' }));
  });
});

describe('podCgroupPath', () => {
  it.each([
    ['cgroupfs', 'Guaranteed', `kubepods/pod${UID}`],
    ['cgroupfs', 'Burstable', `kubepods/burstable/pod${UID}`],
    ['cgroupfs', 'BestEffort', `kubepods/besteffort/pod${UID}`],
    ['systemd', 'Guaranteed', `kubepods.slice/kubepods-pod${UID_}.slice`],
    ['systemd', 'Burstable', `kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod${UID_}.slice`],
    [
      'systemd',
      'BestEffort',
      `kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod${UID_}.slice`,
    ],
  ] as const)('%s %s -> %s', (driver, qos, expected) => {
    expect(podCgroupPath(layoutOf(driver), { uid: UID, qos })).toBe(expected);
  });

  it('prefixes a test or --cgroup-root pods root', () => {
    const l = layoutOf('cgroupfs', 'containerd', 'resizelet-test-xyz/kubepods');
    expect(podCgroupPath(l, { uid: UID, qos: 'BestEffort' })).toBe(
      `resizelet-test-xyz/kubepods/besteffort/pod${UID}`,
    );
  });

  it("derives systemd slice names from the root slice's name, as the kubelet does for --cgroup-root", () => {
    const l = layoutOf('systemd', 'containerd', 'foo.slice/foo-kubepods.slice');
    expect(podCgroupPath(l, { uid: UID, qos: 'Burstable' })).toBe(
      `foo.slice/foo-kubepods.slice/foo-kubepods-burstable.slice/foo-kubepods-burstable-pod${UID_}.slice`,
    );
  });

  it('refuses a systemd pods root that is not a slice, and unsafe roots', () => {
    expectUnsafe(() =>
      podCgroupPath(layoutOf('systemd', 'containerd', 'kubepods'), { uid: UID, qos: 'Burstable' }),
    );
    expectUnsafe(() =>
      podCgroupPath(layoutOf('cgroupfs', 'containerd', '../kubepods'), { uid: UID, qos: 'Burstable' }),
    );
    expectUnsafe(() =>
      podCgroupPath(layoutOf('cgroupfs', 'containerd', '/kubepods'), { uid: UID, qos: 'Burstable' }),
    );
  });

  it('refuses an unknown QoS class', () => {
    expectUnsafe(() => podCgroupPath(layoutOf('cgroupfs'), { uid: UID, qos: 'Premium' as QosClass }));
  });
});

describe('containerCgroupPath', () => {
  it.each([
    ['cgroupfs', 'containerd', ID],
    ['cgroupfs', 'crio', `crio-${ID}`],
    ['cgroupfs', 'docker', ID],
    ['systemd', 'containerd', `cri-containerd-${ID}.scope`],
    ['systemd', 'crio', `crio-${ID}.scope`],
    ['systemd', 'docker', `docker-${ID}.scope`],
  ] as const)('%s + %s names the directory %s', (driver, runtime, dir) => {
    const l = layoutOf(driver, runtime);
    const pod = podCgroupPath(l, { uid: UID, qos: 'Burstable' });
    expect(containerCgroupPath(l, pod, { runtime, id: ID })).toBe(`${pod}/${dir}`);
  });

  it("uses the ID's own runtime over the layout's", () => {
    const l = layoutOf('systemd', 'containerd');
    const pod = podCgroupPath(l, { uid: UID, qos: 'Guaranteed' });
    expect(containerCgroupPath(l, pod, parseContainerId(`cri-o://${ID}`))).toBe(`${pod}/crio-${ID}.scope`);
  });

  it('refuses pod paths outside the pods root or with dot segments', () => {
    const l = layoutOf('cgroupfs');
    expectUnsafe(() => containerCgroupPath(l, 'system.slice', { id: ID }));
    expectUnsafe(() => containerCgroupPath(l, `kubepods/../system.slice`, { id: ID }));
    expectUnsafe(() => containerCgroupPath(l, `kubepods/pod${UID}`, { id: '..' }));
  });
});

describe('absolutePath', () => {
  it("joins the controller's mount, the path and the file", () => {
    expect(absolutePath(layoutOf('cgroupfs'), 'memory', `kubepods/pod${UID}`, 'memory.limit_in_bytes')).toBe(
      `/sys/fs/cgroup/memory/kubepods/pod${UID}/memory.limit_in_bytes`,
    );
    expect(absolutePath(layoutOf('cgroupfs'), 'cpu', '')).toBe('/sys/fs/cgroup/cpu');
  });

  it.each([['../cpu.max'], ['a/b'], ['..'], ['cpu.max\0']])('refuses the file name %j', (file) => {
    expectUnsafe(() => absolutePath(layoutOf('cgroupfs'), 'cpu', 'kubepods', file));
  });
});

describe('classifyChildDir', () => {
  it("tells CRI-O's conmon from the container it watches", () => {
    expect(classifyChildDir('systemd', `crio-conmon-${ID}.scope`)).toMatchObject({ kind: 'conmon', id: ID });
    expect(classifyChildDir('systemd', `crio-${ID}.scope`)).toMatchObject({ kind: 'container', id: ID });
    expect(classifyChildDir('cgroupfs', `crio-conmon-${ID}`)).toMatchObject({ kind: 'conmon', id: ID });
    expect(classifyChildDir('cgroupfs', `crio-${ID}`)).toMatchObject({
      kind: 'container',
      runtimes: ['crio'],
    });
  });

  it("recognizes CRI-O's spoofed sandbox cgroup (no .scope under systemd)", () => {
    expect(classifyChildDir('systemd', `crio-${ID}`)).toMatchObject({ kind: 'sandbox', runtimes: ['crio'] });
  });

  it('cannot tell containerd from Docker under cgroupfs', () => {
    expect(classifyChildDir('cgroupfs', ID)?.runtimes).toEqual(['containerd', 'docker']);
    expect(classifyChildDir('systemd', `docker-${ID}.scope`)?.runtimes).toEqual(['docker']);
  });

  it("ignores what no runtime makes (crun's inner `container`, other drivers' names)", () => {
    expect(classifyChildDir('systemd', 'container')).toBeNull();
    expect(classifyChildDir('systemd', ID)).toBeNull();
    expect(classifyChildDir('cgroupfs', `cri-containerd-${ID}.scope`)).toBeNull();
  });
});

describe('resolveInside', () => {
  const tree = () =>
    buildNodeTree({
      version: 'v2',
      driver: 'systemd',
      runtime: 'containerd',
      pods: [{ uid: UID, qos: 'Burstable', containers: [{ id: ID, cpuRequestMilli: 250 }] }],
    });

  it('returns the real directory of a cgroup inside the mount', async () => {
    const t = tree();
    const path = t.pods[0]!.containers[0]!.path;
    await expect(resolveInside(t.fs, '/sys/fs/cgroup', path)).resolves.toBe(`/sys/fs/cgroup/${path}`);
  });

  it('refuses a symlink planted in the tree that leads out of the mount', async () => {
    const t = tree();
    const path = t.pods[0]!.containers[0]!.path;
    t.vol.mkdirSync('/etc/evil', { recursive: true });
    t.vol.rmSync(`/sys/fs/cgroup/${path}`, { recursive: true });
    t.vol.symlinkSync('/etc/evil', `/sys/fs/cgroup/${path}`);
    await expect(resolveInside(t.fs, '/sys/fs/cgroup', path)).rejects.toThrow(PathError);
    await expect(resolveInside(t.fs, '/sys/fs/cgroup', path)).rejects.toThrow(/outside the cgroup mount/);
  });

  it('still refuses a directory proven safe once, then swapped for a symlink or a planted path', async () => {
    const t = tree();
    const path = t.pods[0]!.containers[0]!.path;
    await expect(resolveInside(t.fs, '/sys/fs/cgroup', path)).resolves.toBe(`/sys/fs/cgroup/${path}`);
    t.vol.mkdirSync('/etc/evil', { recursive: true });
    t.vol.rmSync(`/sys/fs/cgroup/${path}`, { recursive: true });
    t.vol.symlinkSync('/etc/evil', `/sys/fs/cgroup/${path}`);
    await expect(resolveInside(t.fs, '/sys/fs/cgroup', path)).rejects.toThrow(/outside the cgroup mount/);
    // And a parent directory swapped for a symlink to a look-alike tree outside.
    const parent = path.slice(0, path.lastIndexOf('/'));
    const leaf = path.slice(path.lastIndexOf('/') + 1);
    t.vol.unlinkSync(`/sys/fs/cgroup/${path}`);
    t.vol.mkdirSync(`/sys/fs/cgroup/${path}`);
    await expect(resolveInside(t.fs, '/sys/fs/cgroup', path)).resolves.toBe(`/sys/fs/cgroup/${path}`);
    t.vol.mkdirSync(`/etc/lookalike/${leaf}`, { recursive: true });
    t.vol.renameSync(`/sys/fs/cgroup/${parent}`, '/etc/moved-away');
    t.vol.symlinkSync('/etc/lookalike', `/sys/fs/cgroup/${parent}`);
    await expect(resolveInside(t.fs, '/sys/fs/cgroup', path)).rejects.toThrow(/outside the cgroup mount/);
  });

  it('refuses a symlinked pods root too (everything below it would escape)', async () => {
    const vol = Volume.fromJSON({
      '/elsewhere/kubepods/pod1/cpu.max': 'max 100000\n',
      '/sys/fs/cgroup/cgroup.procs': '',
    });
    vol.symlinkSync('/elsewhere/kubepods', '/sys/fs/cgroup/kubepods');
    await expect(resolveInside(memCgroupFs(vol), '/sys/fs/cgroup', 'kubepods/pod1')).rejects.toThrow(
      PathError,
    );
  });

  it('refuses dot segments before touching the filesystem', async () => {
    const t = tree();
    await expect(resolveInside(t.fs, '/sys/fs/cgroup', 'kubepods.slice/../..')).rejects.toThrow(PathError);
    await expect(resolveInside(t.fs, 'sys/fs/cgroup', 'kubepods.slice')).rejects.toThrow(PathError);
  });

  it('refuses a file where a cgroup directory should be', async () => {
    const t = tree();
    await expect(resolveInside(t.fs, '/sys/fs/cgroup', 'kubepods.slice/cpu.max')).rejects.toThrow(
      /not a directory/,
    );
  });

  it('lets ENOENT through for a cgroup that does not exist', async () => {
    const t = tree();
    await expect(resolveInside(t.fs, '/sys/fs/cgroup', 'kubepods.slice/gone.slice')).rejects.toMatchObject({
      code: 'ENOENT',
    });
  });

  it('follows a symlinked mount point (cpu -> cpu,cpuacct) and stays inside it', async () => {
    const t = buildNodeTree({
      version: 'v1',
      driver: 'cgroupfs',
      runtime: 'containerd',
      v1Mounts: 'comounted',
      pods: [
        { uid: UID, qos: 'Guaranteed', containers: [{ id: ID, cpuRequestMilli: 100, cpuLimitMilli: 100 }] },
      ],
    });
    const path = t.pods[0]!.containers[0]!.path;
    await expect(resolveInside(t.fs, '/sys/fs/cgroup/cpu', path)).resolves.toBe(
      `/sys/fs/cgroup/cpu,cpuacct/${path}`,
    );
  });
});
