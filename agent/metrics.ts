// resizelet's own metrics (names under `resizelet_`, documented in docs/metrics.md). The registry belongs to
// the agent instance, never prom-client's global one, so tests and several agents in one process never
// share counters. Counters and histograms are incremented by the engine as things happen; gauges that
// describe state are computed at scrape time by collectors registered by the HTTP endpoint.
import { Counter, Histogram, Registry } from 'prom-client';

export interface AgentMetrics {
  registry: Registry;
  resizeRequests: Counter<'status' | 'source'>;
  resizeDuration: Histogram<'stage'>;
  cgroupWrites: Counter<'level' | 'file'>;
  cgroupWriteErrors: Counter<'code'>;
  driftCorrections: Counter<'level'>;
  reconcileDuration: Histogram;
  statusPatchFailures: Counter;
  eventsDropped: Counter;
  oomScoreAdjFailures: Counter<'reason'>;
  informerRestarts: Counter;
  checkpointProblems: Counter;
  checkpointWriteSeconds: Histogram;
  systemdFallbacks: Counter<'reason'>;
  autoscaleDecisions: Counter<'resource' | 'kind' | 'direction' | 'trigger' | 'mode'>;
  autoscalePolicyInvalid: Counter;
  autoscaleSampleDuration: Histogram;
}

export function createAgentMetrics(registry: Registry = new Registry()): AgentMetrics {
  const registers = [registry];
  return {
    registry,
    resizeRequests: new Counter({
      name: 'resizelet_resize_requests_total',
      help: 'Resize requests answered, by the status they settled in (Completed, Rejected, Deferred) and who asked.',
      labelNames: ['status', 'source'] as const,
      registers,
    }),
    resizeDuration: new Histogram({
      name: 'resizelet_resize_duration_seconds',
      help: 'Time from seeing a request to its cgroups written (stage="cgroup") and to the Completed status acknowledged by the API server (stage="completed").',
      labelNames: ['stage'] as const,
      buckets: [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10],
      registers,
    }),
    cgroupWrites: new Counter({
      name: 'resizelet_cgroup_writes_total',
      help: 'cgroup files written (values that already matched are not written), by level (pod, container) and file.',
      labelNames: ['level', 'file'] as const,
      registers,
    }),
    cgroupWriteErrors: new Counter({
      name: 'resizelet_cgroup_write_errors_total',
      help: 'cgroup writes that failed, by error code (RESIZELET_ERR_CGROUP_BUSY, ..._INVALID, ..._PERMISSION, ...).',
      labelNames: ['code'] as const,
      registers,
    }),
    driftCorrections: new Counter({
      name: 'resizelet_drift_corrections_total',
      help: 'cgroup values found different from the allocation and put back (container restarts, kubelet or systemd resets, hand edits).',
      labelNames: ['level'] as const,
      registers,
    }),
    reconcileDuration: new Histogram({
      name: 'resizelet_reconcile_duration_seconds',
      help: 'Duration of one periodic drift check over every allocated pod on the node.',
      buckets: [0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5],
      registers,
    }),
    statusPatchFailures: new Counter({
      name: 'resizelet_status_patch_failures_total',
      help: 'Status annotation patches that failed and were retried.',
      registers,
    }),
    eventsDropped: new Counter({
      name: 'resizelet_events_dropped_total',
      help: 'Kubernetes Events given up on: the backlog was full (the API server could not keep up) or three tries failed.',
      registers,
    }),
    oomScoreAdjFailures: new Counter({
      name: 'resizelet_oom_score_adj_failures_total',
      help: 'oom_score_adj updates the kernel refused (lowering needs CAP_SYS_RESOURCE); the resize itself still completes.',
      labelNames: ['reason'] as const,
      registers,
    }),
    informerRestarts: new Counter({
      name: 'resizelet_informer_restarts_total',
      help: 'Times the pod informer was restarted after an error or a silent watch.',
      registers,
    }),
    checkpointProblems: new Counter({
      name: 'resizelet_checkpoint_problems_total',
      help: 'Checkpoint copies found corrupt or unreadable at start (rebuilt from the other copy, or from status annotations and live cgroups), and failed writes (once per write and copy).',
      registers,
    }),
    checkpointWriteSeconds: new Histogram({
      name: 'resizelet_checkpoint_write_seconds',
      help: 'Duration of one checkpoint write, by copy: disk (temp file, fsync, rename, fsync of the directory) or run (memory-backed /run; temp file and rename). Completed statuses wait for the run copy, or for the disk when there is none; a slow node disk shows in the disk copy first.',
      labelNames: ['copy'],
      buckets: [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5],
      registers,
    }),
    systemdFallbacks: new Counter({
      name: 'resizelet_systemd_fallbacks_total',
      help: 'Applies on a systemd-driver node whose values systemd could not be given (reason: unreachable, timeout, refused): written to the cgroup files only, so a daemon-reload would undo them until the reconcile loop re-applies them through systemd.',
      labelNames: ['reason'] as const,
      registers,
    }),
    autoscaleDecisions: new Counter({
      name: 'resizelet_autoscale_decisions_total',
      help: 'Values the autoscaler changed (mode="Auto": requests written) or recommended (mode="Recommend"), by resource, kind (request, limit), direction (up, down) and trigger (cpu-utilization, cpu-throttling, memory-watermark, oom-kill, quiet).',
      labelNames: ['resource', 'kind', 'direction', 'trigger', 'mode'] as const,
      registers,
    }),
    autoscalePolicyInvalid: new Counter({
      name: 'resizelet_autoscale_policy_invalid_total',
      help: 'Autoscale policy annotations refused (each distinct text once per pod; an AutoscalePolicyInvalid Event says why).',
      registers,
    }),
    autoscaleSampleDuration: new Histogram({
      name: 'resizelet_autoscale_sample_duration_seconds',
      help: "Duration of one autoscaler pass: reading every autoscaled container's cgroups and deciding.",
      buckets: [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1],
      registers,
    }),
  };
}
