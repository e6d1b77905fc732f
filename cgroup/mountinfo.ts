// Pure: which cgroup hierarchy holds each controller, from the text of /proc/self/mountinfo and the v2
// root's `cgroup.controllers` (read by the caller, detect-hierarchy.ts).
import { Controllers } from './types.ts';
import type { Controller, ControllerMount } from './types.ts';

/** One mount of a cgroup filesystem, from a mountinfo line. */
export interface CgroupMountEntry {
  version: 'v1' | 'v2';
  mount: string;
  /** The hierarchy directory shown at the mount point; not `/` inside a cgroup namespace or a bind mount. */
  root: string;
  /** v1: the controllers named in the super options (ours and others, e.g. `name=systemd` excluded). */
  controllers: string[];
}

export interface ParsedMountinfo {
  /** v1 hierarchies by controller, for the controllers resizelet uses. */
  v1: Partial<Record<Controller, CgroupMountEntry>>;
  /** The cgroup2 mount, if any. */
  v2: CgroupMountEntry | null;
  notes: string[];
}

/** mountinfo escapes space, tab, newline and backslash in paths as octal (`\040`). */
const unescapeMountPath = (s: string): string =>
  s.replace(/\\([0-7]{3})/g, (_m, oct: string) => String.fromCharCode(parseInt(oct, 8)));

/**
 * Parse /proc/self/mountinfo (proc(5)): `id parent maj:min root mountpoint opts [optional...] - fstype source
 * superopts`. A v1 `cgroup` mount's super options name its controllers (`rw,cpu,cpuacct`); which
 * controllers a `cgroup2` mount owns is not in mountinfo at all (see `controllersFromMounts`).
 */
export function parseMountinfo(text: string): ParsedMountinfo {
  const out: ParsedMountinfo = { v1: {}, v2: null, notes: [] };
  for (const line of text.split('\n')) {
    const fields = line.trim().split(' ');
    const dash = fields.indexOf('-');
    if (dash < 6) continue;
    const [fstype, , superOpts = ''] = fields.slice(dash + 1);
    const root = unescapeMountPath(fields[3] ?? '');
    const mount = unescapeMountPath(fields[4] ?? '');
    if (fstype === 'cgroup2') {
      const entry: CgroupMountEntry = { version: 'v2', mount, root, controllers: [] };
      // The same hierarchy can be mounted twice (a bind mount into a container); the first one with the
      // whole hierarchy visible wins.
      if (out.v2 === null || (out.v2.root !== '/' && root === '/')) out.v2 = entry;
      else out.notes.push(`ignored a second cgroup2 mount at ${mount}`);
    } else if (fstype === 'cgroup') {
      const controllers = superOpts.split(',').filter((o) => !o.includes('=') && o !== 'rw' && o !== 'ro');
      const entry: CgroupMountEntry = { version: 'v1', mount, root, controllers };
      for (const c of Controllers) {
        if (!controllers.includes(c)) continue;
        const prev = out.v1[c];
        if (prev === undefined || (prev.root !== '/' && root === '/')) out.v1[c] = entry;
      }
    }
  }
  return out;
}

/**
 * Which hierarchy holds each controller. A controller bound to a v1 hierarchy cannot also be on v2 (the kernel
 * binds each controller to one hierarchy), so v1 wins; otherwise a controller is on v2 only if the v2 root's
 * `cgroup.controllers` lists it — a hybrid host mounts an empty-ish v2 tree next to the v1 ones. v2 has no
 * cpuacct controller: CPU usage is in the core `cpu.stat` of every v2 cgroup, so cpuacct maps to the v2
 * mount whenever no v1 hierarchy has it.
 */
export function controllersFromMounts(
  parsed: ParsedMountinfo,
  v2Controllers: readonly string[],
): { controllers: Partial<Record<Controller, ControllerMount>>; notes: string[] } {
  const controllers: Partial<Record<Controller, ControllerMount>> = {};
  const notes: string[] = [];
  for (const c of Controllers) {
    const v1 = parsed.v1[c];
    if (v1 !== undefined) {
      controllers[c] = { version: 'v1', mount: v1.mount };
      notes.push(`${c}: cgroup v1 at ${v1.mount} (mountinfo super options ${v1.controllers.join(',')})`);
      if (v1.root !== '/') notes.push(`${c}: the v1 mount shows only ${v1.root} of its hierarchy`);
    } else if (parsed.v2 !== null && (v2Controllers.includes(c) || c === 'cpuacct')) {
      controllers[c] = { version: 'v2', mount: parsed.v2.mount };
      notes.push(
        c === 'cpuacct'
          ? `cpuacct: no v1 hierarchy; usage read from the v2 cpu.stat at ${parsed.v2.mount}`
          : `${c}: cgroup v2 at ${parsed.v2.mount} (listed in its cgroup.controllers)`,
      );
    }
  }
  return { controllers, notes };
}
