// @ethereumjs/client 0.9.0 calls `readline.default.createInterface` for `--unlock`; CommonJS
// `readline` has no default export. Preloaded with NODE_OPTIONS=--require=<this file>.
const readline = require('readline');
if (readline.default === undefined) readline.default = readline;
