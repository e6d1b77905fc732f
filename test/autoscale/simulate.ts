// A container in a box for the pure decision tests: its demand over time, the kernel's accounting of it
// under the current limits (CPU capped by the quota, CFS periods and throttling, OOM kills when the working
// set would exceed the memory limit), and the autoscaler applying its own decisions (Auto mode) after a
// configurable delay, as the resize path would.
import {
  acted,
  decideContainer,
  newTracker,
  observe,
  type ContainerDecision,
  type Sample,
} from '../../agent/autoscale/decide.ts';
import type { ContainerPolicy } from '../../agent/autoscale/policy.ts';
import type { QosClass, Resources } from '../../agent/resize/pod.ts';

export interface Demand {
  cpuMilli: number;
  workingSet: number;
}

export interface SimOptions {
  policy: ContainerPolicy;
  start: Resources;
  spec?: Resources;
  qos?: QosClass;
  demand: (atMs: number) => Demand;
  durationMs: number;
  stepMs?: number;
  /** Time from a decision to the new values being held (request written, judged, applied). */
  applyDelayMs?: number;
}

export interface SimResult {
  decisions: Array<{ at: number; decision: ContainerDecision }>;
  final: Resources;
  oomKills: number;
  /** Direction reversals per resource and kind (up then down, or down then up), counted after the first. */
  flaps: number;
}

export function simulate(o: SimOptions): SimResult {
  const step = o.stepMs ?? 500;
  const t = newTracker('c1');
  let holding: Resources = { requests: { ...o.start.requests }, limits: { ...o.start.limits } };
  let pending: { at: number; resources: Resources } | undefined;
  const decisions: SimResult['decisions'] = [];
  let cpuNs = 0;
  let periods = 0;
  let throttled = 0;
  let oomKills = 0;
  for (let at = 0; at <= o.durationMs; at += step) {
    if (pending && at >= pending.at) {
      holding = pending.resources;
      pending = undefined;
    }
    const d = o.demand(at);
    const limit = holding.limits.cpu;
    const used = limit === undefined ? d.cpuMilli : Math.min(d.cpuMilli, limit);
    cpuNs += used * step * 1_000;
    if (limit !== undefined && d.cpuMilli > 0) {
      periods += step / 100;
      if (d.cpuMilli > limit) throttled += step / 100;
    }
    const memLimit = holding.limits.memory;
    let ws = d.workingSet;
    if (memLimit !== undefined && ws > Number(memLimit)) {
      oomKills++;
      ws = Number(memLimit) / 2;
    }
    const s: Sample = {
      at,
      cpuUsageNs: cpuNs,
      nrPeriods: limit === undefined ? null : periods,
      nrThrottled: limit === undefined ? null : throttled,
      workingSetBytes: ws,
      oomKills,
    };
    observe(t, s, holding, o.policy);
    // As the sampler: no new decision while one is in flight.
    if (pending) continue;
    const r = decideContainer(t, {
      container: 'app',
      policy: o.policy,
      holding,
      spec: o.spec ?? o.start,
      qos: o.qos ?? 'Burstable',
      now: at,
    });
    if (!r.decision) continue;
    decisions.push({ at, decision: r.decision });
    acted(t, r.decision, at);
    pending = { at: at + (o.applyDelayMs ?? 0), resources: r.decision.resources };
  }
  if (pending) holding = pending.resources;
  return { decisions, final: holding, oomKills, flaps: countFlaps(decisions.map((d) => d.decision)) };
}

export function countFlaps(decisions: ContainerDecision[]): number {
  const last = new Map<string, 'up' | 'down'>();
  const reversals = new Map<string, number>();
  for (const d of decisions) {
    for (const c of d.changes) {
      const key = `${c.resource}/${c.kind}`;
      const dir = c.to > c.from ? 'up' : 'down';
      const prev = last.get(key);
      if (prev && prev !== dir) reversals.set(key, (reversals.get(key) ?? 0) + 1);
      last.set(key, dir);
    }
  }
  // One reversal is a correction (a limit raised past the need by doubling, then brought down); more is a flap.
  let flaps = 0;
  for (const n of reversals.values()) flaps += Math.max(0, n - 1);
  return flaps;
}
