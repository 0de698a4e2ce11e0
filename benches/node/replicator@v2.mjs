// Stand-in for the replicator@v2 module when a userscript runs in Node.js for comparison:
// it only records the handlers configureTargetSchema registers.
export const handlers = new Map();
export function configureTargetSchema(name, h) {
  handlers.set(name, h);
}
export function configureTargetTables() {}
