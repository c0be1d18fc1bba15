/**
 * What an action is: a public name, an argument schema, an optional file it touches (for the allow-list)
 * and a handler that receives validated arguments and the authenticated client's context.
 * Handlers report expected failures with GatewayError SEALED_* codes; anything else becomes
 * SEALED_ACTION_FAILED (500) with the details only in the log.
 */
import type { Logger } from '../../core/log.ts';

export interface ClientContext {
  readonly kid: string;
  readonly name: string;
}

export interface ActionContext {
  readonly client: ClientContext;
  readonly requestId: string;
  /** The client's address (after reverse-proxy hops). */
  readonly remoteAddress: string;
  readonly log: Logger;
  /** Aborted when the action runs past timeouts.actionMs or the server closes. */
  readonly signal: AbortSignal;
}

/** A schema-like object: zod schemas fit, so do hand-written validators. */
export interface ArgsSchema<A> {
  safeParse(
    input: unknown,
  ):
    | { success: true; data: A }
    | { success: false; error: { issues: readonly { path: readonly PropertyKey[]; message: string }[] } };
}

export interface Action<A = unknown> {
  readonly name: string;
  readonly description?: string;
  readonly args: ArgsSchema<A>;
  /** The logical file the call touches, checked against the client's `files` allow-list. */
  file?(args: NoInfer<A>): string | undefined;
  run(args: A, ctx: ActionContext): Promise<unknown>;
}

/** The shape of a custom module file's default export. */
export interface ModuleDefinition<A = unknown> {
  readonly description?: string;
  readonly args?: ArgsSchema<A>;
  run(args: A, ctx: ActionContext): unknown;
}

/** Helper for module authors: gives type inference for `args` in `run`. */
export function defineModule<A>(m: ModuleDefinition<A>): ModuleDefinition<A> {
  return m;
}

/** Erases an action's argument type for the registry (the registry validates args with `args` first). */
export function defineAction<A>(a: Action<A>): Action {
  return a;
}
