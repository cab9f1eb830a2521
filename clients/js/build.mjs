// Build: tsc (ESM + declarations into dist/), then esbuild for the browser
// bundle (dist/herald.min.js, globals HeraldClient / Herald) and a CommonJS
// build (dist/index.cjs).
import { execFileSync } from 'node:child_process';
import { rmSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import * as esbuild from 'esbuild';

const here = dirname(fileURLToPath(import.meta.url));
rmSync(join(here, 'dist'), { recursive: true, force: true });
execFileSync(join(here, 'node_modules/.bin/tsc'), ['-p', join(here, 'tsconfig.json')], {
  stdio: 'inherit',
  cwd: here,
});
await esbuild.build({
  entryPoints: [join(here, 'src/browser.ts')],
  outfile: join(here, 'dist/herald.min.js'),
  bundle: true,
  minify: true,
  sourcemap: true,
  format: 'iife',
  target: ['es2020'],
  platform: 'browser',
  legalComments: 'none',
});
await esbuild.build({
  entryPoints: [join(here, 'src/index.ts')],
  outfile: join(here, 'dist/index.cjs'),
  bundle: true,
  format: 'cjs',
  target: ['node20'],
  platform: 'neutral',
  sourcemap: true,
});
console.log('built dist/ (index.js, index.d.ts, index.cjs, herald.min.js)');
