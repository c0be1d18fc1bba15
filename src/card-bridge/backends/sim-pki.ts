/**
 * Test and demo PKI for simulated signing cards: a root CA, an intermediate CA and an end-user certificate
 * with real RSA keys, built with node:crypto and the small DER writer. Material is generated on first use
 * and, when a cache directory is given, kept there (PEM key + DER certificates in one JSON file, mode 600)
 * so that `npm start` shows the same certificates across runs. Development material only.
 */
import { createHash, createPrivateKey, generateKeyPairSync, sign as cryptoSign, type KeyObject } from 'node:crypto';
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { bitString, bool, integer, name, nullValue, octetString, oid, seq, time, tlv } from '../protocol/der.ts';

export interface SubjectSpec {
  readonly commonName: string;
  readonly countryName?: string;
  readonly organizationName?: string;
  readonly serialNumber?: string;
}

export interface SigningMaterial {
  readonly key: KeyObject;
  /** End-user certificate, DER. */
  readonly certificate: Buffer;
  /** CA certificates from the issuer of `certificate` up to the root, DER. */
  readonly chain: readonly Buffer[];
}

const OIDS = {
  commonName: '2.5.4.3',
  serialNumber: '2.5.4.5',
  countryName: '2.5.4.6',
  organizationName: '2.5.4.10',
  sha256WithRSA: '1.2.840.113549.1.1.11',
  basicConstraints: '2.5.29.19',
  keyUsage: '2.5.29.15',
} as const;

function subjectName(s: SubjectSpec): Buffer {
  const attrs: [string, string][] = [];
  if (s.countryName !== undefined) attrs.push([OIDS.countryName, s.countryName]);
  if (s.organizationName !== undefined) attrs.push([OIDS.organizationName, s.organizationName]);
  if (s.serialNumber !== undefined) attrs.push([OIDS.serialNumber, s.serialNumber]);
  attrs.push([OIDS.commonName, s.commonName]);
  return name(attrs);
}

function certificate(opts: { subject: Buffer; issuer: Buffer; publicKey: KeyObject; signer: KeyObject; ca: boolean; serial: Buffer }): Buffer {
  const alg = seq(oid(OIDS.sha256WithRSA), nullValue());
  const spki = opts.publicKey.export({ type: 'spki', format: 'der' });
  const notBefore = new Date(Date.UTC(2025, 0, 1));
  const notAfter = new Date(Date.UTC(2045, 0, 1));
  const exts = [
    seq(oid(OIDS.basicConstraints), bool(true), octetString(opts.ca ? seq(bool(true)) : seq())),
    // keyUsage: CA = keyCertSign|cRLSign (bits 5,6), end user = digitalSignature|nonRepudiation (bits 0,1)
    seq(oid(OIDS.keyUsage), bool(true), octetString(opts.ca ? tlv(0x03, Buffer.from([1, 0x06])) : tlv(0x03, Buffer.from([6, 0xc0])))),
  ];
  const tbs = seq(
    tlv(0xa0, integer(Buffer.from([2]))),
    integer(opts.serial),
    alg,
    opts.issuer,
    seq(time(notBefore), time(notAfter)),
    opts.subject,
    spki,
    tlv(0xa3, seq(...exts)),
  );
  const signature = cryptoSign('sha256', tbs, opts.signer);
  return seq(tbs, alg, bitString(signature));
}

function rsa(bits: number): { privateKey: KeyObject; publicKey: KeyObject } {
  return generateKeyPairSync('rsa', { modulusLength: bits, publicExponent: 0x10001 });
}

/** Generates a fresh three-level chain for `subject`. */
export function generateSigningMaterial(subject: SubjectSpec, bits = 2048): SigningMaterial {
  const serial = (label: string) => createHash('sha256').update(label).digest().subarray(0, 8);
  const root = rsa(bits);
  const inter = rsa(bits);
  const user = rsa(bits);
  const rootName = subjectName({ commonName: 'Gatehouse Simulated Root CA', countryName: 'CZ', organizationName: 'Gatehouse Test PKI' });
  const interName = subjectName({ commonName: 'Gatehouse Simulated Qualified CA', countryName: 'CZ', organizationName: 'Gatehouse Test PKI' });
  const rootCert = certificate({ subject: rootName, issuer: rootName, publicKey: root.publicKey, signer: root.privateKey, ca: true, serial: serial('root') });
  const interCert = certificate({ subject: interName, issuer: rootName, publicKey: inter.publicKey, signer: root.privateKey, ca: true, serial: serial('inter') });
  const userCert = certificate({
    subject: subjectName(subject),
    issuer: interName,
    publicKey: user.publicKey,
    signer: inter.privateKey,
    ca: false,
    serial: serial(`user ${subject.commonName}`),
  });
  return { key: user.privateKey, certificate: userCert, chain: [interCert, rootCert] };
}

interface CachedMaterial {
  readonly subject: SubjectSpec;
  readonly key: string;
  readonly certificate: string;
  readonly chain: string[];
}

/**
 * Loads the material for `subject` from `cacheDir` (file per subject) or generates and stores it.
 * Without a cache directory, generates in memory each time.
 */
export function loadSigningMaterial(subject: SubjectSpec, cacheDir: string | undefined): SigningMaterial {
  if (cacheDir === undefined) return generateSigningMaterial(subject);
  const id = createHash('sha256').update(JSON.stringify(subject)).digest('hex').slice(0, 16);
  const file = join(cacheDir, `signing-${id}.json`);
  try {
    const c = JSON.parse(readFileSync(file, 'utf8')) as CachedMaterial;
    return {
      key: createPrivateKey(c.key),
      certificate: Buffer.from(c.certificate, 'base64'),
      chain: c.chain.map((x) => Buffer.from(x, 'base64')),
    };
  } catch {
    // missing or unreadable cache: generate below
  }
  const m = generateSigningMaterial(subject);
  const c: CachedMaterial = {
    subject,
    key: m.key.export({ type: 'pkcs8', format: 'pem' }).toString(),
    certificate: m.certificate.toString('base64'),
    chain: m.chain.map((x) => x.toString('base64')),
  };
  try {
    mkdirSync(cacheDir, { recursive: true, mode: 0o700 });
    writeFileSync(file, JSON.stringify(c), { mode: 0o600 });
  } catch {
    // a read-only tree still runs, with fresh material each start
  }
  return m;
}
