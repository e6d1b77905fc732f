// ResourceQuota against resized values. Pure: the caller supplies the namespace's quotas and every other pod
// of the namespace (all nodes) with what it holds; this module says whether a resize keeps every quota that
// applies to the pod, and names the quota when it does not.
//
// The API server's quota admission only sees pod specs, and a resize does not change the spec: without this
// check an annotation would be a way around `requests.cpu`, `limits.memory` and the rest. Each pod counts at
// max(spec, allocated) per aggregate, because the API server keeps counting the spec after a shrink and the
// kernel enforces the allocation after a growth.
import { parseCpuMillicores, parseMemoryBytes } from './quantity.ts';
import { qosClassOf, specResources, type ContainerLike, type PodLike, type Resources } from './pod.ts';
import type { ResizeRequest } from './request.ts';

/** The fields of a v1 ResourceQuota this module reads; a client-node V1ResourceQuota fits. */
export interface QuotaLike {
  metadata?: { name?: string; namespace?: string };
  spec?: {
    hard?: Record<string, string | number | undefined>;
    scopes?: string[];
    scopeSelector?: {
      matchExpressions?: Array<{ scopeName?: string; operator?: string; values?: string[] }>;
    };
  };
}

/** A pod with the fields quota scopes look at. */
export type QuotaPod = PodLike & {
  spec?: {
    activeDeadlineSeconds?: number;
    priorityClassName?: string;
    overhead?: Record<string, string | number | undefined>;
    affinity?: {
      podAffinity?: { requiredDuringSchedulingIgnoredDuringExecution?: AffinityTerm[] };
      podAntiAffinity?: { requiredDuringSchedulingIgnoredDuringExecution?: AffinityTerm[] };
    };
  };
};
interface AffinityTerm {
  namespaces?: string[];
  namespaceSelector?: unknown;
}

/** What a pod counts against a quota, in exact integers (millicores and bytes as bigint: sums never round). */
export interface PodUsage {
  requestsCpu: bigint;
  requestsMemory: bigint;
  limitsCpu: bigint;
  limitsMemory: bigint;
}
type Aggregate = keyof PodUsage;

export const ZERO_USAGE: PodUsage = Object.freeze({
  requestsCpu: 0n,
  requestsMemory: 0n,
  limitsCpu: 0n,
  limitsMemory: 0n,
});

/**
 * The quota resource names resizelet enforces and what each counts. `cpu` and `memory` are the old spellings
 * of the request totals (pkg/quota/v1/evaluator/core/pods.go); everything else in `hard` (pods, storage,
 * extended resources) is untouched by a resize.
 */
export const QUOTA_RESOURCES: Readonly<Record<string, Aggregate>> = Object.freeze({
  'requests.cpu': 'requestsCpu',
  cpu: 'requestsCpu',
  'requests.memory': 'requestsMemory',
  memory: 'requestsMemory',
  'limits.cpu': 'limitsCpu',
  'limits.memory': 'limitsMemory',
});

const isCpu = (a: Aggregate): boolean => a === 'requestsCpu' || a === 'limitsCpu';

function containerUsage(c: Resources): PodUsage {
  return {
    requestsCpu: BigInt(c.requests.cpu ?? 0),
    requestsMemory: c.requests.memory ?? 0n,
    limitsCpu: BigInt(c.limits.cpu ?? 0),
    limitsMemory: c.limits.memory ?? 0n,
  };
}

function combine(a: PodUsage, b: PodUsage, f: (x: bigint, y: bigint) => bigint): PodUsage {
  return {
    requestsCpu: f(a.requestsCpu, b.requestsCpu),
    requestsMemory: f(a.requestsMemory, b.requestsMemory),
    limitsCpu: f(a.limitsCpu, b.limitsCpu),
    limitsMemory: f(a.limitsMemory, b.limitsMemory),
  };
}
const add = (a: PodUsage, b: PodUsage): PodUsage => combine(a, b, (x, y) => x + y);
export const maxUsage = (a: PodUsage, b: PodUsage): PodUsage => combine(a, b, (x, y) => (x > y ? x : y));
const minUsage = (a: PodUsage, b: PodUsage): PodUsage => combine(a, b, (x, y) => (x < y ? x : y));

function safeSpec(c: ContainerLike): Resources {
  try {
    return specResources(c);
  } catch {
    // A spec the API server stored is well formed; a malformed one (a test double, a future format) counts
    // as nothing rather than taking the agent down.
    return { requests: {}, limits: {} };
  }
}

function overheadUsage(pod: QuotaPod): PodUsage {
  const o = pod.spec?.overhead;
  if (!o) return ZERO_USAGE;
  try {
    const cpu = o.cpu === undefined ? 0n : BigInt(parseCpuMillicores(String(o.cpu)));
    const memory = o.memory === undefined ? 0n : parseMemoryBytes(String(o.memory));
    return { requestsCpu: cpu, requestsMemory: memory, limitsCpu: cpu, limitsMemory: memory };
  } catch {
    return ZERO_USAGE;
  }
}

/**
 * What the API server's quota evaluator charges for a pod (PodUsageFunc): the sum over app containers, at
 * least the largest init container, plus the RuntimeClass overhead. `containers` replaces the app
 * containers' spec resources by name (an allocation, or the values after a resize).
 */
export function podUsage(pod: QuotaPod, containers?: ReadonlyMap<string, Resources>): PodUsage {
  let sum = ZERO_USAGE;
  for (const c of pod.spec?.containers ?? []) {
    sum = add(sum, containerUsage(containers?.get(c.name) ?? safeSpec(c)));
  }
  for (const c of pod.spec?.initContainers ?? []) sum = maxUsage(sum, containerUsage(safeSpec(c)));
  return add(sum, overheadUsage(pod));
}

/** max(spec, allocation): the spec is what the API server counts, the allocation what the kernel enforces. */
export function effectiveUsage(
  pod: QuotaPod,
  allocation: ReadonlyMap<string, Resources> | undefined,
): PodUsage {
  const spec = podUsage(pod);
  return allocation ? maxUsage(spec, podUsage(pod, allocation)) : spec;
}

/**
 * Where a pod would stand once its own open request completed: the request applied on top of what it holds.
 * Unparsed or invalid requests change nothing. Used only to tell "wait" from "never".
 */
export function projectedUsage(
  pod: QuotaPod,
  allocation: ReadonlyMap<string, Resources> | undefined,
  request: ResizeRequest | undefined,
): PodUsage {
  if (!request) return effectiveUsage(pod, allocation);
  const next = new Map<string, Resources>();
  for (const c of pod.spec?.containers ?? []) {
    const held = allocation?.get(c.name) ?? safeSpec(c);
    const change = request.get(c.name);
    next.set(c.name, {
      requests: { ...held.requests, ...defined(change?.requests) },
      limits: { ...held.limits, ...defined(change?.limits) },
    });
  }
  return maxUsage(podUsage(pod), podUsage(pod, next));
}

function defined<T extends object>(v: T | undefined): Partial<T> {
  const out: Partial<T> = {};
  if (!v) return out;
  for (const [k, x] of Object.entries(v)) if (x !== undefined) (out as Record<string, unknown>)[k] = x;
  return out;
}

/** One other pod of the namespace, on any node. */
export interface NamespacePod {
  pod: QuotaPod;
  /** What it counts now: max(spec, allocated, accepted-but-not-applied). */
  usage: PodUsage;
  /**
   * What it would count once its open resize (if any) completed, or 0 when it is being deleted: where that is
   * lower than `usage`, the room it frees makes an over-quota resize `Deferred` rather than `Rejected`.
   */
  projected: PodUsage;
}

export type QuotaVerdict =
  | { verdict: 'fits' }
  | { verdict: 'never'; quota: string; message: string }
  | { verdict: 'not-now'; quota: string; message: string };

export interface QuotaCheckInput {
  pod: QuotaPod;
  quotas: readonly QuotaLike[];
  /** Every other non-terminal pod of the namespace, on every node (the pod itself excluded). */
  others: readonly NamespacePod[];
  /** This pod's effective usage now, and after the resize. */
  before: PodUsage;
  after: PodUsage;
}

function scopeMatches(scope: string, pod: QuotaPod): boolean {
  switch (scope) {
    case 'Terminating':
      return typeof pod.spec?.activeDeadlineSeconds === 'number' && pod.spec.activeDeadlineSeconds >= 0;
    case 'NotTerminating':
      return !(typeof pod.spec?.activeDeadlineSeconds === 'number' && pod.spec.activeDeadlineSeconds >= 0);
    case 'BestEffort':
      return qosOf(pod) === 'BestEffort';
    case 'NotBestEffort':
      return qosOf(pod) !== 'BestEffort';
    case 'PriorityClass':
      return Boolean(pod.spec?.priorityClassName);
    case 'CrossNamespacePodAffinity': {
      const a = pod.spec?.affinity;
      const terms = [
        ...(a?.podAffinity?.requiredDuringSchedulingIgnoredDuringExecution ?? []),
        ...(a?.podAntiAffinity?.requiredDuringSchedulingIgnoredDuringExecution ?? []),
      ];
      return terms.some((t) => (t.namespaces?.length ?? 0) > 0 || t.namespaceSelector != null);
    }
    default:
      // A scope this version does not know: count the pod. Failing closed can only make resizelet stricter
      // than the API server, never a way past a quota.
      return true;
  }
}

function qosOf(pod: QuotaPod): string {
  if (pod.status?.qosClass) return pod.status.qosClass;
  return qosClassOf((pod.spec?.containers ?? []).map(safeSpec));
}

/** Whether a quota's scopes and scope selector select the pod (pkg/quota/v1/evaluator/core/pods.go). */
export function quotaApplies(quota: QuotaLike, pod: QuotaPod): boolean {
  for (const s of quota.spec?.scopes ?? []) if (!scopeMatches(String(s), pod)) return false;
  for (const e of quota.spec?.scopeSelector?.matchExpressions ?? []) {
    const scope = String(e?.scopeName ?? '');
    const values = Array.isArray(e?.values) ? e.values.map(String) : [];
    if (scope === 'PriorityClass') {
      const pc = pod.spec?.priorityClassName ?? '';
      switch (e.operator) {
        case 'In':
          if (!values.includes(pc)) return false;
          break;
        case 'NotIn':
          if (values.includes(pc)) return false;
          break;
        case 'DoesNotExist':
          if (pc !== '') return false;
          break;
        default: // Exists, and anything unknown (fail closed)
          if (pc === '' && e.operator === 'Exists') return false;
      }
      continue;
    }
    const matches = scopeMatches(scope, pod);
    if (e.operator === 'DoesNotExist' ? matches : !matches) return false;
  }
  return true;
}

/** The aggregates a quota limits, with their hard values; malformed values are skipped (the API validates). */
function hardLimits(quota: QuotaLike): Array<{ resource: string; aggregate: Aggregate; hard: bigint }> {
  const out: Array<{ resource: string; aggregate: Aggregate; hard: bigint }> = [];
  const hard = quota.spec?.hard ?? {};
  for (const [resource, value] of Object.entries(hard)) {
    if (!Object.hasOwn(QUOTA_RESOURCES, resource) || value === undefined) continue;
    const aggregate = QUOTA_RESOURCES[resource]!;
    try {
      const text = String(value);
      out.push({
        resource,
        aggregate,
        hard: isCpu(aggregate) ? BigInt(parseCpuMillicores(text)) : parseMemoryBytes(text),
      });
    } catch {
      // not a quantity: nothing to enforce
    }
  }
  return out;
}

/**
 * Whether any quota that applies to the pod limits an aggregate the resize raises: only then are the
 * namespace's pods worth listing.
 */
export function quotasConstrain(
  quotas: readonly QuotaLike[],
  pod: QuotaPod,
  before: PodUsage,
  after: PodUsage,
): boolean {
  return quotas.some(
    (q) => quotaApplies(q, pod) && hardLimits(q).some((l) => after[l.aggregate] > before[l.aggregate]),
  );
}

function show(a: Aggregate, v: bigint): string {
  if (isCpu(a)) return v % 1000n === 0n ? `${v / 1000n}` : `${v}m`;
  const Mi = 1024n * 1024n;
  return v % Mi === 0n ? `${v / Mi}Mi` : `${v}`;
}

const q = (s: string | undefined): string => JSON.stringify(s ?? '');

/**
 * Judges a resize against every quota that applies to the pod. Only aggregates the resize raises are
 * checked: a resize that asks no more of a resource cannot take the namespace past a quota, even one the
 * namespace is already over (quotas can be lowered below current use).
 */
export function checkQuotas(input: QuotaCheckInput): QuotaVerdict {
  const { pod, quotas, others, before, after } = input;
  let wait: QuotaVerdict | undefined;
  for (const quota of quotas) {
    if (!quotaApplies(quota, pod)) continue;
    const limits = hardLimits(quota).filter((l) => after[l.aggregate] > before[l.aggregate]);
    if (limits.length === 0) continue;
    const selected = others.filter((o) => quotaApplies(quota, o.pod));
    const used = selected.reduce((sum, o) => add(sum, o.usage), ZERO_USAGE);
    const freed = selected.reduce((sum, o) => add(sum, minUsage(o.usage, o.projected)), ZERO_USAGE);
    const name = quota.metadata?.name;
    for (const { resource, aggregate, hard } of limits) {
      const total = used[aggregate] + after[aggregate];
      if (total <= hard) continue;
      const where = `ResourceQuota ${q(name)} in namespace ${q(quota.metadata?.namespace ?? pod.metadata?.namespace)}`;
      if (after[aggregate] > hard) {
        return {
          verdict: 'never',
          quota: name ?? '',
          message: `${resource} of this pod alone would be ${show(aggregate, after[aggregate])}, above the ${show(aggregate, hard)} allowed by ${where}`,
        };
      }
      const detail = `${resource} would be ${show(aggregate, total)} of ${show(aggregate, hard)} (other pods use ${show(aggregate, used[aggregate])}, this pod would use ${show(aggregate, after[aggregate])})`;
      if (freed[aggregate] + after[aggregate] <= hard) {
        wait ??= {
          verdict: 'not-now',
          quota: name ?? '',
          message: `exceeds ${where} until other resizes or deletions in the namespace complete: ${detail}`,
        };
        continue;
      }
      return { verdict: 'never', quota: name ?? '', message: `exceeds ${where}: ${detail}` };
    }
  }
  return wait ?? { verdict: 'fits' };
}
