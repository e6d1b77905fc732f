// Where the kubelet and the container runtimes put pod and container cgroups, as data: one table of pod path
// templates per driver x QoS class, one table of container directory names per driver x runtime, and the
// parsers that turn Kubernetes identifiers into validated path segments. Pure apart from `resolveInside`,
// which takes the filesystem port as an argument.
//
// Every identifier that becomes a path segment (pod UID, container ID) is validated here first: a pod object
// is user input, and an ID like `../../system.slice` would otherwise point our writes at another cgroup.
import { WriteErrorCodes } from './types.ts';
import type {
  CgroupDriver,
  CgroupFs,
  CgroupLayout,
  CgroupPath,
  ContainerRuntime,
  Controller,
  QosClass,
} from './types.ts';

export class PathError extends Error {
  readonly code = WriteErrorCodes.PATH_UNSAFE;
  override readonly name = 'PathError';
  constructor(
    message: string,
    /** The offending input, truncated, for logs. */
    readonly value?: string,
  ) {
    super(message);
  }
}

const show = (v: unknown): string => JSON.stringify(String(v).slice(0, 100));

/**
 * Pod cgroup path below `layout.podsRoot`, one template per path segment. `{uid}` is the pod UID, `{uid_}` the
 * UID with `-` replaced by `_`, `{root}` the pods root slice name without `.slice` (systemd only).
 *
 * Source: kubernetes pkg/kubelet/cm/qos_container_manager_linux.go (Guaranteed pods sit directly under the
 * root, the other classes under a `burstable`/`besteffort` child) and cgroup_manager_linux.go
 * `CgroupName.ToSystemd`: the name parts are joined with `-` after `escapeSystemdCgroupName` turns every `-`
 * inside a part into `_` (systemd reads `-` as a hierarchy step), then `ExpandSlice` spells out every
 * ancestor slice. Deriving `{root}` from the configured root slice is what the kubelet does for a custom
 * --cgroup-root: root `foo.slice/foo-kubepods.slice` gives `foo-kubepods-burstable.slice`.
 */
export const POD_PATH_FORMATS = {
  cgroupfs: {
    Guaranteed: ['pod{uid}'],
    Burstable: ['burstable', 'pod{uid}'],
    BestEffort: ['besteffort', 'pod{uid}'],
  },
  systemd: {
    Guaranteed: ['{root}-pod{uid_}.slice'],
    Burstable: ['{root}-burstable.slice', '{root}-burstable-pod{uid_}.slice'],
    BestEffort: ['{root}-besteffort.slice', '{root}-besteffort-pod{uid_}.slice'],
  },
} as const satisfies Record<CgroupDriver, Record<QosClass, readonly string[]>>;

/** The kubelet's default pods root per driver (with the default --cgroup-root=/). */
export const DEFAULT_PODS_ROOT = {
  cgroupfs: 'kubepods',
  systemd: 'kubepods.slice',
} as const satisfies Record<CgroupDriver, string>;

/**
 * A container's directory inside its pod cgroup. `{id}` is the 64-hex container ID.
 *
 * With the systemd driver every runtime hands runc a `slice:prefix:id` triple and runc's systemd manager
 * (libcontainer/cgroups/systemd/common.go `getUnitName`) names the transient unit `<prefix>-<id>.scope`:
 * - containerd: pkg/cri/server/helpers_linux.go `getCgroupsPath` -> `<slice>:cri-containerd:<id>`;
 *   with cgroupfs it is `filepath.Join(cgroupsParent, id)`.
 * - CRI-O: internal/config/cgmgr/systemd_linux.go `ContainerCgroupPath` -> `<slice>:crio:<id>`; with cgroupfs
 *   cgroupfs_linux.go joins the parent with `containerCgroupPath(id)` = `crio-<id>`.
 * - Docker (dockerd via cri-dockerd): moby daemon/oci_linux.go `WithCgroups` -> `<parent>:docker:<id>` with
 *   systemd, `filepath.Join(parent, id)` otherwise.
 * koordinator's koordlet (pkg/koordlet/util/system/cgroup_driver.go) uses the same systemd names; its
 * cgroupfs formatter uses a bare `<id>` for CRI-O too, which contradicts CRI-O's own cgroupfs manager: we
 * follow the runtime. Observed on real nodes: test/fixtures/real-node-v2-systemd (containerd + systemd) and
 * real-node-v1-cgroupfs (containerd + cgroupfs).
 */
export const CONTAINER_DIR_FORMATS = {
  cgroupfs: { containerd: '{id}', crio: 'crio-{id}', docker: '{id}' },
  systemd: { containerd: 'cri-containerd-{id}.scope', crio: 'crio-{id}.scope', docker: 'docker-{id}.scope' },
} as const satisfies Record<CgroupDriver, Record<ContainerRuntime, string>>;

/** What a directory found inside a pod cgroup is. */
export type ChildDirKind = 'container' | 'conmon' | 'sandbox';

export interface ChildDirFormat {
  driver: CgroupDriver;
  template: string;
  kind: ChildDirKind;
  /** Runtimes that produce this name; containerd and Docker are indistinguishable under cgroupfs. */
  runtimes: readonly ContainerRuntime[];
}

/**
 * Every directory name a runtime creates inside a pod cgroup, for classifying `listChildren` output and for
 * detecting the runtime from the tree. A sandbox (pause) container normally has a container-style name (its
 * ID is simply absent from the pod's containerStatuses); the extra rows are the exceptions:
 * - CRI-O's conmon (the container monitor) runs beside each container in `crio-conmon-<id>[.scope]` when
 *   `conmon_cgroup = "pod"` (cgmgr `MoveConmonToCgroup`). It is NOT the container: never resize it.
 *   cAdvisor's CRI-O factory skips it the same way (container/crio/factory.go `CanHandleAndAccept`).
 * - CRI-O with `drop_infra_ctr = true` (its default) runs no pause process; it spoofs the sandbox cgroup
 *   through the cgroupfs manager even under systemd (cgmgr `CreateSandboxCgroup`), so the name has no
 *   `.scope` suffix: `crio-<sandbox id>`.
 * - crun (used by CRI-O on many distros) makes a `container` child inside the container's scope on v2 and
 *   moves the workload there; limits written on the scope still bound it, so we keep targeting the scope.
 */
export const CHILD_DIR_FORMATS: readonly ChildDirFormat[] = [
  { driver: 'cgroupfs', template: '{id}', kind: 'container', runtimes: ['containerd', 'docker'] },
  { driver: 'cgroupfs', template: 'crio-{id}', kind: 'container', runtimes: ['crio'] },
  { driver: 'cgroupfs', template: 'crio-conmon-{id}', kind: 'conmon', runtimes: ['crio'] },
  { driver: 'systemd', template: 'cri-containerd-{id}.scope', kind: 'container', runtimes: ['containerd'] },
  { driver: 'systemd', template: 'crio-{id}.scope', kind: 'container', runtimes: ['crio'] },
  { driver: 'systemd', template: 'crio-conmon-{id}.scope', kind: 'conmon', runtimes: ['crio'] },
  { driver: 'systemd', template: 'crio-{id}', kind: 'sandbox', runtimes: ['crio'] },
  { driver: 'systemd', template: 'docker-{id}.scope', kind: 'container', runtimes: ['docker'] },
];

/** The `containerStatuses[].containerID` schemes and the runtime each names. */
export const CONTAINER_ID_SCHEMES = {
  containerd: 'containerd',
  'cri-o': 'crio',
  docker: 'docker',
} as const satisfies Record<string, ContainerRuntime>;

export interface ContainerRef {
  runtime: ContainerRuntime;
  /** 64 lowercase hex digits. */
  id: string;
}

export interface PodRef {
  uid: string;
  qos: QosClass;
}

const CONTAINER_ID = /^[0-9a-f]{64}$/;
/**
 * API-server pods get a lowercase RFC 4122 UUID; static pods get the kubelet's md5 config hash, 32 hex digits
 * without dashes (pkg/kubelet/config/common.go `applyDefaults`). Nothing else may become a path segment.
 */
const POD_UID = /^(?:[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}|[0-9a-f]{32})$/;
/** A path segment we are willing to join: no separators, no NUL, no dot-only names. */
const SEGMENT = /^[A-Za-z0-9_@:.,+-]+$/;

export function assertContainerId(id: unknown): string {
  if (typeof id !== 'string' || !CONTAINER_ID.test(id)) {
    throw new PathError(`container ID ${show(id)} is not 64 lowercase hex digits`, String(id).slice(0, 100));
  }
  return id;
}

export function assertPodUid(uid: unknown): string {
  if (typeof uid !== 'string' || !POD_UID.test(uid)) {
    throw new PathError(
      `pod UID ${show(uid)} is neither a lowercase UUID nor a 32-hex static pod hash`,
      String(uid).slice(0, 100),
    );
  }
  return uid;
}

/** `containerd://<64 hex>` (or `cri-o://`, `docker://`) -> the runtime and the bare ID. */
export function parseContainerId(containerId: unknown): ContainerRef {
  if (typeof containerId !== 'string') {
    throw new PathError(`container ID must be a string, got ${typeof containerId}`);
  }
  const sep = containerId.indexOf('://');
  if (sep < 0) {
    throw new PathError(
      `container ID ${show(containerId)} has no "<runtime>://" scheme`,
      containerId.slice(0, 100),
    );
  }
  const scheme = containerId.slice(0, sep);
  const runtime = Object.hasOwn(CONTAINER_ID_SCHEMES, scheme)
    ? CONTAINER_ID_SCHEMES[scheme as keyof typeof CONTAINER_ID_SCHEMES]
    : undefined;
  if (runtime === undefined) {
    const known = Object.keys(CONTAINER_ID_SCHEMES).join(', ');
    throw new PathError(
      `unknown container runtime scheme ${show(scheme)} (known: ${known})`,
      scheme.slice(0, 100),
    );
  }
  return { runtime, id: assertContainerId(containerId.slice(sep + 3)) };
}

/** Throws unless `path` is a relative cgroup path made of safe segments ('' is the mount root itself). */
export function assertSafeRelative(path: string): CgroupPath {
  if (typeof path !== 'string') throw new PathError('cgroup path must be a string');
  if (path === '') return path;
  if (path.startsWith('/'))
    throw new PathError(`cgroup path ${show(path)} must be relative to the mount`, path);
  for (const seg of path.split('/')) {
    if (seg === '' || seg === '.' || seg === '..' || !SEGMENT.test(seg)) {
      throw new PathError(`cgroup path ${show(path)} has an unsafe segment ${show(seg)}`, path.slice(0, 100));
    }
  }
  return path;
}

function assertFileName(file: string): string {
  if (file === '.' || file === '..' || !SEGMENT.test(file)) {
    throw new PathError(`cgroup file name ${show(file)} is not a plain file name`, file.slice(0, 100));
  }
  return file;
}

/** Replace `{name}` placeholders; every value has been validated by the caller. */
function render(template: string, vars: Readonly<Record<string, string>>): string {
  return template.replace(/\{(\w+)\}/g, (_m, key: string) => {
    const v = vars[key];
    if (v === undefined) throw new Error(`path template ${template} needs {${key}}`);
    return v;
  });
}

/** The systemd root slice's name without `.slice`: `kubepods` for `kubepods.slice` or `x/kubepods.slice`. */
export function rootSliceName(podsRoot: string): string {
  const last = podsRoot.split('/').pop() ?? '';
  if (!last.endsWith('.slice') || last === '.slice') {
    throw new PathError(
      `systemd pods root ${show(podsRoot)} must end in a "<name>.slice" directory`,
      podsRoot,
    );
  }
  return last.slice(0, -'.slice'.length);
}

/** The pod's cgroup, relative to every controller mount. */
export function podCgroupPath(layout: Pick<CgroupLayout, 'driver' | 'podsRoot'>, pod: PodRef): CgroupPath {
  const uid = assertPodUid(pod.uid);
  assertSafeRelative(layout.podsRoot);
  const templates: readonly string[] | undefined = POD_PATH_FORMATS[layout.driver]?.[pod.qos];
  if (templates === undefined) throw new PathError(`unknown QoS class ${show(pod.qos)}`);
  const vars: Record<string, string> = { uid, uid_: uid.replaceAll('-', '_') };
  if (layout.driver === 'systemd') vars.root = rootSliceName(layout.podsRoot);
  return [layout.podsRoot, ...templates.map((t) => render(t, vars))].filter((s) => s !== '').join('/');
}

/** A container's cgroup inside its pod's. The runtime defaults to the layout's. */
export function containerCgroupPath(
  layout: Pick<CgroupLayout, 'driver' | 'podsRoot' | 'runtime'>,
  podPath: CgroupPath,
  container: { runtime?: ContainerRuntime; id: string },
): CgroupPath {
  assertSafeRelative(podPath);
  if (layout.podsRoot !== '' && !podPath.startsWith(`${layout.podsRoot}/`)) {
    throw new PathError(
      `pod path ${show(podPath)} is not below the pods root ${show(layout.podsRoot)}`,
      podPath,
    );
  }
  const id = assertContainerId(container.id);
  const runtime = container.runtime ?? layout.runtime;
  const template: string | undefined = CONTAINER_DIR_FORMATS[layout.driver]?.[runtime];
  if (template === undefined) throw new PathError(`unknown runtime ${show(runtime)}`);
  return `${podPath}/${render(template, { id })}`;
}

/** `<mount of controller>/<path>[/<file>]`, after checking both are plain relative names. */
export function absolutePath(
  layout: Pick<CgroupLayout, 'controllers'>,
  controller: Controller,
  path: CgroupPath,
  file?: string,
): string {
  const mount = layout.controllers[controller].mount;
  const parts = [mount.replace(/\/+$/, '')];
  if (assertSafeRelative(path) !== '') parts.push(path);
  if (file !== undefined) parts.push(assertFileName(file));
  return parts.join('/');
}

export interface ChildDir {
  name: string;
  kind: ChildDirKind;
  id: string;
  runtimes: readonly ContainerRuntime[];
}

const childPatterns = CHILD_DIR_FORMATS.map((f) => ({
  ...f,
  re: new RegExp(`^${f.template.replace(/[.*+?^$()|[\]\\]/g, '\\$&').replace('{id}', '([0-9a-f]{64})')}$`),
}));

/**
 * What a directory inside a pod cgroup is, from its name alone; null for anything no runtime makes (crun's
 * `container` child, hand-made directories). Patterns are anchored, so `crio-conmon-<id>` never reads as
 * `crio-<id>`.
 */
export function classifyChildDir(driver: CgroupDriver, name: string): ChildDir | null {
  for (const p of childPatterns) {
    if (p.driver !== driver) continue;
    const m = p.re.exec(name);
    if (m?.[1] !== undefined) return { name, kind: p.kind, id: m[1], runtimes: p.runtimes };
  }
  return null;
}

// A hierarchy's mount point resolves the same way for the agent's life (on v1 nodes /sys/fs/cgroup/cpu is a
// symlink to cpu,cpuacct, set up at boot): resolved once per filesystem, not on every cgroup file touched.
const realMounts = new WeakMap<object, Map<string, Promise<string>>>();
function realMountOf(fs: Pick<CgroupFs, 'realpath'>, mount: string): Promise<string> {
  let byMount = realMounts.get(fs);
  if (!byMount) realMounts.set(fs, (byMount = new Map()));
  let real = byMount.get(mount);
  if (!real) {
    real = fs.realpath(mount);
    byMount.set(mount, real);
    real.catch(() => byMount.delete(mount));
  }
  return real;
}

/**
 * Realpath `<mount>/<relPath>` and refuse it unless it is a directory inside the (realpathed) mount. Catches a
 * symlink planted in the tree and anything a lexical check missed. fs errors (ENOENT for a missing cgroup)
 * propagate unchanged so the caller can tell "gone" from "unsafe".
 */
export async function resolveInside(
  fs: Pick<CgroupFs, 'realpath' | 'lstat'>,
  mount: string,
  relPath: CgroupPath,
): Promise<string> {
  if (!mount.startsWith('/')) throw new PathError(`mount ${show(mount)} must be absolute`, mount);
  assertSafeRelative(relPath);
  const realMount = await realMountOf(fs, mount);
  const joined = relPath === '' ? mount : `${mount.replace(/\/+$/, '')}/${relPath}`;
  const proven = provenDirs.get(fs)?.get(joined);
  if (proven) {
    // The same directory as proven before (a directory has one place; a symlink planted since on the way
    // leads to another inode, one in its place is not a directory): no need to walk the path again.
    const now = await fs.lstat(joined);
    const byPath = provenDirs.get(fs)!;
    byPath.delete(joined);
    if (now.isDirectory() && now.ino === proven.ino && now.dev === proven.dev) {
      byPath.set(joined, { ...proven, usedAt: Date.now() });
      return proven.real;
    }
  }
  const real = await fs.realpath(joined);
  const inside = real === realMount || real.startsWith(realMount === '/' ? '/' : `${realMount}/`);
  if (!inside) {
    throw new PathError(
      `${show(joined)} resolves to ${show(real)}, outside the cgroup mount ${show(realMount)}`,
      joined,
    );
  }
  const st = await fs.lstat(real);
  if (!st.isDirectory()) {
    throw new PathError(`${show(joined)} is not a directory`, joined);
  }
  if (st.ino !== undefined && st.dev !== undefined) {
    remember(fs, joined, { real, dev: st.dev, ino: st.ino, usedAt: Date.now() });
  }
  return real;
}

// Directories proven inside their mount, by path, with the inode that was proven. Resizes touch the same
// pod and container directories again and again; re-proving one is an lstat instead of a realpath walk.
// Bounded in size and in time: containers come and go, and a directory unused for a minute (a removed
// container's, mostly) is forgotten and simply proven again if it is ever used.
interface Proven {
  real: string;
  dev: number | bigint;
  ino: number | bigint;
  usedAt: number;
}
const MAX_PROVEN_DIRS = 4096;
const PROVEN_TTL_MS = 60_000;
const provenDirs = new WeakMap<object, Map<string, Proven>>();
function remember(fs: object, joined: string, proven: Proven): void {
  let byPath = provenDirs.get(fs);
  if (!byPath) provenDirs.set(fs, (byPath = new Map()));
  byPath.delete(joined);
  byPath.set(joined, proven);
  // Least recently used first (a hit moves its entry to the end).
  for (const [path, p] of byPath) {
    if (byPath.size <= MAX_PROVEN_DIRS && p.usedAt >= proven.usedAt - PROVEN_TTL_MS) break;
    byPath.delete(path);
  }
}
