// Loads tests/contract/validator.mjs (ajv over docs/openapi.json) from the
// repository root, wherever this file was compiled to.
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';

type ValidatorModule = typeof import('../../../tests/contract/validator.mjs');

function repoRoot(): string {
  let dir = path.dirname(fileURLToPath(import.meta.url));
  while (!fs.existsSync(path.join(dir, 'tests/contract/validator.mjs'))) {
    const up = path.dirname(dir);
    if (up === dir) throw new Error('tests/contract/validator.mjs not found above ' + import.meta.url);
    dir = up;
  }
  return dir;
}

export const contract: ValidatorModule = await import(pathToFileURL(path.join(repoRoot(), 'tests/contract/validator.mjs')).href);
