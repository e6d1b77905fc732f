// The image's build (scripts/build.mjs, as the Dockerfile runs it) laid out as the image lays it out
// (/app/dist and /app/bin/resizelet.mjs, no node_modules anywhere above it), then used as a cluster would
// use it: the agent completes a real resize (fake API server, real cgroups), and the CLI through the
// launcher reads the status back. No Docker engine here; this is the image's content without the image.
import { copyFile, mkdir, mkdtemp, rm } from 'node:fs/promises';
import { existsSync } from 'node:fs';
import { execFile } from 'node:child_process';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { FakeApiServer } from '../fakes/apiserver.ts';
import {
  oneAppPodNode,
  sandboxAgentArgs,
  startAgentProcess,
  statusOf,
  waitFor,
  withAnnotations,
  type AgentProcess,
} from '../agent/support.ts';
import { createRealSandbox, realCgroupsAvailable, type RealSandbox } from '../support/real-cgroup.ts';
import { buildBundle } from '../../scripts/build.mjs';

const repo = fileURLToPath(new URL('../../', import.meta.url));
const run = promisify(execFile);
const available = realCgroupsAvailable();
if (!available.ok) console.warn(`skipping the bundled agent's resize: ${available.reason}`);

const NODE = 'bundle-node';
const NS = 'shop';

describe('the image’s build (scripts/build.mjs), run without node_modules', () => {
  let dir: string;
  let app: string;

  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'resizelet-bundle-'));
    app = join(dir, 'app');
    await buildBundle('bin/resizelet.ts', join(app, 'dist', 'bin'));
    await mkdir(join(app, 'bin'));
    await copyFile(join(repo, 'bin/resizelet.mjs'), join(app, 'bin/resizelet.mjs'));
  }, 60_000);

  afterAll(async () => {
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  it('has nothing to resolve a dependency from, and the launcher runs the build', async () => {
    for (let d = app; d !== dirname(d); d = dirname(d))
      expect(existsSync(join(d, 'node_modules'))).toBe(false);
    const { stdout } = await run(process.execPath, [join(app, 'bin/resizelet.mjs'), '--help'], { cwd: dir });
    expect(stdout).toMatch(/^usage: resizelet <command>/);
  });

  describe.skipIf(!available.ok)('on this node', () => {
    let sandbox: RealSandbox;
    let api: FakeApiServer;
    let agent: AgentProcess | undefined;
    let containerPath: string;

    beforeAll(async () => {
      sandbox = await createRealSandbox();
      ({ api, containerPath } = await oneAppPodNode({ sandbox, dir, node: NODE, namespace: NS }));
      agent = startAgentProcess(
        sandboxAgentArgs({ nodeName: NODE, dir, podsRoot: sandbox.layout.podsRoot }),
        {},
        {
          entry: join(app, 'dist/bin/resizelet.js'),
          cwd: dir,
        },
      );
      await agent.waitForLog(/endpoint listening/);
    }, 60_000);

    afterAll(async () => {
      await agent?.kill('SIGTERM');
      await api?.close();
      await sandbox?.cleanup();
    });

    it('the bundled agent resizes a running container; the bundled CLI reports it', async () => {
      api.upsertPod(
        withAnnotations(api.getPod(NS, 'web')!, { 'resizelet.io/resize': '{"app":{"limits":{"cpu":"1"}}}' }),
      );
      await waitFor('Completed', () =>
        statusOf(api, NS, 'web')?.resizeStatus === 'Completed' ? true : undefined,
      );
      expect((await sandbox.read(containerPath)).settings.cpuQuotaUs).toBe(100_000);
      const { stdout } = await run(
        process.execPath,
        [join(app, 'bin/resizelet.mjs'), 'status', 'web', '-n', NS],
        {
          cwd: dir,
          env: { ...process.env, KUBECONFIG: join(dir, 'kubeconfig') },
        },
      );
      expect(stdout).toContain('Completed');
      expect(stdout).toContain('web');
    }, 30_000);
  });
});
