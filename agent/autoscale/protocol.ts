// How the autoscaler speaks the resize protocol: the request text a decision becomes, and when it may write
// one at all. Pure.
import { requestHash } from '../resize/request.ts';
import type { PodLike, Resources } from '../resize/pod.ts';
import { formatBytes, formatMillicores } from '../resize/quantity.ts';
import { decodeStatus, toWireAllocation, type WireAllocation } from '../resize/status.ts';
import { Annotations, ResizeStatuses } from '../resize/vocabulary.ts';
import type { ContainerDecision } from './decide.ts';
import type { AutoscalePolicy } from './policy.ts';

/** The value of `resizelet.io/resize-source` on requests the autoscaler writes. */
export const AUTOSCALER_SOURCE = 'autoscaler';

/** How long a write of ours may take to show in the pod cache before we stop waiting for it. */
export const WRITE_VISIBLE_MS = 10_000;

export interface LastWrite {
  text: string;
  at: number;
  /** The pod cache has shown this text since it was written. */
  seen: boolean;
}

export type Gate = { open: true } | { open: false; why: string };

/**
 * Whether the autoscaler may write a request now. It never fights a request in flight: whoever wrote the
 * current request (a person, the CLI, or the autoscaler itself), the autoscaler waits until the agent has
 * answered it with a settled status (Completed or Rejected) for exactly that text. One exception: its own
 * request left Deferred (the node has no room now) may be replaced by a newer decision, as any Deferred
 * request may. Its own write not yet visible in the pod cache is waited for too (up to WRITE_VISIBLE_MS).
 */
export function requestGate(pod: PodLike, last: LastWrite | undefined, now: number): Gate {
  const annotations = pod.metadata?.annotations ?? {};
  const text = annotations[Annotations.request];
  if (last && !last.seen) {
    if (text === last.text) last.seen = true;
    else if (now - last.at < WRITE_VISIBLE_MS) return { open: false, why: 'our request is not visible yet' };
  }
  if (text === undefined) return { open: true };
  const status = decodeStatus(annotations[Annotations.status]);
  const answered = status !== undefined && status.observedRequest === requestHash(text);
  if (!answered) return { open: false, why: 'the current request is not answered yet' };
  const s = status.resizeStatus;
  if (s === ResizeStatuses.Completed || s === ResizeStatuses.Rejected) return { open: true };
  if (s === ResizeStatuses.Deferred && last?.text === text) return { open: true };
  return { open: false, why: `the current request is ${s}` };
}

function sideText(v: Resources['requests']): Record<string, string> | undefined {
  const out: Record<string, string> = {};
  if (v.cpu !== undefined) out.cpu = formatMillicores(v.cpu);
  if (v.memory !== undefined) out.memory = formatBytes(v.memory);
  return Object.keys(out).length > 0 ? out : undefined;
}

/** The request annotation for decisions: JSON keyed by container, with only what changes (request.ts reads it). */
export function requestText(decisions: ContainerDecision[]): string {
  const body: Record<string, { requests?: Record<string, string>; limits?: Record<string, string> }> = {};
  for (const d of decisions) {
    const requests = sideText(d.change.requests);
    const limits = sideText(d.change.limits);
    body[d.container] = { ...(requests && { requests }), ...(limits && { limits }) };
  }
  return JSON.stringify(body);
}

/** A recommendation as the status carries it: the container's full resources after the decision. */
export function recommendationOf(d: ContainerDecision): WireAllocation {
  return toWireAllocation(d.container, d.resources);
}

/** Names in the policy that are not regular containers of the pod: a policy that cannot mean what it says. */
export function unknownContainers(policy: AutoscalePolicy, pod: PodLike): string[] {
  const names = new Set((pod.spec?.containers ?? []).map((c) => c.name));
  return [...policy.containers.keys()].filter((n) => !names.has(n));
}

interface StatusWithLastState {
  name: string;
  containerID?: string;
  restartCount?: number;
  lastState?: { terminated?: { reason?: string; containerID?: string } };
}

/**
 * Whether the container's previous instance was OOM-killed. When the kernel kills a container's main
 * process the container ends and its cgroup (and the cgroup's oom_kill counter) goes with it; the kubelet
 * records the reason in lastState, which is where the autoscaler learns of it.
 */
export function previousInstanceOomKilled(pod: PodLike, container: string): boolean {
  const statuses = (pod.status?.containerStatuses ?? []) as StatusWithLastState[];
  const s = statuses.find((c) => c.name === container);
  return s?.lastState?.terminated?.reason === 'OOMKilled';
}
