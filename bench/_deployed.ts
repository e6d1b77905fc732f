// How deploy/daemonset.yaml runs the agent, for the benches that run it (scrape, soak): read from the
// manifest itself so a bench measures the deployed V8 flags, environment and limits, not a copy that drifts.
import { spawnSync } from 'node:child_process';
import { readFileSync, symlinkSync, writeFileSync } from 'node:fs';
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

/**
 * `entry` (a path from the repository root, e.g. `bin/resizelet.ts`) and what it imports, compiled as the
 * Dockerfile compiles the agent (type checking is the typecheck's job, not the bench's), into `dir`, which
 * gets the repository's node_modules (a symlink) and a package.json saying "type": "module", as the image
 * has. Returns the compiled entry's path: benches measure the code as the image runs it, not tsx.
 */
export function compileAsImage(entry: string, dir: string): string {
  const outDir = join(dir, 'app');
  const r = spawnSync(
    process.execPath,
    [
      join(repo, 'node_modules/typescript/bin/tsc'),
      join(repo, entry),
      ...['--outDir', outDir, '--rootDir', repo, '--noCheck', '--skipLibCheck'],
      ...['--rewriteRelativeImportExtensions', '--allowImportingTsExtensions', '--verbatimModuleSyntax'],
      ...['--module', 'nodenext', '--moduleResolution', 'nodenext', '--target', 'es2023', '--types', 'node'],
    ],
    { stdio: 'inherit' },
  );
  if (r.status !== 0) throw new Error(`tsc failed (${r.status})`);
  writeFileSync(join(outDir, 'package.json'), '{ "type": "module" }\n');
  symlinkSync(join(repo, 'node_modules'), join(outDir, 'node_modules'));
  return join(outDir, entry.replace(/\.ts$/, '.js'));
}
