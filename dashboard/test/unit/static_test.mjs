// The page's sources keep to the rules its Content-Security-Policy and its
// handling of untrusted text rely on (docs/security.md, "The dashboard"):
// no HTML built from strings, no eval, no inline script, style or handler.
import {test} from 'node:test';
import assert from 'node:assert/strict';
import {readFileSync, readdirSync} from 'node:fs';
import {dirname, join} from 'node:path';
import {fileURLToPath} from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..', '..');

// Source without comments, so that explaining a rule does not break it.
function code(file) {
  return readFileSync(file, 'utf8').replace(/\/\*[\s\S]*?\*\//g, '').replace(/^\s*\/\/.*$/gm, '')
      .replace(/\s\/\/ .*$/gm, '');
}

test('no script builds HTML from strings or evaluates code', () => {
  const files = readdirSync(join(root, 'js')).filter((f) => f.endsWith('.js'));
  assert.ok(files.length >= 5);
  for (const f of files) {
    const src = code(join(root, 'js', f));
    for (const bad of [/\.innerHTML\b/, /\.outerHTML\b/, /insertAdjacentHTML/, /document\.write/,
      /\beval\s*\(/, /new\s+Function\s*\(/, /setTimeout\s*\(\s*['"`]/, /setInterval\s*\(\s*['"`]/,
      /\.setAttribute\s*\(\s*['"]on/, /localStorage/, /document\.cookie/]) {
      assert.ok(!bad.test(src), `${f} uses ${bad}`);
    }
  }
});

test('the page has no inline script, style or event handler, and loads only its own files', () => {
  const html = readFileSync(join(root, 'index.html'), 'utf8');
  for (const tag of html.match(/<script\b[^>]*>/g)) {
    assert.match(tag, /\ssrc="\/dashboard\//, `inline or foreign script: ${tag}`);
  }
  assert.doesNotMatch(html, /<style\b/);
  assert.doesNotMatch(html, /\sstyle=/);
  assert.doesNotMatch(html, /\son[a-z]+=/i);
  for (const [, url] of html.matchAll(/\s(?:src|href)="([^"]+)"/g)) {
    assert.match(url, /^\/dashboard\//, `loads ${url}`);
  }
});

test('the token input cannot end up in a URL if the form submits without the script', () => {
  const html = readFileSync(join(root, 'index.html'), 'utf8');
  const input = html.match(/<input[^>]*id="token-input"[^>]*>/)[0];
  assert.doesNotMatch(input, /\sname=/, 'an unnamed input is never submitted');
  assert.match(html, /<form id="login-form" method="post"/);
});
