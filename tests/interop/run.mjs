// CTest entry point for the live interop tests (tests/CMakeLists.txt: interop_libsignal_js).
// Exits 77 (CTest SKIP_RETURN_CODE) with a message when npm libsignal is not installed in
// tests/interop/node_modules; otherwise runs `node --test` on the interop tests and passes on
// its exit code. PARLEY_INTEROP_PEER must name the built parley-interop-peer.

import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const here = dirname(fileURLToPath(import.meta.url));
if (!existsSync(join(here, 'node_modules', 'libsignal', 'package.json'))) {
  console.log('SKIP: npm libsignal 6.0.0 is not installed; run `npm ci` in tests/interop');
  process.exit(77);
}
if (!process.env.PARLEY_INTEROP_PEER || !existsSync(process.env.PARLEY_INTEROP_PEER)) {
  console.error('PARLEY_INTEROP_PEER does not name the built parley-interop-peer');
  process.exit(1);
}
const r = spawnSync(process.execPath, ['--test', '--test-reporter=spec', 'interop.test.mjs'],
                    { cwd: here, stdio: 'inherit', timeout: 280_000 });
process.exit(r.status ?? 1);
