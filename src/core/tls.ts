/**
 * TLS certificate material: the config schema every front end uses for it, and loading the files into
 * options for `tls.createServer` / `https.createServer`.
 */
import { readFile } from 'node:fs/promises';
import { resolve } from 'node:path';
import { z } from 'zod';
import { createSecureContext, type SecureVersion } from 'node:tls';
import { GatewayError } from './errors.ts';

/** A `tls` config section: PEM files (relative paths are relative to the config file) and the floor version. */
export const tlsFilesSchema = z.strictObject({
  certFile: z.string().min(1),
  keyFile: z.string().min(1),
  caFile: z.string().min(1).optional(),
  /** When set, clients must present a certificate signed by a CA in this PEM bundle (mutual TLS). */
  clientCaFile: z.string().min(1).optional(),
  minVersion: z.enum(['TLSv1.2', 'TLSv1.3']).default('TLSv1.2'),
});

export interface TlsFiles {
  readonly certFile: string;
  readonly keyFile: string;
  readonly caFile?: string | undefined;
  readonly clientCaFile?: string | undefined;
  readonly minVersion: SecureVersion;
}

export interface TlsServerOptions {
  cert: Buffer;
  key: Buffer;
  ca?: Buffer | Buffer[];
  minVersion: SecureVersion;
  /** Mutual TLS: ask for a client certificate and refuse the handshake without a valid one. */
  requestCert?: boolean;
  rejectUnauthorized?: boolean;
}

/**
 * Reads and checks the files (the key must match the certificate); relative paths resolve against `baseDir`.
 * @throws GatewayError CORE_TLS_MATERIAL naming the file that failed.
 */
export async function loadTlsFiles(files: TlsFiles, baseDir: string): Promise<TlsServerOptions> {
  const read = async (file: string, what: string) => {
    const path = resolve(baseDir, file);
    try {
      return await readFile(path);
    } catch (err) {
      throw new GatewayError('CORE_TLS_MATERIAL', `cannot read TLS ${what} ${path} (${(err as NodeJS.ErrnoException).code ?? 'error'})`, { cause: err });
    }
  };
  const opts: TlsServerOptions = {
    cert: await read(files.certFile, 'certificate'),
    key: await read(files.keyFile, 'key'),
    minVersion: files.minVersion,
  };
  if (files.caFile !== undefined) opts.ca = await read(files.caFile, 'CA bundle');
  if (files.clientCaFile !== undefined) {
    const clientCa = await read(files.clientCaFile, 'client CA bundle');
    opts.ca = opts.ca === undefined ? clientCa : [opts.ca as Buffer, clientCa];
    opts.requestCert = true;
    opts.rejectUnauthorized = true;
  }
  try {
    createSecureContext(opts);
  } catch (err) {
    throw new GatewayError('CORE_TLS_MATERIAL', `TLS material ${files.certFile} / ${files.keyFile} is unusable: ${(err as Error).message}`, { cause: err });
  }
  return opts;
}
