// Fails if src/schema.d.ts is not what openapi-typescript generates from
// docs/openapi.json now: the committed types must follow the contract.
// Fix: npm run generate (and commit src/schema.d.ts).
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { execFileSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'tipd-client-gen-'));
const out = path.join(tmp, 'schema.d.ts');
try {
  execFileSync(
    path.join(root, 'node_modules/.bin/openapi-typescript'),
    [path.resolve(root, '../../docs/openapi.json'), '-o', out],
    { cwd: root, stdio: ['ignore', 'ignore', 'inherit'] },
  );
  const committed = fs.readFileSync(path.join(root, 'src/schema.d.ts'), 'utf8');
  const fresh = fs.readFileSync(out, 'utf8');
  if (committed !== fresh) {
    const a = committed.split('\n');
    const b = fresh.split('\n');
    let i = 0;
    while (i < a.length && a[i] === b[i]) i++;
    console.error(`src/schema.d.ts differs from the types of docs/openapi.json (first at line ${i + 1}):`);
    console.error(`  committed: ${a[i] ?? '<end>'}\n  generated: ${b[i] ?? '<end>'}`);
    console.error('run `npm run generate` in clients/typescript and commit src/schema.d.ts');
    process.exit(1);
  }
  console.log('src/schema.d.ts matches docs/openapi.json');
} finally {
  fs.rmSync(tmp, { recursive: true, force: true });
}
