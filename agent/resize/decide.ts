// The status state machine: from a pod, its request and the node's state, decide what to do next. Pure:
// the reconciler carries out the decision (cgroup writes, patches, events).
import { admit, maxTotals, totalRequests, type RequestTotals } from './admission.ts';
import { specResources, type PodLike, type Resources } from './pod.ts';
import { parseResizePolicy, parseResizeRequest, requestHash, type ResizePolicy } from './request.ts';
import { allocationsFrom, decodeStatus, toWireAllocation, type ResourceStatus } from './status.ts';
import { validateResize, type DesiredContainer } from './validate.ts';
import {
  Annotations,
  EventReasons,
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
    };

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
  const { pod, nodeName, now, allocatable, others, allocation } = input;
  const annotations = pod.metadata?.annotations ?? {};
  const text = annotations[Annotations.request];
  if (text === undefined) return { kind: 'idle' };
  const hash = requestHash(text);
  const prev = decodeStatus(annotations[Annotations.status]);
  if (prev && prev.observedRequest === hash && settled.has(prev.resizeStatus)) return { kind: 'idle' };

  const source = annotations[Annotations.source];
  const holding = currentResources(pod, allocation);
  const answer = (resizeStatus: ResizeStatus, event: EventReason, message: string): Decision => ({
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
  });
  const reject = (message: string): Decision =>
    answer(ResizeStatuses.Rejected, EventReasons.Rejected, message);

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

  if (!allocatable) {
    return answer(ResizeStatuses.Deferred, EventReasons.Deferred, "the node's allocatable is not known yet");
  }
  const verdict = admit({
    allocatable,
    others: typeof others === 'function' ? others() : others,
    before: effectiveTotals(pod, allocation),
    after: totalRequests(valid.desired.map((d) => d.resources)),
  });
  if (verdict.verdict === 'never') return reject(verdict.message);
  if (verdict.verdict === 'not-now')
    return answer(ResizeStatuses.Deferred, EventReasons.Deferred, verdict.message);
  return {
    kind: 'actuate',
    hash,
    desired: valid.desired,
    changed: valid.changed,
    policy: policy.value,
    source,
  };
}

/** Reads the allocation recorded in a pod's status annotation. */
export function statusAllocation(pod: PodLike): Map<string, Resources> | undefined {
  return allocationsFrom(decodeStatus(pod.metadata?.annotations?.[Annotations.status]));
}
