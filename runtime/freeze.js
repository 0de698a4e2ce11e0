// Freezes the built-in objects and their prototypes so a userscript cannot change the
// language under the runtime (or under itself) by patching builtins.
(() => {
  const seen = new Set();
  const freeze = (value) => {
    if (value === null || (typeof value !== "object" && typeof value !== "function") || seen.has(value)) return;
    seen.add(value);
    Object.freeze(value);
    if (typeof value === "function" && value.prototype) freeze(value.prototype);
  };
  for (const name of Object.getOwnPropertyNames(globalThis)) {
    if (name === "globalThis") continue;
    freeze(globalThis[name]);
  }
  freeze(Object.getPrototypeOf(function* () {}));
  freeze(Object.getPrototypeOf(async function () {}));
  freeze(Object.getPrototypeOf([][Symbol.iterator]()));
})();
