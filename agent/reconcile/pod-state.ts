// What the agent keeps per pod between looks, and the pod as seen through it. Pure: no ports.
import type { RequestTotals } from '../resize/admission.ts';
import type { PodLike } from '../resize/pod.ts';
import type { PodUsage } from '../resize/quota.ts';
import { Annotations } from '../resize/vocabulary.ts';

export interface PodState {
  uid: string;
  /** The status text this agent last published: the agent is its only writer, so it beats a stale cache. */
  published?: string;
  containerIds: Record<string, string>;
  /** Requests accepted but not yet applied: counted by admission of other pods. */
  reserved?: RequestTotals;
  /** The same, as a namespace quota counts it. */
  reservedUsage?: PodUsage;
  /** Set once this agent process has judged the pod (crash recovery runs on the first look only). */
  looked?: boolean;
  /** A status annotation whose allocation the live cgroups did not hold: never adopted. */
  untrusted?: string;
  /** Node admission totals of `published`, computed once per text. */
  publishedTotals?: { text: string; totals: RequestTotals };
  /** When the watch first delivered the current request (for resize latency). */
  seen?: { hash: string; at: number };
  retryTimer?: NodeJS.Timeout;
  /** A RestartContainer resize waiting for the kubelet to restart these containers (their old IDs). */
  pendingRestart?: {
    hash: string;
    ids: Record<string, string>;
    deadline: number;
    /** The node's allocatable when accepted: if it changes before the restart, the request is judged again. */
    allocatable?: RequestTotals;
  };
  /** The request whose containers were already restarted: apply it without restarting again. */
  restartedFor?: string;
  /** What the last look at the pod saw (see `lookKey`): the same again from the watch needs no look. */
  lookedAt?: string;
}

/**
 * Everything of a pod a look depends on, except a status annotation that is this agent's own last text: the
 * watch echoes every status patch back, and judging that echo again (admission over every pod of the node)
 * doubled the work of each resize. Anything else that changed (the request, a container restart, a forged
 * status, deletion) makes the key differ. Changes from outside the pod (the node, a namespace's rules, the
 * autoscaler, retries) enqueue the pod themselves and never ask here.
 */
export function lookKey(pod: PodLike, ownStatus: string | undefined): string {
  const annotations = pod.metadata?.annotations;
  const status = annotations?.[Annotations.status];
  return JSON.stringify([
    pod.metadata?.uid,
    pod.metadata?.deletionTimestamp,
    pod.metadata?.labels,
    status !== undefined && status === ownStatus
      ? { ...annotations, [Annotations.status]: null }
      : annotations,
    pod.spec?.nodeName,
    pod.spec?.containers?.map((c) => [c.name, c.resources]),
    pod.status?.phase,
    pod.status?.qosClass,
    pod.status?.containerStatuses?.map((c) => [c.name, c.containerID, c.state?.running !== undefined]),
  ]);
}

/** The pod as the agent sees it: our own last published status wins over a stale cache. */
export function agentView(pod: PodLike, st: PodState): PodLike {
  if (st.published === undefined) return pod;
  return {
    ...pod,
    metadata: {
      ...pod.metadata,
      annotations: { ...pod.metadata?.annotations, [Annotations.status]: st.published },
    },
  };
}

export function withoutStatus(pod: PodLike): PodLike {
  const annotations = { ...pod.metadata?.annotations };
  delete annotations[Annotations.status];
  return { ...pod, metadata: { ...pod.metadata, annotations } };
}

export function runningIds(pod: PodLike): Record<string, string> {
  const out: Record<string, string> = {};
  for (const s of pod.status?.containerStatuses ?? []) {
    if (s.containerID && s.state?.running) out[s.name] = s.containerID;
  }
  return out;
}

export function sameIds(a: Record<string, string>, b: Record<string, string>): boolean {
  const ka = Object.keys(a);
  return ka.length === Object.keys(b).length && ka.every((k) => a[k] === b[k]);
}
