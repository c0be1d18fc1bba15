/** Uuid normalisation as nymea shows a partner's uuid: lower-case, no braces; unparsable → all zeros. */
const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;
export const NULL_UUID = '00000000-0000-0000-0000-000000000000';

export function normalizeUuid(raw: string): string {
  let s = raw.trim().toLowerCase();
  if (s.startsWith('{') && s.endsWith('}')) s = s.slice(1, -1);
  return UUID.test(s) ? s : NULL_UUID;
}

/** Whether two clients claim the same uuid (compared case-insensitively, braces ignored). */
export function sameUuid(a: string, b: string): boolean {
  const bare = (u: string) => u.trim().toLowerCase().replace(/^\{(.*)\}$/, '$1');
  return bare(a) === bare(b);
}
