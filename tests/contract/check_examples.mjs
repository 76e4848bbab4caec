// Validates every fenced ```json block of docs/api.md against its schema in
// docs/openapi.json (strict: a field the document does not describe fails).
//
// Each block must be preceded (on the line before the fence, blank lines
// allowed) by a marker naming its schema:
//     <!-- schema: TipResponse -->
// A block that is not an API message (e.g. a config file) says so with
//     <!-- schema: none -->
// A block without a marker fails, so no example escapes the check.
// Usage: node check_examples.mjs [FILE.md ...]   (default ../../docs/api.md)
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { makeValidator } from './validator.mjs';

const here = path.dirname(fileURLToPath(import.meta.url));
const files = process.argv.length > 2 ? process.argv.slice(2) : [path.resolve(here, '../../docs/api.md')];
const v = makeValidator({ strict: true });

let checked = 0;
const failures = [];
for (const file of files) {
  const lines = fs.readFileSync(file, 'utf8').split('\n');
  for (let i = 0; i < lines.length; i++) {
    if (lines[i].trim() !== '```json') continue;
    const start = i + 1;
    let end = start;
    while (end < lines.length && lines[end].trim() !== '```') end++;
    const where = `${path.relative(process.cwd(), file)}:${start}`;
    let j = i - 1;
    while (j >= 0 && lines[j].trim() === '') j--;
    const m = j >= 0 ? lines[j].match(/^<!--\s*schema:\s*([A-Za-z0-9_]+)\s*-->$/) : null;
    i = end;
    if (!m) {
      failures.push(`${where}: json block without a <!-- schema: NAME --> marker on the line before it`);
      continue;
    }
    if (m[1] === 'none') continue;
    let value;
    try {
      value = JSON.parse(lines.slice(start, end).join('\n'));
    } catch (e) {
      failures.push(`${where}: not valid JSON (${e.message}); examples must be complete, no "…"`);
      continue;
    }
    const errors = v.validate(m[1], value);
    checked++;
    if (errors.length) failures.push(`${where}: does not match ${m[1]}:\n    ${errors.join('\n    ')}`);
  }
}
for (const f of failures) console.error(`FAIL ${f}`);
console.log(`${checked} passed, ${failures.length} failed`);
if (checked === 0) {
  console.error('no examples checked: the markers are gone?');
  process.exit(1);
}
process.exit(failures.length ? 1 : 0);
