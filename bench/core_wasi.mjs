// Runs the core benchmark compiled to wasm32-wasip1 under Node's V8 (the engine Envoy
// embeds), so the table shows what the core costs inside a Wasm VM, not only natively.
// Usage: node bench/core_wasi.mjs target/wasm32-wasip1/release/examples/core_bench.wasm
import { WASI } from "node:wasi";
import { readFileSync } from "node:fs";

const wasi = new WASI({ version: "preview1", args: ["core_bench"], env: process.env, preopens: {} });
const module = await WebAssembly.compile(readFileSync(process.argv[2]));
const imports = wasi.getImportObject();
// The crate links the Proxy-Wasm imports; the core benchmark never calls them.
imports.env = Object.fromEntries(
  WebAssembly.Module.imports(module).filter((i) => i.module === "env").map((i) => [i.name, () => 0]),
);
const instance = await WebAssembly.instantiate(module, imports);
// The module is built as a reactor too (it exports _initialize); run it as a command.
wasi.start({ exports: { memory: instance.exports.memory, _start: instance.exports._start } });
