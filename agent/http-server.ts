// Binds the HTTP endpoint for a running agent. The app itself (routes) is built by http.ts without a socket,
// from the narrow HttpDeps this adapts a RunningAgent into.
import { nodeSyncFs } from './cgroup-stats.ts';
import type { HttpDeps } from './http.ts';
import type { RunningAgent } from './main.ts';

export function httpDepsOf(agent: RunningAgent): HttpDeps {
  return {
    nodeName: agent.config.nodeName,
    layout: agent.layout,
    files: nodeSyncFs,
    pods: () => agent.informer.list(),
    views: () => agent.reconciler.views(),
    metrics: agent.metrics,
    informer: agent.informer,
  };
}

export async function startHttp(agent: RunningAgent): Promise<() => Promise<void>> {
  const { buildHttpApp } = await import('./http.ts');
  const app = await buildHttpApp(httpDepsOf(agent));
  await app.listen({ host: agent.config.listenHost, port: agent.config.listenPort });
  // The bound port, not the configured one: `--listen HOST:0` asks the kernel for a free port.
  const bound = app.server.address();
  const port = typeof bound === 'object' && bound ? bound.port : agent.config.listenPort;
  agent.log.info({ host: agent.config.listenHost, port }, 'endpoint listening');
  return () => app.close();
}
