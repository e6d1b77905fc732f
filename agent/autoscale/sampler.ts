// The autoscaler's I/O loop: every interval, read the cgroups of the containers of pods that carry an
// autoscale policy, feed the pure decisions (decide.ts), and carry a decision out through the ordinary
// resize path: in Auto mode one merge patch writes the request annotation and marks it as the autoscaler's;
// in Recommend mode nothing is written to the request: the recommendation is handed to the reconciler,
// which puts it in the status it publishes, and to a scrape-time metric.
//
// Reads are synchronous on kept descriptors (cgroup-stats.ts: microseconds per file, cgroupfs never waits
// on a disk) in batches between event-loop yields, so a node of 250 autoscaled pods never stalls the loop
// for more than a batch.
import { Gauge } from 'prom-client';
import type { CgroupLayout } from '../../cgroup/types.ts';
import { createStatsReader, type SyncFs } from '../cgroup-stats.ts';
import type { KubePort, PodEvent } from '../kube/api.ts';
import type { AgentMetrics } from '../metrics.ts';
import { locate } from '../reconcile/actuator.ts';
import { currentResources, statusAllocation } from '../resize/decide.ts';
import {
  isTerminal,
  podKey,
  qosClassOf,
  sameResources,
  specResources,
  type PodLike,
  type QosClass,
  type Resources,
} from '../resize/pod.ts';
import type { WireAllocation } from '../resize/status.ts';
import { Annotations, EventReasons } from '../resize/vocabulary.ts';
import type { Clock } from '../util/backoff.ts';
import {
  acted,
  decideContainer,
  newTracker,
  observe,
  type ContainerDecision,
  type Sample,
  type Tracker,
} from './decide.ts';
import { parseAutoscalePolicy, policyFor, type AutoscaleMode, type AutoscalePolicy } from './policy.ts';
import {
  AUTOSCALER_SOURCE,
  previousInstanceOomKilled,
  recommendationOf,
  requestGate,
  requestText,
  unknownContainers,
  type LastWrite,
} from './protocol.ts';

export interface AutoscalerLog {
  info(obj: Record<string, unknown>, msg: string): void;
  warn(obj: Record<string, unknown>, msg: string): void;
  debug(obj: Record<string, unknown>, msg: string): void;
}

export interface AutoscalerDeps {
  nodeName: string;
  layout: CgroupLayout;
  /** How cgroup files are read (node:fs in production). */
  files: SyncFs;
  /** The pods on this node (the informer's cache). */
  pods(): readonly PodLike[];
  kube: Pick<KubePort, 'patchPodAnnotations'>;
  /** Events go through the status publisher (retried, never blocking). */
  event(pod: PodLike, event: PodEvent): void;
  metrics: AgentMetrics;
  log: AutoscalerLog;
  clock: Clock;
  intervalMs: number;
  /** A pod's recommendation changed: the reconciler republishes its status (it owns that annotation). */
  onRecommendation(key: string): void;
  /** Containers read between two event-loop yields. */
  batch?: number;
}

export interface Autoscaler {
  start(): void;
  stop(): Promise<void>;
  /** One pass over the node (the loop calls it every interval; tests call it directly). */
  tick(): Promise<void>;
  /** Recommend mode: what the status of this pod should carry, in container order. */
  recommendation(key: string): WireAllocation[] | undefined;
}

interface PodState {
  uid: string;
  policyText?: string;
  policy?: AutoscalePolicy;
  /** The invalid policy text already reported (an Event once per text). */
  reported?: string;
  trackers: Map<string, Tracker>;
  lastWrite?: LastWrite;
  writing: boolean;
  /** Recommend mode, per container name. */
  recommendations: Map<string, Recommendation>;
  containerOrder: string[];
  seen: number;
}

type Parsed = ReturnType<typeof parseAutoscalePolicy>;

interface Recommendation {
  wire: WireAllocation;
  resources: Resources;
}

const shouldScale = (pod: PodLike, nodeName: string): boolean =>
  pod.metadata?.annotations?.[Annotations.autoscale] !== undefined &&
  pod.metadata.annotations[Annotations.disabled] !== 'true' &&
  pod.spec?.nodeName === nodeName &&
  pod.status?.phase === 'Running' &&
  !isTerminal(pod) &&
  !pod.metadata.deletionTimestamp;

function triggerFor(d: ContainerDecision, resource: 'cpu' | 'memory'): string {
  const t = d.triggers.find((x) =>
    resource === 'cpu' ? x.startsWith('cpu-') : x.startsWith('memory-') || x === 'oom-kill',
  );
  return t ?? 'quiet';
}

export function createAutoscaler(deps: AutoscalerDeps): Autoscaler {
  const { nodeName, layout, clock, log, metrics } = deps;
  const stats = createStatsReader({ fs: deps.files, layout });
  const states = new Map<string, PodState>();
  const parsedByText = new Map<string, Parsed>();
  const batch = deps.batch ?? 32;
  const abort = new AbortController();
  let loop: Promise<void> | undefined;
  let pass = 0;

  // Recommend mode's gauge, computed when scraped (STYLE habit 7): series of pods that left vanish.
  new Gauge({
    name: 'resizelet_autoscale_recommendation',
    help: 'What the autoscaler recommends in Recommend mode (cores for cpu, bytes for memory), per container, resource and kind (request, limit).',
    labelNames: ['namespace', 'pod', 'container', 'resource', 'kind'] as const,
    registers: [metrics.registry],
    collect() {
      this.reset();
      for (const [key, st] of states) {
        const [namespace = '', pod = ''] = key.split('/');
        for (const [container, r] of st.recommendations) {
          for (const [kind, side] of [
            ['request', r.resources.requests],
            ['limit', r.resources.limits],
          ] as const) {
            const labels = { namespace, pod, container, kind };
            if (side.cpu !== undefined) this.set({ ...labels, resource: 'cpu' }, side.cpu / 1000);
            if (side.memory !== undefined) this.set({ ...labels, resource: 'memory' }, Number(side.memory));
          }
        }
      }
    },
  });

  function parsed(text: string): Parsed {
    let p = parsedByText.get(text);
    if (!p) {
      p = parseAutoscalePolicy(text);
      // Policies are few and shared by many pods (one per Deployment); a bound keeps hostile churn cheap.
      if (parsedByText.size > 1024) parsedByText.clear();
      parsedByText.set(text, p);
    }
    return p;
  }

  function stateOf(key: string, uid: string): PodState {
    let st = states.get(key);
    if (!st || st.uid !== uid) {
      st = {
        uid,
        trackers: new Map(),
        writing: false,
        recommendations: new Map(),
        containerOrder: [],
        seen: 0,
      };
      states.set(key, st);
    }
    st.seen = pass;
    return st;
  }

  function setRecommendations(key: string, st: PodState, next: Map<string, Recommendation>): void {
    const wires = (m: Map<string, Recommendation>) => JSON.stringify([...m].map(([, r]) => r.wire));
    const changed = wires(next) !== wires(st.recommendations);
    st.recommendations = next;
    if (changed) deps.onRecommendation(key);
  }

  /** A policy the pod owner must fix: reported once per text, and nothing is autoscaled meanwhile. */
  function refuse(pod: PodLike, key: string, st: PodState, text: string, message: string): void {
    st.trackers.clear();
    setRecommendations(key, st, new Map());
    if (st.reported === text) return;
    st.reported = text;
    metrics.autoscalePolicyInvalid.inc();
    log.warn({ pod: key, reason: message }, 'autoscale policy refused');
    deps.event(pod, {
      reason: EventReasons.AutoscalePolicyInvalid,
      type: 'Warning',
      message: `${Annotations.autoscale}: ${message}; the pod is not autoscaled until the policy is fixed`,
    });
  }

  /** Reads one container's cgroup; undefined when it cannot be read now (not running, gone). */
  function sample(
    pod: PodLike,
    st: PodState,
    name: string,
    now: number,
  ): { t: Tracker; s: Sample } | undefined {
    const where = locate(layout, pod, [name]);
    if ('error' in where) return undefined;
    const ctr = where.containers[0]!;
    let t = st.trackers.get(name);
    if (!t || t.containerId !== ctr.id) {
      const restarted = t !== undefined;
      t = newTracker(ctr.id);
      // The old instance's cgroup (and its oom_kill counter) is gone; the kubelet kept the reason.
      if (restarted && previousInstanceOomKilled(pod, name)) t.oomPending = true;
      st.trackers.set(name, t);
    }
    let read;
    try {
      read = stats.read(ctr.path);
    } catch (err) {
      log.debug({ pod: podKey(pod), container: name, err: (err as Error).message }, 'cgroup not readable');
      return undefined;
    }
    if (!read) return undefined;
    return {
      t,
      s: {
        at: now,
        cpuUsageNs: read.cpuUsageNs,
        nrPeriods: read.cfs?.periods ?? null,
        nrThrottled: read.cfs?.throttledPeriods ?? null,
        workingSetBytes: read.workingSetBytes,
        oomKills: read.oomKills,
      },
    };
  }

  async function write(pod: PodLike, key: string, st: PodState, decisions: ContainerDecision[]) {
    const text = requestText(decisions);
    const now = clock.now();
    const current = pod.metadata?.annotations?.[Annotations.request];
    const done = () => {
      for (const d of decisions) {
        const t = st.trackers.get(d.container);
        if (t) acted(t, d, clock.now());
        count(d, 'Auto');
      }
    };
    // The same text again would be the same request, already answered: nothing to write.
    if (text === current) {
      for (const d of decisions) {
        const t = st.trackers.get(d.container);
        if (t) acted(t, d, now);
      }
      return;
    }
    st.writing = true;
    st.lastWrite = { text, at: now, seen: false };
    try {
      await deps.kube.patchPodAnnotations(pod.metadata?.namespace ?? '', pod.metadata?.name ?? '', {
        [Annotations.request]: text,
        [Annotations.source]: AUTOSCALER_SOURCE,
      });
      done();
      for (const d of decisions) {
        log.info({ pod: key, container: d.container, request: text }, `autoscale: ${d.reason}`);
        deps.event(pod, {
          reason: EventReasons.AutoscaleDecision,
          type: 'Normal',
          message: `autoscaler: ${d.reason}`,
        });
      }
    } catch (err) {
      st.lastWrite = undefined;
      log.warn({ pod: key, err: (err as Error).message }, 'autoscale request not written; will decide again');
    } finally {
      st.writing = false;
    }
  }

  function count(d: ContainerDecision, mode: AutoscaleMode): void {
    for (const c of d.changes) {
      metrics.autoscaleDecisions.inc({
        resource: c.resource,
        kind: c.kind,
        direction: d.direction,
        trigger: triggerFor(d, c.resource),
        mode,
      });
    }
  }

  function recommend(pod: PodLike, key: string, st: PodState, decisions: ContainerDecision[], now: number) {
    const next = new Map(st.recommendations);
    for (const d of decisions) {
      const t = st.trackers.get(d.container);
      if (t) acted(t, d, now);
      const rec = { wire: recommendationOf(d), resources: d.resources };
      if (JSON.stringify(next.get(d.container)?.wire) === JSON.stringify(rec.wire)) continue;
      next.set(d.container, rec);
      count(d, 'Recommend');
      log.info({ pod: key, container: d.container }, `autoscale recommendation: ${d.reason}`);
      deps.event(pod, {
        reason: EventReasons.AutoscaleDecision,
        type: 'Normal',
        message: `autoscaler recommends (Recommend mode, nothing changed): ${d.reason}`,
      });
    }
    setRecommendations(key, st, next);
  }

  /** One pod: sample its autoscaled containers, then decide and act if the protocol lets us. */
  function visit(pod: PodLike, now: number): number {
    const key = podKey(pod);
    const st = stateOf(key, pod.metadata?.uid ?? '');
    const text = pod.metadata!.annotations![Annotations.autoscale]!;
    const p = parsed(text);
    if (!p.ok) {
      refuse(pod, key, st, text, p.message);
      return 0;
    }
    const unknown = unknownContainers(p.value, pod);
    if (unknown.length > 0) {
      const names = unknown.map((n) => JSON.stringify(n)).join(', ');
      const has = (pod.spec?.containers ?? []).map((c) => JSON.stringify(c.name)).join(', ');
      refuse(pod, key, st, text, `the policy names ${names}, but the pod's containers are ${has}`);
      return 0;
    }
    st.reported = undefined;
    const containers = pod.spec?.containers ?? [];
    st.containerOrder = containers.map((c) => c.name);
    const holding = currentResources(pod, statusAllocation(pod));
    const qos = (pod.status?.qosClass ?? qosClassOf(containers.map(specResources))) as QosClass;
    const gate = requestGate(pod, st.lastWrite, now);
    const auto: ContainerDecision[] = [];
    const recommended: ContainerDecision[] = [];
    const keepRecs = new Map<string, Recommendation>();
    let read = 0;
    for (const [i, c] of containers.entries()) {
      const policy = policyFor(p.value, c.name);
      if (!policy) {
        st.trackers.delete(c.name);
        continue;
      }
      const got = sample(pod, st, c.name, now);
      if (!got) continue;
      const { t } = got;
      read++;
      const have = holding[i]!.resources;
      observe(t, got.s, have, policy);
      const prev = st.recommendations.get(c.name);
      // A recommendation someone has since applied (or a container no longer in Recommend mode) is dropped.
      if (prev && policy.mode === 'Recommend' && !sameResources(have, prev.resources))
        keepRecs.set(c.name, prev);
      if (!gate.open || st.writing) continue;
      const r = decideContainer(t, {
        container: c.name,
        policy,
        holding: have,
        spec: specResources(c),
        qos,
        now,
      });
      if (r.capped) log.debug({ pod: key, container: c.name, capped: r.capped }, 'autoscale: at max');
      if (!r.decision) continue;
      (policy.mode === 'Auto' ? auto : recommended).push(r.decision);
    }
    if (keepRecs.size !== st.recommendations.size) setRecommendations(key, st, keepRecs);
    if (auto.length > 0) void write(pod, key, st, auto);
    if (recommended.length > 0) recommend(pod, key, st, recommended, now);
    return read;
  }

  async function tick(): Promise<void> {
    const end = metrics.autoscaleSampleDuration.startTimer();
    pass++;
    let sinceYield = 0;
    for (const pod of deps.pods()) {
      if (abort.signal.aborted) break;
      if (!shouldScale(pod, nodeName)) continue;
      try {
        sinceYield += visit(pod, clock.now());
      } catch (err) {
        log.warn({ pod: podKey(pod), err: (err as Error).message }, 'autoscale pass failed for pod');
      }
      if (sinceYield >= batch) {
        sinceYield = 0;
        await new Promise<void>((r) => setImmediate(r));
      }
    }
    for (const [key, st] of states) {
      if (st.seen === pass) continue;
      states.delete(key);
      if (st.recommendations.size > 0) deps.onRecommendation(key);
    }
    stats.sweep();
    end();
  }

  return {
    tick,
    start() {
      if (loop || deps.intervalMs <= 0) return;
      loop = (async () => {
        while (!abort.signal.aborted) {
          const started = clock.now();
          try {
            await tick();
          } catch (err) {
            log.warn({ err: (err as Error).message }, 'autoscale pass failed');
          }
          await clock.sleep(Math.max(0, deps.intervalMs - (clock.now() - started)), abort.signal);
        }
      })();
    },
    async stop() {
      abort.abort();
      await loop;
      stats.close();
    },
    recommendation(key) {
      const st = states.get(key);
      if (!st || st.recommendations.size === 0) return undefined;
      return st.containerOrder.flatMap((n) => {
        const r = st.recommendations.get(n);
        return r ? [r.wire] : [];
      });
    },
  };
}
