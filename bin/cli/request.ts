// What `resizelet resize` writes: the request annotation, exactly in the shape agent/resize/request.ts
// parses, and a `Proposed` status, in one merge patch. Pure: the pod comes in, the patch goes out.
import { parseResizeRequest, requestHash } from '../../agent/resize/request.ts';
import { decodeStatus, encodeStatus, type ResourceStatus } from '../../agent/resize/status.ts';
import type { PodLike } from '../../agent/resize/pod.ts';
import {
  Annotations,
  ResizableResources,
  ResizeStatuses,
  type ResizeStatus,
} from '../../agent/resize/vocabulary.ts';
import type { QuantityList } from './args.ts';
import { CliError } from './errors.ts';

type WireChange = { requests?: QuantityList; limits?: QuantityList };
type WireRequest = Record<string, WireChange>;

const SETTLED = new Set<ResizeStatus>([ResizeStatuses.Completed, ResizeStatuses.Rejected]);

export function podRef(pod: PodLike): string {
  return `${pod.metadata?.namespace ?? ''}/${pod.metadata?.name ?? ''}`;
}

/** -c, or the pod's only container; with several and no -c, a sentence naming them. */
export function chooseContainer(pod: PodLike, wanted: string | undefined): string {
  const names = (pod.spec?.containers ?? []).map((c) => c.name);
  const list = names.join(', ');
  if (wanted !== undefined) {
    if (names.includes(wanted)) return wanted;
    const initial = [...(pod.spec?.initContainers ?? []), ...(pod.spec?.ephemeralContainers ?? [])];
    if (initial.some((c) => c.name === wanted)) {
      throw new CliError(
        `container "${wanted}" of pod ${podRef(pod)} is an init or ephemeral container; only regular containers (${list}) can be resized`,
      );
    }
    throw new CliError(`pod ${podRef(pod)} has no container "${wanted}"; its containers are: ${list}`);
  }
  if (names.length === 1) return names[0]!;
  if (names.length === 0) throw new CliError(`pod ${podRef(pod)} has no containers`);
  throw new CliError(
    `pod ${podRef(pod)} has ${names.length} containers (${list}); choose one with -c, e.g. -c ${names[0]}`,
  );
}

/** A still-pending earlier request: not yet answered Completed or Rejected by the agent. */
function pendingRequest(pod: PodLike): WireRequest | undefined {
  const annotations = pod.metadata?.annotations ?? {};
  const text = annotations[Annotations.request];
  if (text === undefined || !parseResizeRequest(text).ok) return undefined;
  const status = decodeStatus(annotations[Annotations.status]);
  if (status && status.observedRequest === requestHash(text) && SETTLED.has(status.resizeStatus)) {
    return undefined;
  }
  return JSON.parse(text) as WireRequest;
}

function stringValues(side: unknown): QuantityList {
  const out: QuantityList = {};
  if (!side || typeof side !== 'object') return out;
  for (const r of ResizableResources) {
    const v = (side as Record<string, unknown>)[r];
    if (typeof v === 'string' || typeof v === 'number') out[r] = String(v);
  }
  return out;
}

export interface ResizePlanInput {
  pod: PodLike;
  container: string;
  requests: QuantityList;
  limits: QuantityList;
  now: Date;
}

export interface ResizePlan {
  /** The request annotation's new value. */
  requestText: string;
  /** Its hash: the agent's status names it as `observedRequest` when it answers this request. */
  hash: string;
  /** Parts of a still-pending earlier request kept in the new one, for the user to see ("sidecar limits cpu=2"). */
  kept: string[];
  /**
   * Set when this exact request was already answered (Completed or Rejected): the agent does not judge the
   * same request twice, so writing it again would leave a `Proposed` nobody answers. Nothing is written.
   */
  alreadyAnswered: ResourceStatus | undefined;
  /** The merge patch (RFC 7386) for the pod; resourceVersion makes it fail rather than overwrite a newer pod. */
  patch: { metadata: { resourceVersion?: string; annotations: Record<string, string | null> } };
}

export function describeQuantities(list: QuantityList): string {
  return ResizableResources.filter((r) => list[r] !== undefined)
    .map((r) => `${r}=${list[r]}`)
    .join(',');
}

function describeChange(container: string, change: WireChange): string[] {
  const out: string[] = [];
  for (const side of ['requests', 'limits'] as const) {
    const text = describeQuantities(stringValues(change[side]));
    if (text) out.push(`${container} ${side} ${text}`);
  }
  return out;
}

export function planResize({ pod, container, requests, limits, now }: ResizePlanInput): ResizePlan {
  const pending = pendingRequest(pod);
  const request: WireRequest = {};
  const kept: string[] = [];
  // A request annotation is replaced whole; keep what an earlier, unanswered request still asks for, so
  // two people (or a person and the autoscaler) resizing different containers do not undo each other.
  for (const [name, change] of Object.entries(pending ?? {})) {
    if (name === container) continue;
    request[name] = change;
    kept.push(...describeChange(name, change));
  }
  const earlier = pending?.[container];
  const mine: WireChange = {};
  for (const [side, given] of [
    ['requests', requests],
    ['limits', limits],
  ] as const) {
    const before = stringValues(earlier?.[side]);
    const merged: QuantityList = { ...before, ...given };
    const keptHere = ResizableResources.filter((r) => before[r] !== undefined && given[r] === undefined);
    if (keptHere.length > 0) {
      kept.push(`${container} ${side} ${keptHere.map((r) => `${r}=${before[r]}`).join(',')}`);
    }
    if (Object.keys(merged).length > 0) mine[side] = merged;
  }
  request[container] = mine;

  const requestText = JSON.stringify(request);
  const hash = requestHash(requestText);
  const annotations = pod.metadata?.annotations ?? {};
  const previous = decodeStatus(annotations[Annotations.status]);
  const alreadyAnswered =
    previous && previous.observedRequest === hash && SETTLED.has(previous.resizeStatus)
      ? previous
      : undefined;

  const status: ResourceStatus = {
    resizeStatus: ResizeStatuses.Proposed,
    // The allocation does not change until the agent acts: keep what it last reported.
    allocatedResources: previous?.allocatedResources ?? [],
    observedRequest: hash,
    lastTransitionTime: now.toISOString(),
  };
  const metadata: ResizePlan['patch']['metadata'] = {
    annotations: {
      [Annotations.request]: requestText,
      [Annotations.status]: encodeStatus(status),
      // A person's request: drop a `source` left by the autoscaler, or the agent would credit it.
      [Annotations.source]: null,
    },
  };
  if (pod.metadata?.resourceVersion) metadata.resourceVersion = pod.metadata.resourceVersion;
  return { requestText, hash, kept, alreadyAnswered, patch: { metadata } };
}
