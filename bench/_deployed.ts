// How deploy/daemonset.yaml runs the agent, for the benches that run it (scrape, soak): read from the
// manifest itself so a bench measures the deployed V8 flags, environment and limits, not a copy that drifts.
import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseCpuMillicores, parseMemoryBytes } from '../agent/resize/quantity.ts';

const repo = fileURLToPath(new URL('..', import.meta.url));

export interface Deployed {
  /** The container's env values set literally (NODE_OPTIONS, MALLOC_*, ...); valueFrom ones are not. */
  env: Record<string, string>;
  cpuLimitMilli: number;
  memoryLimitBytes: bigint;
}

/**
 * How deploy/daemonset.yaml runs the agent, read from the manifest itself so the bench measures the
 * deployed V8 flags, environment and CPU/memory limits, not a copy that can drift from them.
 */
export function deployedAgent(): Deployed {
  // The YAML parser @kubernetes/client-node itself uses (as test/deploy/manifests.test.ts does); loaded
  // here, in the driver, so the measured server process never holds it.
  const yaml = createRequire(fileURLToPath(import.meta.resolve('@kubernetes/client-node')))('js-yaml') as {
    load(text: string): unknown;
  };
  const ds = yaml.load(readFileSync(join(repo, 'deploy/daemonset.yaml'), 'utf8')) as {
    spec: {
      template: {
        spec: {
          containers: {
            name: string;
            env?: { name: string; value?: string }[];
            resources: { limits: { cpu: string; memory: string } };
          }[];
        };
      };
    };
  };
  const agent = ds.spec.template.spec.containers.find((c) => c.name === 'agent');
  if (!agent) throw new Error('deploy/daemonset.yaml has no container "agent"');
  const env: Record<string, string> = {};
  for (const e of agent.env ?? []) if (e.value !== undefined) env[e.name] = e.value;
  return {
    env,
    cpuLimitMilli: parseCpuMillicores(agent.resources.limits.cpu),
    memoryLimitBytes: parseMemoryBytes(agent.resources.limits.memory),
  };
}
