// What the reconciler is given (its ports, wired by the composition root) and the few operations on
// per-pod state that its parts share with it. Types only: the parts take what they need explicitly.
import type { PodEvent } from '../kube/api.ts';
import type { NamespaceSnapshot } from '../kube/namespace-state.ts';
import type { AgentMetrics } from '../metrics.ts';
import type { RequestTotals } from '../resize/admission.ts';
import type { PodLike } from '../resize/pod.ts';
import type { ResourceStatus, WireAllocation } from '../resize/status.ts';
import type { DesiredContainer } from '../resize/validate.ts';
import type { Clock } from '../util/backoff.ts';
import type { Actuation, Actuator } from './actuator.ts';
import type { Checkpoint, CheckpointEntry } from './checkpoint.ts';
import type { PodState } from './pod-state.ts';
import type { StatusPublisher } from './publisher.ts';

export interface ReconcilerLog {
  info(obj: Record<string, unknown>, msg: string): void;
  warn(obj: Record<string, unknown>, msg: string): void;
  error(obj: Record<string, unknown>, msg: string): void;
  debug(obj: Record<string, unknown>, msg: string): void;
}

export interface NodeState {
  allocatable: RequestTotals | undefined;
  memoryCapacityBytes: bigint | undefined;
}

export interface ReconcilerDeps {
  nodeName: string;
  cache: { get(namespace: string, name: string): PodLike | undefined; list(): readonly PodLike[] };
  actuator: Actuator;
  checkpoint: Checkpoint;
  publisher: StatusPublisher;
  metrics: AgentMetrics;
  log: ReconcilerLog;
  clock: Clock;
  node(): NodeState;
  /** Re-run a key later (Deferred retries); the composition root wires this to the queue. */
  enqueue(key: string): void;
  deferredRetryMs: number;
  /** Instrumentation for benchmarks: each resize's latency per stage, in milliseconds. */
  onResizeTiming?: (t: { key: string; stage: 'cgroup' | 'completed'; ms: number }) => void;
  /** The namespace rules (opt-out label, LimitRanges, ResourceQuotas); unset: none apply. */
  namespaces?: {
    view(namespace: string): NamespaceSnapshot;
    /** Every pod of the namespace on every node, from a list that began at or after `notBefore`. */
    listPods(namespace: string, notBefore: number): Promise<PodLike[]>;
  };
  /** `--namespaces`: only pods of these namespaces are resized; unset: every namespace. */
  inScope?(namespace: string): boolean;
  /**
   * Reads the live cgroups: whether the pod holds this allocation now. Only with it is an allocation adopted
   * from a status annotation the checkpoint does not know (the annotation is writable by pod owners).
   */
  verify?(pod: PodLike, desired: DesiredContainer[]): Promise<'holds' | 'differs' | 'unknown'>;
  /** How long a quota-checked resize waits for the API server to acknowledge its reservation. */
  reserveTimeoutMs?: number;
  /**
   * The autoscaler's recommendation for a pod (Recommend mode), carried in every status this reconciler
   * publishes for it; the autoscaler enqueues the pod when it changes. This agent is the status's only writer.
   */
  recommendation?(key: string): WireAllocation[] | undefined;
}

/** The reconciler's operations on per-pod state that the resize steps (and allocation adoption) share. */
export interface PodOps {
  /** Publish a status (only when its text changed; `onAck` once the API server stored it) and Events. */
  publish(pod: PodLike, st: PodState, status: ResourceStatus, events: PodEvent[], onAck?: () => void): void;
  /** Deferred: the key is looked at again after `deferredRetryMs`, and whenever room frees on the node. */
  scheduleRetry(key: string, st: PodState): void;
  recordCheckpoint(
    pod: PodLike,
    desired: DesiredContainer[],
    patch: Partial<CheckpointEntry>,
  ): CheckpointEntry;
  countWrites(a: Actuation, drift: boolean): void;
  /** Keys whose request waits (Deferred). */
  deferred: Set<string>;
  /** Whether `st` is still the key's state (false once the pod was forgotten). */
  isCurrent(key: string, st: PodState): boolean;
}
