// The read side against cgroups recorded on real Kubernetes 1.29 nodes (see the fixtures' READMEs): every
// pod is located from its API object alone, and what is read must be what the kubelet's formulas give for
// the pod spec.
import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { quotaFromMillicores, sharesFromMillicores, sharesFromWeight } from '../../cgroup/convert.ts';
import { detectLayout, parseCpuMilli } from '../../cgroup/detect.ts';
import type { PodLike, Quantities } from '../../cgroup/detect.ts';
import {
  classifyChildDir,
  containerCgroupPath,
  parseContainerId,
  podCgroupPath,
} from '../../cgroup/paths.ts';
import { listChildren, listProcs, readCgroup, readSettings, readUsage } from '../../cgroup/reader.ts';
import type { CgroupLayout, QosClass } from '../../cgroup/types.ts';
import { loadV1Fixture, loadV2Fixture } from '../support/cgroup-tree.ts';

/** Memory quantities as they appear in these pod specs (64Mi, 128Mi, plain bytes). */
function bytes(q: string | number | undefined): bigint | null {
  if (q === undefined) return null;
  const m = /^(\d+)(Ki|Mi|Gi)?$/.exec(String(q));
  if (!m) throw new Error(`unexpected memory quantity ${q}`);
  const unit = { Ki: 1n << 10n, Mi: 1n << 20n, Gi: 1n << 30n }[m[2] ?? ''] ?? 1n;
  return BigInt(m[1]!) * unit;
}

interface Located {
  pod: PodLike;
  name: string;
  path: string;
  containers: {
    name: string;
    id: string;
    path: string;
    requests: Quantities;
    limits: Quantities;
  }[];
}

function locateAll(layout: CgroupLayout, pods: PodLike[]): Located[] {
  return pods.map((pod) => {
    const path = podCgroupPath(layout, { uid: pod.metadata!.uid!, qos: pod.status!.qosClass as QosClass });
    return {
      pod,
      name: pod.metadata!.name!,
      path,
      containers: pod.status!.containerStatuses!.map((st) => {
        const ref = parseContainerId(st.containerID);
        const spec = pod.spec!.containers!.find((c) => c.name === st.name)!;
        return {
          name: st.name,
          id: ref.id,
          path: containerCgroupPath(layout, path, ref),
          requests: spec.resources?.requests ?? {},
          limits: spec.resources?.limits ?? {},
        };
      }),
    };
  });
}

describe('real node: Kubernetes 1.29, cgroup v1, cgroupfs, containerd', () => {
  const node = loadV1Fixture();
  const located = locateAll(node.layout, node.apiPods);
  const byName = (pod: string, container?: string) => {
    const p = located.find((l) => l.name === pod)!;
    return container === undefined ? p.path : p.containers.find((c) => c.name === container)!.path;
  };

  it('is detected as v1 + cgroupfs + containerd from mountinfo, the tree and the pods', async () => {
    const r = await detectLayout({ fs: node.fs, mountinfo: node.mountinfo, pods: node.apiPods });
    expect(r.layout).toEqual(node.layout);
    expect(r.conflicts).toEqual([]);
  });

  it('locates every pod and container from its API object', () => {
    expect(located.map((l) => l.path)).toEqual([
      'kubepods/besteffort/pod2fe909bb-58c6-481f-b1cc-04343750f12a',
      'kubepods/pod8632edec-0f0e-411c-8920-a5e25f96020d',
      'kubepods/burstable/pod9a5ab929-d0fb-45c2-86f2-1739e534610c',
      'kubepods/burstable/podcf465464-3b26-4394-955d-7a1709b6fe93',
    ]);
    expect(byName('web', 'app')).toBe(
      'kubepods/burstable/podcf465464-3b26-4394-955d-7a1709b6fe93/b5e6703d62095484165930a4d6e60514ed70b5c2aca88589e9e5238177c03292',
    );
  });

  it('reads each container as the kubelet computed it from the spec', async () => {
    for (const pod of located) {
      for (const c of pod.containers) {
        const s = await readSettings(node.fs, node.layout, c.path);
        const limit = bytes(c.limits.memory);
        expect(s, `${pod.name}/${c.name}`).toEqual({
          cpuShares: sharesFromMillicores(parseCpuMilli(c.requests.cpu)),
          cpuQuotaUs: quotaFromMillicores(parseCpuMilli(c.limits.cpu)),
          cpuPeriodUs: 100_000,
          memoryLimitBytes: limit,
          // runc pairs memsw with the limit (no swap); unlimited stays unlimited
          memswLimitBytes: limit,
        });
      }
    }
  });

  it("reads each pod level as the kubelet's sums (quota and memory only when every container has a limit)", async () => {
    for (const pod of located) {
      const s = await readSettings(node.fs, node.layout, pod.path);
      const all = (k: 'cpu' | 'memory') => pod.containers.every((c) => c.limits[k] !== undefined);
      const sumCpu = (m: 'requests' | 'limits') =>
        pod.containers.reduce((a, c) => a + (parseCpuMilli(c[m].cpu) ?? 0), 0);
      expect(s, pod.name).toEqual({
        cpuShares: sharesFromMillicores(sumCpu('requests')),
        cpuQuotaUs: all('cpu') ? quotaFromMillicores(sumCpu('limits')) : null,
        cpuPeriodUs: 100_000,
        memoryLimitBytes: all('memory')
          ? pod.containers.reduce((a, c) => a + bytes(c.limits.memory)!, 0n)
          : null,
        memswLimitBytes: null,
      });
    }
  });

  it('reads the recorded numbers (web/app, web, besteffort)', async () => {
    expect(await readSettings(node.fs, node.layout, byName('web', 'app'))).toMatchObject({
      cpuQuotaUs: 50_000,
      cpuShares: 256,
      memoryLimitBytes: 134_217_728n,
      memswLimitBytes: 134_217_728n,
    });
    expect(await readSettings(node.fs, node.layout, byName('web'))).toMatchObject({
      cpuQuotaUs: 60_000,
      cpuShares: 307,
      memoryLimitBytes: 167_772_160n,
    });
    expect(await readSettings(node.fs, node.layout, byName('besteffort', 'c'))).toMatchObject({
      cpuQuotaUs: null,
      cpuShares: 2,
      memoryLimitBytes: null,
    });
    // The QoS level: burstable shares are the Burstable pods' summed requests (300m + 100m).
    expect((await readSettings(node.fs, node.layout, 'kubepods/burstable')).cpuShares).toBe(
      sharesFromMillicores(400),
    );
  });

  it('reads usage, working set, RSS, throttling and OOM kills of the CPU-burning app', async () => {
    expect(await readUsage(node.fs, node.layout, byName('web', 'app'))).toEqual({
      cpuUsageNs: 8_363_052_061n,
      nrPeriods: 167,
      nrThrottled: 166,
      throttledNs: 8_205_021_952n,
      memoryUsageBytes: 385_024n,
      workingSetBytes: 385_024n, // total_inactive_file is 0
      rssBytes: 61_440n,
      oomKills: 0,
    });
  });

  it("agrees with the kubelet's cAdvisor on working set and RSS wherever cAdvisor sampled the same usage", async () => {
    // cAdvisor samples each cgroup on its own housekeeping tick, so its series are not all from the moment
    // cgroups.json was read; where usage_bytes is equal the sample is the same, and then so must be the rest.
    const metrics = readFileSync(
      new URL('../fixtures/real-node-v1-cgroupfs/cadvisor-metrics.txt', import.meta.url),
      'utf8',
    );
    const series = new Map<string, number>();
    for (const m of metrics.matchAll(/^(container_memory_\w+)\{[^}]*\bid="([^"]+)"[^}]*\} (\S+)/gm)) {
      series.set(`${m[1]} ${m[2]}`, Number(m[3]));
    }
    const dirs = Object.keys(node.vol.toJSON())
      .filter((f) => f.endsWith('/memory.usage_in_bytes'))
      .map((f) => f.slice('/sys/fs/cgroup/memory/'.length, -'/memory.usage_in_bytes'.length));
    let compared = 0;
    for (const dir of dirs) {
      const u = await readUsage(node.fs, node.layout, dir);
      if (series.get(`container_memory_usage_bytes /${dir}`) !== Number(u.memoryUsageBytes)) continue;
      expect(series.get(`container_memory_working_set_bytes /${dir}`), dir).toBe(Number(u.workingSetBytes));
      expect(series.get(`container_memory_rss /${dir}`), dir).toBe(Number(u.rssBytes));
      compared++;
    }
    expect(compared).toBeGreaterThanOrEqual(6);
  });

  it('finds exactly one sandbox (pause) cgroup per pod beside the containers, as cAdvisor labels it', async () => {
    const metrics = readFileSync(
      new URL('../fixtures/real-node-v1-cgroupfs/cadvisor-metrics.txt', import.meta.url),
      'utf8',
    );
    for (const pod of located) {
      const children = await listChildren(node.fs, node.layout, pod.path);
      const ids = new Set(pod.containers.map((c) => c.id));
      const sandboxes = children.filter((n) => !ids.has(n));
      expect(sandboxes, pod.name).toHaveLength(1);
      expect(classifyChildDir('cgroupfs', sandboxes[0]!)?.kind).toBe('container');
      expect(metrics).toContain(`id="/${pod.path}/${sandboxes[0]}",image="localhost/pause:3.9-verify"`);
      const pause = await readCgroup(node.fs, node.layout, `${pod.path}/${sandboxes[0]}`);
      expect(pause.settings).toMatchObject({ cpuShares: 2, cpuQuotaUs: null, memoryLimitBytes: null });
    }
  });
});

describe('real node: Kubernetes 1.29, cgroup v2, systemd, containerd (runc 1.1.5)', () => {
  const node = loadV2Fixture();
  const located = locateAll(node.layout, node.apiPods);
  const get = (name: string) => located.find((l) => l.name === name)!;

  it('is detected as v2 + systemd + containerd with the linear weight map (250m -> weight 10)', async () => {
    const r = await detectLayout({
      fs: node.fs,
      mountinfo: node.mountinfo,
      pods: node.apiPods,
      defaults: { weightFormula: 'quadratic' },
    });
    expect(r.layout).toEqual(node.layout);
    expect(r.conflicts).toEqual([]);
    expect(r.notes.join('\n')).toMatch(/weight formula linear: container burn\/burn 250m -> weight 10/);
  });

  it('locates the pod slices and container scopes the way the node named them', () => {
    expect(get('burn').containers[0]!.path).toBe(
      'kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod510866cb_a4da_4da2_8af1_5db88d4c93d0.slice/' +
        'cri-containerd-03f7dae40f7d26ae374d184c294810468b4b0c1a3f850fc4badbdb49dfde2e3e.scope',
    );
    expect(get('guar').path).toBe('kubepods.slice/kubepods-pod97a416df_80f0_42a8_8a41_5e72ea103935.slice');
    expect(get('be').path).toBe(
      'kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod57e4ca51_6a4c_4e99_b8f3_4702d3fc5225.slice',
    );
  });

  it.each([
    ['burn', 50_000, 10, 134_217_728n],
    ['guar', 20_000, 8, 67_108_864n],
    ['be', null, 1, null],
  ] as const)(
    'reads %s (container and pod level): quota %s, weight %s, memory %s; "max" is unlimited',
    async (name, quota, weight, memory) => {
      const p = get(name);
      for (const path of [p.containers[0]!.path, p.path]) {
        expect(await readSettings(node.fs, node.layout, path), path).toEqual({
          cpuQuotaUs: quota,
          cpuPeriodUs: 100_000,
          cpuWeight: weight,
          cpuShares: sharesFromWeight(weight, 'linear'),
          memoryLimitBytes: memory,
        });
      }
    },
  );

  it("reads the kubelet's QoS and root slices", async () => {
    expect(await readSettings(node.fs, node.layout, 'kubepods.slice')).toMatchObject({
      cpuWeight: 79,
      memoryLimitBytes: 6_210_949_120n,
    });
    expect(await readSettings(node.fs, node.layout, 'kubepods.slice/kubepods-burstable.slice')).toMatchObject(
      { cpuWeight: 10 },
    );
    expect(
      await readSettings(node.fs, node.layout, 'kubepods.slice/kubepods-besteffort.slice'),
    ).toMatchObject({ cpuWeight: 1 });
  });

  it("finds each pod's pause scope and its processes", async () => {
    const expected = { be: [977, 895], burn: [962, 883], guar: [1010, 881] } as const;
    for (const name of ['be', 'burn', 'guar'] as const) {
      const p = get(name);
      const children = await listChildren(node.fs, node.layout, p.path);
      const pause = children
        .map((n) => classifyChildDir('systemd', n)!)
        .filter((c) => c.id !== p.containers[0]!.id);
      expect(pause).toHaveLength(1);
      expect(await listProcs(node.fs, node.layout, p.containers[0]!.path)).toEqual([expected[name][0]]);
      expect(await listProcs(node.fs, node.layout, `${p.path}/${pause[0]!.name}`)).toEqual([
        expected[name][1],
      ]);
      expect(await readSettings(node.fs, node.layout, `${p.path}/${pause[0]!.name}`)).toMatchObject({
        cpuQuotaUs: null,
        cpuWeight: 1,
        memoryLimitBytes: null,
      });
    }
  });
});
