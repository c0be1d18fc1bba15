/**
 * Running one action: validate its arguments, check its file against the client's allow-list, run it
 * under `timeouts.actionMs` with an abort signal, and turn the outcome into an answer (expected refusals
 * keep their SEALED_* code; anything else is SEALED_ACTION_FAILED with details only in the log). Knows
 * nothing of HTTP or sealing, so the benchmark's unsealed baseline uses it as it is.
 */
import { errorSpec, GatewayError, isGatewayError } from '../core/errors.ts';
import type { Logger } from '../core/log.ts';
import { matchesAllow, type Client } from './registry.ts';
import type { Action, ActionContext } from './actions/types.ts';
import { fail, type Answer } from './respond.ts';

export interface ActionRunner {
  /** Runs `action`; `client` undefined = no allow-list check (the benchmark baseline). Never rejects. */
  run(
    action: Action,
    rawArgs: unknown,
    client: Client | undefined,
    ctx: Omit<ActionContext, 'signal' | 'log'>,
  ): Promise<Answer>;
  /** Aborts every running action (shutdown). */
  abortAll(): void;
}

export function createActionRunner(o: { readonly log: Logger; readonly actionMs: number }): ActionRunner {
  const aborts = new Set<AbortController>();
  return {
    async run(action, rawArgs, client, ctxBase) {
      const parsed = action.args.safeParse(rawArgs);
      if (!parsed.success) {
        const i = parsed.error.issues[0];
        const where = i === undefined ? '' : `${i.path.map(String).join('.') || '(args)'}: `;
        return fail('SEALED_INVALID_ARGS', `${where}${i?.message ?? 'invalid arguments'}`);
      }
      const file = action.file?.(parsed.data);
      if (client !== undefined && file !== undefined && !matchesAllow(client.entry.files, file))
        return fail('SEALED_FORBIDDEN', `file ${file} is not allowed for this client`);
      const ac = new AbortController();
      aborts.add(ac);
      const alog = o.log.child({ requestId: ctxBase.requestId, client: ctxBase.client.name, action: action.name });
      let timer: NodeJS.Timeout | undefined;
      try {
        const result = await Promise.race([
          action.run(parsed.data, { ...ctxBase, log: alog, signal: ac.signal }),
          new Promise<never>((_r, reject) => {
            timer = setTimeout(() => {
              ac.abort();
              reject(new GatewayError('SEALED_ACTION_TIMEOUT'));
            }, o.actionMs);
          }),
        ]);
        return { ok: true, result: result === undefined ? null : result, status: 200 };
      } catch (err) {
        if (isGatewayError(err) && err.code.startsWith('SEALED_')) {
          // Messages about content or arguments may quote them (JSON.parse echoes its input): code only.
          // (`detail`, not `msg`: pino's message argument would overwrite a `msg` key.)
          const quotes = err.code === 'SEALED_INVALID_CONTENT' || err.code === 'SEALED_INVALID_ARGS';
          alog.info(quotes ? { code: err.code } : { code: err.code, detail: err.message }, 'action refused');
          return fail(err.code, err.message);
        }
        alog.error({ err }, 'action failed');
        return fail('SEALED_ACTION_FAILED', errorSpec('SEALED_ACTION_FAILED').summary);
      } finally {
        clearTimeout(timer);
        aborts.delete(ac);
      }
    },
    abortAll() {
      for (const ac of aborts) ac.abort();
    },
  };
}
