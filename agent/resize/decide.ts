// The status state machine: from a pod, its request and the node's state, decide what to do next. Pure:
// the reconciler carries out the decision (cgroup writes, patches, events).
import { admit, maxTotals, totalRequests, type RequestTotals } from './admission.ts';
import { checkLimitRanges, type LimitRangeLike } from './limitrange.ts';
import { SpecError, specResources, type PodLike, type Resources } from './pod.ts';
import {
  checkQuotas,
  effectiveUsage,
  maxUsage,
  podUsage,
  quotasConstrain,
  type NamespacePod,
  type QuotaLike,
} from './quota.ts';
import { parseResizePolicy, parseResizeRequest, requestHash, type ResizePolicy } from './request.ts';
import { allocationsFrom, decodeStatus, toWireAllocation, type ResourceStatus } from './status.ts';
import { validateResize, type DesiredContainer } from './validate.ts';
import {
  Annotations,
  EventReasons,
  Labels,
  ResizeStatuses,
  type EventReason,
  type ResizeStatus,
} from './vocabulary.ts';

export interface DecideInput {
  pod: PodLike;
  nodeName: string;
  now: Date;
  /** The node's allocatable; undefined until the Node has been read (requests then wait as Deferred). */
  allocatable: RequestTotals | undefined;
  /**
   * Effective requests of every other non-terminal pod on the node (see admission.ts). A function: only a
   * request that reaches admission pays for walking the node's pods.
   */
  others: RequestTotals[] | (() => RequestTotals[]);
  /** What the agent holds as this pod's allocation (checkpoint, else the status annotation). */
  allocation: Map<string, Resources> | undefined;
  /** The pod's namespace: opt-out label, LimitRanges, ResourceQuotas. Unset: no namespace rules apply. */
  namespace?: NamespaceView;
}

export interface NamespaceView {
  name: string;
  /** False until the namespace's labels, quotas and LimitRanges have been read: requests wait as Deferred. */
  known: boolean;
  /** The Namespace has opted out (label `resizelet.io/disabled=true`). */
  disabled: boolean;
  quotas: readonly QuotaLike[];
  limitRanges: readonly LimitRangeLike[];
  /**
   * Every other pod of the namespace on every node, for quotas. Unset until listed: `decide` asks for it
   * with a `lookup` decision, so only a request that raises a quota-tracked value pays for the list. A
   * string is why the list failed.
   */
  pods?: readonly NamespacePod[] | string;
}

/** Status messages are read by people; a hostile request must not make them megabytes long. */
export const MAX_MESSAGE_CHARS = 1024;

/**
 * Messages quote the request (JSON.parse's own errors quote raw input): keep them short, printable and
 * well-formed UTF-16, whatever the request held (control characters, lone surrogates, megabytes).
 */
export function humanMessage(m: string): string {
  const printable = m.replace(
    // eslint-disable-next-line no-control-regex -- finding control characters is the point
    /[\u0000-\u001f\u007f-\u009f]/g,
    (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}`,
  );
  const short =
    printable.length <= MAX_MESSAGE_CHARS ? printable : `${printable.slice(0, MAX_MESSAGE_CHARS - 1)}\u2026`;
  // Lone surrogates (from the request, or from cutting a pair in two) become U+FFFD.
  return short.replace(/[\ud800-\udbff](?![\udc00-\udfff])|(?<![\ud800-\udbff])[\udc00-\udfff]/g, '\ufffd');
}

export type Decision =
  | { kind: 'idle' }
  | { kind: 'answer'; status: ResourceStatus; event: EventReason; message: string }
  | {
      kind: 'actuate';
      hash: string;
      desired: DesiredContainer[];
      changed: string[];
      policy: ResizePolicy;
      source: string | undefined;
      /**
       * A ResourceQuota was checked: the reconciler records the reservation (an Accepted status other nodes'
       * agents count) before it writes any cgroup, which narrows the cross-node race to the time between
       * this agent's pod list and that patch.
       */
      reserve: boolean;
    }
  /** The namespace's pods on every node are needed to judge the request against its quotas. */
  | { kind: 'lookup'; namespace: string };

/** The allocation a pod holds: what the agent allocated where it did, the spec elsewhere. */
export function currentResources(
  pod: PodLike,
  allocation: Map<string, Resources> | undefined,
): DesiredContainer[] {
  return (pod.spec?.containers ?? []).map((c) => ({
    name: c.name,
    resources: allocation?.get(c.name) ?? specResources(c),
  }));
}

export function effectiveTotals(pod: PodLike, allocation: Map<string, Resources> | undefined): RequestTotals {
  const spec = totalRequests((pod.spec?.containers ?? []).map(specResources));
  if (!allocation) return spec;
  return maxTotals(spec, totalRequests(currentResources(pod, allocation).map((d) => d.resources)));
}

/** Keeps lastTransitionTime when the status does not change, as Kubernetes conditions do. */
export function buildStatus(
  prev: ResourceStatus | undefined,
  next: Omit<ResourceStatus, 'lastTransitionTime'>,
  now: Date,
): ResourceStatus {
  const same =
    prev && prev.resizeStatus === next.resizeStatus && prev.observedRequest === next.observedRequest;
  return {
    ...next,
    lastTransitionTime: same && prev.lastTransitionTime ? prev.lastTransitionTime : now.toISOString(),
  };
}

const settled = new Set<ResizeStatus>([ResizeStatuses.Completed, ResizeStatuses.Rejected]);

export function decide(input: DecideInput): Decision {
  try {
    return judge(input);
  } catch (err) {
    // A spec quantity beyond what the agent counts exactly (a CPU limit of 1e16 passes API validation):
    // answer the request instead of throwing, so the pod still gets a status and its neighbours' resizes
    // go on.
    if (!(err instanceof SpecError)) throw err;
    const annotations = input.pod.metadata?.annotations ?? {};
    const message = humanMessage(`the pod's spec cannot be read: ${err.message}`);
    return {
      kind: 'answer',
      event: EventReasons.Rejected,
      message,
      status: buildStatus(
        decodeStatus(annotations[Annotations.status]),
        {
          resizeStatus: ResizeStatuses.Rejected,
          allocatedResources: [],
          observedRequest: requestHash(annotations[Annotations.request] ?? ''),
          message,
          source: annotations[Annotations.source],
        },
        input.now,
      ),
    };
  }
}

function judge(input: DecideInput): Decision {
  const { pod, nodeName, now, allocatable, others, allocation } = input;
  const annotations = pod.metadata?.annotations ?? {};
  const text = annotations[Annotations.request];
  if (text === undefined) return { kind: 'idle' };
  const hash = requestHash(text);
  const prev = decodeStatus(annotations[Annotations.status]);
  if (prev && prev.observedRequest === hash && settled.has(prev.resizeStatus)) return { kind: 'idle' };

  const source = annotations[Annotations.source];
  const holding = currentResources(pod, allocation);
  const answer = (resizeStatus: ResizeStatus, event: EventReason, text: string): Decision => {
    const message = humanMessage(text);
    return {
      kind: 'answer',
      event,
      message,
      status: buildStatus(
        prev,
        {
          resizeStatus,
          allocatedResources: holding.map((d) => toWireAllocation(d.name, d.resources)),
          observedRequest: hash,
          message,
          source,
        },
        now,
      ),
    };
  };
  const reject = (message: string): Decision =>
    answer(ResizeStatuses.Rejected, EventReasons.Rejected, message);
  const defer = (message: string): Decision =>
    answer(ResizeStatuses.Deferred, EventReasons.Deferred, message);

  const ns = input.namespace;
  if (ns?.known && ns.disabled) {
    return reject(
      `resizing is disabled in namespace ${JSON.stringify(ns.name)} (the Namespace has the label ${Labels.disabled}=true)`,
    );
  }
  const request = parseResizeRequest(text);
  if (!request.ok) return reject(request.message);
  const policy = parseResizePolicy(annotations[Annotations.policy]);
  if (!policy.ok) return reject(policy.message);
  const current = new Map(holding.map((d) => [d.name, d.resources]));
  const valid = validateResize({ pod, nodeName, request: request.value, current });
  if (!valid.ok) return reject(valid.message);
  if (policy.value.cpu === 'RestartContainer' || policy.value.memory === 'RestartContainer') {
    if (pod.spec?.restartPolicy === 'Never') {
      return reject('the resize policy asks for a container restart, but the pod has restartPolicy Never');
    }
  }

  // Namespace rules: LimitRange first (a broken rule never heals), then quotas, whose "never" outranks the
  // node's "not now": there is no point waiting for room on the node for a resize the quota will refuse.
  let quota: ReturnType<typeof checkQuotas> = { verdict: 'fits' };
  let reserve = false;
  if (ns) {
    if (!ns.known)
      return defer(`the quotas and LimitRanges of namespace ${JSON.stringify(ns.name)} are not known yet`);
    const range = checkLimitRanges({ limitRanges: ns.limitRanges, desired: valid.desired, current });
    if (!range.ok) return reject(range.message);
    const before = effectiveUsage(pod, allocation);
    const desiredByName = new Map(valid.desired.map((d) => [d.name, d.resources]));
    const after = maxUsage(podUsage(pod), podUsage(pod, desiredByName));
    if (quotasConstrain(ns.quotas, pod, before, after)) {
      if (ns.pods === undefined) return { kind: 'lookup', namespace: ns.name };
      if (typeof ns.pods === 'string') {
        return defer(`cannot check the ResourceQuotas of namespace ${JSON.stringify(ns.name)}: ${ns.pods}`);
      }
      quota = checkQuotas({ pod, quotas: ns.quotas, others: ns.pods, before, after });
      if (quota.verdict === 'never') return reject(quota.message);
      reserve = true;
    }
  }

  if (!allocatable) return defer("the node's allocatable is not known yet");
  const verdict = admit({
    allocatable,
    others,
    before: effectiveTotals(pod, allocation),
    after: totalRequests(valid.desired.map((d) => d.resources)),
  });
  if (verdict.verdict === 'never') return reject(verdict.message);
  if (quota.verdict === 'not-now') return defer(quota.message);
  if (verdict.verdict === 'not-now') return defer(verdict.message);
  return {
    kind: 'actuate',
    hash,
    desired: valid.desired,
    changed: valid.changed,
    policy: policy.value,
    source,
    reserve,
  };
}

/** Reads the allocation recorded in a pod's status annotation. */
export function statusAllocation(pod: PodLike): Map<string, Resources> | undefined {
  return allocationsFrom(decodeStatus(pod.metadata?.annotations?.[Annotations.status]));
}
