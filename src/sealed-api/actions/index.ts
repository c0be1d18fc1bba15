/**
 * The action registry: built-ins (`ping`, `time`, `files.*`) plus custom modules loaded from the config.
 * Names are unique; a module may not shadow a built-in.
 */
import { z } from 'zod';
import { pathToFileURL } from 'node:url';
import { resolve } from 'node:path';
import { GatewayError } from '../../core/errors.ts';
import type { Action, ArgsSchema, ModuleDefinition } from './types.ts';
import timeModule from './time.ts';

const anyArgs: ArgsSchema<Record<string, unknown>> = z.looseObject({});

export function moduleAction(name: string, m: ModuleDefinition): Action {
  return {
    name,
    ...(m.description === undefined ? {} : { description: m.description }),
    args: m.args ?? anyArgs,
    run: (args, ctx) => Promise.resolve().then(() => m.run(args, ctx)),
  };
}

/** A no-op (benchmarks, liveness through the whole protocol). */
export const pingAction: Action<Record<string, never>> = {
  name: 'ping',
  description: 'Answers {pong:true}.',
  args: z.strictObject({}),
  run: () => Promise.resolve({ pong: true }),
};

export const timeAction: Action = moduleAction('time', timeModule);

/** Loads a custom module file. @throws GatewayError SEALED_MODULE_INVALID */
export async function loadModule(name: string, file: string, baseDir: string): Promise<Action> {
  const path = resolve(baseDir, file);
  let mod: { default?: unknown };
  try {
    mod = (await import(pathToFileURL(path).href)) as { default?: unknown };
  } catch (err) {
    throw new GatewayError(
      'SEALED_MODULE_INVALID',
      `module ${name}: cannot load ${path}: ${(err as Error).message}`,
      { cause: err },
    );
  }
  const def = mod.default as Partial<ModuleDefinition> | undefined;
  if (def === undefined || typeof def.run !== 'function') {
    throw new GatewayError(
      'SEALED_MODULE_INVALID',
      `module ${name}: ${path} must export default { run(args, ctx), args?, description? }`,
    );
  }
  if (def.args !== undefined && typeof def.args.safeParse !== 'function') {
    throw new GatewayError(
      'SEALED_MODULE_INVALID',
      `module ${name}: args must be a schema with safeParse (e.g. zod)`,
    );
  }
  return moduleAction(name, def as ModuleDefinition);
}

export class ActionRegistry {
  readonly #actions = new Map<string, Action>();

  add(action: Action): void {
    if (this.#actions.has(action.name))
      throw new GatewayError('SEALED_MODULE_INVALID', `action ${action.name} is registered twice`);
    this.#actions.set(action.name, action);
  }

  get(name: string): Action | undefined {
    return this.#actions.get(name);
  }

  names(): string[] {
    return [...this.#actions.keys()].sort();
  }
}
