// Judging a parsed request against the pod: one function per rule, each with its own message, applied in
// a fixed order so the first broken rule is the one reported. Pure.
import { formatBytes, formatMillicores } from './quantity.ts';
import {
  cloneResources,
  qosClassOf,
  specResources,
  type PodLike,
  type Resources,
  type ResourceValues,
} from './pod.ts';
import type { ContainerChange, ResizeRequest } from './request.ts';
import { ResizableResources } from './vocabulary.ts';

/** A container with no CPU request runs at minimum shares; below this its CPU would be starved. */
export const MIN_CPU_WITHOUT_REQUEST_MILLI = 100;

export const ValidationRules = {
  notOnNode: 'NotOnNode',
  notRunning: 'NotRunning',
  unknownContainer: 'UnknownContainer',
  initContainer: 'InitContainer',
  ephemeralContainer: 'EphemeralContainer',
  notPositive: 'NotPositive',
  limitAdded: 'LimitAdded',
  requestAboveLimit: 'RequestAboveLimit',
  cpuFloor: 'CpuBelowFloorWithoutRequest',
  qosChange: 'QosChange',
} as const;
export type ValidationRule = (typeof ValidationRules)[keyof typeof ValidationRules];

export interface DesiredContainer {
  name: string;
  resources: Resources;
}

export type Validation =
  | { ok: true; desired: DesiredContainer[]; changed: string[] }
  | { ok: false; rule: ValidationRule; message: string };

export interface ValidateInput {
  pod: PodLike;
  nodeName: string;
  request: ResizeRequest;
  /** What each container holds now: the allocation when there is one, else the spec. */
  current: Map<string, Resources>;
}

const fail = (rule: ValidationRule, message: string): Validation => ({ ok: false, rule, message });
const q = (s: string): string => JSON.stringify(s);

function describe(r: 'cpu' | 'memory', v: number | bigint | undefined): string {
  if (v === undefined) return 'unset';
  return r === 'cpu' ? formatMillicores(Number(v)) : formatBytes(BigInt(v));
}

function applyChange(current: Resources, change: ContainerChange): Resources {
  const next = cloneResources(current);
  for (const side of ['requests', 'limits'] as const) {
    const values: ResourceValues = change[side];
    if (values.cpu !== undefined) next[side].cpu = values.cpu;
    if (values.memory !== undefined) next[side].memory = values.memory;
  }
  return next;
}

function checkContainer(
  name: string,
  spec: Resources,
  current: Resources,
  change: ContainerChange,
  next: Resources,
): Validation | undefined {
  const where = `container ${q(name)}`;
  for (const side of ['requests', 'limits'] as const) {
    for (const r of ResizableResources) {
      const v = change[side][r];
      if (v !== undefined && v <= 0) {
        return fail(ValidationRules.notPositive, `${where}: ${side}.${r} must be positive`);
      }
    }
  }
  for (const r of ResizableResources) {
    if (change.limits[r] !== undefined && current.limits[r] === undefined) {
      return fail(
        ValidationRules.limitAdded,
        `${where} has no ${r} limit; a limit cannot be added in place (it would change how the kernel treats the container)`,
      );
    }
  }
  for (const r of ResizableResources) {
    const req = next.requests[r];
    const lim = next.limits[r];
    if (req !== undefined && lim !== undefined && req > lim) {
      return fail(
        ValidationRules.requestAboveLimit,
        `${where}: ${r} request ${describe(r, req)} would exceed its limit ${describe(r, lim)}`,
      );
    }
  }
  // No CPU request in the spec means the container runs on minimum shares; a CPU value set below 100m on
  // such a container is almost certainly a unit mistake ("1m" for "1") and would starve it.
  if (spec.requests.cpu === undefined) {
    for (const side of ['requests', 'limits'] as const) {
      const v = change[side].cpu;
      if (v !== undefined && v < MIN_CPU_WITHOUT_REQUEST_MILLI) {
        return fail(
          ValidationRules.cpuFloor,
          `${where} has no CPU request in its spec; its CPU ${side === 'requests' ? 'request' : 'limit'} cannot go below ${MIN_CPU_WITHOUT_REQUEST_MILLI}m (asked ${describe('cpu', v)})`,
        );
      }
    }
  }
  return undefined;
}

export function validateResize(input: ValidateInput): Validation {
  const { pod, nodeName, request, current } = input;
  if (pod.spec?.nodeName !== nodeName) {
    return fail(ValidationRules.notOnNode, `the pod is not running on node ${q(nodeName)}`);
  }
  if (pod.status?.phase !== 'Running') {
    return fail(
      ValidationRules.notRunning,
      `the pod is ${pod.status?.phase ?? 'not yet running'}; only running pods are resized`,
    );
  }
  const containers = pod.spec.containers;
  const byName = new Map(containers.map((c) => [c.name, c]));
  const initNames = new Set((pod.spec.initContainers ?? []).map((c) => c.name));
  const ephemeralNames = new Set((pod.spec.ephemeralContainers ?? []).map((c) => c.name));
  for (const name of request.keys()) {
    if (byName.has(name)) continue;
    if (initNames.has(name)) {
      return fail(
        ValidationRules.initContainer,
        `container ${q(name)} is an init container; init containers cannot be resized`,
      );
    }
    if (ephemeralNames.has(name)) {
      return fail(
        ValidationRules.ephemeralContainer,
        `container ${q(name)} is an ephemeral container; ephemeral containers cannot be resized`,
      );
    }
    return fail(
      ValidationRules.unknownContainer,
      `the pod has no container named ${q(name)} (it has ${containers.map((c) => q(c.name)).join(', ')})`,
    );
  }

  const desired: DesiredContainer[] = [];
  const changed: string[] = [];
  for (const c of containers) {
    const spec = specResources(c);
    const now = current.get(c.name) ?? spec;
    const change = request.get(c.name);
    if (!change) {
      desired.push({ name: c.name, resources: cloneResources(now) });
      continue;
    }
    const next = applyChange(now, change);
    const broken = checkContainer(c.name, spec, now, change, next);
    if (broken) return broken;
    desired.push({ name: c.name, resources: next });
    changed.push(c.name);
  }

  // QoS decides the pod's cgroup parent and its OOM score: a change would need the pod recreated.
  const init = (pod.spec.initContainers ?? []).map(specResources);
  const before = pod.status?.qosClass ?? qosClassOf([...containers.map(specResources), ...init]);
  const after = qosClassOf([...desired.map((d) => d.resources), ...init]);
  if (before !== after) {
    return fail(
      ValidationRules.qosChange,
      `the pod's QoS class would change from ${before} to ${after}; ${
        before === 'Burstable'
          ? 'keep at least one request below its limit'
          : before === 'Guaranteed'
            ? 'keep every request equal to its limit'
            : 'a BestEffort pod cannot be given requests or limits'
      }`,
    );
  }
  return { ok: true, desired, changed };
}
