// Freezes the built-in objects and their prototypes so a userscript cannot change the
// language under the runtime (or under itself) by patching builtins.
//
// Freezing a prototype normally breaks plain assignments that would create an own property
// of the same name on an instance (`err.message = …`, `obj.toString = …`: the "override
// mistake"). For those names the prototype's property becomes a getter/setter pair: reading
// gives the builtin, assigning on an instance defines the instance's own property, assigning
// on the prototype itself throws.
(() => {
  const OVERRIDABLE = ["constructor", "name", "message", "toString", "toLocaleString", "valueOf", "toJSON"];
  const seen = new Set();
  const enableOverrides = (proto) => {
    for (const key of OVERRIDABLE) {
      const desc = Object.getOwnPropertyDescriptor(proto, key);
      if (!desc || !("value" in desc) || !desc.configurable) continue;
      const value = desc.value;
      Object.defineProperty(proto, key, {
        get() {
          return value;
        },
        set(v) {
          if (this === proto) throw new TypeError(`Cannot assign to read only property '${key}' of a built-in prototype`);
          Object.defineProperty(this, key, { value: v, writable: true, enumerable: true, configurable: true });
        },
        enumerable: desc.enumerable,
        configurable: false,
      });
    }
  };
  const freeze = (value) => {
    if (value === null || (typeof value !== "object" && typeof value !== "function") || seen.has(value)) return;
    seen.add(value);
    if (typeof value === "function" && value.prototype) {
      enableOverrides(value.prototype);
      freeze(value.prototype);
    }
    Object.freeze(value);
  };
  for (const name of Object.getOwnPropertyNames(globalThis)) {
    if (name === "globalThis") continue;
    freeze(globalThis[name]);
  }
  freeze(Object.getPrototypeOf(function* () {}));
  freeze(Object.getPrototypeOf(async function () {}));
  freeze(Object.getPrototypeOf([][Symbol.iterator]()));
})();
