// IPv4 addresses and subnets, for checks that hold on every network stack.

export const ipNumber = (ip: string) => ip.split(".").reduce((n, octet) => n * 256 + Number(octet), 0) >>> 0;
export const ipText = (n: number) => [24, 16, 8, 0].map((shift) => (n >>> shift) & 255).join(".");

export const maskOf = (bits: number) => (bits === 0 ? 0 : (0xffffffff << (32 - bits)) >>> 0);

/** The prefix length of a dotted netmask (255.255.255.0 → 24); null when its one bits are not contiguous. */
export function prefixOfNetmask(netmask: string): number | null {
  const n = ipNumber(netmask);
  for (let bits = 0; bits <= 32; bits++) if (maskOf(bits) === n) return bits;
  return null;
}

export interface Subnet {
  address: string;
  bits: number;
  network: number;
  broadcast: number;
}

/** a.b.c.d/nn → the address, its prefix length, network and broadcast numbers. */
export function subnetOf(cidr: string): Subnet {
  const [address, bits = "32"] = cidr.split("/");
  const mask = maskOf(Number(bits));
  const network = (ipNumber(address) & mask) >>> 0;
  return { address, bits: Number(bits), network, broadcast: (network | (~mask >>> 0)) >>> 0 };
}

export const inSubnet = (s: Subnet, ip: string) => (ipNumber(ip) & maskOf(s.bits)) >>> 0 === s.network;

/** What an address is when it cannot be a host's unicast address, else null. */
export function specialUse(ip: string): string | null {
  const first = Number(ip.split(".")[0]);
  if (first === 0) return 'in 0.0.0.0/8 ("this network")';
  if (first === 127) return "a loopback address (127.0.0.0/8)";
  if (first >= 224 && first <= 239) return "a multicast address (224.0.0.0/4)";
  if (first >= 240) return ip === "255.255.255.255" ? "the limited broadcast address" : "a reserved address (240.0.0.0/4)";
  return null;
}

/** Where a host address sits in its subnet, when that is not a host's place (network or broadcast), else null. */
export function subnetRole(s: Subnet, ip: string): string | null {
  if (s.bits >= 31) return null; // RFC 3021: both addresses of a /31 are hosts; a /32 is the host alone
  const n = ipNumber(ip);
  if (n === s.network) return `the network address of ${ipText(s.network)}/${s.bits}`;
  if (n === s.broadcast) return `the broadcast address of ${ipText(s.network)}/${s.bits}`;
  return null;
}
