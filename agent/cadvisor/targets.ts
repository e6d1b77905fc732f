// Which cgroups of the node cAdvisor reports for its pods, and how it labels each one (scanner.ts reads them,
// render.ts prints them).
//
// Labelling, copied from the kubelet's real output (test/fixtures/real-node-v1-cgroupfs/cadvisor-metrics.txt):
//   id        the cgroup path below the hierarchy mount, with a leading "/" (`/kubepods/burstable/pod<uid>/<cid>`)
//   container the container's name; "" for the pod-level cgroup AND for the sandbox (pause) container
//   pod, namespace  the pod's; "" for cgroups above the pods (`/kubepods`, `/kubepods/burstable`)
//   name      the 64-hex container ID for containers and the sandbox; "" for pod and node levels
//   image     the container's image; the sandbox's is the pause image (not in the pod object: see
//             `sandboxImage`); "" for pod and node levels
import { classifyChildDir, parseContainerId, podCgroupPath } from '../../cgroup/paths.ts';
import type { CgroupLayout, CgroupPath, QosClass } from '../../cgroup/types.ts';
import { qosClassOf, specResources, type ContainerStatusLike, type PodLike } from '../resize/pod.ts';
import type { CgroupStats } from '../cgroup-stats.ts';

export type CgroupLevel = 'node' | 'pod' | 'sandbox' | 'container';

/** cAdvisor's label set for one cgroup. */
export type CadvisorLabels = {
  container: string;
  id: string;
  image: string;
  name: string;
  namespace: string;
  pod: string;
};

export interface ScannedCgroup {
  path: CgroupPath;
  level: CgroupLevel;
  labels: CadvisorLabels;
  /** `namespace/name` for pod, sandbox and container levels. */
  podKey?: string;
  /** `<runtime>://<id>` as in containerStatuses, for containers the pod object names. */
  containerID?: string;
  stats: CgroupStats;
}

export interface ScanProblem {
  path: string;
  code: string;
  message: string;
}

export interface NodeScan {
  cgroups: ScannedCgroup[];
  /** Cgroups or pods that could not be read (permission, parse errors, unsafe IDs); gone ones are not problems. */
  problems: ScanProblem[];
  durationMs: number;
}

const QOS_CLASSES: readonly string[] = ['Guaranteed', 'Burstable', 'BestEffort'];
const PLACEHOLDER_UID = '00000000-0000-0000-0000-000000000000';

export interface Named {
  name: string;
  image: string;
  containerID: string;
}

/** A structural read of `image`, which the engine's PodLike does not declare but every API pod has. */
const imageOf = (o: unknown): string =>
  typeof o === 'object' && o !== null && 'image' in o && typeof o.image === 'string' ? o.image : '';

/**
 * The containers a pod object names, by bare container ID: regular, init and ephemeral ones. The image is the
 * status's (the runtime's resolved reference, which is what cAdvisor reads from the runtime), else the spec's.
 */
export function containersById(pod: PodLike): Map<string, Named> {
  const specImage = new Map<string, string>();
  const spec = pod.spec as (PodLike['spec'] & Record<string, unknown>) | undefined;
  for (const list of [spec?.containers, spec?.initContainers, spec?.ephemeralContainers]) {
    for (const c of list ?? []) specImage.set(c.name, imageOf(c));
  }
  const status = pod.status as Record<string, unknown> | undefined;
  const out = new Map<string, Named>();
  for (const key of ['containerStatuses', 'initContainerStatuses', 'ephemeralContainerStatuses']) {
    const list = status?.[key];
    if (!Array.isArray(list)) continue;
    for (const s of list as ContainerStatusLike[]) {
      if (!s?.containerID) continue;
      try {
        const { id } = parseContainerId(s.containerID);
        out.set(id, {
          name: s.name,
          image: imageOf(s) || specImage.get(s.name) || '',
          containerID: s.containerID,
        });
      } catch {
        // An ID we cannot parse names no cgroup we could match.
      }
    }
  }
  return out;
}

export function qosOf(pod: PodLike): QosClass {
  const q = pod.status?.qosClass;
  if (q && QOS_CLASSES.includes(q)) return q as QosClass;
  // Not reported yet: derive it as the API server would.
  return qosClassOf((pod.spec?.containers ?? []).map(specResources));
}

/** The pods root and the QoS-level cgroups below it (Guaranteed pods sit directly in the root). */
export function nodeLevelPaths(layout: CgroupLayout): CgroupPath[] {
  const parentOf = (qos: QosClass) =>
    podCgroupPath(layout, { uid: PLACEHOLDER_UID, qos }).split('/').slice(0, -1).join('/');
  return [...new Set([layout.podsRoot, parentOf('Burstable'), parentOf('BestEffort')])];
}

export const idOf = (path: CgroupPath) => `/${path}`;

/** What a cgroup is, as the walk reports it; fixed for the cgroup's life, so computed once per listing. */
export type Target = Omit<ScannedCgroup, 'stats'>;

/** The pod-level target and its children's, labelled from the pod object. */
export function targetsOf(
  layout: CgroupLayout,
  pod: PodLike,
  podPath: CgroupPath,
  children: readonly string[],
  named: Map<string, Named>,
  sandboxImage: string,
): Target[] {
  const namespace = pod.metadata?.namespace ?? '';
  const podName = pod.metadata?.name ?? '';
  const podKey = `${namespace}/${podName}`;
  // Label objects are written in cAdvisor's (sorted) order, so the exposition reads like the kubelet's.
  const out: Target[] = [
    {
      path: podPath,
      level: 'pod',
      labels: { container: '', id: idOf(podPath), image: '', name: '', namespace, pod: podName },
      podKey,
    },
  ];
  for (const child of children) {
    const dir = classifyChildDir(layout.driver, child);
    // conmon (CRI-O's monitor) is not a container; cAdvisor skips it too. Unknown names are not ours.
    if (!dir || dir.kind === 'conmon') continue;
    const path = `${podPath}/${child}`;
    const c = dir.kind === 'container' ? named.get(dir.id) : undefined;
    // A container-shaped directory the pod object does not name is the sandbox (its ID is never in
    // containerStatuses); a container started a moment ago and not yet in the status reads as one too
    // until the next pod update, which `container!=""` queries ignore either way.
    const labels: CadvisorLabels = {
      container: c?.name ?? '',
      id: idOf(path),
      image: c ? c.image : sandboxImage,
      name: dir.id,
      namespace,
      pod: podName,
    };
    out.push(
      c
        ? { path, level: 'container', labels, podKey, containerID: c.containerID }
        : { path, level: 'sandbox', labels, podKey },
    );
  }
  return out;
}
