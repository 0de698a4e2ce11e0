export function check(ok: boolean): void {
  if (!ok) {
    throw new Error("configuration check failed");
  }
}
