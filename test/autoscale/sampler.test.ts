// The sampler against a memfs cgroup tree, a recording API port and a hand-driven clock: what it writes,
// when it holds back, what it recommends and how it reports a bad policy. The kernel is played by writing
// the counters between passes.
import { createHash, randomUUID } from 'node:crypto';
import { Volume } from 'memfs';
import { beforeEach, describe, expect, it } from 'vitest';
import { createAutoscaler, type Autoscaler } from '../../agent/autoscale/sampler.ts';
import type { PodEvent } from '../../agent/kube/api.ts';
import { createAgentMetrics, type AgentMetrics } from '../../agent/metrics.ts';
import type { PodLike } from '../../agent/resize/pod.ts';
import { requestHash } from '../../agent/resize/request.ts';
import { Annotations } from '../../agent/resize/vocabulary.ts';
import { containerCgroupPath, podCgroupPath } from '../../cgroup/paths.ts';
import type { CgroupLayout } from '../../cgroup/types.ts';
import { memSyncFs } from '../http/helpers.ts';

const NODE = 'n1';
const Mi = 1024 * 1024;
const layout: CgroupLayout = {
  controllers: {
    cpu: { version: 'v1', mount: '/sys/fs/cgroup/cpu' },
    cpuacct: { version: 'v1', mount: '/sys/fs/cgroup/cpuacct' },
    memory: { version: 'v1', mount: '/sys/fs/cgroup/memory' },
  },
  driver: 'cgroupfs',
  runtime: 'containerd',
  weightFormula: 'linear',
  podsRoot: 'kubepods',
};

interface Box {
  pod: PodLike;
  path: string;
  cpuNs: number;
  periods: number;
  throttled: number;
  ws: number;
  oom: number;
}

class World {
  vol = new Volume();
  now = 0;
  boxes: Box[] = [];
  patches: Array<{ key: string; annotations: Record<string, string | null> }> = [];
  events: Array<{ key: string; event: PodEvent }> = [];
  enqueued: string[] = [];
  /** Whether a patch shows in the pod cache at once (as after the watch event), or never. */
  visible = true;
  metrics: AgentMetrics = createAgentMetrics();
  autoscaler: Autoscaler;

  constructor() {
    this.autoscaler = createAutoscaler({
      nodeName: NODE,
      layout,
      files: memSyncFs(this.vol),
      pods: () => this.boxes.map((b) => b.pod),
      kube: {
        patchPodAnnotations: async (namespace, name, annotations) => {
          this.patches.push({ key: `${namespace}/${name}`, annotations });
          if (!this.visible) return;
          const box = this.boxes.find((b) => b.pod.metadata?.name === name)!;
          box.pod = withAnnotations(box.pod, annotations);
        },
      },
      event: (pod, event) =>
        this.events.push({ key: `${pod.metadata?.namespace}/${pod.metadata?.name}`, event }),
      metrics: this.metrics,
      log: { info: () => {}, warn: () => {}, debug: () => {} },
      clock: { now: () => this.now, sleep: async () => {} },
      intervalMs: 500,
      onRecommendation: (key) => this.enqueued.push(key),
      batch: 8,
    });
  }

  addPod(name: string, policy: string | undefined, extra: Record<string, string> = {}): Box {
    const uid = randomUUID();
    const id = createHash('sha256').update(uid).digest('hex');
    const podPath = podCgroupPath(layout, { uid, qos: 'Burstable' });
    const path = containerCgroupPath(layout, podPath, { id });
    for (const c of ['cpu', 'cpuacct', 'memory'] as const) {
      this.vol.mkdirSync(`${layout.controllers[c].mount}/${path}`, { recursive: true });
    }
    const pod: PodLike = {
      metadata: {
        name,
        namespace: 'ns',
        uid,
        annotations: { ...(policy !== undefined && { [Annotations.autoscale]: policy }), ...extra },
      },
      spec: {
        nodeName: NODE,
        containers: [
          {
            name: 'app',
            resources: {
              requests: { cpu: '100m', memory: '64Mi' },
              limits: { cpu: '200m', memory: '256Mi' },
            },
          },
        ],
      },
      status: {
        phase: 'Running',
        qosClass: 'Burstable',
        containerStatuses: [{ name: 'app', containerID: `containerd://${id}`, state: { running: {} } }],
      },
    };
    const box: Box = { pod, path, cpuNs: 0, periods: 0, throttled: 0, ws: 20 * Mi, oom: 0 };
    this.boxes.push(box);
    this.write(box);
    return box;
  }

  write(b: Box): void {
    const f = (c: 'cpu' | 'cpuacct' | 'memory', file: string, text: string) =>
      this.vol.writeFileSync(`${layout.controllers[c].mount}/${b.path}/${file}`, text);
    f('cpu', 'cpu.cfs_quota_us', '20000\n');
    f('cpu', 'cpu.cfs_period_us', '100000\n');
    f('cpu', 'cpu.shares', '102\n');
    f('cpu', 'cpu.stat', `nr_periods ${b.periods}\nnr_throttled ${b.throttled}\nthrottled_time 0\n`);
    f('cpuacct', 'cpuacct.usage', `${b.cpuNs}\n`);
    f('memory', 'memory.usage_in_bytes', `${b.ws}\n`);
    f('memory', 'memory.limit_in_bytes', `${256 * Mi}\n`);
    f('memory', 'memory.stat', `total_rss ${b.ws}\ntotal_inactive_file 0\n`);
    f('memory', 'memory.oom_control', `oom_kill_disable 0\nunder_oom 0\noom_kill ${b.oom}\n`);
  }

  /** Advances time by `ms`, each box using `cpuMilli` (throttled when at 200m), then runs one pass. */
  async step(ms: number, cpuMilli: number): Promise<void> {
    this.now += ms;
    for (const b of this.boxes) {
      b.cpuNs += cpuMilli * ms * 1_000;
      b.periods += ms / 100;
      if (cpuMilli >= 200) b.throttled += ms / 100;
      this.write(b);
    }
    await this.autoscaler.tick();
    await new Promise((r) => setImmediate(r));
  }

  /** The reconciler's answer to the pod's current request, as it would publish it. */
  answer(b: Box, resizeStatus: string, limitsCpu = '200m'): void {
    const text = b.pod.metadata!.annotations![Annotations.request]!;
    b.pod = withAnnotations(b.pod, {
      [Annotations.status]: JSON.stringify({
        resizeStatus,
        allocatedResources: [
          {
            name: 'app',
            requests: { cpu: '100m', memory: '64Mi' },
            limits: { cpu: limitsCpu, memory: '256Mi' },
          },
        ],
        observedRequest: requestHash(text),
        lastTransitionTime: new Date(this.now).toISOString(),
      }),
    });
  }
}

function withAnnotations(pod: PodLike, annotations: Record<string, string | null>): PodLike {
  const next: Record<string, string> = { ...pod.metadata?.annotations };
  for (const [k, v] of Object.entries(annotations)) {
    if (v === null) delete next[k];
    else next[k] = v;
  }
  return { ...pod, metadata: { ...pod.metadata, annotations: next } };
}

describe('sampler', () => {
  let w: World;
  beforeEach(() => {
    w = new World();
  });

  it("writes one merge patch: the request (only what changes) marked as the autoscaler's", async () => {
    w.addPod('web', '{"cpu":{"max":"800m"}}');
    for (let i = 0; i < 6; i++) await w.step(500, 200);
    expect(w.patches).toEqual([
      {
        key: 'ns/web',
        annotations: {
          [Annotations.request]: '{"app":{"limits":{"cpu":"400m"}}}',
          [Annotations.source]: 'autoscaler',
        },
      },
    ]);
    const e = w.events.find((x) => x.event.reason === 'AutoscaleDecision');
    expect(e?.event.message).toMatch(
      /^autoscaler: raise cpu limit 200m -> 400m: cpu at 100% of its 200m limit/,
    );
    const text = await w.metrics.registry.metrics();
    expect(text).toMatch(
      /resizelet_autoscale_decisions_total\{resource="cpu",kind="limit",direction="up",trigger="cpu-utilization",mode="Auto"\} 1/,
    );
  });

  it('waits while its own request is unanswered, then continues from the new allocation', async () => {
    const b = w.addPod('web', '{"cpu":{"max":"800m","cooldown":"0s"}}');
    for (let i = 0; i < 5; i++) await w.step(500, 200);
    expect(w.patches).toHaveLength(1);
    // Proposed/unanswered: saturating or not, nothing more is written.
    for (let i = 0; i < 10; i++) await w.step(500, 200);
    expect(w.patches).toHaveLength(1);
    w.answer(b, 'Completed', '400m');
    for (let i = 0; i < 6; i++) await w.step(500, 400);
    expect(w.patches).toHaveLength(2);
    expect(w.patches[1]!.annotations[Annotations.request]).toBe('{"app":{"limits":{"cpu":"800m"}}}');
  });

  it("never fights a person's request in flight: waits until it is settled", async () => {
    const b = w.addPod('web', '{"cpu":{"max":"800m"}}', {
      [Annotations.request]: '{"app":{"requests":{"cpu":"150m"}}}',
    });
    for (let i = 0; i < 10; i++) await w.step(500, 200);
    expect(w.patches).toEqual([]);
    // A Deferred request of someone else's is still in flight.
    w.answer(b, 'Deferred');
    for (let i = 0; i < 10; i++) await w.step(500, 200);
    expect(w.patches).toEqual([]);
    w.answer(b, 'Completed');
    for (let i = 0; i < 6; i++) await w.step(500, 200);
    expect(w.patches).toHaveLength(1);
  });

  it('does not write again while its own write has not reached the pod cache', async () => {
    w.visible = false;
    w.addPod('web', '{"cpu":{"max":"800m","cooldown":"0s"}}');
    for (let i = 0; i < 16; i++) await w.step(500, 200);
    expect(w.patches).toHaveLength(1);
  });

  it('Recommend mode writes nothing, hands the recommendation to the status and the metric', async () => {
    w.addPod('web', '{"mode":"Recommend","cpu":{"max":"1"}}');
    for (let i = 0; i < 12; i++) await w.step(500, 200);
    expect(w.patches).toEqual([]);
    expect(w.autoscaler.recommendation('ns/web')).toEqual([
      { name: 'app', requests: { cpu: '100m', memory: '64Mi' }, limits: { cpu: '400m', memory: '256Mi' } },
    ]);
    // Recomputed every window, but the reconciler is only asked to republish when it changes.
    expect(w.enqueued).toEqual(['ns/web']);
    expect(w.events.filter((e) => e.event.reason === 'AutoscaleDecision')).toHaveLength(1);
    const text = await w.metrics.registry.metrics();
    expect(text).toMatch(
      /resizelet_autoscale_recommendation\{namespace="ns",pod="web",container="app",kind="limit",resource="cpu"\} 0\.4/,
    );
    expect(text).toMatch(/mode="Recommend"\} 1/);
  });

  it('drops the recommendation when the pod leaves or its policy turns to Auto', async () => {
    const b = w.addPod('web', '{"mode":"Recommend","cpu":{"max":"1"}}');
    for (let i = 0; i < 6; i++) await w.step(500, 200);
    expect(w.autoscaler.recommendation('ns/web')).toBeDefined();
    b.pod = withAnnotations(b.pod, { [Annotations.autoscale]: '{"mode":"Auto","cpu":{"max":"1"}}' });
    await w.step(500, 50);
    expect(w.autoscaler.recommendation('ns/web')).toBeUndefined();
    expect(w.enqueued).toEqual(['ns/web', 'ns/web']);
  });

  it('reports a bad policy on the pod once per text, with a metric, and autoscales nothing', async () => {
    const b = w.addPod('web', '{"cpu":{"targetUtilisation":0.5}}');
    for (let i = 0; i < 8; i++) await w.step(500, 200);
    const invalid = () => w.events.filter((e) => e.event.reason === 'AutoscalePolicyInvalid');
    expect(invalid()).toHaveLength(1);
    expect(invalid()[0]!.event).toEqual({
      reason: 'AutoscalePolicyInvalid',
      type: 'Warning',
      message:
        'resizelet.io/autoscale: cpu: unknown field "targetUtilisation" (did you mean "targetUtilization"?); the pod is not autoscaled until the policy is fixed',
    });
    expect(w.patches).toEqual([]);
    b.pod = withAnnotations(b.pod, { [Annotations.autoscale]: '{"containers":{"ap":{}}}' });
    await w.step(500, 200);
    expect(invalid()).toHaveLength(2);
    expect(invalid()[1]!.event.message).toMatch(/the policy names "ap", but the pod's containers are "app"/);
    expect(await w.metrics.registry.metrics()).toMatch(/resizelet_autoscale_policy_invalid_total 2/);
  });

  it('leaves pods without the annotation, disabled or on another node alone', async () => {
    w.addPod('plain', undefined);
    w.addPod('off', '{}', { [Annotations.disabled]: 'true' });
    const other = w.addPod('elsewhere', '{}');
    other.pod = { ...other.pod, spec: { ...other.pod.spec!, nodeName: 'n2' } };
    for (let i = 0; i < 8; i++) await w.step(500, 200);
    expect(w.patches).toEqual([]);
  });

  it('yields to the event loop between batches on a node of 250 autoscaled pods', async () => {
    for (let i = 0; i < 250; i++) w.addPod(`p${i}`, '{}');
    let turns = 0;
    let spinning = true;
    const spin = () => {
      turns++;
      if (spinning) setImmediate(spin);
    };
    setImmediate(spin);
    const started = performance.now();
    await w.autoscaler.tick();
    const ms = performance.now() - started;
    spinning = false;
    // batch 8: ~31 yields; the spinner runs at least once per yield
    expect(turns).toBeGreaterThanOrEqual(25);
    expect(ms).toBeLessThan(5_000);
  });
});
