// The document against the protobuf messages the node renders: every schema
// of docs/openapi.json named like a message of proto/tipd/*.proto must have
// exactly that message's fields, each with the JSON type protobuf's mapping
// gives it (uint64/int64 -> decimal string, 32-bit ints -> integer, bytes ->
// base64, repeated -> array, map -> object, message -> $ref to that message).
// A field added to api.proto without the document fails here, naming it.
// Usage: node check_proto.mjs [REPO_ROOT]
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const root = process.argv[2] ?? path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
const spec = JSON.parse(fs.readFileSync(path.join(root, 'docs/openapi.json'), 'utf8'));
const schemas = spec.components.schemas;

// message name -> [{name, type, repeated, map}]
function parseProtos(dir) {
  const messages = new Map();
  for (const file of fs.readdirSync(dir).filter((f) => f.endsWith('.proto'))) {
    const text = fs.readFileSync(path.join(dir, file), 'utf8').replace(/\/\/[^\n]*/g, '');
    const re = /\bmessage\s+(\w+)\s*\{/g;
    let m;
    while ((m = re.exec(text))) {
      let depth = 1;
      let i = re.lastIndex;
      while (depth > 0 && i < text.length) {
        if (text[i] === '{') depth++;
        else if (text[i] === '}') depth--;
        i++;
      }
      const body = text.slice(re.lastIndex, i - 1);
      const fields = [];
      const fre = /(?:^|[;{}\s])(repeated\s+)?(map\s*<\s*\w+\s*,\s*[\w.]+\s*>|[\w.]+)\s+(\w+)\s*=\s*\d+\s*;/g;
      let f;
      while ((f = fre.exec(body))) {
        if (f[2] === 'oneof' || f[2] === 'option' || f[2] === 'reserved') continue;
        fields.push({ name: f[3], type: f[2].replace(/\s+/g, ''), repeated: Boolean(f[1]) });
      }
      messages.set(m[1], fields);
    }
  }
  return messages;
}

const deref = (s) => (s && s.$ref ? s.$ref.split('/').pop() : null);
const scalar = {
  uint64: ['Uint64', 'Uint64Input'], int64: ['Uint64', 'Uint64Input'], fixed64: ['Uint64', 'Uint64Input'],
  uint32: 'integer', int32: 'integer', fixed32: 'integer', bool: 'boolean', string: 'string',
  double: 'number', float: 'number', bytes: ['Base64Bytes'],
};

function typeProblem(field, prop) {
  if (field.type.startsWith('map<')) return prop.type === 'object' ? null : 'a map is a JSON object';
  if (field.repeated) {
    if (prop.type !== 'array') return 'a repeated field is a JSON array';
    return typeProblem({ ...field, repeated: false }, prop.items ?? {});
  }
  const want = scalar[field.type];
  if (Array.isArray(want)) return want.includes(deref(prop)) ? null : `${field.type} must be $ref ${want.join(' or ')}`;
  if (want) {
    // An enum of strings or a string with a pattern is still a string.
    const got = prop.type ?? (prop.const !== undefined ? typeof prop.const : deref(prop) && schemas[deref(prop)]?.type);
    return got === want ? null : `${field.type} must be JSON ${want}, not ${JSON.stringify(prop)}`;
  }
  // A message (or enum) type: a $ref to the schema of the same name (or,
  // for a renamed schema, any $ref).
  return deref(prop) ? null : `${field.type} must be a $ref`;
}

// Fields the document already has for branches of this session not merged
// yet (token records, refunds, the compact batch answer, the new event
// payloads). A pending field that the proto HAS fails: delete it here then.
const PENDING = new Set([]);

const messages = parseProtos(path.join(root, 'proto/tipd'));
const failures = [];
let checked = 0;
for (const [name, schema] of Object.entries(schemas)) {
  const fields = messages.get(name);
  if (!fields || name === 'Event') continue;
  checked++;
  const props = schema.properties ?? {};
  for (const f of fields) {
    if (!(f.name in props)) failures.push(`${name}.${f.name}: in proto/tipd but not in docs/openapi.json`);
    else {
      const p = typeProblem(f, props[f.name]);
      if (p) failures.push(`${name}.${f.name}: ${p}`);
    }
  }
  for (const k of Object.keys(props)) {
    const inProto = fields.some((f) => f.name === k);
    if (!inProto && !PENDING.has(`${name}.${k}`)) failures.push(`${name}.${k}: in docs/openapi.json but not in the proto message`);
    if (inProto && PENDING.has(`${name}.${k}`)) failures.push(`${name}.${k}: in the proto now: remove it from PENDING in check_proto.mjs`);
  }
}
// Event: the union of its variants is the message.
const eventFields = messages.get('Event') ?? [];
const variantProps = new Set(Object.keys(schemas).filter((n) => n.startsWith('Event_')).flatMap((n) => Object.keys(schemas[n].properties)));
// Payload fields the proto reserves but no event type carries yet (the
// plan's TokenEvent token = 18, "token_revoked", is not emitted).
const RESERVED_EVENT_FIELDS = new Set(['token']);
for (const f of eventFields) {
  if (!variantProps.has(f.name) && !RESERVED_EVENT_FIELDS.has(f.name)) failures.push(`Event.${f.name}: payload field without an Event_<type> schema carrying it`);
}
for (const k of variantProps) {
  const inProto = eventFields.some((f) => f.name === k);
  if (!inProto && !PENDING.has(`Event.${k}`)) failures.push(`Event.${k}: in an Event_<type> schema but not in the proto message`);
  if (inProto && PENDING.has(`Event.${k}`)) failures.push(`Event.${k}: in the proto now: remove it from PENDING in check_proto.mjs`);
}
for (const f of failures) console.error(`FAIL ${f}`);
console.log(`${checked} passed, ${failures.length} failed`);
if (checked < 20) {
  console.error('fewer than 20 schemas matched proto messages: is the parser broken?');
  process.exit(1);
}
process.exit(failures.length ? 1 : 0);
