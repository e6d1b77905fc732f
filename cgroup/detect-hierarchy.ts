// Where the cgroups are: which mount holds each controller (mountinfo plus the v2 root's
// `cgroup.controllers`), and which pods root the kubelet made under them, hence its cgroup driver.
import { DetectError, DetectErrorCodes, type DetectOptions } from './detect-types.ts';
import { controllersFromMounts, parseMountinfo } from './mountinfo.ts';
import { DEFAULT_PODS_ROOT } from './paths.ts';
import { Controllers } from './types.ts';
import type { CgroupDriver, CgroupFs, CgroupLayout } from './types.ts';

/** A directory at `path`; lstat, so a symlink to one does not count. */
export const exists = async (fs: CgroupFs, path: string): Promise<boolean> => {
  try {
    return (await fs.lstat(path)).isDirectory();
  } catch {
    return false;
  }
};

export async function detectControllers(
  opts: DetectOptions,
  notes: string[],
): Promise<CgroupLayout['controllers']> {
  if (opts.overrides?.controllers !== undefined) {
    notes.push('controllers: from configuration');
    return opts.overrides.controllers;
  }
  const parsed = parseMountinfo(opts.mountinfo);
  notes.push(...parsed.notes);
  let v2Controllers: string[] = [];
  if (parsed.v2 !== null) {
    try {
      const text = await opts.fs.readFile(`${parsed.v2.mount}/cgroup.controllers`, 'utf8');
      v2Controllers = text.trim().split(/\s+/).filter(Boolean);
      notes.push(
        `cgroup v2 mount ${parsed.v2.mount} lists controllers: ${v2Controllers.join(' ') || '(none)'}`,
      );
    } catch (err) {
      notes.push(
        `cannot read ${parsed.v2.mount}/cgroup.controllers (${(err as Error).message}); assuming none`,
      );
    }
  }
  const found = controllersFromMounts(parsed, v2Controllers);
  notes.push(...found.notes);
  const missing = Controllers.filter((c) => found.controllers[c] === undefined);
  if (missing.length > 0) {
    throw new DetectError(
      DetectErrorCodes.NO_CONTROLLER,
      `no cgroup hierarchy holds ${missing.join(', ')} (mountinfo has v1 ${Object.keys(parsed.v1).join(',') || 'none'}` +
        `${parsed.v2 ? `, v2 at ${parsed.v2.mount} with ${v2Controllers.join(' ') || 'no controllers'}` : ', no v2'})`,
    );
  }
  return found.controllers as CgroupLayout['controllers'];
}

export async function detectDriverAndRoot(
  fs: CgroupFs,
  controllers: CgroupLayout['controllers'],
  overrides: Partial<CgroupLayout>,
  notes: string[],
): Promise<{ driver: CgroupDriver; podsRoot: string }> {
  const mounts = [...new Set([controllers.memory.mount, controllers.cpu.mount])];
  const look = async (root: string): Promise<string | null> => {
    for (const m of mounts) if (await exists(fs, `${m}/${root}`)) return `${m}/${root}`;
    return null;
  };
  const driverOf = (root: string): CgroupDriver => (root.endsWith('.slice') ? 'systemd' : 'cgroupfs');
  if (overrides.podsRoot !== undefined) {
    const driver = overrides.driver ?? driverOf(overrides.podsRoot);
    const where = await look(overrides.podsRoot);
    notes.push(
      `pods root ${overrides.podsRoot}: from configuration (${where ? `found at ${where}` : 'not present yet'}); ` +
        `driver ${driver} ${overrides.driver ? 'from configuration' : 'from its name'}`,
    );
    return { driver, podsRoot: overrides.podsRoot };
  }
  const candidates = (overrides.driver ? [overrides.driver] : (['systemd', 'cgroupfs'] as const)).map(
    (d) => ({
      driver: d,
      root: DEFAULT_PODS_ROOT[d],
    }),
  );
  const present: { driver: CgroupDriver; root: string; where: string }[] = [];
  for (const c of candidates) {
    const where = await look(c.root);
    if (where !== null) present.push({ ...c, where });
  }
  const [only, second] = present;
  if (only === undefined) {
    throw new DetectError(
      DetectErrorCodes.NO_PODS_ROOT,
      `none of ${candidates.map((c) => c.root).join(', ')} exists under ${mounts.join(' or ')}: is the kubelet ` +
        'running with --cgroups-per-qos, or does it use a --cgroup-root that must be configured as podsRoot?',
    );
  }
  if (second !== undefined) {
    throw new DetectError(
      DetectErrorCodes.CONFLICT,
      `both ${only.where} and ${second.where} exist; configure the cgroup driver (or podsRoot) explicitly`,
    );
  }
  notes.push(
    `driver ${only.driver}: ${only.where} exists${overrides.driver ? ' (driver from configuration)' : ''}`,
  );
  return { driver: only.driver, podsRoot: only.root };
}
