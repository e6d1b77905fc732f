// The endpoint's reader on the kernel's cgroupfs: kept descriptors see writes at once, a removed cgroup's
// descriptors fail with ENODEV and are dropped, and a cgroup created again at the same path is read afresh.
import { rmdirSync, writeFileSync } from 'node:fs';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { createNodeScanner } from '../../agent/cadvisor/scanner.ts';
import { createStatsReader, nodeSyncFs } from '../../agent/cgroup-stats.ts';
import type { PodLike } from '../../agent/resize/pod.ts';
import {
  createRealSandbox,
  newContainerId,
  newPodUid,
  realCgroupsAvailable,
  type RealSandbox,
} from '../support/real-cgroup.ts';

const available = realCgroupsAvailable();
const Mi = 1024n * 1024n;

describe.skipIf(!available.ok)(
  `on real cgroup v1${available.ok ? '' : ` (skipped: ${available.reason})`}`,
  () => {
    let sandbox: RealSandbox;
    beforeAll(async () => {
      sandbox = await createRealSandbox();
    });
    afterAll(async () => {
      await sandbox?.cleanup();
    });

    test('writes show on kept descriptors; removal and re-creation of a cgroup are followed', async () => {
      const uid = newPodUid();
      const id = newContainerId();
      const podPath = await sandbox.makePod(uid, 'Guaranteed', {
        cpuShares: 204,
        cpuQuotaUs: 20_000,
        memoryLimitBytes: 64n * Mi,
      });
      const ctrPath = await sandbox.makeContainer(podPath, id, {
        cpuShares: 204,
        cpuQuotaUs: 20_000,
        memoryLimitBytes: 64n * Mi,
      });
      const pod: PodLike = {
        metadata: { uid, name: 'p', namespace: 'ns' },
        spec: { containers: [{ name: 'c' }] },
        status: {
          qosClass: 'Guaranteed',
          containerStatuses: [{ name: 'c', containerID: `containerd://${id}` }],
        },
      };
      const reader = createStatsReader({ fs: nodeSyncFs, layout: sandbox.layout });
      const scanner = createNodeScanner({ reader, layout: sandbox.layout });
      const container = async () => {
        const scan = await scanner.scan({ pods: [pod] });
        reader.sweep();
        expect(scan.problems).toEqual([]);
        return scan.cgroups.find((c) => c.level === 'container');
      };

      expect((await container())?.stats).toMatchObject({
        cpuQuotaUs: 20_000,
        memoryLimitBytes: Number(64n * Mi),
      });
      const kept = reader.openFiles;
      expect(kept).toBeGreaterThan(0);
      await sandbox.makeContainer(podPath, id, {}).catch(() => undefined); // exists: no-op
      const file = `${sandbox.layout.controllers.cpu.mount}/${ctrPath}/cpu.cfs_quota_us`;
      writeFileSync(file, '15000');
      expect((await container())?.stats.cpuQuotaUs).toBe(15_000);
      expect(reader.openFiles).toBe(kept);

      // Removed (the container exited): its kept descriptors now fail with ENODEV; the cgroup reads as gone.
      for (const h of ['cpu', 'cpuacct', 'memory']) rmdirSync(`/sys/fs/cgroup/${h}/${ctrPath}`);
      expect(await container()).toBeUndefined();
      expect(reader.openFiles).toBeLessThan(kept);

      // A path created again (not something runtimes do with a container ID, but a pod-level path can be)
      // is opened afresh rather than read through a dead descriptor.
      const podQuota = `${sandbox.layout.controllers.cpu.mount}/${podPath}/cpu.cfs_quota_us`;
      expect(reader.read(podPath)?.cpuQuotaUs).toBe(20_000);
      await sandbox.makeContainer(podPath, id, { cpuShares: 204, cpuQuotaUs: 10_000 });
      expect(reader.read(ctrPath)?.cpuQuotaUs).toBe(10_000);
      writeFileSync(podQuota, '30000');
      expect(reader.read(podPath)?.cpuQuotaUs).toBe(30_000);
      reader.close();
    });
  },
);
