// A pod as the resize logic sees it: the few fields it reads, typed structurally so a client-node V1Pod
// fits and tests can pass plain objects. Pure: parses quantities, computes QoS, reads allocations.
import { parseCpuMillicores, parseMemoryBytes } from './quantity.ts';
import type { ResizableResource } from './vocabulary.ts';

export interface ContainerLike {
  name: string;
  resources?: {
    requests?: Record<string, string | number | undefined>;
    limits?: Record<string, string | number | undefined>;
  };
}

export interface ContainerStatusLike {
  name: string;
  containerID?: string;
  restartCount?: number;
  state?: { running?: unknown; waiting?: unknown; terminated?: unknown };
}

export interface PodLike {
  metadata?: {
    name?: string;
    namespace?: string;
    uid?: string;
    resourceVersion?: string;
    annotations?: Record<string, string>;
    labels?: Record<string, string>;
    deletionTimestamp?: unknown;
  };
  spec?: {
    nodeName?: string;
    restartPolicy?: string;
    containers: ContainerLike[];
    initContainers?: ContainerLike[];
    ephemeralContainers?: ContainerLike[];
  };
  status?: {
    phase?: string;
    qosClass?: string;
    containerStatuses?: ContainerStatusLike[];
  };
}

/** One side (requests or limits) of a container's resources, in integer units: millicores and bytes. */
export interface ResourceValues {
  cpu?: number;
  memory?: bigint;
}

export interface Resources {
  requests: ResourceValues;
  limits: ResourceValues;
}

export type QosClass = 'Guaranteed' | 'Burstable' | 'BestEffort';

export class SpecError extends Error {
  readonly code = 'RESIZELET_ERR_POD_SPEC';
}

function parseSide(
  side: Record<string, string | number | undefined> | undefined,
  where: string,
): ResourceValues {
  const out: ResourceValues = {};
  if (!side) return out;
  try {
    if (side.cpu !== undefined) out.cpu = parseCpuMillicores(String(side.cpu));
    if (side.memory !== undefined) out.memory = parseMemoryBytes(String(side.memory));
  } catch (err) {
    throw new SpecError(`${where}: ${(err as Error).message}`);
  }
  return out;
}

/**
 * A container's spec resources. The API server defaults a missing request to the limit; we apply the same
 * defaulting so that objects which skipped the API server (tests, fixtures) judge the same.
 */
export function specResources(c: ContainerLike): Resources {
  const limits = parseSide(c.resources?.limits, `container "${c.name}" limits`);
  const requests = parseSide(c.resources?.requests, `container "${c.name}" requests`);
  for (const r of ['cpu', 'memory'] as const) {
    if (requests[r] === undefined && limits[r] !== undefined) setValue(requests, r, limits[r]);
  }
  return { requests, limits };
}

export function setValue(side: ResourceValues, r: ResizableResource, v: number | bigint | undefined): void {
  if (r === 'cpu') side.cpu = v === undefined ? undefined : Number(v);
  else side.memory = v === undefined ? undefined : BigInt(v);
  if (side[r] === undefined) delete side[r];
}

export function cloneResources(r: Resources): Resources {
  return { requests: { ...r.requests }, limits: { ...r.limits } };
}

export function sameResources(a: Resources, b: Resources): boolean {
  return (
    a.requests.cpu === b.requests.cpu &&
    a.requests.memory === b.requests.memory &&
    a.limits.cpu === b.limits.cpu &&
    a.limits.memory === b.limits.memory
  );
}

/**
 * The kubelet's QoS rule (pkg/apis/core/helper/qos): BestEffort when no container sets any cpu/memory
 * request or limit; Guaranteed when every container has cpu and memory limits equal to its requests;
 * otherwise Burstable. Computed over the resources as they would be after a resize.
 */
export function qosClassOf(containers: Resources[]): QosClass {
  let any = false;
  let guaranteed = true;
  for (const c of containers) {
    for (const r of ['cpu', 'memory'] as const) {
      const req = c.requests[r];
      const lim = c.limits[r];
      if (req !== undefined || lim !== undefined) any = true;
      if (lim === undefined || req === undefined || req !== lim) guaranteed = false;
    }
  }
  if (!any) return 'BestEffort';
  return guaranteed ? 'Guaranteed' : 'Burstable';
}

export interface PodKey {
  namespace: string;
  name: string;
}

export function podKey(pod: PodLike): string {
  return `${pod.metadata?.namespace ?? ''}/${pod.metadata?.name ?? ''}`;
}

/** Terminal pods hold no resources on the node (the scheduler and kubelet stop counting them). */
export function isTerminal(pod: PodLike): boolean {
  return pod.status?.phase === 'Succeeded' || pod.status?.phase === 'Failed';
}
