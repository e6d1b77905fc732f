// The resources the fake serves, as data, and the per-resource write rules ("strategies") that the
// real registry applies before storing: which fields a subresource may change, what create resets.
import { clone, deepEqual, isObject } from './patch.ts';
import type { Json } from './patch.ts';
import { errors } from './status.ts';

export interface ObjectMeta {
  name?: string;
  generateName?: string;
  namespace?: string;
  uid?: string;
  resourceVersion?: string;
  generation?: number;
  creationTimestamp?: string;
  deletionTimestamp?: string;
  labels?: Record<string, string>;
  annotations?: Record<string, string>;
  [key: string]: unknown;
}

export interface KubeObject {
  apiVersion?: string;
  kind?: string;
  metadata: ObjectMeta;
  [key: string]: unknown;
}

export interface ResourceDef {
  readonly group: string;
  readonly version: string;
  readonly plural: string;
  readonly singular: string;
  readonly kind: string;
  readonly namespaced: boolean;
  /** Field labels the real storage registers for field selectors; null = any dotted path. */
  readonly fieldLabels: readonly string[] | null;
  readonly subresources: readonly string[];
  readonly shortNames: readonly string[];
}

const META_FIELDS = ['metadata.name', 'metadata.namespace'] as const;

export const RESOURCES = [
  {
    group: '',
    version: 'v1',
    plural: 'pods',
    singular: 'pod',
    kind: 'Pod',
    namespaced: true,
    // pkg/registry/core/pod/strategy.go ToSelectableFields
    fieldLabels: [
      ...META_FIELDS,
      'spec.nodeName',
      'spec.restartPolicy',
      'spec.schedulerName',
      'spec.serviceAccountName',
      'spec.hostNetwork',
      'status.phase',
      'status.podIP',
      'status.podIPs',
      'status.nominatedNodeName',
    ],
    subresources: ['status', 'resize'],
    shortNames: ['po'],
  },
  {
    group: '',
    version: 'v1',
    plural: 'nodes',
    singular: 'node',
    kind: 'Node',
    namespaced: false,
    fieldLabels: ['metadata.name', 'spec.unschedulable'],
    subresources: ['status'],
    shortNames: ['no'],
  },
  {
    group: '',
    version: 'v1',
    plural: 'namespaces',
    singular: 'namespace',
    kind: 'Namespace',
    namespaced: false,
    fieldLabels: ['metadata.name', 'status.phase'],
    subresources: ['status'],
    shortNames: ['ns'],
  },
  {
    group: '',
    version: 'v1',
    plural: 'events',
    singular: 'event',
    kind: 'Event',
    namespaced: true,
    fieldLabels: null,
    subresources: [],
    shortNames: ['ev'],
  },
  {
    group: 'events.k8s.io',
    version: 'v1',
    plural: 'events',
    singular: 'event',
    kind: 'Event',
    namespaced: true,
    fieldLabels: null,
    subresources: [],
    shortNames: ['ev'],
  },
  {
    group: '',
    version: 'v1',
    plural: 'resourcequotas',
    singular: 'resourcequota',
    kind: 'ResourceQuota',
    namespaced: true,
    fieldLabels: [...META_FIELDS],
    subresources: ['status'],
    shortNames: ['quota'],
  },
  {
    group: '',
    version: 'v1',
    plural: 'limitranges',
    singular: 'limitrange',
    kind: 'LimitRange',
    namespaced: true,
    fieldLabels: [...META_FIELDS],
    subresources: [],
    shortNames: ['limits'],
  },
] as const satisfies readonly ResourceDef[];

export function apiVersionOf(def: ResourceDef): string {
  return def.group ? `${def.group}/${def.version}` : def.version;
}

export function findResource(group: string, version: string, plural: string): ResourceDef | undefined {
  return RESOURCES.find((r) => r.group === group && r.version === version && r.plural === plural);
}

export function resourceByKind(apiVersion: string, kind: string): ResourceDef | undefined {
  return RESOURCES.find((r) => apiVersionOf(r) === apiVersion && r.kind === kind);
}

export const POD = findResource('', 'v1', 'pods')!;
export const NODE = findResource('', 'v1', 'nodes')!;
export const NAMESPACE = findResource('', 'v1', 'namespaces')!;
export const CORE_EVENT = findResource('', 'v1', 'events')!;
export const EVENTS_V1_EVENT = findResource('events.k8s.io', 'v1', 'events')!;

export interface StrategyOptions {
  /** Reject pod spec changes the real server forbids (see checkPodSpecUpdate). */
  readonly validatePodUpdates: boolean;
}

/** PrepareForCreate: a new pod's or namespace's status is the server's, not the client's. */
export function prepareForCreate(def: ResourceDef, obj: KubeObject): KubeObject {
  if (def === POD) return { ...obj, status: { phase: 'Pending' } };
  if (def === NAMESPACE) return { ...obj, spec: { finalizers: ['kubernetes'] }, status: { phase: 'Active' } };
  return obj;
}

/**
 * What an update through the main endpoint or a subresource may change. On resources with a
 * status subresource the main endpoint silently keeps the stored status, and `/status` keeps the
 * stored spec: a client that patches status through the wrong endpoint gets 200 and no change,
 * exactly as with a real cluster.
 */
export function prepareForUpdate(
  def: ResourceDef,
  subresource: string | undefined,
  next: KubeObject,
  prev: KubeObject,
  opts: StrategyOptions,
): KubeObject {
  const out = clone(next);
  if (subresource === undefined) {
    if ((def.subresources as readonly string[]).includes('status')) restore(out, prev, 'status');
    if (def === POD && opts.validatePodUpdates) checkPodSpecUpdate(out, prev);
  } else if (subresource === 'status') {
    restore(out, prev, 'spec');
  } else if (subresource === 'resize') {
    return applyPodResize(out, prev);
  }
  return out;
}

function restore(out: KubeObject, prev: KubeObject, field: string): void {
  if (field in prev) out[field] = clone(prev[field]);
  else delete out[field];
}

type Container = { name?: string; image?: string; resources?: unknown; resizePolicy?: unknown };
function containersOf(spec: unknown, list: 'containers' | 'initContainers'): Container[] {
  if (!isObject(spec)) return [];
  const v = spec[list];
  return Array.isArray(v) ? (v as Container[]) : [];
}

/** A spec with the named per-container fields blanked, for comparing what else changed. */
function specWithout(
  spec: unknown,
  containerFields: readonly (keyof Container)[],
  topFields: readonly string[],
): Json {
  const s = clone((isObject(spec) ? spec : {}) as Record<string, Json>);
  for (const f of topFields) delete s[f];
  for (const list of ['containers', 'initContainers'] as const) {
    for (const c of containersOf(s, list) as Record<string, Json>[])
      for (const f of containerFields) delete c[f];
  }
  return s;
}

// pkg/apis/core/validation ValidatePodUpdate: outside the resize subresource (Kubernetes >= 1.33)
// only these spec fields may change after creation.
const POD_MUTABLE_SPEC = [
  'activeDeadlineSeconds',
  'tolerations',
  'terminationGracePeriodSeconds',
  'schedulingGates',
];

function checkPodSpecUpdate(next: KubeObject, prev: KubeObject): void {
  if (
    !deepEqual(
      specWithout(next['spec'], ['image'], POD_MUTABLE_SPEC),
      specWithout(prev['spec'], ['image'], POD_MUTABLE_SPEC),
    )
  ) {
    throw errors.invalid('Pod', prev.metadata.name ?? '', [
      {
        field: 'spec',
        message:
          'Forbidden: pod updates may not change fields other than `spec.containers[*].image`,`spec.initContainers[*].image`,`spec.activeDeadlineSeconds`,`spec.tolerations` (only additions to existing tolerations),`spec.terminationGracePeriodSeconds` (allow it to be set to 1 if it was previously negative)',
      },
    ]);
  }
}

// podResizeStrategy (Kubernetes >= 1.33): everything but container resources and resizePolicy is
// taken from the stored pod, so other changes sent to /resize are dropped without an error. (The
// real server also refuses a resize that would change the pod's QoS class; that is not faked.)
function applyPodResize(next: KubeObject, prev: KubeObject): KubeObject {
  const out = clone(prev);
  for (const list of ['containers', 'initContainers'] as const) {
    const wanted = containersOf(next['spec'], list);
    for (const c of containersOf(out['spec'], list)) {
      const w = wanted.find((x) => x.name === c.name);
      if (!w) continue;
      for (const f of ['resources', 'resizePolicy'] as const) {
        if (w[f] === undefined) delete c[f];
        else c[f] = clone(w[f]);
      }
    }
  }
  return out;
}
