/** Loads TLS certificate material from files into options for `tls.createServer` / `https.createServer`. */
import { readFile } from 'node:fs/promises';
import { createSecureContext, type SecureVersion } from 'node:tls';
import { GatewayError } from './errors.ts';

export interface TlsFiles {
  readonly certFile: string;
  readonly keyFile: string;
  readonly caFile?: string | undefined;
  readonly minVersion: SecureVersion;
}

export interface TlsServerOptions {
  cert: Buffer;
  key: Buffer;
  ca?: Buffer;
  minVersion: SecureVersion;
}

/**
 * Reads and checks the files (the key must match the certificate).
 * @throws GatewayError CORE_TLS_MATERIAL naming the file that failed.
 */
export async function loadTlsFiles(files: TlsFiles): Promise<TlsServerOptions> {
  const read = async (path: string, what: string) => {
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
  try {
    createSecureContext(opts);
  } catch (err) {
    throw new GatewayError('CORE_TLS_MATERIAL', `TLS material ${files.certFile} / ${files.keyFile} is unusable: ${(err as Error).message}`, { cause: err });
  }
  return opts;
}
