// Binds the HTTP endpoint for a running agent. The app itself (routes) is built by http.ts without a socket.
import type { RunningAgent } from './main.ts';

export async function startHttp(agent: RunningAgent): Promise<() => Promise<void>> {
  const { buildHttpApp } = await import('./http.ts');
  const app = await buildHttpApp(agent);
  await app.listen({ host: agent.config.listenHost, port: agent.config.listenPort });
  agent.log.info({ host: agent.config.listenHost, port: agent.config.listenPort }, 'endpoint listening');
  return () => app.close();
}
