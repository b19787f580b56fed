// Certificates and keys for the test control plane, made with node:crypto alone.
//
// Node can generate keys and sign bytes but has no API to issue X.509 certificates, so this file
// encodes the few DER structures a certificate needs (RFC 5280) and signs them with
// crypto.sign(). Keys are ECDSA P-256 for TLS/client certificates (ecdsa-with-SHA256) and RSA 2048
// for service-account tokens (RS256, what kube-apiserver uses by default). Written here rather
// than in the Go binary so a KUBEBUILDER_ASSETS kube-apiserver (which has no extra subcommands)
// gets the same PKI.

import { createHash, generateKeyPairSync, randomBytes, sign, X509Certificate, type KeyObject } from 'node:crypto';
import { mkdirSync, writeFileSync } from 'node:fs';
import { isIP } from 'node:net';
import { join } from 'node:path';

// ---- minimal DER encoder -------------------------------------------------------------------

function tlv(tag: number, content: Buffer): Buffer {
  const len = content.length;
  let header: Buffer;
  if (len < 0x80) header = Buffer.from([tag, len]);
  else {
    const bytes: number[] = [];
    for (let n = len; n > 0; n = Math.floor(n / 256)) bytes.unshift(n % 256);
    header = Buffer.from([tag, 0x80 | bytes.length, ...bytes]);
  }
  return Buffer.concat([header, content]);
}
const seq = (...items: Buffer[]): Buffer => tlv(0x30, Buffer.concat(items));
const set = (...items: Buffer[]): Buffer => tlv(0x31, Buffer.concat(items));
const explicit = (n: number, inner: Buffer): Buffer => tlv(0xa0 + n, inner);
const octets = (b: Buffer): Buffer => tlv(0x04, b);
const bool = (v: boolean): Buffer => tlv(0x01, Buffer.from([v ? 0xff : 0x00]));
const utf8 = (s: string): Buffer => tlv(0x0c, Buffer.from(s, 'utf8'));
const bitString = (b: Buffer, unusedBits = 0): Buffer => tlv(0x03, Buffer.concat([Buffer.from([unusedBits]), b]));

/** A non-negative INTEGER from big-endian magnitude bytes. */
function uint(bytes: Buffer): Buffer {
  let i = 0;
  while (i < bytes.length - 1 && bytes[i] === 0) i++;
  let b = bytes.subarray(i);
  if ((b[0] ?? 0) & 0x80) b = Buffer.concat([Buffer.from([0]), b]);
  return tlv(0x02, b);
}

function oid(dotted: string): Buffer {
  const parts = dotted.split('.').map(Number);
  const out: number[] = [40 * (parts[0] ?? 0) + (parts[1] ?? 0)];
  for (const p of parts.slice(2)) {
    const chunk: number[] = [p & 0x7f];
    for (let v = Math.floor(p / 128); v > 0; v = Math.floor(v / 128)) chunk.unshift((v & 0x7f) | 0x80);
    out.push(...chunk);
  }
  return tlv(0x06, Buffer.from(out));
}

function time(d: Date): Buffer {
  const iso = d.toISOString(); // YYYY-MM-DDTHH:MM:SS.sssZ
  const digits = iso.slice(0, 19).replace(/[-T:]/g, '') + 'Z'; // YYYYMMDDHHMMSSZ
  const year = d.getUTCFullYear();
  // RFC 5280: UTCTime through 2049, GeneralizedTime from 2050.
  return year < 2050 ? tlv(0x17, Buffer.from(digits.slice(2), 'ascii')) : tlv(0x18, Buffer.from(digits, 'ascii'));
}

/** A KeyUsage / named BIT STRING with minimal unused bits, as DER requires. */
function namedBits(bits: number[]): Buffer {
  const max = Math.max(...bits);
  const bytes = Buffer.alloc(Math.floor(max / 8) + 1);
  for (const bit of bits) bytes[Math.floor(bit / 8)]! |= 0x80 >> bit % 8;
  return bitString(bytes, 7 - (max % 8));
}

const OID = {
  ecdsaWithSHA256: '1.2.840.10045.4.3.2',
  commonName: '2.5.4.3',
  organization: '2.5.4.10',
  subjectKeyIdentifier: '2.5.29.14',
  keyUsage: '2.5.29.15',
  subjectAltName: '2.5.29.17',
  basicConstraints: '2.5.29.19',
  authorityKeyIdentifier: '2.5.29.35',
  extKeyUsage: '2.5.29.37',
  serverAuth: '1.3.6.1.5.5.7.3.1',
  clientAuth: '1.3.6.1.5.5.7.3.2',
} as const;

const KU = { digitalSignature: 0, keyEncipherment: 2, keyCertSign: 5, cRLSign: 6 } as const;

function name(cn: string, orgs: string[] = []): Buffer {
  const rdns = orgs.map((o) => set(seq(oid(OID.organization), utf8(o))));
  rdns.push(set(seq(oid(OID.commonName), utf8(cn))));
  return seq(...rdns);
}

function extension(id: string, critical: boolean, value: Buffer): Buffer {
  return critical ? seq(oid(id), bool(true), octets(value)) : seq(oid(id), octets(value));
}

function subjectAltNames(hosts: string[]): Buffer {
  const names = hosts.map((h) => {
    const family = isIP(h);
    if (family === 4) return tlv(0x87, Buffer.from(h.split('.').map(Number)));
    if (family === 6) return tlv(0x87, ipv6Bytes(h));
    return tlv(0x82, Buffer.from(h, 'ascii'));
  });
  return seq(...names);
}

function ipv6Bytes(ip: string): Buffer {
  const [head = '', tail = ''] = ip.split('::');
  const h = head ? head.split(':') : [];
  const t = ip.includes('::') ? (tail ? tail.split(':') : []) : [];
  const groups = [...h, ...Array<string>(8 - h.length - t.length).fill('0'), ...t];
  const out = Buffer.alloc(16);
  groups.forEach((g, i) => out.writeUInt16BE(parseInt(g, 16), i * 2));
  return out;
}

function keyId(publicKey: KeyObject): Buffer {
  // RFC 5280 4.2.1.2 method (1) uses the BIT STRING contents; hashing the whole SPKI is also fine
  // (the identifier only has to be consistent between issuer SKI and child AKI).
  return createHash('sha1').update(publicKey.export({ type: 'spki', format: 'der' })).digest();
}

interface IssueOptions {
  commonName: string;
  organizations?: string[];
  publicKey: KeyObject;
  issuer: { name: Buffer; key: KeyObject; keyId: Buffer } | 'self';
  signingKey: KeyObject;
  isCA?: boolean;
  hosts?: string[];
  usages?: Array<'server' | 'client'>;
  days?: number;
}

function issue(o: IssueOptions): { pem: string; der: Buffer; name: Buffer; keyId: Buffer } {
  const subject = name(o.commonName, o.organizations);
  const ski = keyId(o.publicKey);
  const issuerName = o.issuer === 'self' ? subject : o.issuer.name;
  const aki = o.issuer === 'self' ? ski : o.issuer.keyId;
  const now = Date.now();
  const exts: Buffer[] = [
    extension(OID.keyUsage, true, o.isCA
      ? namedBits([KU.digitalSignature, KU.keyCertSign, KU.cRLSign])
      : namedBits([KU.digitalSignature, KU.keyEncipherment])),
    extension(OID.basicConstraints, true, o.isCA ? seq(bool(true)) : seq()),
    extension(OID.subjectKeyIdentifier, false, octets(ski)),
    extension(OID.authorityKeyIdentifier, false, seq(tlv(0x80, aki))),
  ];
  if (o.usages?.length) {
    exts.push(extension(OID.extKeyUsage, false,
      seq(...o.usages.map((u) => oid(u === 'server' ? OID.serverAuth : OID.clientAuth)))));
  }
  if (o.hosts?.length) exts.push(extension(OID.subjectAltName, false, subjectAltNames(o.hosts)));
  const algorithm = seq(oid(OID.ecdsaWithSHA256));
  const serial = randomBytes(16);
  serial[0]! &= 0x7f;
  const tbs = seq(
    explicit(0, uint(Buffer.from([2]))), // v3
    uint(serial),
    algorithm,
    issuerName,
    seq(time(new Date(now - 60 * 60 * 1000)), time(new Date(now + (o.days ?? 365) * 86_400_000))),
    subject,
    o.publicKey.export({ type: 'spki', format: 'der' }),
    explicit(3, seq(...exts)),
  );
  const signature = sign('sha256', tbs, o.signingKey); // DER ECDSA-Sig-Value
  const der = seq(tbs, algorithm, bitString(signature));
  const b64 = der.toString('base64').replace(/.{64}/g, '$&\n').replace(/\n$/, '');
  return { pem: `-----BEGIN CERTIFICATE-----\n${b64}\n-----END CERTIFICATE-----\n`, der, name: subject, keyId: ski };
}

// ---- the control plane's PKI ---------------------------------------------------------------

export interface Pki {
  dir: string;
  caCert: string; // paths
  caKey: string;
  servingCert: string;
  servingKey: string;
  adminCert: string;
  adminKey: string;
  saKey: string; // service-account signing key (private)
  saPub: string; // service-account verification key (public)
  /** PEM contents, for the kubeconfig. */
  pem: { ca: string; adminCert: string; adminKey: string };
}

/**
 * Writes a CA, a serving certificate for 127.0.0.1/localhost (plus the in-cluster names of the
 * `kubernetes` service), an admin client certificate (CN=admin, O=system:masters) and an RSA
 * service-account key pair into `dir`.
 */
export function writePki(dir: string): Pki {
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  const ec = () => generateKeyPairSync('ec', { namedCurve: 'prime256v1' });
  const keyPem = (k: KeyObject) => k.export({ type: 'pkcs8', format: 'pem' }).toString();

  const caKeys = ec();
  const ca = issue({
    commonName: 'policyguard-test-ca', publicKey: caKeys.publicKey, signingKey: caKeys.privateKey,
    issuer: 'self', isCA: true, days: 3650,
  });
  const issuer = { name: ca.name, key: caKeys.privateKey, keyId: ca.keyId };

  const servingKeys = ec();
  const serving = issue({
    commonName: 'kube-apiserver', publicKey: servingKeys.publicKey, signingKey: caKeys.privateKey, issuer,
    usages: ['server'],
    hosts: ['127.0.0.1', '::1', 'localhost', '10.0.0.1', 'kubernetes', 'kubernetes.default',
      'kubernetes.default.svc', 'kubernetes.default.svc.cluster.local'],
  });

  const adminKeys = ec();
  const admin = issue({
    commonName: 'admin', organizations: ['system:masters'], publicKey: adminKeys.publicKey,
    signingKey: caKeys.privateKey, issuer, usages: ['client'],
  });

  const sa = generateKeyPairSync('rsa', { modulusLength: 2048 });

  // Sanity: Node's own X.509 parser must accept what we encoded and verify the chain.
  const caX = new X509Certificate(ca.pem);
  for (const leaf of [serving.pem, admin.pem]) {
    const x = new X509Certificate(leaf);
    if (!x.checkIssued(caX) || !x.verify(caKeys.publicKey)) throw new Error('certs: generated certificate does not verify');
  }

  const p = (f: string) => join(dir, f);
  const files: Record<string, string> = {
    'ca.crt': ca.pem, 'ca.key': keyPem(caKeys.privateKey),
    'apiserver.crt': serving.pem, 'apiserver.key': keyPem(servingKeys.privateKey),
    'admin.crt': admin.pem, 'admin.key': keyPem(adminKeys.privateKey),
    'sa.key': keyPem(sa.privateKey), 'sa.pub': sa.publicKey.export({ type: 'spki', format: 'pem' }).toString(),
  };
  for (const [f, content] of Object.entries(files)) writeFileSync(p(f), content, { mode: 0o600 });
  return {
    dir,
    caCert: p('ca.crt'), caKey: p('ca.key'),
    servingCert: p('apiserver.crt'), servingKey: p('apiserver.key'),
    adminCert: p('admin.crt'), adminKey: p('admin.key'),
    saKey: p('sa.key'), saPub: p('sa.pub'),
    pem: { ca: ca.pem, adminCert: admin.pem, adminKey: files['admin.key']! },
  };
}
