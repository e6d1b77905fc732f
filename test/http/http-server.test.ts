// The adapter from a running agent to the endpoint's narrow dependencies, and the bound server.
import { expect, test } from 'vitest';
import { httpDepsOf, startHttp } from '../../agent/http-server.ts';
import type { RunningAgent } from '../../agent/main.ts';
import { createAgentMetrics } from '../../agent/metrics.ts';
import { buildNodeTree } from '../support/cgroup-tree.ts';

test('a RunningAgent is served: its informer cache, reconciler views, layout, metrics and listen address', async () => {
  const tree = buildNodeTree({ version: 'v1', driver: 'cgroupfs', runtime: 'containerd', pods: [] });
  const logged: string[] = [];
  const agent = {
    config: { nodeName: 'node-a', listenHost: '127.0.0.1', listenPort: 0 },
    log: { info: (_o: unknown, msg: string) => logged.push(msg) },
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
  expect(logged).toEqual(['endpoint listening']);
  await close();
});
