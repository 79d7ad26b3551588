// The eth1 seed on the networkd flavour (see seed-on-flavour.ts for what runs).
import { seedOnFlavour } from "./seed-on-flavour.js";

// the eth0+eth1 seed waits downdelay 200 ms (miimon 100) before it fails over: 4-6 pings at 50 ms by design
seedOnFlavour({ flavor: "networkd", seed: "eth1", lossBound: 7, readers: "netplan in /run" });
