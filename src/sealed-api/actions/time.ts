/** The built-in `time` example module (mini-share-point's demo): the server's clock, optionally in a time zone. */
import { z } from 'zod';
import { defineModule } from './types.ts';

export default defineModule({
  description: "The server's current time.",
  args: z.strictObject({ timeZone: z.string().min(1).max(64).optional() }),
  run(args) {
    const now = new Date();
    const timeZone = args.timeZone ?? 'UTC';
    let local: string;
    try {
      local = now.toLocaleString('sv-SE', { timeZone });
    } catch {
      local = now.toISOString();
    }
    return { iso: now.toISOString(), epochMs: now.getTime(), timeZone, local };
  },
});
