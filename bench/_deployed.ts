// How deploy/daemonset.yaml runs the agent, for the benches that run it (scrape, soak): read from the
// manifest itself so a bench measures the deployed V8 flags, environment and limits, not a copy that drifts.
import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { parseCpuMillicores, parseMemoryBytes } from '../agent/resize/quantity.ts';
import type * as BuildScript from '../scripts/build.mjs';

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

/**
 * `entry` (a path from the repository root, e.g. `bin/resizelet.ts`) built as the Dockerfile builds the
 * agent (scripts/build.mjs: one bundle, no node_modules needed) into `dir`. Returns the built entry's path:
 * benches measure the code as the image runs it, not tsx.
 */
export async function compileAsImage(entry: string, dir: string): Promise<string> {
  // Imported at run time from a computed URL, not statically: the scrape bench bundles this module into its
  // server, and a static import would bundle esbuild (and the build script's command-line entry) with it.
  const { buildBundle } = (await import(
    pathToFileURL(join(repo, 'scripts/build.mjs')).href
  )) as typeof BuildScript;
  return buildBundle(entry, join(dir, 'app'));
}
