#!/usr/bin/env node
// The one build of the agent and CLI: the Dockerfile runs it, and the benches that measure the agent as the
// image runs it (scrape, soak) call buildBundle() below, so they measure this very output.
//
// One bundle (esbuild: dependencies included, unused code dropped, minified) instead of tsc's file-per-module
// output beside node_modules. @kubernetes/client-node alone is 25 MB of JavaScript in 1,033 files, nearly
// all of it API groups and variants the agent never calls, and V8 keeps the source of every module it
// loads: the agent on a 250-pod node (`npm run bench -- soak`) held 156-158 MB resident as tsc's output
// beside node_modules, and holds 121-124 MB as this bundle (live heap 52 -> 25 MB). Names are kept (error
// names, class names in logs and stack traces), and the dynamic imports (the CLI, the HTTP endpoint) stay
// separate chunks, loaded when used.
//
//   node scripts/build.mjs [entry] [outdir]        default: bin/resizelet.ts -> dist/bin
import { writeFile } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import process from 'node:process';
import { fileURLToPath, URL } from 'node:url';
import * as esbuild from 'esbuild';

const repo = fileURLToPath(new URL('..', import.meta.url));

/**
 * Bundles `entry` (relative to the repository) into `outdir`: `<name>.js` plus chunks, and a package.json
 * marking them ES modules. Returns the entry's output path. Needs no node_modules at run time.
 */
export async function buildBundle(entry = 'bin/resizelet.ts', outdir = join(repo, 'dist', 'bin')) {
  const result = await esbuild.build({
    entryPoints: [join(repo, entry)],
    outdir,
    entryNames: '[name]',
    bundle: true,
    splitting: true,
    format: 'esm',
    platform: 'node',
    target: 'node22',
    minify: true,
    keepNames: true,
    legalComments: 'external',
    // The dependencies that are CommonJS call require(): give the ES module output one.
    banner: {
      js: "import { createRequire as __resizeletRequire } from 'node:module'; const require = __resizeletRequire(import.meta.url);",
    },
    // Optional native speed-ups of `ws` (client-node's exec/attach, unused here): absent is the normal case.
    external: ['bufferutil', 'utf-8-validate'],
    logLevel: 'warning',
  });
  if (result.errors.length > 0) throw new Error(`esbuild failed: ${result.errors.length} errors`);
  await writeFile(join(outdir, 'package.json'), '{ "type": "module" }\n');
  return join(outdir, entry.replace(/^.*\//, '').replace(/\.ts$/, '.js'));
}

if (process.argv[1] && resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  const [entry, outdir] = process.argv.slice(2);
  const out = await buildBundle(entry, outdir ? resolve(outdir) : undefined);
  process.stdout.write(`built ${out}\n`);
}
