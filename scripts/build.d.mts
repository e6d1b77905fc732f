// Types for scripts/build.mjs (plain JavaScript, so the Dockerfile runs it on node without a compiler).
/** Bundles `entry` into `outdir`; resolves with the built entry's path. */
export function buildBundle(entry?: string, outdir?: string): Promise<string>;
