// The hardening flags: --namespaces and --node-refresh, and the test-only fault hooks, which are read from the
// environment only and refuse anything malformed rather than guessing.
import { describe, expect, it } from 'vitest';
import { ConfigError, loadConfig, type Config } from '../../agent/config.ts';

const base = ['--node-name', 'n', '--kubeconfig', '/dev/null'];
const load = (argv: string[], env: Record<string, string> = {}): Config =>
  loadConfig({ argv: [...base, ...argv], env, homeKubeconfig: undefined }) as Config;

describe('hardening configuration', () => {
  it('reads --namespaces (or RESIZELET_NAMESPACES) as a set of namespace names; unset means all', () => {
    expect(load([]).namespaces).toBeUndefined();
    expect(load(['--namespaces', 'shop, team-a ,']).namespaces).toEqual(['shop', 'team-a']);
    expect(load([], { RESIZELET_NAMESPACES: 'a' }).namespaces).toEqual(['a']);
    expect(() => load(['--namespaces', 'Shop'])).toThrow(ConfigError);
    expect(() => load(['--namespaces', '../x'])).toThrow(/is not a namespace name/);
  });

  it('reads --node-refresh as a duration (default 30 s)', () => {
    expect(load([]).nodeRefreshIntervalMs).toBe(30_000);
    expect(load(['--node-refresh', '2s']).nodeRefreshIntervalMs).toBe(2_000);
  });

  it('reads --run-checkpoint (or RESIZELET_RUN_CHECKPOINT); unset or empty means none; never the disk copy', () => {
    expect(load([]).runCheckpointPath).toBeUndefined();
    expect(load(['--run-checkpoint', '']).runCheckpointPath).toBeUndefined();
    expect(load(['--run-checkpoint', '/run/r/cp.json']).runCheckpointPath).toBe('/run/r/cp.json');
    expect(load([], { RESIZELET_RUN_CHECKPOINT: '/run/x.json' }).runCheckpointPath).toBe('/run/x.json');
    expect(() => load(['--checkpoint', '/var/a.json', '--run-checkpoint', '/var/./a.json'])).toThrow(
      /must not be the --checkpoint file/,
    );
  });

  it('takes the test hooks from the environment only, and is off without them', () => {
    expect(load([]).testHooks).toBeUndefined();
    expect(() => load(['--test-pause-after-writes', '1'])).toThrow(ConfigError);
    expect(load([], { RESIZELET_TEST_PAUSE_AFTER_WRITES: '3' }).testHooks).toEqual({
      pauseAfterWrites: { writes: 3, mode: 'stop' },
    });
    expect(
      load([], {
        RESIZELET_TEST_PAUSE_AFTER_WRITES: '1:hang',
        RESIZELET_TEST_CGROUP_FAULTS: 'EBUSY:memory.limit_in_bytes:2, EACCES:cpu.max:1',
      }).testHooks,
    ).toEqual({
      pauseAfterWrites: { writes: 1, mode: 'hang' },
      cgroupFaults: [
        { errno: 'EBUSY', file: 'memory.limit_in_bytes', times: 2 },
        { errno: 'EACCES', file: 'cpu.max', times: 1 },
      ],
    });
  });

  it('refuses malformed test hooks', () => {
    expect(() => load([], { RESIZELET_TEST_PAUSE_AFTER_WRITES: 'soon' })).toThrow(ConfigError);
    expect(() => load([], { RESIZELET_TEST_CGROUP_FAULTS: 'EBUSY:../../etc/passwd:1' })).toThrow(ConfigError);
    expect(() => load([], { RESIZELET_TEST_CGROUP_FAULTS: 'busy:memory.max:1' })).toThrow(ConfigError);
  });
});
