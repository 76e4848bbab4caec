// JSON Schema validation against docs/openapi.json with ajv (draft 2020-12,
// the dialect of OpenAPI 3.1). Shared by check_examples.mjs (the examples in
// docs/api.md) and the end-to-end test of clients/typescript (live answers
// of a real node).
//
// Two modes:
//  - "contract": the schemas as published (unknown fields allowed, so the
//    API can add fields without breaking clients).
//  - strict (the default here): every object schema that lists properties
//    also refuses properties it does not list. An answer or example with a
//    field the document does not describe is drift, and fails.
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import Ajv2020 from 'ajv/dist/2020.js';

const here = path.dirname(fileURLToPath(import.meta.url));
export const SPEC_PATH = path.resolve(here, '../../docs/openapi.json');

// OpenAPI keywords and extensions that are not JSON Schema: dropped so ajv
// can run in strict mode (which catches typos in the schemas themselves).
function clean(node, strictObjects) {
  if (Array.isArray(node)) return node.map((n) => clean(n, strictObjects));
  if (node === null || typeof node !== 'object') return node;
  const out = {};
  for (const [k, v] of Object.entries(node)) {
    if (k === 'discriminator' || k.startsWith('x-')) continue;
    if (k === '$ref' && typeof v === 'string') {
      out[k] = v.replace('#/components/schemas/', '#/$defs/');
      continue;
    }
    out[k] = k === 'properties' ? Object.fromEntries(Object.entries(v).map(([pk, pv]) => [pk, clean(pv, strictObjects)])) : clean(v, strictObjects);
  }
  if (strictObjects && out.type === 'object' && out.properties && out.additionalProperties === undefined) {
    out.additionalProperties = false;
  }
  return out;
}

export function loadSpec(specPath = SPEC_PATH) {
  return JSON.parse(fs.readFileSync(specPath, 'utf8'));
}

// Returns { validate(schemaName, value) -> string[] (errors; empty = valid),
// schemaNames }.
export function makeValidator({ strict = true, specPath = SPEC_PATH } = {}) {
  const spec = loadSpec(specPath);
  const ajv = new Ajv2020({ allErrors: true, strict: true, strictTypes: false });
  const id = 'https://tipd.invalid/openapi.json';
  ajv.addSchema({ $id: id, $defs: clean(spec.components.schemas, strict) });
  const names = Object.keys(spec.components.schemas);
  const cache = new Map();
  return {
    schemaNames: names,
    validate(name, value) {
      if (!names.includes(name)) return [`no schema named ${name} in docs/openapi.json`];
      let fn = cache.get(name);
      if (!fn) {
        fn = ajv.getSchema(`${id}#/$defs/${name}`);
        cache.set(name, fn);
      }
      if (fn(value)) return [];
      return fn.errors.map((e) => `${e.instancePath || '/'} ${e.message}${e.params && e.params.additionalProperty ? ` (${e.params.additionalProperty})` : ''}`);
    },
  };
}

// The response schema the document gives for METHOD PATH and STATUS
// (application/json), as a component name, or null.
export function responseSchemaName(spec, method, pathPattern, status) {
  const op = spec.paths?.[pathPattern]?.[method.toLowerCase()];
  if (!op) return null;
  let resp = op.responses[String(status)] ?? op.responses.default;
  if (resp?.$ref) resp = spec.components.responses[resp.$ref.split('/').pop()];
  const ref = resp?.content?.['application/json']?.schema?.$ref;
  return ref ? ref.split('/').pop() : null;
}
