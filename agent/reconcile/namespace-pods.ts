// The namespace side of a decision: the namespace's rules, and its pods (on every node) as a ResourceQuota
// counts them, this node's from the agent's own view.
import type { NamespaceView } from '../resize/decide.ts';
import { statusAllocation } from '../resize/decide.ts';
import { isTerminal, podKey, type PodLike, type Resources } from '../resize/pod.ts';
import {
  effectiveUsage,
  maxUsage,
  projectedUsage,
  ZERO_USAGE,
  type NamespacePod,
  type PodUsage,
} from '../resize/quota.ts';
import { parseResizeRequest, requestHash } from '../resize/request.ts';
import { decodeStatus } from '../resize/status.ts';
import { Annotations, ResizeStatuses } from '../resize/vocabulary.ts';
import type { Clock } from '../util/backoff.ts';
import { agentView, type PodState } from './pod-state.ts';
import type { ReconcilerDeps } from './ports.ts';

export interface NamespacePods {
  namespaceView(namespace: string, pods?: NamespaceView['pods']): NamespaceView | undefined;
  listNamespace(namespace: string, st: PodState): Promise<PodLike[] | string>;
  namespacePods(namespace: string, listed: PodLike[], self: PodLike): NamespacePod[];
}

export function createNamespacePods(opts: {
  nodeName: string;
  cache: ReconcilerDeps['cache'];
  clock: Clock;
  namespaces: ReconcilerDeps['namespaces'];
  /** Read only: this node's resizes in flight count with their reservations. */
  states: ReadonlyMap<string, PodState>;
  allocationOf(pod: PodLike): Map<string, Resources> | undefined;
}): NamespacePods {
  const { nodeName, cache, clock, states, allocationOf } = opts;

  /** The namespace rules for decide; `pods` once listed. */
  function namespaceView(namespace: string, pods?: NamespaceView['pods']): NamespaceView | undefined {
    if (!opts.namespaces) return undefined;
    return { name: namespace, ...opts.namespaces.view(namespace), pods };
  }

  /** Every pod of the namespace on every node (a fresh list), or why it could not be listed. */
  async function listNamespace(namespace: string, st: PodState): Promise<PodLike[] | string> {
    try {
      return await opts.namespaces!.listPods(namespace, st.seen?.at ?? clock.now());
    } catch (err) {
      return `listing the namespace's pods failed: ${(err as Error)?.message ?? String(err)}`;
    }
  }

  /**
   * The namespace's other pods as a quota counts them: this node's from the agent's own view (checkpoint, its
   * own statuses, resizes in flight), other nodes' from their agents' statuses. Synchronous, and called right
   * before decide: no other resize on this node can reserve in between, so same-node resizes never race.
   */
  function namespacePods(namespace: string, listed: PodLike[], self: PodLike): NamespacePod[] {
    const out: NamespacePod[] = [];
    for (const p of listed) {
      if (isTerminal(p) || p.metadata?.uid === self.metadata?.uid) continue;
      const cached = p.spec?.nodeName === nodeName ? cache.get(namespace, p.metadata?.name ?? '') : undefined;
      const local = cached?.metadata?.uid === p.metadata?.uid ? cached : undefined;
      const lst = local ? states.get(podKey(local)) : undefined;
      const seen = local && lst ? agentView(local, lst) : (local ?? p);
      const allocation = local ? allocationOf(seen) : statusAllocation(p);
      let usage = effectiveUsage(seen, allocation);
      if (lst?.reservedUsage) usage = maxUsage(usage, lst.reservedUsage);
      out.push({ pod: seen, usage, projected: projection(seen, allocation, usage) });
    }
    return out;
  }

  return { namespaceView, listNamespace, namespacePods };
}

/** Where a pod will stand once its open request (if any) completes; nothing once it is being deleted. */
export function projection(
  p: PodLike,
  allocation: Map<string, Resources> | undefined,
  usage: PodUsage,
): PodUsage {
  if (p.metadata?.deletionTimestamp) return ZERO_USAGE;
  const text = p.metadata?.annotations?.[Annotations.request];
  if (text === undefined) return usage;
  const status = decodeStatus(p.metadata?.annotations?.[Annotations.status]);
  const answered =
    status?.observedRequest === requestHash(text) &&
    (status.resizeStatus === ResizeStatuses.Completed || status.resizeStatus === ResizeStatuses.Rejected);
  if (answered) return usage;
  const parsed = parseResizeRequest(text);
  return parsed.ok ? projectedUsage(p, allocation, parsed.value) : usage;
}
