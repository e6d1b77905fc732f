// The adapter from a running agent to the endpoint's narrow dependencies, and the bound server.
import { expect, test } from 'vitest';
import { httpDepsOf, startHttp } from '../../agent/http-server.ts';
import type { RunningAgent } from '../../agent/main.ts';
import { createAgentMetrics } from '../../agent/metrics.ts';
import { buildNodeTree } from '../support/cgroup-tree.ts';

test('a RunningAgent is served: its informer cache, reconciler views, layout, metrics and listen address', async () => {
  const tree = buildNodeTree({ version: 'v1', driver: 'cgroupfs', runtime: 'containerd', pods: [] });
  const logged: Array<{ fields: unknown; msg: string }> = [];
  const agent = {
    config: { nodeName: 'node-a', listenHost: '127.0.0.1', listenPort: 0 },
    log: { info: (fields: unknown, msg: string) => logged.push({ fields, msg }) },
    layout: tree.layout,
    metrics: createAgentMetrics(),
    informer: { list: () => [], synced: false, lastEventAt: 0 },
    reconciler: { views: () => [] },
  } as unknown as RunningAgent;
  const deps = httpDepsOf(agent);
  expect(deps).toMatchObject({ nodeName: 'node-a', layout: tree.layout, metrics: agent.metrics });
  expect(deps.pods()).toEqual([]);
  expect(deps.views()).toEqual([]);
  expect(deps.informer.synced).toBe(false);

  const close = await startHttp(agent);
  // Port 0 was asked for: the log names the port the kernel gave, which answers.
  expect(logged).toHaveLength(1);
  const { fields, msg } = logged[0]!;
  expect(msg).toBe('endpoint listening');
  const port = (fields as { port: number }).port;
  expect(port).toBeGreaterThan(0);
  const res = await fetch(`http://127.0.0.1:${port}/healthz`);
  expect(res.status).toBe(200);
  await close();
});
