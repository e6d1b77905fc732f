// The undici transport under client-node's generated API client: real HTTP against the fake API server, so
// every status and body path below is the one a real API server exercises.
import { readFileSync } from 'node:fs';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { createServer } from 'node:https';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as k8s from '@kubernetes/client-node';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { loadKubeConfig } from '../../agent/kube/api.ts';
import { makeApiClient, undiciHttpLibrary } from '../../agent/kube/transport.ts';
import { startFakeApiServer, type FakeApiServer } from '../fakes/apiserver.ts';

const pod = (name: string): k8s.V1Pod => ({
  metadata: { name, namespace: 'shop', uid: `u-${name}` },
  spec: { nodeName: 'n1', containers: [{ name: 'app', image: 'x' }] },
});

describe('the undici transport (client-node’s API client over real HTTP)', () => {
  let api: FakeApiServer;
  let dir: string;
  let kc: k8s.KubeConfig;

  beforeAll(async () => {
    api = await startFakeApiServer();
    dir = await mkdtemp(join(tmpdir(), 'resizelet-transport-'));
    await api.writeKubeconfig(join(dir, 'kubeconfig'));
    kc = loadKubeConfig(join(dir, 'kubeconfig'));
    api.upsertPod(pod('web'));
  });

  afterEach(() => {
    api.setUnreachable(false);
  });

  afterAll(async () => {
    await api.close();
    await rm(dir, { recursive: true, force: true });
  });

  describe('API client', () => {
    it('reads and merge-patches through the generated client, deserialized as client-node does', async () => {
      const core = makeApiClient(kc, k8s.CoreV1Api);
      const read = await core.readNamespacedPod({ namespace: 'shop', name: 'web' });
      expect(read.metadata?.uid).toBe('u-web');
      expect(read.spec?.containers[0]?.name).toBe('app');
      const patched = await core.patchNamespacedPod(
        { namespace: 'shop', name: 'web', body: { metadata: { annotations: { 'example.com/a': '1' } } } },
        k8s.setHeaderOptions('Content-Type', k8s.PatchStrategy.MergePatch),
      );
      expect(patched.metadata?.annotations?.['example.com/a']).toBe('1');
      expect(api.getPod('shop', 'web')?.metadata?.annotations?.['example.com/a']).toBe('1');
      const last = api.requests.at(-1)!;
      expect(last.method).toBe('PATCH');
      expect(last.contentType).toBe('application/merge-patch+json');
      expect(last.userAgent).toBe('resizelet');
      expect(last.status).toBe(200);
    });

    it('turns an error status into client-node’s ApiException, with the code and the server’s message', async () => {
      const core = makeApiClient(kc, k8s.CoreV1Api);
      const err = await core
        .readNamespacedPod({ namespace: 'shop', name: 'missing' })
        .catch((e: unknown) => e);
      expect(err).toBeInstanceOf(k8s.ApiException);
      expect((err as k8s.ApiException<unknown>).code).toBe(404);
      expect(String((err as Error).message)).toContain('missing');
    });

    it('reports a dropped connection as an error, not a hang or a crash', async () => {
      const core = makeApiClient(kc, k8s.CoreV1Api);
      api.setUnreachable(true);
      await expect(core.readNamespacedPod({ namespace: 'shop', name: 'web' })).rejects.toThrow();
    });

    it('refuses a form body rather than sending something else', async () => {
      const ctx = new k8s.RequestContext(
        `${kc.getCurrentCluster()!.server}/api/v1/pods`,
        k8s.HttpMethod.POST,
      );
      ctx.setBody(new URLSearchParams({ a: '1' }));
      await expect(undiciHttpLibrary.send(ctx).toPromise()).rejects.toThrow(/unsupported request body/);
    });
  });

  describe('over TLS, as in a cluster', () => {
    const tls = (file: string): string =>
      readFileSync(new URL(`../fixtures/tls/${file}`, import.meta.url), 'utf8');
    let server: ReturnType<typeof createServer>;
    let url: string;
    const seen: Array<string | undefined> = [];

    beforeAll(async () => {
      server = createServer({ cert: tls('server.crt'), key: tls('server.key') }, (req, res) => {
        seen.push(req.headers.authorization);
        res.setHeader('content-type', 'application/json');
        res.end(JSON.stringify(pod('secure')));
      });
      await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
      url = `https://127.0.0.1:${(server.address() as AddressInfo).port}`;
    });

    afterAll(async () => {
      server.closeAllConnections();
      await new Promise((r) => server.close(r));
    });

    const kubeconfigTrusting = async (ca: string): Promise<k8s.KubeConfig> => {
      const path = join(dir, `tls-${seen.length}-${Math.random()}.kubeconfig`);
      await writeFile(
        path,
        JSON.stringify({
          apiVersion: 'v1',
          kind: 'Config',
          clusters: [
            {
              name: 'c',
              cluster: { server: url, 'certificate-authority-data': Buffer.from(ca).toString('base64') },
            },
          ],
          users: [{ name: 'u', user: { token: 'secret-token' } }],
          contexts: [{ name: 'x', context: { cluster: 'c', user: 'u' } }],
          'current-context': 'x',
        }),
      );
      return loadKubeConfig(path);
    };

    it('verifies the server against the kubeconfig’s CA and sends the token', async () => {
      const core = makeApiClient(await kubeconfigTrusting(tls('server.crt')), k8s.CoreV1Api);
      const read = await core.readNamespacedPod({ namespace: 'shop', name: 'secure' });
      expect(read.metadata?.name).toBe('secure');
      expect(seen.at(-1)).toBe('Bearer secret-token');
    });

    it('refuses a server its CA did not sign', async () => {
      const before = seen.length;
      const core = makeApiClient(await kubeconfigTrusting(tls('other-ca.crt')), k8s.CoreV1Api);
      await expect(core.readNamespacedPod({ namespace: 'shop', name: 'secure' })).rejects.toThrow();
      expect(seen.length).toBe(before);
    });
  });
});
