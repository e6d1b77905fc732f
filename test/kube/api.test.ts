import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createKubePort, loadKubeConfig } from '../../agent/kube/api.ts';
import { startFakeApiServer, type FakeApiServer } from '../fakes/apiserver.ts';

describe('the agent’s API client (client-node against the fake API server over HTTP)', () => {
  let api: FakeApiServer;
  let dir: string;

  beforeAll(async () => {
    api = await startFakeApiServer();
    dir = await mkdtemp(join(tmpdir(), 'resizelet-kubeport-'));
    await api.writeKubeconfig(join(dir, 'kubeconfig'));
    api.upsertPod({
      metadata: { name: 'web', namespace: 'shop', uid: 'u-1' },
      spec: { nodeName: 'n1', containers: [{ name: 'app', image: 'x' }] },
    });
  });

  afterAll(async () => {
    await api.close();
    await rm(dir, { recursive: true, force: true });
  });

  it('reuses kept-alive connections across calls (client-node alone opens one per call)', async () => {
    const port = createKubePort(loadKubeConfig(join(dir, 'kubeconfig')), {
      component: 'resizelet',
      host: 'n1',
    });
    const before = api.connectionsAccepted();
    for (let i = 0; i < 40; i++) {
      await port.patchPodAnnotations('shop', 'web', { 'example.com/n': String(i) });
      await port.createPodEvent(api.getPod('shop', 'web')!, {
        reason: 'R',
        type: 'Normal',
        message: `m${i}`,
      });
    }
    expect(api.getPod('shop', 'web')?.metadata?.annotations?.['example.com/n']).toBe('39');
    expect(api.events().filter((e) => e.reason === 'R')).toHaveLength(40);
    // 80 sequential calls: one connection, two at most if the server closed one in between.
    expect(api.connectionsAccepted() - before).toBeLessThanOrEqual(2);
  });

  it('still sends the credentials with every call', async () => {
    const port = createKubePort(loadKubeConfig(join(dir, 'kubeconfig')), {
      component: 'resizelet',
      host: 'n1',
    });
    const from = api.requests.length;
    await port.patchPodAnnotations('shop', 'web', { 'example.com/n': 'a' });
    await port.patchPodAnnotations('shop', 'web', { 'example.com/n': 'b' });
    const calls = api.requests.slice(from);
    expect(calls.map((r) => r.status)).toEqual([200, 200]);
  });
});
