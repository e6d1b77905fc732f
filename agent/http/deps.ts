// What the endpoint needs from the agent, as one options object (STYLE habit 4: every port injected).
import type { CgroupLayout } from '../../cgroup/types.ts';
import type { SyncFs } from '../cgroup-stats.ts';
import type { AgentMetrics } from '../metrics.ts';
import type { NodeFactsSource } from '../node-facts.ts';
import type { PodView } from '../reconcile/reconciler.ts';
import type { PodLike } from '../resize/pod.ts';

/** What the endpoint needs from the agent; tests and the bench hand it plain values. */
export interface HttpDeps {
  nodeName: string;
  /** undefined: cgroup detection failed; /readyz says so and no container_* series are served. */
  layout: CgroupLayout | undefined;
  /** How cgroup files are read: node:fs in production (`nodeSyncFs`), a memfs volume in tests. */
  files: SyncFs;
  /** The pods on this node (the informer's cache). */
  pods(): readonly PodLike[];
  /** The agent's allocation and last status per pod (the reconciler's view). */
  views(): readonly PodView[];
  /** The engine's counters and histograms, rendered with the scrape-time families. */
  metrics: AgentMetrics;
  informer: { readonly synced: boolean; readonly lastEventAt: number };
  /** Wall clock in ms (informer event ages). */
  now?: () => number;
  nodeFacts?: NodeFactsSource;
  /** prom-client's process_* and nodejs_* metrics; off in tests that build many apps. Default on. */
  processMetrics?: boolean;
  /** The pause image, for the sandbox's `image` label (the kubelet's --pod-infra-container-image). */
  sandboxImage?: string;
  /** See cgroup-stats.ts. */
  maxOpenFiles?: number;
}
