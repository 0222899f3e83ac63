// Imported before matrix-js-sdk (ES modules run in import order): everything the SDK and its
// crypto WASM log goes to stderr, so stdout carries only the scenario's one JSON result.
for (const method of ["log", "info", "debug", "trace", "warn"]) {
    console[method] = (...args) => console.error(...args);
}
