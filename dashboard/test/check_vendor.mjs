// Checks that dashboard/vendor/ holds exactly the files of the uPlot
// package pinned in package.json and package-lock.json (installed by
// `npm ci`, whose lock file carries the package's integrity hash). Run by
// ctest (dashboard_vendor_check). To update uPlot: change the version in
// package.json, `npm install`, copy the files (dashboard/README.md), commit.
import {readFileSync, existsSync} from 'node:fs';
import {dirname, join} from 'node:path';
import {fileURLToPath} from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const pkg = JSON.parse(readFileSync(join(root, 'package.json'), 'utf8'));
const lock = JSON.parse(readFileSync(join(root, 'package-lock.json'), 'utf8'));

const failures = [];
const want = pkg.devDependencies.uplot;
if (!/^\d+\.\d+\.\d+$/.test(want)) failures.push(`package.json must pin uplot exactly, has "${want}"`);
const locked = lock.packages && lock.packages['node_modules/uplot'];
if (!locked || locked.version !== want || !locked.integrity) {
  failures.push(`package-lock.json must lock uplot ${want} with an integrity hash`);
}
const installedDir = join(root, 'node_modules', 'uplot');
if (!existsSync(installedDir)) {
  console.error('check_vendor: dashboard/node_modules/uplot is missing; run `npm ci` in dashboard/ ' +
      '(scripts/install-deps.sh does)');
  process.exit(1);
}
const installed = JSON.parse(readFileSync(join(installedDir, 'package.json'), 'utf8'));
if (installed.version !== want) {
  failures.push(`node_modules has uplot ${installed.version}, package.json pins ${want}; run npm ci`);
}
const pairs = [
  ['vendor/uPlot.iife.min.js', 'dist/uPlot.iife.min.js'],
  ['vendor/uPlot.min.css', 'dist/uPlot.min.css'],
  ['vendor/uPlot.LICENSE', 'LICENSE'],
];
for (const [vendored, original] of pairs) {
  const a = readFileSync(join(root, vendored));
  const b = readFileSync(join(installedDir, original));
  if (!a.equals(b)) failures.push(`${vendored} differs from uplot@${want}/${original}`);
}
if (failures.length) {
  for (const f of failures) console.error('check_vendor: ' + f);
  process.exit(1);
}
console.log(`check_vendor: ${pairs.length} vendored files equal uplot@${want}`);
