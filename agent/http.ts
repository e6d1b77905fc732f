// Fastify app factory (no listen here): /healthz and /readyz for now; /metrics and the JSON view land with
// the endpoint issue.
import Fastify, { type FastifyInstance } from 'fastify';
import type { RunningAgent } from './main.ts';

export async function buildHttpApp(
  agent: Pick<RunningAgent, 'informer' | 'metrics'>,
): Promise<FastifyInstance> {
  const app = Fastify({ logger: false });
  app.get('/healthz', async () => ({ ok: true }));
  app.get('/readyz', async (_req, reply) => {
    if (!agent.informer.synced)
      return reply.code(503).send({ ready: false, reason: 'pod cache not synced yet' });
    return { ready: true };
  });
  app.get('/metrics', async (_req, reply) => {
    reply.type(agent.metrics.registry.contentType);
    return agent.metrics.registry.metrics();
  });
  return app;
}
