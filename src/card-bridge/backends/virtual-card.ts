/**
 * One deterministic virtual smartcard: command APDU in, response APDU out (synchronous, no I/O). Used by the
 * simulator backend and by the vpcd card connector. It answers:
 * - scripted rules (exact or prefix match) in three modes: plain, `chain` (61xx then GET RESPONSE), `le`
 *   (6Cxx until the Le matches);
 * - `80EE0000 Lc data` echo (benchmarks and tests);
 * - for signing cards, the I.CA-like file layout and SIGN dialogue of protocol/ica.ts, with a real RSA key:
 *   PIN tries (63Cx, then 6983 blocked), key id check (6A88), PSO HASH / PSO CDS (PKCS#1 v1.5).
 * - SELECT with no data field (`00A4000000`, `00A4040000`, Lc absent) selects the MF → 9000, as ISO 7816-4
 *   cards do (and GlobalPlatform cards, which select their default application for P1=04);
 * Everything else: SELECT → 6A82, unknown INS → 6D00.
 */
import { constants, privateEncrypt, type KeyObject } from 'node:crypto';
import { CERT_KIND_CA, CERT_KIND_END_USER } from '../protocol/ica.ts';

export interface ScriptRule {
  /** Command APDU hex; a trailing `*` makes it a prefix. */
  readonly command: string;
  /** Response data + SW, hex. */
  readonly response: string;
  readonly mode: 'plain' | 'chain' | 'le';
}

export interface SigningCardSpec {
  readonly key: KeyObject;
  readonly certificate: Buffer;
  readonly chain: readonly Buffer[];
  readonly pin: string;
  readonly keyId: number;
  readonly pinTries: number;
}

export interface VirtualCardSpec {
  readonly atr: Buffer;
  readonly script: readonly ScriptRule[];
  readonly signing: SigningCardSpec | undefined;
}

/** How many APDUs a virtual card remembers in its `log` (the latest ones). */
export const MAX_LOGGED_APDUS = 1024;
/** Hex digits of one APDU kept in the `log` (a PSO HASH of SHA-256 fits whole). */
export const MAX_LOGGED_APDU_CHARS = 96;

const DIGEST_INFO: Record<number, Buffer> = {
  0x10: Buffer.from('3021300906052b0e03021a05000414', 'hex'),
  0x30: Buffer.from('3031300d060960864801650304020105000420', 'hex'),
};

const sw = (n: number): Buffer => Buffer.from([n >> 8, n & 0xff]);
const ok = (data: Uint8Array = Buffer.alloc(0)): Buffer => Buffer.concat([data, sw(0x9000)]);

type Df = 'MF' | '3F50' | '0604';

export class VirtualCard {
  #pending: Buffer | undefined;
  #pendingSw = 0x9000;
  #df: Df = 'MF';
  #ef: string | undefined;
  #pinOk = new Set<number>();
  #triesLeft: number;
  #hashAlg: number | undefined;
  #kidSet = false;
  #hash: Buffer | undefined;
  readonly #files = new Map<string, Buffer>();
  readonly #dir: Buffer[] = [];
  /**
   * The latest APDUs processed, oldest first (tests count PIN attempts through this): at most
   * MAX_LOGGED_APDUS entries of at most MAX_LOGGED_APDU_CHARS hex digits each (longer ones end in `…`), so a
   * client streaming APDUs at a simulated card holds no memory beyond that.
   */
  readonly log: string[] = [];

  constructor(readonly spec: VirtualCardSpec) {
    this.#triesLeft = spec.signing?.pinTries ?? 0;
    if (spec.signing !== undefined) {
      const put = (fid: string, der: Buffer, kind: number) => {
        this.#files.set(fid, der);
        this.#dir.push(Buffer.concat([Buffer.from(fid, 'hex'), Buffer.from([kind])]));
      };
      put('5630', spec.signing.certificate, CERT_KIND_END_USER);
      spec.signing.chain.forEach((der, i) => put((0x5631 + i).toString(16).toUpperCase(), der, CERT_KIND_CA));
    }
  }

  get atr(): Buffer {
    return this.spec.atr;
  }

  get pinTriesLeft(): number {
    return this.#triesLeft;
  }

  /** Cold/warm reset: clears selection and security state. */
  reset(): Buffer {
    this.#pending = undefined;
    this.#df = 'MF';
    this.#ef = undefined;
    this.#pinOk.clear();
    this.#hashAlg = undefined;
    this.#kidSet = false;
    this.#hash = undefined;
    return this.spec.atr;
  }

  /** Processes one command APDU. */
  process(apdu: Buffer): Buffer {
    const hex = apdu.toString('hex').toUpperCase();
    if (this.log.length >= MAX_LOGGED_APDUS) this.log.splice(0, this.log.length - MAX_LOGGED_APDUS + 1);
    // A VERIFY carries the PIN: only its header is kept.
    const keep = hex.startsWith('0020') ? 10 : MAX_LOGGED_APDU_CHARS;
    this.log.push(hex.length > keep ? `${hex.slice(0, keep)}…` : hex);
    if (apdu.length < 4) return sw(0x6700);
    const ins = apdu[1]!;
    if (ins === 0xc0 && this.#pending !== undefined) return this.#getResponse(apdu);
    this.#pending = undefined;
    for (const rule of this.spec.script) {
      const matches = rule.command.endsWith('*') ? hex.startsWith(rule.command.slice(0, -1).toUpperCase()) : hex === rule.command.toUpperCase();
      if (matches) return this.#scripted(rule, apdu);
    }
    if (apdu[0] === 0x80 && ins === 0xee) return ok(apdu.length > 5 ? apdu.subarray(5, 5 + apdu[4]!) : Buffer.alloc(0));
    if (apdu[0] === 0x00 && ins === 0xa4 && (apdu[2] === 0x00 || apdu[2] === 0x04) && apdu.length <= 5) {
      this.#df = 'MF';
      this.#ef = undefined;
      return ok();
    }
    if (this.spec.signing !== undefined) {
      const r = this.#iso(apdu, this.spec.signing);
      if (r !== undefined) return r;
    }
    if (ins === 0xa4) return sw(0x6a82);
    return sw(0x6d00);
  }

  #scripted(rule: ScriptRule, apdu: Buffer): Buffer {
    const resp = Buffer.from(rule.response, 'hex');
    const body = resp.subarray(0, Math.max(0, resp.length - 2));
    const last = resp.length >= 2 ? (resp[resp.length - 2]! << 8) | resp[resp.length - 1]! : 0x9000;
    if (rule.mode === 'chain' && body.length > 0) {
      this.#pending = Buffer.from(body);
      this.#pendingSw = last;
      return sw(0x6100 | Math.min(body.length, 256) % 256);
    }
    if (rule.mode === 'le') {
      const le = apdu.length === 5 ? apdu[4]! : apdu.length > 5 + apdu[4]! ? apdu[apdu.length - 1]! : -1;
      if (le !== body.length % 256) return sw(0x6c00 | (body.length % 256));
    }
    return resp;
  }

  #getResponse(apdu: Buffer): Buffer {
    const pending = this.#pending!;
    const le = apdu.length >= 5 ? apdu[4]! || 256 : 256;
    const take = pending.subarray(0, le);
    const rest = pending.subarray(le);
    if (rest.length === 0) {
      this.#pending = undefined;
      return Buffer.concat([take, sw(this.#pendingSw)]);
    }
    this.#pending = Buffer.from(rest);
    return Buffer.concat([take, sw(0x6100 | Math.min(rest.length, 256) % 256)]);
  }

  #iso(apdu: Buffer, s: SigningCardSpec): Buffer | undefined {
    const [cla, ins, p1, p2] = [apdu[0]!, apdu[1]!, apdu[2]!, apdu[3]!];
    if (cla !== 0x00) return undefined;
    const lc = apdu.length > 5 ? apdu[4]! : 0;
    const body = apdu.subarray(5, 5 + lc);
    switch (ins) {
      case 0xa4: {
        const fid = body.toString('hex').toUpperCase();
        if (p1 === 0x00 && fid === '3F00') {
          this.#df = 'MF';
          this.#ef = undefined;
          return ok();
        }
        if (p1 === 0x01 && this.#df === 'MF' && (fid === '3F50' || fid === '0604')) {
          this.#df = fid;
          this.#ef = undefined;
          return ok();
        }
        if (p1 === 0x02 && this.#df === '3F50' && (fid === '3F10' || this.#files.has(fid))) {
          this.#ef = fid;
          return ok();
        }
        return sw(0x6a82);
      }
      case 0xb2: {
        if (this.#ef !== '3F10') return sw(0x6986);
        const rec = this.#dir[p1 - 1];
        return rec === undefined ? sw(0x6a83) : ok(rec);
      }
      case 0xb0: {
        const file = this.#ef === undefined ? undefined : this.#files.get(this.#ef);
        if (file === undefined) return sw(0x6986);
        const off = ((p1 & 0x7f) << 8) | p2;
        if (off >= file.length) return sw(0x6b00);
        const le = apdu.length === 5 ? apdu[4]! || 256 : 256;
        const chunk = file.subarray(off, off + le);
        return Buffer.concat([chunk, sw(chunk.length < le ? 0x6282 : 0x9000)]);
      }
      case 0x20: {
        if (this.#df !== '0604') return sw(0x6985);
        if (this.#triesLeft <= 0) return sw(0x6983);
        if (body.toString('latin1') !== s.pin) {
          this.#triesLeft--;
          this.#pinOk.clear();
          return this.#triesLeft <= 0 ? sw(0x6983) : sw(0x63c0 | this.#triesLeft);
        }
        this.#triesLeft = s.pinTries;
        this.#pinOk.add(p2);
        return ok();
      }
      case 0x22: {
        if (this.#df !== '0604') return sw(0x6985);
        if (p2 === 0xaa && body.length === 4 && body[0] === 0x89) {
          this.#hashAlg = body[3];
          return ok();
        }
        if (p2 === 0xb6 && body.length === 10 && body[0] === 0x84) {
          if (body[3] !== s.keyId) return sw(0x6a88);
          this.#kidSet = true;
          return ok();
        }
        return sw(0x6a80);
      }
      case 0x2a: {
        if (p1 === 0x90 && p2 === 0xa0) {
          const len = body[1] ?? 0;
          const hash = body.subarray(2, 2 + len);
          const want = this.#hashAlg === 0x10 ? 20 : this.#hashAlg === 0x30 ? 32 : -1;
          if (body[0] !== 0x90 || hash.length !== want) return sw(0x6a80);
          this.#hash = Buffer.from(hash);
          return ok();
        }
        if (p1 === 0x9e && p2 === 0x9a) {
          if (!this.#pinOk.has(0x86) || !this.#pinOk.has(0x81)) return sw(0x6982);
          if (!this.#kidSet || this.#hash === undefined || this.#hashAlg === undefined) return sw(0x6985);
          const prefix = DIGEST_INFO[this.#hashAlg];
          if (prefix === undefined) return sw(0x6985);
          const signature = privateEncrypt({ key: s.key, padding: constants.RSA_PKCS1_PADDING }, Buffer.concat([prefix, this.#hash]));
          this.#hash = undefined;
          return ok(signature);
        }
        return sw(0x6a86);
      }
      default:
        return undefined;
    }
  }
}
